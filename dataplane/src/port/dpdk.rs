//! The `dpdk` port (cargo feature `dpdk`): real NICs and DPDK virtual devices through
//! the system DPDK 22.11, by way of offloadd's own bindings (`dpdk-sys`).
//!
//! - **EAL**: initialised once per process by [`Eal::init`] with the configured
//!   arguments (`--no-huge`, `--in-memory`, `-l`, `-m`, log levels...). DPDK cannot be
//!   initialised twice: a second `init` with the same arguments returns the same EAL,
//!   one with other arguments is an error naming both. The calling thread's CPU
//!   affinity is restored afterwards (`rte_eal_init` pins its caller to the main
//!   lcore), and when no configured port is a PCI device and the arguments say
//!   nothing about PCI, `--no-pci` is added so the EAL does not scan the host's NICs.
//!   A failed init is reported with DPDK's error string and is final for the process.
//! - **Devices**: a port is one DPDK device, named by PCI address (`0000:01:00.0`) or
//!   by vdev string (`net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`, `net_ring0`,
//!   `net_tap0,iface=t0`, `net_af_packet0,iface=veth0,qpairs=2`,
//!   `net_af_xdp0,iface=eth1`). Devices are hot-plugged with `rte_dev_probe` when the
//!   port is created and removed when it is dropped, so one process can open, close
//!   and open again different devices under one EAL (tests do). A PCI device the EAL
//!   already probed at init is simply used.
//! - **Queues**: one rx and one tx queue per worker; worker k owns queue pair k. A
//!   device with fewer queues than workers is an error that says how to give it more.
//! - **Steering** ([`Steer`]): where the device supports RSS (NICs: a hash key and a
//!   redirection table), it is programmed with the symmetric key of `steer.rs` (0x6d5a
//!   repeated, to the device's key length) over IPv4/IPv6 TCP/UDP, and its
//!   redirection table is filled from `Steering`'s, so the NIC puts each flow on the
//!   queue of the worker the control plane installed it on. Most vdevs have no RSS
//!   (`net_pcap`: one queue per `rx_pcap`; `net_af_packet`: kernel fanout hash;
//!   `net_tap`: the kernel's tun queue hash; `net_ring`: per-queue rings): with one
//!   worker nothing needs steering; with several, the queues are wrapped in the
//!   software hand-off of `handoff.rs` (the queue that receives a frame passes it to
//!   its owner over an SPSC ring), unless `steering = "device"` says the device's own
//!   split is already by owner (a `net_pcap` capture per queue prepared that way).
//! - **Buffers: copied, not shared.** The workers' hot path works on `PacketBuf`s from
//!   a `PacketPool`; DPDK's mbufs come from an `rte_mempool` that the PMD fills and
//!   drains itself. `rx_burst` receives up to 32 mbufs, copies each frame into a pooled
//!   `PacketBuf` and frees the mbufs in bulk; `tx_burst` allocates mbufs in bulk from
//!   the port's mempool, copies each frame in and hands them to the PMD (what the PMD
//!   does not take is freed and its `PacketBuf`s stay in the burst, as the `PortQueue`
//!   contract wants). Two copies of a short frame are cheap next to a table lookup
//!   (they touch the header lines the parse touches anyway), they keep one buffer type
//!   through the pipeline and every backend, and they keep DPDK's memory rules (IOVA,
//!   hugepages, per-lcore caches) inside this file. Zero copy (a `PacketBuf` that
//!   wraps an mbuf) is the obvious next step if the copy shows in a profile.
//!   Multi-segment frames and frames longer than a `PacketBuf` are dropped and
//!   counted (`rx_too_long`); scatter is not enabled.
//! - **Threads**: worker threads are not EAL lcores. Each registers itself with
//!   `rte_thread_register` on its first burst, which gives it an lcore id and with it
//!   the mempools' per-lcore caches, and unregisters when it ends. If registration
//!   fails (all lcore ids taken) the queue still works, without the caches.
//! - **Waking**: a DPDK device cannot wake a sleeping worker; an adaptive worker
//!   sleeps at most 1 ms, a busy one never.
//!
//! Errors are `PortError`s that carry DPDK's own message (`rte_strerror`); nothing here
//! panics on a DPDK failure.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_utils::CachePadded;
use dpdk_sys as sys;

use super::{handoff, Port, PortError, PortQueue};
use crate::packet::{Burst, PacketPool, BURST};
use crate::steer::{Steering, RETA_SIZE, RSS_KEY};

/// Name used in errors about the EAL itself (not one port).
const EAL: &str = "dpdk";

/// How frames reach the worker that owns their flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Steer {
    /// RSS where the device has it; otherwise nothing with one worker, and the
    /// software hand-off with several.
    #[default]
    Auto,
    /// Program RSS with the symmetric key and our redirection table; refuse a device
    /// without RSS.
    Rss,
    /// Take the device's queues as they come: queue k is worker k's (a `net_pcap` with
    /// one capture per queue, split by flow owner; a NIC programmed by other means).
    Device,
    /// Software hand-off between the queues (`port/handoff.rs`).
    Handoff,
}

