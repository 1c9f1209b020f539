//! A device on ring ports, as the tests drive it: an outside port (lif 1), an inside
//! port (lif 2), a firewall port and a collector port, with the network side of each
//! held by the test.

#![allow(dead_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dataplane::packet::{PacketBuf, PacketPool};
use dataplane::port::ring::{ring_port, RingPeer};
use dataplane::stats::WorkerCounters;
use dataplane::wire::{self, FrameSpec, PROTO_TCP, PROTO_UDP};
use dataplane::{Action, Engine, EngineConfig, PollMode, PortConfig, SessionSpec};

pub const OUTSIDE: usize = 0;
pub const INSIDE: usize = 1;
pub const FIREWALL: usize = 2;
pub const COLLECTOR: usize = 3;

pub const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
pub const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

pub struct Device {
    pub engine: Engine,
    pub peers: Vec<RingPeer>,
    pub pool: PacketPool,
    /// Frames `inject` has put on the ports' rings since the start.
    pub injected: u64,
}

/// How long `settle` waits for the workers to finish what was injected: far beyond
/// what they need, so that only a device that loses or holds a frame fails it.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

pub struct Setup {
    pub workers: usize,
    pub max_sessions: usize,
    pub closed_queue: usize,
    pub tick: Duration,
    pub default_timeout_s: u32,
    pub next_hops: Vec<dataplane::NextHop>,
    pub inside_next_hop_mac: Option<[u8; 6]>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            workers: 1,
            max_sessions: 1000,
            closed_queue: 1024,
            tick: Duration::from_millis(10),
            default_timeout_s: 30,
            next_hops: Vec::new(),
            inside_next_hop_mac: None,
        }
    }
}

impl Device {
    pub fn start(s: Setup) -> Device {
        let mut peers = Vec::new();
        let mut ports = Vec::new();
        let roles: [(&str, Option<u16>); 4] = [
            ("outside", Some(1)),
            ("inside", Some(2)),
            ("firewall", None),
            ("collector", None),
        ];
        for (i, (name, lif)) in roles.into_iter().enumerate() {
            let (port, peer) = ring_port(name, [2, 0, 0, 0, 1, i as u8], s.workers, 1024);
            peers.push(peer);
            ports.push(PortConfig {
                port: Box::new(port),
                lif,
                next_hop_mac: if i == INSIDE {
                    s.inside_next_hop_mac
                } else {
                    None
                },
            });
        }
        let mut cfg = EngineConfig::new(ports, FIREWALL);
        cfg.collector_port = Some(COLLECTOR);
        cfg.workers = s.workers;
        cfg.max_sessions = s.max_sessions;
        cfg.closed_queue = s.closed_queue;
        cfg.tick = s.tick;
        cfg.default_timeout_s = s.default_timeout_s;
        cfg.next_hops = s.next_hops;
        cfg.poll = PollMode::adaptive();
        let engine = Engine::start(cfg).expect("engine starts");
        Device {
            engine,
            peers,
            pool: PacketPool::new(4096, 2048).unwrap(),
            injected: 0,
        }
    }

    /// Sends one frame into port `port` (steered to the owning worker).
    pub fn inject(&mut self, port: usize, frame: &[u8]) {
        let pkt = self.pool.alloc_from(frame).expect("test pool has room");
        self.peers[port].inject(pkt).expect("ring has room");
        self.injected += 1;
    }

    /// Waits until the workers have finished every injected frame, then collects
    /// what each port sent, by port. Panics if they have not within
    /// `SETTLE_DEADLINE`.
    pub fn settle(&mut self) -> Vec<Vec<Vec<u8>>> {
        let done = wait_until(SETTLE_DEADLINE, || self.all_finished());
        assert!(
            done,
            "the workers did not finish the {} injected frames within {SETTLE_DEADLINE:?}: {:?}",
            self.injected,
            self.engine.report().total
        );
        let mut out: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.peers.len()];
        for (i, peer) in self.peers.iter_mut().enumerate() {
            let mut got: Vec<PacketBuf> = Vec::new();
            peer.collect(&mut got);
            out[i].extend(got.iter().map(|p| p.data().to_vec()));
        }
        out
    }

    /// Whether every injected frame was received and finished: then everything the
    /// frames caused is on the ports' tx rings.
    fn all_finished(&self) -> bool {
        let t = self.engine.report().total;
        t.rx == self.injected && finished(&t) == t.rx
    }
}

/// Received frames the workers are done with: forwarded, dropped, or handed to the
/// firewall. Equal to `rx` in a report, everything they caused has been transmitted
/// (a worker answers between loop iterations, after transmitting).
pub fn finished(t: &WorkerCounters) -> u64 {
    t.hits + t.misses + t.not_flow + t.malformed + t.rx_no_lif
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

pub fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn udp(id: u64, src: &str, sport: u16, dst: &str, dport: u16, action: Action) -> SessionSpec {
    SessionSpec::new(id, 1, 2, PROTO_UDP, v4(src), sport, v4(dst), dport, action)
}

pub fn tcp(id: u64, src: &str, sport: u16, dst: &str, dport: u16, action: Action) -> SessionSpec {
    SessionSpec::new(id, 1, 2, PROTO_TCP, v4(src), sport, v4(dst), dport, action)
}

/// A frame of `spec`'s session: `reverse` = from its destination toward its source.
pub fn frame_of(spec: &SessionSpec, reverse: bool, flags: u8, payload: usize) -> Vec<u8> {
    frame_vlan(spec, reverse, flags, payload, 0)
}

pub fn frame_vlan(
    spec: &SessionSpec,
    reverse: bool,
    flags: u8,
    payload: usize,
    vlan: u16,
) -> Vec<u8> {
    let (src, dst, sport, dport) = if reverse {
        (spec.dst, spec.src, spec.dport, spec.sport)
    } else {
        (spec.src, spec.dst, spec.sport, spec.dport)
    };
    let fs = FrameSpec {
        src_mac: if reverse { MAC_B } else { MAC_A },
        dst_mac: if reverse { MAC_A } else { MAC_B },
        vlan,
        v6: spec.v6,
        proto: spec.proto,
        src,
        dst,
        sport,
        dport,
        tcp_flags: flags,
        payload_len: payload,
    };
    let mut buf = vec![0u8; 2048];
    let n = wire::build(&fs, &mut buf).expect("frame fits");
    buf.truncate(n);
    buf
}

/// Writes `frames` as an Ethernet pcap capture, a millisecond apart.
pub fn write_capture(path: &std::path::Path, frames: &[Vec<u8>]) {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let file = std::fs::File::create(path).unwrap();
    let header = PcapHeader {
        datalink: pcap_file::DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_millis(i as u64);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .unwrap();
    }
}

/// The frames of a pcap capture, in order.
pub fn read_capture(path: &std::path::Path) -> Vec<Vec<u8>> {
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}
