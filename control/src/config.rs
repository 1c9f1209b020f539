//! The device's configuration: a TOML file (`config/offloadd.toml` is the default),
//! with a few command-line flags that override it. Every key is checked here; a bad
//! one is a one-line error that names it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use dataplane::port::af_packet::AfPacketOptions;
#[cfg(feature = "afxdp")]
use dataplane::port::af_xdp::{AfXdpOptions, XdpMode, ZeroCopy};
use serde::Deserialize;

/// Everything offloadd needs to start. Paths are already resolved against the
/// config file's directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    #[serde(default = "default_ports", rename = "port")]
    pub ports: Vec<PortConfig>,
    #[serde(default, rename = "next_hop")]
    pub next_hops: Vec<NextHopConfig>,
    #[serde(default)]
    pub neighbours: NeighboursConfig,
    #[serde(default)]
    pub simulate: SimulateConfig,
    #[serde(default)]
    pub dpdk: DpdkConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// The `[metrics]` section: the Prometheus endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of the HTTP endpoint serving `/metrics`; empty: no endpoint.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// The `[dpdk]` section: EAL arguments and the buffers of every `backend = "dpdk"`
/// port (feature `dpdk`; ignored without dpdk ports).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpdkConfig {
    /// EAL arguments, without the program name. `--no-pci` is added when no port is a
    /// PCI device and these say nothing about PCI.
    pub eal_args: Vec<String>,
    /// mbufs in each port's mempool.
    pub mbufs: u32,
    /// Per-lcore mempool cache.
    pub mbuf_cache: u32,
    /// mbuf data room after DPDK's headroom: the longest frame received.
    pub mbuf_data_room: u16,
    /// Descriptors per rx / tx queue.
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Packet buffers received frames are copied into, per port.
    pub pool_buffers: u32,
    /// Receive frames for any MAC.
    pub promiscuous: bool,
    /// Slots of each queue-to-queue ring of the software hand-off (devices without
    /// RSS, several workers).
    pub handoff_ring: usize,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        DpdkConfig {
            eal_args: [
                "-l",
                "0",
                "--in-memory",
                "--no-telemetry",
                "--log-level",
                "lib.eal:warning",
            ]
            .map(String::from)
            .to_vec(),
            mbufs: 8191,
            mbuf_cache: 256,
            mbuf_data_room: 2048,
            rx_desc: 1024,
            tx_desc: 1024,
            pool_buffers: 8192,
            promiscuous: true,
            handoff_ring: 1024,
        }
    }
}

/// How a dpdk port's frames reach the worker that owns their flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpdkSteering {
    /// RSS (symmetric key, our redirection table) where the device has it; nothing
    /// with one worker; otherwise the software hand-off.
    #[default]
    Auto,
    Rss,
    /// Queue k is worker k's as the device delivers it.
    Device,
    Handoff,
}