impl std::str::FromStr for Steer {
    type Err = String;
    fn from_str(s: &str) -> Result<Steer, String> {
        match s {
            "auto" => Ok(Steer::Auto),
            "rss" => Ok(Steer::Rss),
            "device" => Ok(Steer::Device),
            "handoff" => Ok(Steer::Handoff),
            _ => Err(format!(
                "{s:?}: expected \"auto\", \"rss\", \"device\" or \"handoff\""
            )),
        }
    }
}

/// Sizes of one DPDK port.
#[derive(Clone, Debug)]
pub struct DpdkOptions {
    /// mbufs in the port's mempool (rx descriptors of every queue, tx in flight, the
    /// per-lcore caches).
    pub mbufs: u32,
    /// Per-lcore cache of the mempool (0: none).
    pub mbuf_cache: u32,
    /// Data room of an mbuf after DPDK's headroom: the longest frame received.
    pub mbuf_data_room: u16,
    /// Descriptors per rx and per tx queue (the device may round them).
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// `PacketBuf`s received frames are copied into (all queues of the port).
    pub pool_buffers: u32,
    pub steering: Steer,
    /// Receive frames for any MAC (the device is a bump in the wire).
    pub promiscuous: bool,
    /// Slots of each queue-to-queue ring of the software hand-off.
    pub handoff_ring: usize,
}

impl Default for DpdkOptions {
    fn default() -> Self {
        DpdkOptions {
            mbufs: 8191,
            mbuf_cache: 256,
            mbuf_data_room: 2048,
            rx_desc: 1024,
            tx_desc: 1024,
            pool_buffers: 8192,
            steering: Steer::Auto,
            promiscuous: true,
            handoff_ring: 1024,
        }
    }
}

impl DpdkOptions {
    /// Checks the sizes; the error names the key.
    pub fn check(&self) -> Result<(), String> {
        super::check_range("mbufs", self.mbufs.into(), 64, 1 << 24)?;
        if self.mbuf_cache > 512 || self.mbuf_cache as u64 * 3 > self.mbufs as u64 * 2 {
            return Err(format!(
                "mbuf_cache = {}: at most 512 and at most 2/3 of mbufs",
                self.mbuf_cache
            ));
        }
        super::check_range("mbuf_data_room", self.mbuf_data_room.into(), 64, 16_384)?;
        super::check_range("rx_desc", self.rx_desc.into(), 32, 16_384)?;
        super::check_range("tx_desc", self.tx_desc.into(), 32, 16_384)?;
        super::check_range("pool_buffers", self.pool_buffers.into(), 64, 1 << 24)?;
        super::check_handoff_ring(self.handoff_ring)
    }
}

/// True for a PCI address (`0000:01:00.0` or `01:00.0`) rather than a vdev string.
pub fn is_pci_address(device: &str) -> bool {
    let name = device.split(',').next().unwrap_or("");
    let parts: Vec<&str> = name.split(':').collect();
    let (bus_dev, hex_ok) = match parts.as_slice() {
        [domain, bus, devfn] => (
            (*bus, *devfn),
            domain.len() == 4 && domain.chars().all(|c| c.is_ascii_hexdigit()),
        ),
        [bus, devfn] => ((*bus, *devfn), true),
        _ => return false,
    };
    let (bus, devfn) = bus_dev;
    let Some((dev, func)) = devfn.split_once('.') else {
        return false;
    };
    hex_ok
        && bus.len() == 2
        && dev.len() == 2
        && func.len() == 1
        && [bus, dev, func]
            .iter()
            .all(|s| s.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The device name DPDK knows a device string by: the part before the first comma,
/// with the PCI domain added when it is missing.
pub fn device_name(device: &str) -> String {
    let name = device.split(',').next().unwrap_or("").trim();
    if is_pci_address(name) && name.matches(':').count() == 1 {
        format!("0000:{name}")
    } else {
        name.to_string()
    }
}

/// What the process's EAL was started with, or why it failed.
static EAL_STATE: Mutex<Option<Result<Vec<String>, String>>> = Mutex::new(None);

/// Serialises hot-plug, configure and close (DPDK's control path is not meant to be
/// called from several threads at once).
static CONTROL: Mutex<()> = Mutex::new(());

fn control_lock() -> MutexGuard<'static, ()> {
    CONTROL.lock().unwrap_or_else(|e| e.into_inner())
}

/// DPDK's message for a negative return value or for `rte_errno`.
fn dpdk_error(ret: i32) -> String {
    let e = if ret < 0 { -ret } else { sys::errno() };
    format!("{} (error {e})", sys::strerror(e))
}

/// Proof that the process's EAL is up. Ports are created with it.
#[derive(Clone, Copy, Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// The EAL arguments for `args` (from the config) and the devices the ports will
    /// use: `--no-pci` is added when no device is a PCI address and `args` do not
    /// mention PCI themselves.
    pub fn arguments(args: &[String], devices: &[&str]) -> Vec<String> {
        let mut argv = args.to_vec();
        let mentions_pci = args.iter().any(|a| {
            matches!(
                a.split('=').next().unwrap_or(""),
                "-a" | "--allow" | "-b" | "--block" | "--no-pci"
            ) || a.starts_with("-a") && a.len() > 2 && is_pci_address(&a[2..])
        });
        if !mentions_pci && !devices.iter().any(|d| is_pci_address(d)) {
            argv.push("--no-pci".into());
        }
        argv
    }

    /// Initialises the EAL with `args` (without the program name), once per process.
    pub fn init(args: &[String]) -> Result<Eal, PortError> {
        let err = |s: String| PortError::new(EAL, s);
        let mut state = EAL_STATE.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            Some(Ok(used)) if used == args => return Ok(Eal { _private: () }),
            Some(Ok(used)) => {
                return Err(err(format!(
                    "the EAL is already initialised in this process with {used:?} and cannot be \
                     initialised again with {args:?}"
                )))
            }
            Some(Err(e)) => return Err(err(format!("EAL initialisation failed earlier: {e}"))),
            None => {}
        }
        let mut c_args = Vec::with_capacity(args.len() + 1);
        for a in std::iter::once("offloadd").chain(args.iter().map(String::as_str)) {
            c_args.push(
                CString::new(a).map_err(|_| err(format!("EAL argument {a:?} contains NUL")))?,
            );
        }
        // rte_eal_init may keep pointers into argv (it permutes it): leak it.
        let argv: &'static mut [*mut c_char] = Vec::leak(
            c_args
                .into_iter()
                .map(CString::into_raw)
                .chain(std::iter::once(ptr::null_mut()))
                .collect(),
        );
        let affinity = current_affinity();
        // SAFETY: argv is a NULL-terminated array of C strings that lives forever; the
        // EAL state mutex is held, so this runs once.
        let ret = unsafe { sys::rte_eal_init((argv.len() - 1) as i32, argv.as_mut_ptr()) };
        let errno = sys::errno();
        if let Some(set) = affinity {
            restore_affinity(&set);
        }
        if ret < 0 {
            let e = format!(
                "rte_eal_init({}) failed: {} (error {errno})",
                args.join(" "),
                sys::strerror(errno)
            );
            *state = Some(Err(e.clone()));
            return Err(err(e));
        }
        *state = Some(Ok(args.to_vec()));
        Ok(Eal { _private: () })
    }
}

fn current_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is valid; the call fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    }
}

fn restore_affinity(set: &libc::cpu_set_t) {
    // SAFETY: a valid set obtained from sched_getaffinity.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
    }
}

/// Counters of one queue, written by its worker once per burst.
#[derive(Default)]
struct QueueCounters {
    rx_too_long: AtomicU64,
    rx_no_buffer: AtomicU64,
    tx_no_mbuf: AtomicU64,
}

/// The device and its mempool; stopped, closed and unplugged when the port and all its
/// queues are gone.
struct Device {
    /// DPDK's name of the device, and its bus ("vdev" or "pci").
    dev_name: String,
    bus: &'static str,
    /// Set by `rte_dev_probe` here (unplugged on drop), not by the EAL at init.
    plugged_here: bool,
    port_id: u16,
    mempool: *mut sys::rte_mempool,
    started: bool,
    counters: Box<[CachePadded<QueueCounters>]>,
}

/// Lets a held port's receive start (`DpdkPort::hold`). Cloning shares it.
#[derive(Clone)]
pub struct DpdkRelease {
    held: Arc<AtomicBool>,
}

impl DpdkRelease {
    pub fn release(&self) {
        self.held.store(false, Ordering::Release);
    }
}

// SAFETY: the mempool pointer is only used for alloc/free, which DPDK's mempools allow
// from any thread, and for the final free in drop, when no queue is left.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Drop for Device {
    fn drop(&mut self) {
        let _g = control_lock();
        // SAFETY: no queue of this port is left (they hold this Device), so nothing
        // polls the device; the mempool is freed after the device is closed.
        unsafe {
            if self.started {
                sys::rte_eth_dev_stop(self.port_id);
            }
            sys::rte_eth_dev_close(self.port_id);
            if self.plugged_here {
                if let (Ok(bus), Ok(dev)) =
                    (CString::new(self.bus), CString::new(self.dev_name.as_str()))
                {
                    sys::rte_eal_hotplug_remove(bus.as_ptr(), dev.as_ptr());
                }
            }
            if !self.mempool.is_null() {
                sys::rte_mempool_free(self.mempool);
            }
        }
    }
}

/// A DPDK device as a port. See the module doc.
pub struct DpdkPort {
    name: String,
    mac: [u8; 6],
    device: String,
    options: DpdkOptions,
    port_id: u16,
    /// Until `open`: the device, plugged but not configured.
    pending: Option<Device>,
    opened: Option<Arc<Device>>,
    /// What `open` decided about steering, for logs and tests.
    rss: bool,
    info: DeviceInfo,
    held: Arc<AtomicBool>,
    handoff: handoff::PortHandoff,
}

/// What the device says about itself.
#[derive(Clone, Debug, Default)]
pub struct DeviceInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rss_offloads: u64,
    pub reta_size: u16,
    pub hash_key_size: u8,
    pub mac: [u8; 6],
}