#[cfg(feature = "dpdk")]
impl DpdkConfig {
    /// The options of a dpdk port with `steering`.
    pub fn port_options(&self, steering: DpdkSteering) -> dataplane::port::dpdk::DpdkOptions {
        use dataplane::port::dpdk::{DpdkOptions, Steer};
        DpdkOptions {
            mbufs: self.mbufs,
            mbuf_cache: self.mbuf_cache,
            mbuf_data_room: self.mbuf_data_room,
            rx_desc: self.rx_desc,
            tx_desc: self.tx_desc,
            pool_buffers: self.pool_buffers,
            promiscuous: self.promiscuous,
            handoff_ring: self.handoff_ring,
            steering: match steering {
                DpdkSteering::Auto => Steer::Auto,
                DpdkSteering::Rss => Steer::Rss,
                DpdkSteering::Device => Steer::Device,
                DpdkSteering::Handoff => Steer::Handoff,
            },
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `host:port` to listen on; a host name listens on every address it resolves to
    /// (`localhost`: 127.0.0.1 and ::1).
    pub listen: String,
    /// Serve without TLS.
    pub plaintext: bool,
    /// Answer to GetSession/DeleteSession for an unknown id.
    pub unknown_session: UnknownSession,
    /// Most sessions in one GetAllSessions answer.
    pub list_cap: u32,
    /// GetClosedSessions keeps streaming closures as they happen, for every call
    /// (otherwise only for calls with the `offloadd-follow` metadata).
    pub closed_follow: bool,
    /// Records one AckedClosedSessions stream may have sent and not yet seen acked;
    /// at this many it sends nothing more until an ack comes.
    pub ack_window: usize,
    /// Largest gRPC message received or sent.
    pub max_message_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Most sessions in one AddSession stream; a longer stream is refused with
    /// RESOURCE_EXHAUSTED.
    pub max_add_stream: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout_ms: u64,
    /// A connection with no call open this long (counted from its accept or its last
    /// call's end, so also one that never sends the HTTP/2 preface) is closed.
    pub idle_timeout_ms: u64,
    /// Most connections open at once; one accepted beyond is closed at once.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, adds are refused and the stop waits up to this long for
    /// GetClosedSessions to collect the closed records; 0: no drain.
    pub drain_ms: u64,
    /// Adds sent to a worker in one command at most.
    pub add_batch: usize,
    /// Add commands each worker may have queued or running, all streams together.
    pub add_batches_in_flight: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "localhost:3443".into(),
            plaintext: false,
            unknown_session: UnknownSession::InBand,
            list_cap: 10_000,
            closed_follow: false,
            ack_window: 1024,
            max_message_bytes: 4 << 20,
            max_concurrent_streams: 256,
            max_add_stream: 100_000,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            max_connections: 512,
            drain_ms: 0,
            add_batch: 32,
            add_batches_in_flight: 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownSession {
    /// Status OK with `request_status = _REJECTED_SESSION_NONEXISTENT` (Python clients).
    InBand,
    /// gRPC NOT_FOUND (the C++ reference server).
    NotFound,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to; set: mutual TLS, a client without a
    /// valid certificate is refused.
    pub client_ca: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: "../certs/server.crt".into(),
            key: "../certs/server.key".into(),
            client_ca: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Poll {
    Busy,
    Adaptive,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    pub workers: usize,
    /// Core of each worker; empty: not pinned.
    pub cores: Vec<usize>,
    pub max_sessions: usize,
    /// Idle timeout (seconds) of sessions added with `cache_timeout` 0.
    pub default_timeout: u32,
    /// Granularity of idle timeouts.
    pub tick_ms: u64,
    pub poll: Poll,
    /// Adaptive polling: microseconds a worker polls on after its last work before
    /// it sleeps.
    pub idle_spin_us: u64,
    pub command_queue: usize,
    /// Real-time (SCHED_FIFO) priority of the workers, 1..=99; 0: ordinary threads.
    pub realtime_priority: u8,
    /// Closed records that may wait between the workers and the control plane.
    pub closed_queue: usize,
    /// Closed records the control plane holds for GetClosedSessions; when full, the
    /// workers keep closed sessions in their tables (new adds see a full table).
    pub closed_held: usize,
    /// Port (by name) that receives misses, TCP control packets and snoop copies.
    pub firewall_port: String,
    /// Port (by name) that receives mirror copies; unset: the port named "collector",
    /// if there is one (otherwise mirror sessions are refused).
    pub collector_port: Option<String>,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            workers: 1,
            cores: Vec::new(),
            max_sessions: 1_000_000,
            default_timeout: 30,
            tick_ms: 100,
            poll: Poll::Adaptive,
            idle_spin_us: dataplane::worker::DEFAULT_IDLE_SPIN.as_micros() as u64,
            command_queue: 1024,
            realtime_priority: 0,
            closed_queue: 65_536,
            closed_held: 2_000_000,
            firewall_port: "firewall".into(),
            collector_port: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// In-process rings (the default device; the simulator drives it).
    Ring,
    /// Replay `input` as what the port receives; write what it sends to `output`.
    Pcap,
    /// A DPDK device (`device`: PCI address or vdev string); needs the `dpdk` feature.
    Dpdk,
    /// A Linux interface (`interface`) through AF_PACKET with TPACKET_V3 rings.
    AfPacket,
    /// A Linux interface (`interface`) through AF_XDP sockets (cargo feature `afxdp`).
    AfXdp,
}

/// `xdp_mode` of an af_xdp port: where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpModeKey {
    /// Native, else generic (skb), with the reason logged.
    Auto,
    Native,
    Skb,
}

/// `zero_copy` of an af_xdp port: `"auto"`, `true` or `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroCopyKey {
    Auto,
    On,
    Off,
}

impl<'de> Deserialize<'de> for ZeroCopyKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ZeroCopyKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\", true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ZeroCopyKey, E> {
                Ok(if v { ZeroCopyKey::On } else { ZeroCopyKey::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ZeroCopyKey, E> {
                match v {
                    "auto" => Ok(ZeroCopyKey::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub name: String,
    pub backend: Backend,
    /// Logical interface carried by this port (1..=65535); none for a firewall or
    /// collector port.
    pub lif: Option<u16>,
    /// The port's own MAC address.
    #[serde(default = "default_mac")]
    pub mac: String,
    /// Destination MAC of frames forwarded out of this port when the session names no
    /// next hop; unset: frames leave unchanged.
    pub next_hop_mac: Option<String>,
    /// The port's own addresses (at most one IPv4 and one IPv6): the source of its
    /// ARP requests and neighbour solicitations. Unset: ARP probes from 0.0.0.0 and
    /// the link-local address made from the MAC.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// ring: slots per queue.
    #[serde(default = "default_ring_size")]
    pub ring_size: usize,
    /// pcap: capture to replay, and capture to write.
    pub input: Option<PathBuf>,
    pub output: Option<PathBuf>,
    /// dpdk: PCI address or vdev string (`net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`),
    /// and how flows are steered to their workers.
    pub device: Option<String>,
    pub steering: Option<DpdkSteering>,
    /// af_packet: the interface, and ring options (unset: `AfPacketOptions` defaults).
    pub interface: Option<String>,
    pub block_size: Option<u32>,
    pub block_count: Option<u32>,
    pub frame_size: Option<u32>,
    pub tx_frames: Option<u32>,
    pub block_timeout_ms: Option<u32>,
    pub fanout_group: Option<u16>,
    pub qdisc_bypass: Option<bool>,
    /// af_packet and af_xdp: packet buffers of the port (`frame_size` too, above).
    pub pool_buffers: Option<u32>,
    /// af_xdp: XDP mode, bind mode, and UMEM geometry per queue (unset:
    /// `AfXdpOptions` defaults).
    pub xdp_mode: Option<XdpModeKey>,
    pub zero_copy: Option<ZeroCopyKey>,
    pub frame_count: Option<u32>,
    pub fill_size: Option<u32>,
    pub comp_size: Option<u32>,
    pub rx_size: Option<u32>,
    pub tx_size: Option<u32>,
}

impl PortConfig {
    /// The af_packet options of this port: its keys over the defaults.
    pub fn af_packet_options(&self) -> AfPacketOptions {
        let d = AfPacketOptions::default();
        AfPacketOptions {
            block_size: self.block_size.unwrap_or(d.block_size),
            block_count: self.block_count.unwrap_or(d.block_count),
            frame_size: self.frame_size.unwrap_or(d.frame_size),
            tx_frames: self.tx_frames.unwrap_or(d.tx_frames),
            block_timeout_ms: self.block_timeout_ms.unwrap_or(d.block_timeout_ms),
            fanout_group: self.fanout_group.or(d.fanout_group),
            qdisc_bypass: self.qdisc_bypass.unwrap_or(d.qdisc_bypass),
            pool_buffers: self.pool_buffers.unwrap_or(d.pool_buffers),
            ..d
        }
    }

    /// The af_xdp options of this port: its keys over the defaults.
    #[cfg(feature = "afxdp")]
    pub fn af_xdp_options(&self) -> AfXdpOptions {
        let d = AfXdpOptions::default();
        AfXdpOptions {
            xdp_mode: match self.xdp_mode {
                None => d.xdp_mode,
                Some(XdpModeKey::Auto) => XdpMode::Auto,
                Some(XdpModeKey::Native) => XdpMode::Native,
                Some(XdpModeKey::Skb) => XdpMode::Skb,
            },
            zero_copy: match self.zero_copy {
                None => d.zero_copy,
                Some(ZeroCopyKey::Auto) => ZeroCopy::Auto,
                Some(ZeroCopyKey::On) => ZeroCopy::On,
                Some(ZeroCopyKey::Off) => ZeroCopy::Off,
            },
            frame_count: self.frame_count.unwrap_or(d.frame_count),
            frame_size: self.frame_size.unwrap_or(d.frame_size),
            fill_size: self.fill_size.unwrap_or(d.fill_size),
            comp_size: self.comp_size.unwrap_or(d.comp_size),
            rx_size: self.rx_size.unwrap_or(d.rx_size),
            tx_size: self.tx_size.unwrap_or(d.tx_size),
            pool_buffers: self.pool_buffers.unwrap_or(d.pool_buffers),
            ..d
        }
    }

    /// Keys of af_xdp ports only.
    fn has_af_xdp_keys(&self) -> bool {
        self.xdp_mode.is_some()
            || self.zero_copy.is_some()
            || self.frame_count.is_some()
            || self.fill_size.is_some()
            || self.comp_size.is_some()
            || self.rx_size.is_some()
            || self.tx_size.is_some()
    }

    /// Keys of af_packet ports only.
    fn has_af_packet_only_keys(&self) -> bool {
        self.block_size.is_some()
            || self.block_count.is_some()
            || self.tx_frames.is_some()
            || self.block_timeout_ms.is_some()
            || self.fanout_group.is_some()
            || self.qdisc_bypass.is_some()
    }

    fn has_af_packet_keys(&self) -> bool {
        self.interface.is_some()
            || self.block_size.is_some()
            || self.block_count.is_some()
            || self.frame_size.is_some()
            || self.tx_frames.is_some()
            || self.block_timeout_ms.is_some()
            || self.fanout_group.is_some()
            || self.qdisc_bypass.is_some()
            || self.pool_buffers.is_some()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextHopConfig {
    /// The router as clients name it in `action_next_hop` / `action_next_hop_v6`.
    pub addr: IpAddr,
    pub mac: String,
    /// Port it is reached by; unset: the session's out_lif port.
    pub port: Option<String>,
}

/// The `[neighbours]` section: how next hops that no `[[next_hop]]` lists are
/// resolved on ports on real interfaces (Linux's neighbour defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeighboursConfig {
    /// Entries the neighbour table holds, static ones included.
    pub capacity: usize,
    /// A reply keeps an entry reachable this long.
    pub reachable_s: u32,
    /// Between two requests for one next hop.
    pub retrans_ms: u32,
    /// Unanswered requests before an entry fails.
    pub probes: u32,
    /// A stale entry in use waits this long before it is probed.
    pub delay_s: u32,
    /// A failed entry in use is tried again after this long.
    pub retry_s: u32,
    /// Requests per second at most, all ports together.
    pub requests_per_s: u32,
}

impl Default for NeighboursConfig {
    fn default() -> Self {
        NeighboursConfig {
            capacity: 1024,
            reachable_s: 30,
            retrans_ms: 1000,
            probes: 3,
            delay_s: 5,
            retry_s: 5,
            requests_per_s: 100,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulateConfig {
    pub enabled: bool,
    /// Frames per second the simulator sends, all sessions together.
    pub packets_per_second: u32,
    /// How a simulated session ends, in percent (the rest go idle until their timeout).
    pub fin_percent: u8,
    pub rst_percent: u8,
    /// Lifetime of a simulated session before it ends, seconds (uniform in range).
    pub min_lifetime_s: f64,
    pub max_lifetime_s: f64,
    /// Payload bytes of simulated data frames.
    pub payload_bytes: u16,
    pub seed: u64,
}

impl Default for SimulateConfig {
    fn default() -> Self {
        SimulateConfig {
            enabled: false,
            packets_per_second: 2000,
            fin_percent: 40,
            rst_percent: 20,
            min_lifetime_s: 2.0,
            max_lifetime_s: 20.0,
            payload_bytes: 200,
            seed: 1,
        }
    }
}

fn default_mac() -> String {
    "02:00:00:00:00:00".into()
}

fn default_ring_size() -> usize {
    4096
}

/// The ring device of the default config: lif 1 and 2, a firewall and a collector.
fn default_ports() -> Vec<PortConfig> {
    let ring = |name: &str, lif: Option<u16>, mac: &str| PortConfig {
        name: name.into(),
        backend: Backend::Ring,
        lif,
        mac: mac.into(),
        next_hop_mac: None,
        addresses: Vec::new(),
        ring_size: default_ring_size(),
        input: None,
        output: None,
        device: None,
        steering: None,
        interface: None,
        block_size: None,
        block_count: None,
        frame_size: None,
        tx_frames: None,
        block_timeout_ms: None,
        fanout_group: None,
        qdisc_bypass: None,
        pool_buffers: None,
        xdp_mode: None,
        zero_copy: None,
        frame_count: None,
        fill_size: None,
        comp_size: None,
        rx_size: None,
        tx_size: None,
    };
    vec![
        ring("outside", Some(1), "02:00:00:00:01:01"),
        ring("inside", Some(2), "02:00:00:00:01:02"),
        ring("firewall", None, "02:00:00:00:01:fe"),
        ring("collector", None, "02:00:00:00:01:fc"),
    ]
}

/// Flags that override the config file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub plaintext: bool,
    pub max_sessions: Option<usize>,
    pub workers: Option<usize>,
    pub simulate: bool,
    /// metrics.listen ("" turns the endpoint off).
    pub metrics_listen: Option<String>,
}

/// A config that cannot be used: one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A dpdk device string with the capture files of `net_pcap` (`rx_pcap=`, `tx_pcap=`)
/// made relative to the config file's directory, like every other path in a config.
fn resolve_device_paths(device: &str, base: &Path) -> String {
    device
        .split(',')
        .map(|part| match part.split_once('=') {
            Some((k @ ("rx_pcap" | "tx_pcap"), v)) if Path::new(v).is_relative() => {
                format!("{k}={}", base.join(v).display())
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// aa:bb:cc:dd:ee:ff, as `parse_mac` reads it.
pub fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Config {
    /// Reads and checks a config file; relative paths in it are relative to its
    /// directory.
    pub fn load(path: &Path, o: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base, o).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Parses and checks config text; `base` is where relative paths start.
    pub fn parse(text: &str, base: &Path, o: &Overrides) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let msg = e.message().replace('\n', " ");
            ConfigError(match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            })
        })?;
        if let Some(l) = &o.listen {
            c.api.listen = l.clone();
        }
        if let Some(l) = &o.metrics_listen {
            c.metrics.listen = l.clone();
        }
        let plaintext_in_config = c.api.plaintext;
        c.api.plaintext |= o.plaintext;
        if let Some(m) = o.max_sessions {
            c.dataplane.max_sessions = m;
        }
        if let Some(w) = o.workers {
            c.dataplane.workers = w;
            if c.dataplane.cores.len() != w {
                c.dataplane.cores.clear();
            }
        }
        c.simulate.enabled |= o.simulate;
        if c.dataplane.collector_port.is_none() && c.port_index("collector").is_some() {
            c.dataplane.collector_port = Some("collector".into());
        }
        c.resolve_paths(base);
        check_plaintext_without_client_ca(&c, o.plaintext, plaintext_in_config)?;
        c.check()?;
        Ok(c)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        if let Some(p) = self.tls.client_ca.as_mut() {
            fix(p);
        }
        for port in &mut self.ports {
            if let Some(p) = port.input.as_mut() {
                fix(p);
            }
            if let Some(p) = port.output.as_mut() {
                fix(p);
            }
            if let Some(d) = port.device.as_mut() {
                *d = resolve_device_paths(d, base);
            }
        }
    }

    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError(s));
        let a = &self.api;
        if !is_host_port(&a.listen) {
            return bad(format!("api.listen = {:?}: expected host:port", a.listen));
        }
        let m = &self.metrics.listen;
        if !m.is_empty() && !is_host_port(m) {
            return bad(format!(
                "metrics.listen = {m:?}: expected host:port, or \"\" for no endpoint"
            ));
        }
        if a.list_cap == 0 {
            return bad("api.list_cap = 0: must be at least 1".into());
        }
        if a.ack_window == 0 {
            return bad("api.ack_window = 0: must be at least 1".into());
        }
        if a.max_message_bytes < 4096 {
            return bad(format!(
                "api.max_message_bytes = {}: must be at least 4096",
                a.max_message_bytes
            ));
        }
        if a.max_concurrent_streams == 0 {
            return bad("api.max_concurrent_streams = 0: must be at least 1".into());
        }
        if !(1..=4096).contains(&a.add_batch) {
            return bad(format!(
                "api.add_batch = {}: must be 1 to 4096",
                a.add_batch
            ));
        }
        if !(1..=1024).contains(&a.add_batches_in_flight) {
            return bad(format!(
                "api.add_batches_in_flight = {}: must be 1 to 1024",
                a.add_batches_in_flight
            ));
        }
        if a.idle_timeout_ms == 0 {
            return bad("api.idle_timeout_ms = 0: must be at least 1".into());
        }
        if a.max_connections == 0 {
            return bad("api.max_connections = 0: must be at least 1".into());
        }
        if a.max_add_stream == 0 {
            return bad("api.max_add_stream = 0: must be at least 1".into());
        }
        let d = &self.dataplane;
        if d.workers == 0 || d.workers > 64 {
            return bad(format!(
                "dataplane.workers = {}: must be 1 to 64",
                d.workers
            ));
        }
        if !d.cores.is_empty() && d.cores.len() != d.workers {
            return bad(format!(
                "dataplane.cores lists {} cores for {} workers",
                d.cores.len(),
                d.workers
            ));
        }
        // The machine's CPUs, not the ones offloadd may use (its affinity, a cgroup
        // quota): a core outside those is a warning at start (crate::cpus).
        let ncores = machine_cpus();
        if let Some(c) = d.cores.iter().find(|&&c| c >= ncores) {
            return bad(format!(
                "dataplane.cores: core {c} does not exist (this machine has {ncores})"
            ));
        }
        if d.max_sessions == 0 || d.max_sessions > 100_000_000 {
            return bad(format!(
                "dataplane.max_sessions = {}: must be 1 to 100000000",
                d.max_sessions
            ));
        }
        if d.default_timeout == 0 {
            return bad("dataplane.default_timeout = 0: must be at least 1 second".into());
        }
        if d.realtime_priority > 99 {
            return bad(format!(
                "dataplane.realtime_priority = {}: must be 0 (off) to 99",
                d.realtime_priority
            ));
        }
        if d.idle_spin_us > 1_000_000 {
            return bad(format!(
                "dataplane.idle_spin_us = {}: must be 0 to 1000000 (one second)",
                d.idle_spin_us
            ));
        }
        if d.tick_ms == 0 || d.tick_ms > 10_000 {
            return bad(format!(
                "dataplane.tick_ms = {}: must be 1 to 10000",
                d.tick_ms
            ));
        }
        if d.command_queue == 0 || d.closed_queue == 0 || d.closed_held == 0 {
            return bad(
                "dataplane.command_queue, closed_queue and closed_held must be at least 1".into(),
            );
        }
        if self.ports.is_empty() {
            return bad("no [[port]]: the device needs at least a firewall port".into());
        }
        for (i, p) in self.ports.iter().enumerate() {
            let key = format!("port[{i}] ({:?})", p.name);
            if p.name.is_empty() {
                return bad(format!("port[{i}].name is empty"));
            }
            if self.ports[..i].iter().any(|q| q.name == p.name) {
                return bad(format!("{key}: name used twice"));
            }
            if p.lif == Some(0) {
                return bad(format!("{key}.lif = 0: lifs are 1 to 65535"));
            }
            if let Some(l) = p.lif {
                if self.ports[..i].iter().any(|q| q.lif == Some(l)) {
                    return bad(format!("{key}.lif = {l}: another port carries it"));
                }
            }
            if parse_mac(&p.mac).is_none() {
                return bad(format!(
                    "{key}.mac = {:?}: expected aa:bb:cc:dd:ee:ff",
                    p.mac
                ));
            }
            if let Some(m) = p.next_hop_mac.as_deref().filter(|m| parse_mac(m).is_none()) {
                return bad(format!(
                    "{key}.next_hop_mac = {m:?}: expected aa:bb:cc:dd:ee:ff"
                ));
            }
            check_port_addresses(&key, &p.addresses)?;
            if p.backend == Backend::AfXdp {
                if p.has_af_packet_only_keys() {
                    return bad(format!(
                        "{key}: block_size, block_count, tx_frames, block_timeout_ms, fanout_group and qdisc_bypass belong to backend \"af_packet\""
                    ));
                }
            } else if p.backend != Backend::AfPacket && p.has_af_packet_keys() {
                return bad(format!(
                    "{key}: interface and ring options belong to backend \"af_packet\" or \"af_xdp\""
                ));
            }
            if p.backend != Backend::AfXdp && p.has_af_xdp_keys() {
                return bad(format!(
                    "{key}: xdp_mode, zero_copy, frame_count, fill_size, comp_size, rx_size and tx_size belong to backend \"af_xdp\""
                ));
            }
            match p.backend {
                Backend::AfXdp => {
                    if p.interface.as_deref().is_none_or(str::is_empty) {
                        return bad(format!("{key}.interface: backend \"af_xdp\" needs one"));
                    }
                    if p.input.is_some() || p.output.is_some() {
                        return bad(format!("{key}: input/output belong to backend \"pcap\""));
                    }
                    #[cfg(not(feature = "afxdp"))]
                    return bad(format!(
                        "{key}.backend = \"af_xdp\": offloadd was built without the afxdp feature (cargo build --features afxdp)"
                    ));
                    #[cfg(feature = "afxdp")]
                    if let Err(e) = p.af_xdp_options().check() {
                        return bad(format!("{key}.{e}"));
                    }
                }
                Backend::AfPacket => {
                    if p.interface.as_deref().is_none_or(str::is_empty) {
                        return bad(format!("{key}.interface: backend \"af_packet\" needs one"));
                    }
                    if p.input.is_some() || p.output.is_some() {
                        return bad(format!("{key}: input/output belong to backend \"pcap\""));
                    }
                    if let Err(e) = p.af_packet_options().check() {
                        return bad(format!("{key}.{e}"));
                    }
                }
                Backend::Ring => {
                    if !(2..=1 << 20).contains(&p.ring_size) {
                        return bad(format!(
                            "{key}.ring_size = {}: must be 2 to 1048576",
                            p.ring_size
                        ));
                    }
                    if p.input.is_some() || p.output.is_some() {
                        return bad(format!("{key}: input/output belong to backend \"pcap\""));
                    }
                }
                Backend::Pcap => {
                    if let Some(f) = p.input.as_ref().filter(|f| !f.is_file()) {
                        return bad(format!("{key}.input = {}: no such file", f.display()));
                    }
                }
                Backend::Dpdk => {
                    if !cfg!(feature = "dpdk") {
                        return bad(format!(
                            "{key}.backend = \"dpdk\": offloadd was built without the dpdk feature (cargo build --features dpdk)"
                        ));
                    }
                    if p.device.as_deref().is_none_or(|d| d.trim().is_empty()) {
                        return bad(format!(
                            "{key}.device: backend \"dpdk\" needs a PCI address or a vdev string"
                        ));
                    }
                    if p.input.is_some() || p.output.is_some() {
                        return bad(format!("{key}: input/output belong to backend \"pcap\""));
                    }
                    #[cfg(feature = "dpdk")]
                    if let Err(e) = self.dpdk.port_options(DpdkSteering::Auto).check() {
                        return bad(format!("dpdk.{e}"));
                    }
                }
            }
            if p.backend != Backend::Dpdk && (p.device.is_some() || p.steering.is_some()) {
                return bad(format!(
                    "{key}: device and steering belong to backend \"dpdk\""
                ));
            }
        }
        if self.port_index(&d.firewall_port).is_none() {
            return bad(format!(
                "dataplane.firewall_port = {:?}: no such port",
                d.firewall_port
            ));
        }
        if let Some(c) = d
            .collector_port
            .as_ref()
            .filter(|c| self.port_index(c).is_none())
        {
            return bad(format!("dataplane.collector_port = {c:?}: no such port"));
        }
        for (i, h) in self.next_hops.iter().enumerate() {
            if parse_mac(&h.mac).is_none() {
                return bad(format!(
                    "next_hop[{i}].mac = {:?}: expected aa:bb:cc:dd:ee:ff",
                    h.mac
                ));
            }
            if let Some(p) = h.port.as_ref().filter(|p| self.port_index(p).is_none()) {
                return bad(format!("next_hop[{i}].port = {p:?}: no such port"));
            }
            if self.next_hops[..i].iter().any(|o| o.addr == h.addr) {
                return bad(format!("next_hop[{i}].addr = {}: listed twice", h.addr));
            }
        }
        check_neighbours(&self.neighbours, self.next_hops.len())?;
        let s = &self.simulate;
        if s.enabled {
            if s.packets_per_second == 0 || s.packets_per_second > 10_000_000 {
                return bad(format!(
                    "simulate.packets_per_second = {}: must be 1 to 10000000",
                    s.packets_per_second
                ));
            }
            if s.fin_percent as u32 + s.rst_percent as u32 > 100 {
                return bad("simulate.fin_percent + rst_percent is above 100".into());
            }
            if !(s.min_lifetime_s > 0.0
                && s.max_lifetime_s >= s.min_lifetime_s
                && s.max_lifetime_s < 1e6)
            {
                return bad(
                    "simulate.min_lifetime_s / max_lifetime_s: need 0 < min <= max < 1000000"
                        .into(),
                );
            }
            if s.payload_bytes > 1400 {
                return bad(format!(
                    "simulate.payload_bytes = {}: at most 1400",
                    s.payload_bytes
                ));
            }
            if !self
                .ports
                .iter()
                .any(|p| p.lif.is_some() && p.backend == Backend::Ring)
            {
                return bad("simulate.enabled: the simulator needs ring ports with lifs".into());
            }
        }
        Ok(())
    }
}

/// A port's `addresses`: unicast, at most one of each family.
/// Client certificates need TLS: serving plaintext with `tls.client_ca` set would
/// silently drop the client authentication the config asks for.
/// `host:port` with a port number (the host is resolved when listening).
/// The number of CPUs the machine has (configured, online or not).
fn machine_cpus() -> usize {
    // SAFETY: sysconf only reads a system value.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if n > 0 {
        n as usize
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
}

fn check_plaintext_without_client_ca(
    c: &Config,
    flag: bool,
    in_config: bool,
) -> Result<(), ConfigError> {
    let Some(ca) = &c.tls.client_ca else {
        return Ok(());
    };
    let plaintext = match (flag, in_config) {
        (true, _) => "--plaintext",
        (false, true) => "api.plaintext = true",
        (false, false) => return Ok(()),
    };
    Err(ConfigError(format!(
        "{plaintext} with tls.client_ca = {:?}: client certificates need TLS; drop one of them",
        ca.display().to_string()
    )))
}

fn check_port_addresses(key: &str, addrs: &[IpAddr]) -> Result<(), ConfigError> {
    let bad = |s: String| Err(ConfigError(s));
    for a in addrs {
        if a.is_unspecified() || a.is_multicast() || *a == IpAddr::from([255, 255, 255, 255]) {
            return bad(format!("{key}.addresses: {a} is not a unicast address"));
        }
    }
    let v4 = addrs.iter().filter(|a| a.is_ipv4()).count();
    if v4 > 1 || addrs.len() - v4 > 1 {
        return bad(format!(
            "{key}.addresses: at most one IPv4 and one IPv6 address"
        ));
    }
    Ok(())
}

/// The `[neighbours]` section's ranges.
fn check_neighbours(n: &NeighboursConfig, statics: usize) -> Result<(), ConfigError> {
    let range = |key: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(ConfigError(format!(
                "neighbours.{key} = {v}: must be {lo} to {hi}"
            )))
        }
    };
    let max = dataplane::neighbour::MAX_SLOTS as u64;
    range("capacity", n.capacity as u64, 1, max)?;
    if n.capacity < statics {
        return Err(ConfigError(format!(
            "neighbours.capacity = {}: below the {statics} [[next_hop]] entries",
            n.capacity
        )));
    }
    range("reachable_s", n.reachable_s.into(), 1, 86_400)?;
    range("retrans_ms", n.retrans_ms.into(), 10, 60_000)?;
    range("probes", n.probes.into(), 1, 100)?;
    range("delay_s", n.delay_s.into(), 0, 3_600)?;
    range("retry_s", n.retry_s.into(), 1, 86_400)?;
    range("requests_per_s", n.requests_per_s.into(), 1, 100_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/offloadd"), &Overrides::default())
    }

    #[test]
    fn plaintext_with_a_client_ca_is_refused_naming_both() {
        let ca = "[tls]\nclient_ca = \"ca.crt\"\n";
        let flag = Overrides {
            plaintext: true,
            ..Overrides::default()
        };
        let e = Config::parse(ca, Path::new("/etc/offloadd"), &flag).unwrap_err();
        assert!(e.0.starts_with("--plaintext with tls.client_ca"), "{e:?}");
        let e = parse(&format!("[api]\nplaintext = true\n{ca}")).unwrap_err();
        assert!(
            e.0.starts_with("api.plaintext = true with tls.client_ca"),
            "{e:?}"
        );
        assert!(
            e.0.contains("/etc/offloadd/ca.crt") && !e.0.contains('\n'),
            "{e:?}"
        );
        assert!(parse(ca).is_ok(), "TLS with a client CA");
        assert!(
            parse("[api]\nplaintext = true\n").is_ok(),
            "plaintext alone"
        );
    }

    #[test]
    fn empty_config_is_the_default_ring_device() {
        let c = parse("").unwrap();
        assert_eq!(c.ports.len(), 4);
        assert_eq!(c.api.listen, "localhost:3443");
        assert_eq!(c.tls.cert, Path::new("/etc/offloadd/../certs/server.crt"));
        assert_eq!(c.api.unknown_session, UnknownSession::InBand);
    }

    #[test]
    fn overrides_win() {
        let o = Overrides {
            listen: Some("127.0.0.1:0".into()),
            plaintext: true,
            max_sessions: Some(19),
            workers: Some(2),
            simulate: true,
            metrics_listen: Some(String::new()),
        };
        let c = Config::parse(
            "[dataplane]\nworkers = 1\ncores = [0]\n[metrics]\nlisten = \"127.0.0.1:9100\"\n",
            Path::new("."),
            &o,
        )
        .unwrap();
        assert_eq!(c.dataplane.workers, 2);
        assert!(c.dataplane.cores.is_empty());
        assert_eq!(c.dataplane.max_sessions, 19);
        assert!(c.api.plaintext && c.simulate.enabled);
        assert_eq!(c.metrics.listen, "", "--metrics-listen '' turns it off");
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("[api]\nlisten = \"nowhere\"\n", "api.listen"),
            ("[metrics]\nlisten = \"9464\"\n", "metrics.listen"),
            ("[api]\nunknown_session = \"maybe\"\n", "line 2"),
            ("[api]\nack_window = 0\n", "api.ack_window = 0"),
            ("[dataplane]\nworkers = 0\n", "dataplane.workers"),
            ("[dataplane]\nworkers = 2\ncores = [0]\n", "dataplane.cores"),
            ("[dataplane]\nmax_sessions = 0\n", "dataplane.max_sessions"),
            ("[dataplane]\nidle_spin_us = 2000000\n", "dataplane.idle_spin_us = 2000000"),
            ("[dataplane]\nfirewall_port = \"x\"\n", "dataplane.firewall_port"),
            ("[dataplane]\nbogus = 1\n", "bogus"),
            ("[[port]]\nname = \"a\"\nbackend = \"ring\"\nmac = \"zz\"\n", "mac"),
            ("[[port]]\nname = \"a\"\nbackend = \"tape\"\n", "tape"),
            ("[[port]]\nname = \"firewall\"\nbackend = \"ring\"\nlif = 0\n", "lif = 0"),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"ring\"\n[[next_hop]]\naddr = \"10.0.0.1\"\nmac = \"02:00:00:00:00:01\"\nport = \"nope\"\n",
                "next_hop[0].port",
            ),
            ("[simulate]\nenabled = true\nfin_percent = 90\nrst_percent = 20\n", "simulate.fin_percent"),
            ("[neighbours]\ncapacity = 0\n", "neighbours.capacity = 0"),
            ("[neighbours]\nretrans_ms = 1\n", "neighbours.retrans_ms = 1"),
            ("[neighbours]\nprobes = 0\n", "neighbours.probes = 0"),
            ("[neighbours]\nrequests_per_s = 0\n", "neighbours.requests_per_s"),
            ("[neighbours]\nttl = 3\n", "ttl"),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"ring\"\naddresses = [\"10.0.0.1\", \"10.0.0.2\"]\n",
                "at most one IPv4 and one IPv6",
            ),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"ring\"\naddresses = [\"ff02::1\"]\n",
                "ff02::1 is not a unicast address",
            ),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"ring\"\naddresses = [\"10.0.0.300\"]\n",
                "line 4: invalid IP address",
            ),
            ("[dataplane]\nworkers = \"two\"\n", "line 2"),
            ("[[port]]\nname = \"firewall\"\nbackend = \"af_packet\"\n", "interface"),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"af_packet\"\ninterface = \"x\"\nblock_size = 1000\n",
                "port[0] (\"firewall\").block_size = 1000",
            ),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"ring\"\ninterface = \"x\"\n",
                "belong to backend \"af_packet\"",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().0;
            assert!(e.contains(key), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn dpdk_ports_without_the_feature_are_one_line() {
        let text = "[[port]]\nname = \"firewall\"\nbackend = \"dpdk\"\ndevice = \"net_ring0\"\n";
        let r = parse(text);
        if cfg!(feature = "dpdk") {
            let c = r.unwrap();
            assert_eq!(c.ports[0].device.as_deref(), Some("net_ring0"));
        } else {
            let e = r.unwrap_err().0;
            assert!(e.contains("built without the dpdk feature"), "{e}");
            assert!(!e.contains('\n'));
        }
        let e =
            parse("[[port]]\nname = \"firewall\"\nbackend = \"ring\"\ndevice = \"net_ring0\"\n")
                .unwrap_err()
                .0;
        assert!(e.contains("belong to backend \"dpdk\""), "{e}");
    }

    #[test]
    fn dpdk_capture_paths_are_relative_to_the_config() {
        assert_eq!(
            resolve_device_paths(
                "net_pcap0,rx_pcap=in.pcap,tx_pcap=/tmp/out.pcap,infinite_rx=0",
                Path::new("/etc/offloadd")
            ),
            "net_pcap0,rx_pcap=/etc/offloadd/in.pcap,tx_pcap=/tmp/out.pcap,infinite_rx=0"
        );
        assert_eq!(
            resolve_device_paths("0000:01:00.0", Path::new("/x")),
            "0000:01:00.0"
        );
    }

    #[cfg(feature = "dpdk")]
    #[test]
    fn example_dpdk_config_parses() {
        let c = Config::parse(
            include_str!("../../config/dpdk.toml"),
            Path::new("/etc/offloadd"),
            &Overrides::default(),
        )
        .unwrap();
        assert!(c.ports.iter().all(|p| p.backend == Backend::Dpdk));
        assert!(c.dpdk.eal_args.iter().any(|a| a == "--no-huge"));
    }

    #[test]
    fn af_packet_ports_take_their_options() {
        let c = parse(
            "[[port]]\nname = \"firewall\"\nbackend = \"af_packet\"\ninterface = \"veth0\"\nblock_size = 65536\nblock_count = 4\nfanout_group = 7\nqdisc_bypass = false\n",
        )
        .unwrap();
        let o = c.ports[0].af_packet_options();
        assert_eq!((o.block_size, o.block_count), (65536, 4));
        assert_eq!((o.fanout_group, o.qdisc_bypass), (Some(7), false));
        assert_eq!(o.frame_size, AfPacketOptions::default().frame_size);
        assert_eq!(c.ports[0].interface.as_deref(), Some("veth0"));
    }

    #[test]
    fn af_xdp_keys_belong_to_their_backend() {
        let cases = [
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"af_xdp\"\n",
                "port[0] (\"firewall\").interface: backend \"af_xdp\" needs one",
            ),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"af_xdp\"\ninterface = \"x\"\nblock_size = 65536\n",
                "belong to backend \"af_packet\"",
            ),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"af_packet\"\ninterface = \"x\"\nxdp_mode = \"skb\"\n",
                "belong to backend \"af_xdp\"",
            ),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"ring\"\nfill_size = 64\n",
                "belong to backend \"af_xdp\"",
            ),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"af_xdp\"\ninterface = \"x\"\nzero_copy = \"yes\"\n",
                "line 5",
            ),
            (
                "[[port]]\nname = \"firewall\"\nbackend = \"af_xdp\"\ninterface = \"x\"\nxdp_mode = \"drv\"\n",
                "line 5",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().0;
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[cfg(not(feature = "afxdp"))]
    #[test]
    fn af_xdp_without_the_feature_is_one_clear_line() {
        for text in [
            "[[port]]\nname = \"firewall\"\nbackend = \"af_xdp\"\ninterface = \"x\"\n",
            include_str!("../../config/af_xdp.toml"),
        ] {
            let e = parse(text).unwrap_err().0;
            assert!(e.contains("built without the afxdp feature"), "{e}");
            assert!(e.contains("backend = \"af_xdp\""), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[cfg(feature = "afxdp")]
    #[test]
    fn af_xdp_ports_take_their_options() {
        let c = parse(
            "[[port]]\nname = \"firewall\"\nbackend = \"af_xdp\"\ninterface = \"veth0\"\nxdp_mode = \"skb\"\nzero_copy = false\nframe_count = 1024\nfill_size = 512\ncomp_size = 512\nrx_size = 256\ntx_size = 512\nframe_size = 4096\npool_buffers = 100\n",
        )
        .unwrap();
        let o = c.ports[0].af_xdp_options();
        assert_eq!((o.xdp_mode, o.zero_copy), (XdpMode::Skb, ZeroCopy::Off));
        assert_eq!((o.frame_count, o.frame_size), (1024, 4096));
        assert_eq!(
            (o.fill_size, o.comp_size, o.rx_size, o.tx_size),
            (512, 512, 256, 512)
        );
        assert_eq!(o.pool_buffers, 100);
        for (text, want) in [("true", ZeroCopy::On), ("\"auto\"", ZeroCopy::Auto)] {
            let c = parse(&format!(
                "[[port]]\nname = \"firewall\"\nbackend = \"af_xdp\"\ninterface = \"v\"\nzero_copy = {text}\n"
            ))
            .unwrap();
            assert_eq!(c.ports[0].af_xdp_options().zero_copy, want);
        }
        let d = parse("[[port]]\nname = \"firewall\"\nbackend = \"af_xdp\"\ninterface = \"v\"\n")
            .unwrap();
        assert_eq!(d.ports[0].af_xdp_options(), AfXdpOptions::default());
        for (keys, want) in [
            (
                "frame_count = 100",
                "port[0] (\"firewall\").frame_count = 100",
            ),
            (
                "frame_size = 3000",
                "port[0] (\"firewall\").frame_size = 3000",
            ),
            ("rx_size = 100", "port[0] (\"firewall\").rx_size = 100"),
            ("xdp_mode = \"skb\"\nzero_copy = true", "zero_copy = true"),
        ] {
            let e = parse(&format!(
                "[[port]]\nname = \"firewall\"\nbackend = \"af_xdp\"\ninterface = \"v\"\n{keys}\n"
            ))
            .unwrap_err()
            .0;
            assert!(e.contains(want), "{keys}: {e}");
        }
    }

    #[cfg(feature = "afxdp")]
    #[test]
    fn example_af_xdp_config_parses() {
        let c = parse(include_str!("../../config/af_xdp.toml")).unwrap();
        assert!(c.ports.iter().all(|p| p.backend == Backend::AfXdp));
        assert_eq!(c.ports[0].af_xdp_options(), AfXdpOptions::default());
    }

    #[test]
    fn example_af_packet_config_parses() {
        let c = parse(include_str!("../../config/af_packet.toml")).unwrap();
        assert!(c.ports.iter().all(|p| p.backend == Backend::AfPacket));
        assert_eq!(c.ports[0].af_packet_options().block_size, 262_144);
    }

    #[test]
    fn default_demo_and_bench_configs_parse() {
        let c = parse(include_str!("../../config/offloadd.toml")).unwrap();
        assert_eq!(c.dataplane.max_sessions, 1_000_000);
        assert!(!c.simulate.enabled && !c.api.plaintext);
        let d = parse(include_str!("../../config/demo.toml")).unwrap();
        assert_eq!(d.dataplane.max_sessions, 19);
        assert!(d.simulate.enabled);
        // bench.toml pins its worker to core 1: only where a second core exists.
        if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
            let b = parse(include_str!("../../config/bench.toml")).unwrap();
            assert_eq!(
                (
                    b.dataplane.cores.clone(),
                    b.dataplane.realtime_priority,
                    b.dataplane.idle_spin_us
                ),
                (vec![1], 50, 1000)
            );
        }
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:0a:ff:10:01"), Some([2, 0, 10, 255, 16, 1]));
        assert_eq!(parse_mac("02:00:0a:ff:10"), None);
        assert_eq!(parse_mac("02:00:0a:ff:10:01:02"), None);
        assert_eq!(parse_mac("2:00:0a:ff:10:01"), None);
    }
}