impl DeviceInfo {
    /// True when the device can spread flows by a programmable Toeplitz hash.
    pub fn has_rss(&self) -> bool {
        self.rss_offloads & wanted_rss_hf() != 0 && self.reta_size > 0
    }
}

fn wanted_rss_hf() -> u64 {
    // SAFETY: constants defined in the shim.
    unsafe { sys::OFFLOADD_RSS_IP | sys::OFFLOADD_RSS_TCP | sys::OFFLOADD_RSS_UDP }
}

/// The device's mempool counter, so names stay unique across ports opened again.
static POOLS: AtomicU64 = AtomicU64::new(0);

impl DpdkPort {
    /// Plugs `device` (a vdev string or a PCI address) into the EAL and reads what it
    /// offers. The port's queues are set up by `open`.
    pub fn new(
        _eal: &Eal,
        name: &str,
        device: &str,
        mac: [u8; 6],
        options: DpdkOptions,
    ) -> Result<DpdkPort, PortError> {
        let err = |s: String| PortError::new(name, s);
        options.check().map_err(&err)?;
        let dev_name = device_name(device);
        if dev_name.is_empty() {
            return Err(err(format!("device {device:?}: no device name")));
        }
        let bus = if is_pci_address(&dev_name) {
            "pci"
        } else {
            "vdev"
        };
        let c_dev_name = CString::new(dev_name.as_str())
            .map_err(|_| err(format!("device {device:?} contains NUL")))?;
        // A PCI address as the user wrote it may lack the domain; DPDK wants it.
        let devargs = if bus == "pci" {
            match device.split_once(',') {
                Some((_, rest)) => format!("{dev_name},{rest}"),
                None => dev_name.clone(),
            }
        } else {
            device.to_string()
        };
        let c_devargs =
            CString::new(devargs).map_err(|_| err(format!("device {device:?} contains NUL")))?;

        let _g = control_lock();
        let mut port_id = 0u16;
        // SAFETY: valid C strings and an out pointer; the control lock is held.
        let known =
            unsafe { sys::rte_eth_dev_get_port_by_name(c_dev_name.as_ptr(), &mut port_id) } == 0;
        let mut plugged_here = false;
        if !known {
            // SAFETY: as above.
            let ret = unsafe { sys::rte_dev_probe(c_devargs.as_ptr()) };
            if ret < 0 {
                return Err(err(format!(
                    "cannot attach DPDK device {device:?}: {}",
                    dpdk_error(ret)
                )));
            }
            plugged_here = true;
            // SAFETY: as above.
            if unsafe { sys::rte_eth_dev_get_port_by_name(c_dev_name.as_ptr(), &mut port_id) } != 0
            {
                // Attached, but not an ethdev (or named differently): take it out again.
                // SAFETY: valid C strings.
                unsafe {
                    let b = CString::new(bus).expect("no NUL");
                    sys::rte_eal_hotplug_remove(b.as_ptr(), c_dev_name.as_ptr());
                }
                return Err(err(format!(
                    "DPDK device {device:?} attached but no ethernet port is named {dev_name:?}"
                )));
            }
        } else if bus == "vdev" {
            return Err(err(format!(
                "DPDK device {dev_name:?} is already in use in this process"
            )));
        }
        let device_guard = Device {
            dev_name: dev_name.clone(),
            bus,
            plugged_here,
            port_id,
            mempool: ptr::null_mut(),
            started: false,
            counters: Box::new([]),
        };
        let info = device_info(port_id).map_err(&err)?;
        Ok(DpdkPort {
            name: name.to_string(),
            mac,
            device: device.to_string(),
            options,
            port_id,
            pending: Some(device_guard),
            opened: None,
            rss: false,
            info,
            held: Arc::new(AtomicBool::new(false)),
            handoff: handoff::PortHandoff::default(),
        })
    }

    /// Holds the receive back (the device keeps its frames; a `net_pcap` capture is not
    /// read) until the returned handle's `release`, for example until the sessions the
    /// traffic belongs to are installed.
    pub fn hold(&self) -> DpdkRelease {
        self.held.store(true, Ordering::Release);
        DpdkRelease {
            held: self.held.clone(),
        }
    }

    /// What the device offers (queues, RSS).
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// DPDK's port id.
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// True once `open` programmed RSS.
    pub fn rss_enabled(&self) -> bool {
        self.rss
    }

    /// True once `open` wrapped the queues in the software hand-off.
    pub fn handoff_enabled(&self) -> bool {
        self.handoff.enabled()
    }

    /// The backend's counters: the device's (`rte_eth_stats`), this port's copies and
    /// drops, and the hand-off's, by name.
    pub fn backend_counters(&self) -> Vec<(&'static str, u64)> {
        let mut v = Vec::new();
        let mut st = sys::rte_eth_stats::default();
        // SAFETY: valid port id and out pointer.
        if unsafe { sys::rte_eth_stats_get(self.port_id, &mut st) } == 0 {
            v.extend([
                ("dpdk_ipackets", st.ipackets),
                ("dpdk_opackets", st.opackets),
                ("dpdk_imissed", st.imissed),
                ("dpdk_ierrors", st.ierrors),
                ("dpdk_oerrors", st.oerrors),
                ("dpdk_rx_nombuf", st.rx_nombuf),
            ]);
        }
        if let Some(d) = &self.opened {
            let sum = |f: fn(&QueueCounters) -> &AtomicU64| {
                d.counters
                    .iter()
                    .map(|c| f(c).load(Ordering::Relaxed))
                    .sum::<u64>()
            };
            v.push(("rx_too_long", sum(|c| &c.rx_too_long)));
            v.push(("rx_no_buffer", sum(|c| &c.rx_no_buffer)));
            v.push(("tx_no_mbuf", sum(|c| &c.tx_no_mbuf)));
        }
        if self.handoff.enabled() {
            let (handed, dropped) = self.handoff.totals();
            v.push(("handoffs", handed));
            v.push(("handoff_drops", dropped));
        }
        v
    }

    /// Configures and starts the device with `n` queue pairs; true when its queues
    /// need the software hand-off.
    fn configure(&mut self, dev: &mut Device, n: usize) -> Result<bool, String> {
        let info = &self.info;
        let o = &self.options;
        if (info.max_rx_queues as usize) < n || (info.max_tx_queues as usize) < n {
            return Err(format!(
                "device {:?} ({}) has {} rx and {} tx queues; {n} workers need {n} of each \
                 (net_pcap: one rx_pcap and tx_pcap per worker; net_af_packet: qpairs={n}; \
                 or run fewer workers)",
                self.device, info.driver, info.max_rx_queues, info.max_tx_queues
            ));
        }
        // (rss, handoff)
        let (rss, handoff) = match (o.steering, info.has_rss()) {
            (Steer::Rss, false) => {
                return Err(format!(
                    "steering = \"rss\": device {:?} ({}) has no RSS",
                    self.device, info.driver
                ))
            }
            (Steer::Rss | Steer::Auto, true) if n > 1 => (true, false),
            (Steer::Handoff, _) | (Steer::Auto, false) if n > 1 => (false, true),
            _ => (false, false),
        };
        let mut conf = sys::rte_eth_conf::default();
        let key_len = match info.hash_key_size {
            0 => RSS_KEY.len(),
            k => k as usize,
        };
        // 0x6d5a repeated to the device's key length: still symmetric.
        let mut key: Vec<u8> = (0..key_len)
            .map(|i| if i % 2 == 0 { 0x6d } else { 0x5a })
            .collect();
        if rss {
            // SAFETY: shim constants.
            conf.rxmode.mq_mode = unsafe { sys::OFFLOADD_MQ_RX_RSS };
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = key_len as u8;
            conf.rx_adv_conf.rss_conf.rss_hf = wanted_rss_hf() & info.rss_offloads;
        }
        let pid = self.port_id;
        // SAFETY: valid port id and config; `key` outlives the call.
        let ret = unsafe { sys::rte_eth_dev_configure(pid, n as u16, n as u16, &conf) };
        if ret < 0 {
            return Err(format!("rte_eth_dev_configure: {}", dpdk_error(ret)));
        }
        let (mut rx_desc, mut tx_desc) = (o.rx_desc, o.tx_desc);
        // SAFETY: valid port id and out pointers.
        let ret = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(pid, &mut rx_desc, &mut tx_desc) };
        if ret < 0 {
            return Err(format!(
                "rte_eth_dev_adjust_nb_rx_tx_desc: {}",
                dpdk_error(ret)
            ));
        }
        let cache = o.mbuf_cache.min(o.mbufs / 4);
        let needed = n as u64 * (rx_desc as u64 + tx_desc as u64 + cache as u64) + BURST as u64;
        if (o.mbufs as u64) < needed {
            return Err(format!(
                "mbufs = {}: {n} queues of {rx_desc} rx and {tx_desc} tx descriptors (and the \
                 caches) need at least {needed}",
                o.mbufs
            ));
        }
        // SAFETY: plain query.
        let socket = unsafe { sys::rte_eth_dev_socket_id(pid) };
        let socket = if socket < 0 { -1 } else { socket }; // SOCKET_ID_ANY
        let pool_name = format!("offl{}_{}", pid, POOLS.fetch_add(1, Ordering::Relaxed));
        let c_pool = CString::new(pool_name).expect("no NUL");
        // SAFETY: valid name; sizes checked.
        let mp = unsafe {
            sys::rte_pktmbuf_pool_create(
                c_pool.as_ptr(),
                o.mbufs,
                cache,
                0,
                o.mbuf_data_room + sys::OFFLOADD_PKTMBUF_HEADROOM,
                socket,
            )
        };
        if mp.is_null() {
            return Err(format!(
                "cannot create a mempool of {} mbufs of {} bytes: {} (with --no-huge, raise the \
                 EAL's -m)",
                o.mbufs,
                o.mbuf_data_room,
                dpdk_error(0)
            ));
        }
        dev.mempool = mp;
        for q in 0..n as u16 {
            // SAFETY: valid port, queue and mempool; default queue configs (NULL).
            let ret = unsafe {
                sys::rte_eth_rx_queue_setup(pid, q, rx_desc, socket as u32, ptr::null(), mp)
            };
            if ret < 0 {
                return Err(format!("rx queue {q}: {}", dpdk_error(ret)));
            }
            // SAFETY: as above.
            let ret =
                unsafe { sys::rte_eth_tx_queue_setup(pid, q, tx_desc, socket as u32, ptr::null()) };
            if ret < 0 {
                return Err(format!("tx queue {q}: {}", dpdk_error(ret)));
            }
        }
        // SAFETY: configured port.
        let ret = unsafe { sys::rte_eth_dev_start(pid) };
        if ret < 0 {
            return Err(format!("rte_eth_dev_start: {}", dpdk_error(ret)));
        }
        dev.started = true;
        if o.promiscuous {
            // Not every vdev has it (net_pcap, net_ring): not an error.
            // SAFETY: started port.
            unsafe { sys::rte_eth_promiscuous_enable(pid) };
        }
        if rss {
            program_reta(pid, info.reta_size, n)?;
        }
        self.rss = rss;
        Ok(handoff)
    }
}

/// The device's redirection table that agrees with `Steering`: the device sends hash h
/// to table[h % reta_size], offloadd to entries[h % 128]. That is the same queue for
/// every h when the device's table is a multiple of 128 long (entry i = entries[i %
/// 128]), or divides 128 and offloadd's table repeats with its period.
// `%` rather than `is_multiple_of`: the workspace's rust-version is 1.80.
#[allow(clippy::manual_is_multiple_of)]
pub fn reta_table(reta_size: u16, workers: usize) -> Result<Vec<u16>, String> {
    let ours = Steering::new(workers).reta;
    let ours = ours.entries();
    let size = reta_size as usize;
    if size == 0 {
        return Err("the device's RSS redirection table is empty".into());
    }
    if size % RETA_SIZE == 0 {
        Ok((0..size).map(|i| ours[i % RETA_SIZE]).collect())
    } else if RETA_SIZE % size == 0 && (0..RETA_SIZE).all(|i| ours[i] == ours[i % size]) {
        Ok(ours[..size].to_vec())
    } else {
        Err(format!(
            "the device's RSS redirection table has {size} entries, which cannot agree with \
             offloadd's {RETA_SIZE} for {workers} workers"
        ))
    }
}

/// Programs the device's redirection table (`reta_table`).
fn program_reta(port: u16, reta_size: u16, workers: usize) -> Result<(), String> {
    let table = reta_table(reta_size, workers)?;
    let size = table.len();
    // SAFETY: shim constant.
    let group = unsafe { sys::OFFLOADD_RETA_GROUP_SIZE } as usize;
    let mut conf: Vec<sys::rte_eth_rss_reta_entry64> = (0..size.div_ceil(group))
        .map(|_| sys::rte_eth_rss_reta_entry64::default())
        .collect();
    for (i, &q) in table.iter().enumerate() {
        let e = &mut conf[i / group];
        e.mask |= 1u64 << (i % group);
        e.reta[i % group] = q;
    }
    // SAFETY: `conf` covers `size` entries.
    let ret = unsafe { sys::rte_eth_dev_rss_reta_update(port, conf.as_mut_ptr(), reta_size) };
    if ret < 0 {
        return Err(format!(
            "rte_eth_dev_rss_reta_update ({size} entries): {}",
            dpdk_error(ret)
        ));
    }
    Ok(())
}

fn device_info(port: u16) -> Result<DeviceInfo, String> {
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: valid port and out pointer.
    let ret = unsafe { sys::rte_eth_dev_info_get(port, &mut info) };
    if ret < 0 {
        return Err(format!("rte_eth_dev_info_get: {}", dpdk_error(ret)));
    }
    let driver = if info.driver_name.is_null() {
        String::new()
    } else {
        // SAFETY: a static C string of the driver.
        unsafe { CStr::from_ptr(info.driver_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut addr = sys::rte_ether_addr::default();
    // SAFETY: valid port and out pointer.
    unsafe { sys::rte_eth_macaddr_get(port, &mut addr) };
    Ok(DeviceInfo {
        driver,
        max_rx_queues: info.max_rx_queues,
        max_tx_queues: info.max_tx_queues,
        rss_offloads: info.flow_type_rss_offloads,
        reta_size: info.reta_size,
        hash_key_size: info.hash_key_size,
        mac: addr.addr_bytes,
    })
}

impl Port for DpdkPort {
    fn name(&self) -> &str {
        &self.name
    }

    /// NICs and the virtual devices on interfaces (net_tap, net_af_packet) resolve;
    /// captures and in-process rings have nobody to answer.
    fn resolves_neighbours(&self) -> bool {
        let name = device_name(&self.device);
        !["net_pcap", "net_ring", "net_null"]
            .iter()
            .any(|v| name.starts_with(v))
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn open(&mut self, queues: usize) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
        let name = self.name.clone();
        let err = |s: String| PortError::new(&name, s);
        if queues == 0 {
            return Err(err("a port needs at least one queue".into()));
        }
        let Some(mut dev) = self.pending.take() else {
            return Err(err("dpdk port is already open".into()));
        };
        dev.counters = (0..queues)
            .map(|_| CachePadded::new(QueueCounters::default()))
            .collect();
        let handoff;
        {
            let _g = control_lock();
            // On error `dev` is dropped after the lock is released: closed and unplugged.
            match self.configure(&mut dev, queues) {
                Ok(h) => handoff = h,
                Err(e) => {
                    drop(_g);
                    drop(dev);
                    return Err(err(e));
                }
            }
        }
        let pool = PacketPool::new(
            self.options.pool_buffers,
            self.options.mbuf_data_room as usize,
        )
        .map_err(|e| err(format!("cannot reserve packet buffers: {e}")))?;
        let dev = Arc::new(dev);
        self.opened = Some(dev.clone());
        let queues: Vec<Box<dyn PortQueue>> = (0..queues)
            .map(|q| {
                Box::new(DpdkQueue {
                    port: self.port_id,
                    queue: q as u16,
                    mempool: dev.mempool,
                    pool: pool.clone(),
                    frame_capacity: pool.frame_capacity(),
                    registered: false,
                    index: q,
                    held: self.held.clone(),
                    dev: dev.clone(),
                    mbufs: [ptr::null_mut(); BURST],
                }) as Box<dyn PortQueue>
            })
            .collect();
        if !handoff {
            return Ok(queues);
        }
        Ok(self.handoff.wrap(queues, self.options.handoff_ring))
    }

    fn set_waker(&mut self, queue: usize, waker: std::thread::Thread) {
        self.handoff.set_waker(queue, waker);
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.backend_counters()
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        // A port never opened: close and unplug its device now (the Device drop).
        self.pending.take();
    }
}

/// Registers the calling thread with the EAL for as long as it lives.
struct LcoreRegistration;

impl Drop for LcoreRegistration {
    fn drop(&mut self) {
        // SAFETY: called on the thread that registered, as it ends.
        unsafe { sys::rte_thread_unregister() };
    }
}

thread_local! {
    static LCORE: std::cell::RefCell<Option<LcoreRegistration>> = const { std::cell::RefCell::new(None) };
}

fn register_thread() {
    // SAFETY: plain queries / registration of the calling thread.
    unsafe {
        if sys::offloadd_lcore_id() != sys::OFFLOADD_LCORE_ID_ANY {
            return; // an EAL thread, or registered already
        }
        if sys::rte_thread_register() == 0 {
            LCORE.with(|l| *l.borrow_mut() = Some(LcoreRegistration));
        }
    }
}

/// One rx/tx queue pair of a DPDK port, owned by one worker.
struct DpdkQueue {
    port: u16,
    queue: u16,
    mempool: *mut sys::rte_mempool,
    pool: PacketPool,
    frame_capacity: usize,
    registered: bool,
    index: usize,
    held: Arc<AtomicBool>,
    dev: Arc<Device>,
    mbufs: [*mut sys::rte_mbuf; BURST],
}

// SAFETY: a queue is used by one thread at a time (its worker); the raw pointers are
// DPDK objects that outlive it (held by `dev`).
unsafe impl Send for DpdkQueue {}

impl DpdkQueue {
    #[inline]
    fn ensure_registered(&mut self) {
        if !self.registered {
            register_thread();
            self.registered = true;
        }
    }

    fn counters(&self) -> &QueueCounters {
        &self.dev.counters[self.index]
    }
}

impl PortQueue for DpdkQueue {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        self.ensure_registered();
        let room = burst.capacity() - burst.len();
        if room == 0 || self.held.load(Ordering::Relaxed) {
            return 0;
        }
        // SAFETY: `mbufs` has room for BURST pointers; this queue is ours alone.
        let n = unsafe {
            sys::offloadd_rx_burst(self.port, self.queue, self.mbufs.as_mut_ptr(), room as u16)
        } as usize;
        if n == 0 {
            return 0;
        }
        let (mut added, mut too_long, mut no_buf) = (0, 0u64, 0u64);
        for i in 0..n {
            if i + 1 < n {
                // SAFETY: a received mbuf.
                unsafe { sys::offloadd_mbuf_prefetch_data(self.mbufs[i + 1]) };
            }
            let (mut dlen, mut plen, mut segs) = (0u16, 0u32, 0u16);
            // SAFETY: a received mbuf; out pointers are locals.
            let data =
                unsafe { sys::offloadd_mbuf_data(self.mbufs[i], &mut dlen, &mut plen, &mut segs) };
            if segs != 1 || plen as usize > self.frame_capacity {
                too_long += 1;
                continue;
            }
            let Some(mut p) = self.pool.alloc() else {
                no_buf += 1;
                continue;
            };
            p.set_len(dlen as usize);
            // SAFETY: the first (only) segment holds `dlen` bytes at `data`.
            p.data_mut()
                .copy_from_slice(unsafe { std::slice::from_raw_parts(data, dlen as usize) });
            burst.push(p);
            added += 1;
        }
        // SAFETY: the n mbufs received above, each freed once.
        unsafe { sys::rte_pktmbuf_free_bulk(self.mbufs.as_mut_ptr(), n as u32) };
        if too_long + no_buf > 0 {
            let c = self.counters();
            c.rx_too_long.fetch_add(too_long, Ordering::Relaxed);
            c.rx_no_buffer.fetch_add(no_buf, Ordering::Relaxed);
        }
        added
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        self.ensure_registered();
        let n = burst.len();
        if n == 0 {
            return 0;
        }
        // SAFETY: room for BURST >= n pointers; the mempool lives as long as `dev`.
        if unsafe {
            sys::offloadd_pktmbuf_alloc_bulk(self.mempool, self.mbufs.as_mut_ptr(), n as u32)
        } != 0
        {
            self.counters()
                .tx_no_mbuf
                .fetch_add(n as u64, Ordering::Relaxed);
            return 0;
        }
        let mut ready = n;
        for (i, p) in burst.iter().enumerate() {
            let len = p.len();
            // SAFETY: a fresh mbuf; append checks the room.
            let dst = unsafe { sys::offloadd_mbuf_append(self.mbufs[i], len as u16) };
            if dst.is_null() {
                // Longer than an mbuf: send the frames before it, keep it and the rest.
                ready = i;
                break;
            }
            // SAFETY: `dst` has room for `len` bytes.
            unsafe { ptr::copy_nonoverlapping(p.data().as_ptr(), dst, len) };
        }
        let sent = if ready == 0 {
            0
        } else {
            // SAFETY: `ready` filled mbufs; the PMD takes ownership of those it sends.
            let sent = unsafe {
                sys::offloadd_tx_burst(self.port, self.queue, self.mbufs.as_mut_ptr(), ready as u16)
            };
            sent as usize
        };
        if sent < n {
            // SAFETY: the mbufs the PMD did not take (and those never filled).
            unsafe {
                sys::rte_pktmbuf_free_bulk(self.mbufs[sent..].as_mut_ptr(), (n - sent) as u32)
            };
        }
        burst.drain(..sent);
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_and_device_names() {
        assert!(is_pci_address("0000:01:00.0"));
        assert!(is_pci_address("01:00.1"));
        assert!(is_pci_address("0000:af:1f.7,rxq_cqe_comp_en=1"));
        assert!(!is_pci_address("net_pcap0,rx_pcap=a.pcap"));
        assert!(!is_pci_address("net_ring0"));
        assert!(!is_pci_address("000:01:00.0"));
        assert!(!is_pci_address("0000:01:00"));
        assert_eq!(device_name("01:00.0"), "0000:01:00.0");
        assert_eq!(device_name("net_pcap0,rx_pcap=a.pcap"), "net_pcap0");
        assert_eq!(device_name("net_tap1"), "net_tap1");
    }

    #[test]
    fn no_pci_is_added_only_for_vdev_configs() {
        let args = vec!["--no-huge".to_string()];
        assert_eq!(
            Eal::arguments(&args, &["net_ring0"]),
            vec!["--no-huge", "--no-pci"]
        );
        assert_eq!(
            Eal::arguments(&args, &["net_ring0", "0000:01:00.0"]),
            vec!["--no-huge"]
        );
        let allow = vec!["-a".to_string(), "0000:02:00.0".to_string()];
        assert_eq!(Eal::arguments(&allow, &["net_ring0"]), allow);
    }

    #[test]
    fn device_redirection_tables_agree_with_steering() {
        let t = crate::steer::Toeplitz::new();
        for workers in [2, 3, 4] {
            let s = Steering::new(workers);
            for size in [64u16, 128, 512] {
                match reta_table(size, workers) {
                    Ok(table) => {
                        assert_eq!(table.len(), size as usize);
                        for i in 0..5000u32 {
                            let a = (0x0a00_0000 + i).to_be_bytes();
                            let h = t.hash_v4(a, [10, 1, 0, 2], 1000 + i as u16, 80);
                            assert_eq!(
                                table[h as usize % table.len()] as usize,
                                s.reta.queue(h),
                                "{workers} workers, {size} entries"
                            );
                        }
                    }
                    // Only a table shorter than 128 for a worker count that does not
                    // divide it can disagree.
                    Err(e) => assert!(size == 64 && workers == 3, "{e}"),
                }
            }
        }
        assert!(reta_table(0, 2).is_err());
    }

    #[test]
    fn options_are_checked() {
        assert!(DpdkOptions::default().check().is_ok());
        let o = DpdkOptions {
            mbufs: 10,
            ..DpdkOptions::default()
        };
        assert!(o.check().unwrap_err().starts_with("mbufs"));
        let o = DpdkOptions {
            rx_desc: 1,
            ..DpdkOptions::default()
        };
        assert!(o.check().unwrap_err().starts_with("rx_desc"));
        assert_eq!("rss".parse::<Steer>(), Ok(Steer::Rss));
        assert!("x".parse::<Steer>().is_err());
    }
}
