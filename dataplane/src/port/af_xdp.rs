//! The `af_xdp` port (cargo feature `afxdp`): a Linux interface through AF_XDP sockets,
//! using the xsk-rs crate (libxdp underneath).
//!
//! One XDP socket per worker queue: worker k binds rx/tx queue k of the interface, with
//! a UMEM of its own (no shared UMEM, so no locks between workers). libxdp loads its
//! default XDP program on the interface, which redirects every frame of queue k into
//! socket k (queues without a socket pass frames to the kernel); the program goes
//! when the last socket closes.
//!
//! Modes. `xdp_mode` picks where the XDP program runs: `native` (in the driver,
//! XDP_FLAGS_DRV_MODE), `skb` (generic XDP after the skb is built; every driver, veth
//! included) or `auto` (native, else skb). `zero_copy` picks the bind: `true` (the
//! driver DMAs straight into the UMEM, XDP_ZEROCOPY; only drivers that support it, in
//! native mode), `false` (the kernel copies, XDP_COPY) or `auto` (zero-copy, else copy).
//! With `auto`, each refused combination is logged with the kernel's reason and the
//! next one is tried; queue 0 decides, the other queues bind the same way (one XDP
//! program per interface). `AfXdpPort::bound` tells what was chosen. On a veth pair,
//! `auto`/`auto` ends up native + copy.
//!
//! Buffers: the UMEM of a queue is split once into rx frames (in the fill ring, the rx
//! ring, or on the queue's free list) and tx frames (on the free list, or in the tx and
//! completion rings); every frame is in exactly one of those places, so the kernel and
//! the worker never touch one frame at the same time. Received frames are **copied**
//! into `PacketBuf`s of the port's pool and their UMEM frame goes back to the fill ring
//! at once; packets to send are copied into free tx frames and their `PacketBuf`s go
//! back to their pool. Why copy: a `PacketBuf` may leave by any port of the device (the
//! other lif, the firewall, a mirror copy) or wait in a hand-off ring, and each port
//! and queue has its own UMEM, so lending UMEM frames out would tie the fill ring's
//! supply to the slowest consumer and need one UMEM shared by every port of a worker.
//! The copy is one memcpy of the frame each way, small next to the cost of the
//! kernel's own copy in copy mode; zero-copy mode still saves the kernel's copy.
//!
//! The hot path allocates nothing and makes at most one syscall per burst: a `sendto`
//! to kick tx when the kernel asks for it (need-wakeup), a `poll` when the fill ring
//! ran dry. Kernel statistics (`XDP_STATISTICS`) are read every few hundred polls.
//!
//! Steering: worker k reads queue k. With more than one queue, the queues are wrapped
//! in the steering hand-off (`handoff.rs`): a frame that arrives on a queue whose
//! worker does not own its flow is passed to the owner over an SPSC ring. On a NIC,
//! programming RSS with the symmetric key and an equal redirection table
//! (`ethtool -X IF hkey 6d:5a:6d:5a:... equal N`) makes hand-offs rare; a veth made
//! with `numrxqueues N` picks the queue from the sender's side, so hand-offs are common.

use std::io::Write;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::Thread;

use crossbeam_utils::CachePadded;
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::handoff::PortHandoff;
use super::{Port, PortError, PortQueue};
use crate::packet::{Burst, PacketBuf, PacketPool, BURST};

/// Bytes the kernel keeps in front of every UMEM frame (XDP_PACKET_HEADROOM).
pub const XDP_HEADROOM: u32 = 256;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native, else generic (skb).
    Auto,
    /// In the driver (XDP_FLAGS_DRV_MODE).
    Native,
    /// Generic XDP on the skb (XDP_FLAGS_SKB_MODE): every driver; always copy mode.
    Skb,
}

/// How the socket is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy, else copy.
    Auto,
    /// Zero-copy or fail (needs native mode and a driver that supports it).
    On,
    /// Copy mode.
    Off,
}

/// What a queue was actually bound with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub native: bool,
    pub zero_copy: bool,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.native { "native" } else { "skb" })?;
        f.write_str(if self.zero_copy {
            ", zero-copy"
        } else {
            ", copy"
        })
    }
}

/// What an `af_xdp` port is made with. Sizes are per queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfXdpOptions {
    pub xdp_mode: XdpMode,
    pub zero_copy: ZeroCopy,
    /// UMEM frames of each queue: `tx_size` of them are tx frames, the rest rx frames.
    pub frame_count: u32,
    /// Bytes per UMEM frame: a power of two from 2048 to the page size. The largest
    /// frame is this minus the kernel's 256-byte headroom.
    pub frame_size: u32,
    /// Slots of the fill, completion, rx and tx rings (powers of two).
    pub fill_size: u32,
    pub comp_size: u32,
    pub rx_size: u32,
    pub tx_size: u32,
    /// Packet buffers of the port (all queues) that received frames are copied into.
    pub pool_buffers: u32,
    /// Receive frames for every MAC (the device forwards frames not addressed to it).
    pub promiscuous: bool,
    /// Slots of each queue-to-queue hand-off ring (more than one queue).
    pub handoff_ring: usize,
}

impl Default for AfXdpOptions {
    fn default() -> Self {
        AfXdpOptions {
            xdp_mode: XdpMode::Auto,
            zero_copy: ZeroCopy::Auto,
            frame_count: 4096,
            frame_size: 2048,
            fill_size: 2048,
            comp_size: 2048,
            rx_size: 2048,
            tx_size: 2048,
            pool_buffers: 8192,
            promiscuous: true,
            handoff_ring: 1024,
        }
    }
}

/// Largest ring or UMEM size accepted (frames or slots per queue).
const MAX_SLOTS: u32 = 1 << 20;
/// Largest UMEM of one queue.
const MAX_UMEM_BYTES: u64 = 1 << 30;

fn page_size() -> u32 {
    // SAFETY: plain libc call.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u32
    } else {
        4096
    }
}

impl AfXdpOptions {
    /// Checks every option; the message starts with the name of the bad one.
    pub fn check(&self) -> Result<(), String> {
        self.check_with_page(page_size())
    }

    fn check_with_page(&self, page: u32) -> Result<(), String> {
        if self.xdp_mode == XdpMode::Skb && self.zero_copy == ZeroCopy::On {
            return Err(
                "zero_copy = true: generic (skb) XDP always copies; use xdp_mode \"native\" or \"auto\""
                    .into(),
            );
        }
        if !self.frame_size.is_power_of_two() || !(2048..=page).contains(&self.frame_size) {
            return Err(format!(
                "frame_size = {}: must be a power of two from 2048 to the page size ({page})",
                self.frame_size
            ));
        }
        for (key, v) in [
            ("fill_size", self.fill_size),
            ("comp_size", self.comp_size),
            ("rx_size", self.rx_size),
            ("tx_size", self.tx_size),
        ] {
            if !v.is_power_of_two() || !(BURST as u32..=MAX_SLOTS).contains(&v) {
                return Err(format!(
                    "{key} = {v}: must be a power of two from {BURST} to {MAX_SLOTS}"
                ));
            }
        }
        if self.comp_size < self.tx_size {
            return Err(format!(
                "comp_size = {}: must be at least tx_size ({}), or sent frames wait for room to complete",
                self.comp_size, self.tx_size
            ));
        }
        let need = self.fill_size as u64 + self.tx_size as u64;
        if (self.frame_count as u64) < need || self.frame_count > MAX_SLOTS {
            return Err(format!(
                "frame_count = {}: must be at least fill_size + tx_size ({need}) and at most {MAX_SLOTS}",
                self.frame_count
            ));
        }
        let bytes = self.frame_count as u64 * self.frame_size as u64;
        if bytes > MAX_UMEM_BYTES {
            return Err(format!(
                "frame_count = {}: frame_count * frame_size = {bytes} bytes, more than {MAX_UMEM_BYTES} per queue",
                self.frame_count
            ));
        }
        super::check_range("pool_buffers", self.pool_buffers.into(), 64, 1 << 24)?;
        super::check_handoff_ring(self.handoff_ring)
    }

    /// Frames of each queue that receive (the rest send).
    pub fn rx_frames(&self) -> u32 {
        self.frame_count - self.tx_size
    }

    /// The largest frame a queue receives or sends.
    pub fn mtu(&self) -> usize {
        (self.frame_size - XDP_HEADROOM) as usize
    }

    /// UMEM bytes of one queue.
    pub fn umem_bytes(&self) -> u64 {
        self.frame_count as u64 * self.frame_size as u64
    }

    /// The (XDP mode, bind) combinations to try, in order.
    pub fn attempts(&self) -> Vec<Bound> {
        let natives: &[bool] = match self.xdp_mode {
            XdpMode::Auto => &[true, false],
            XdpMode::Native => &[true],
            XdpMode::Skb => &[false],
        };
        let mut out = Vec::new();
        for &native in natives {
            let zcs: &[bool] = match (self.zero_copy, native) {
                (ZeroCopy::Off, _) | (_, false) => &[false],
                (ZeroCopy::On, true) => &[true],
                (ZeroCopy::Auto, true) => &[true, false],
            };
            for &zero_copy in zcs {
                if self.zero_copy == ZeroCopy::On && !zero_copy {
                    continue;
                }
                out.push(Bound { native, zero_copy });
            }
        }
        out
    }
}

/// Counters of one queue: written by its worker at most once per burst.
#[derive(Default)]
pub struct QueueCounters {
    /// Frames received with no free packet buffer in the pool, dropped.
    pub rx_no_buffer: AtomicU64,
    /// Frames to send longer than a UMEM frame holds, dropped.
    pub tx_too_long: AtomicU64,
    /// Frames not sent for want of a free tx frame (the caller drops them).
    pub tx_no_frame: AtomicU64,
    /// Wake-up syscalls (tx kick, fill ring poll) that failed.
    pub wakeup_errors: AtomicU64,
    /// The kernel's XDP_STATISTICS of the socket, as last read.
    pub kernel_rx_dropped: AtomicU64,
    pub kernel_rx_invalid: AtomicU64,
    pub kernel_rx_ring_full: AtomicU64,
    pub kernel_fill_ring_empty: AtomicU64,
    pub kernel_tx_invalid: AtomicU64,
}

/// Polls between two reads of the kernel's statistics (a power of two).
const STATS_EVERY: u32 = 256;

/// An interface opened as a port.
pub struct AfXdpPort {
    name: String,
    mac: [u8; 6],
    interface: String,
    options: AfXdpOptions,
    pool: PacketPool,
    counters: Vec<Arc<CachePadded<QueueCounters>>>,
    bound: Option<Bound>,
    handoff: PortHandoff,
    /// An AF_PACKET socket holding the interface promiscuous (undone when it closes).
    _promisc: Option<OwnedFd>,
}

impl AfXdpPort {
    /// A port on `interface`: checks the options and that the interface exists, and
    /// reserves the packet buffers. Sockets are bound by `open`.
    pub fn new(
        name: &str,
        interface: &str,
        mac: [u8; 6],
        options: AfXdpOptions,
    ) -> Result<AfXdpPort, PortError> {
        let err = |s: String| PortError::new(name, s);
        options.check().map_err(err)?;
        ifindex(interface).map_err(err)?;
        let pool = PacketPool::new(options.pool_buffers, options.mtu())
            .map_err(|e| err(format!("cannot reserve packet buffers: {e}")))?;
        Ok(AfXdpPort {
            name: name.to_string(),
            mac,
            interface: interface.to_string(),
            options,
            pool,
            counters: Vec::new(),
            bound: None,
            handoff: PortHandoff::default(),
            _promisc: None,
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn options(&self) -> &AfXdpOptions {
        &self.options
    }

    /// The pool received frames are copied into.
    pub fn pool(&self) -> &PacketPool {
        &self.pool
    }

    /// How the queues were bound (after `open`).
    pub fn bound(&self) -> Option<Bound> {
        self.bound
    }

    /// Frames handed to another queue's worker, and frames dropped because that
    /// queue's ring was full (zero with one queue).
    pub fn handoffs(&self) -> (u64, u64) {
        self.handoff.totals()
    }

    fn open_queue(&self, k: usize, bound: Bound) -> Result<XdpQueue, String> {
        let o = &self.options;
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(o.frame_size).map_err(|e| e.to_string())?)
            .fill_queue_size(QueueSize::new(o.fill_size).map_err(|e| e.to_string())?)
            .comp_queue_size(QueueSize::new(o.comp_size).map_err(|e| e.to_string())?)
            .frame_headroom(0)
            .build()
            .map_err(|e| e.to_string())?;
        let frames = NonZeroU32::new(o.frame_count).ok_or("frame_count = 0")?;
        let (umem, descs) = Umem::new(umem_config, frames, false).map_err(|e| {
            explain(
                &format!("cannot create the UMEM of queue {k}"),
                &e,
                io_source(&e),
                &self.interface,
            )
        })?;
        let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
        bind |= if bound.zero_copy {
            BindFlags::XDP_ZEROCOPY
        } else {
            BindFlags::XDP_COPY
        };
        let xdp = if bound.native {
            XdpFlags::XDP_FLAGS_DRV_MODE
        } else {
            XdpFlags::XDP_FLAGS_SKB_MODE
        };
        let socket_config = SocketConfig::builder()
            .rx_queue_size(QueueSize::new(o.rx_size).map_err(|e| e.to_string())?)
            .tx_queue_size(QueueSize::new(o.tx_size).map_err(|e| e.to_string())?)
            .xdp_flags(xdp)
            .bind_flags(bind)
            .build();
        let ifname: Interface = self
            .interface
            .parse()
            .map_err(|_| format!("interface name {:?} has a NUL byte", self.interface))?;
        // SAFETY: the UMEM is this queue's alone (not shared), so the pair is not
        // bound from it already.
        let (tx, rx, fq_cq) = unsafe { Socket::new(socket_config, &umem, &ifname, k as u32) }
            .map_err(|e| {
                explain(
                    &format!("cannot bind queue {k} ({bound})"),
                    &e,
                    io_source(&e),
                    &self.interface,
                )
            })?;
        let (fill, comp) = fq_cq.ok_or("libxdp gave no fill and completion rings")?;
        let rx_frames = o.rx_frames() as usize;
        let mut rx_free = Vec::with_capacity(rx_frames);
        let mut tx_free = Vec::with_capacity(o.tx_size as usize);
        for (i, d) in descs.into_iter().enumerate() {
            if i < rx_frames {
                rx_free.push(d);
            } else {
                tx_free.push(d);
            }
        }
        let mut q = XdpQueue {
            umem,
            fill,
            comp,
            tx,
            rx,
            rx_free,
            tx_free,
            scratch: [FrameDesc::default(); BURST],
            pool: self.pool.clone(),
            mtu: o.mtu(),
            counters: self.counters[k].clone(),
            local: Local::default(),
            polls: 0,
            tx_owed: false,
        };
        q.refill();
        Ok(q)
    }
}

/// The io::Error under an xsk-rs error, if any.
fn io_source<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    e.source()?.downcast_ref::<std::io::Error>()
}

/// One line: what failed, the kernel's answer, and what it usually means.
fn explain(
    what: &str,
    e: &dyn std::fmt::Display,
    io: Option<&std::io::Error>,
    interface: &str,
) -> String {
    let Some(io) = io else {
        return format!("{what}: {e}");
    };
    let hint = match io.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (no permission: AF_XDP needs root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF)"
                .to_string()
        }
        Some(libc::EOPNOTSUPP) => format!(" (not supported by the driver of {interface})"),
        Some(libc::EBUSY) => {
            format!(" (queue already bound, or another XDP program is attached to {interface})")
        }
        Some(libc::ENODEV) => format!(" (no interface {interface})"),
        Some(libc::EINVAL) => format!(" (no such queue on {interface}, or a mode it refuses)"),
        Some(libc::ENOMEM) | Some(libc::ENOBUFS) => {
            " (out of memory: smaller frame_count, or a higher RLIMIT_MEMLOCK)".to_string()
        }
        _ => String::new(),
    };
    format!("{what}: {e}: {io}{hint}")
}

/// The interface's index, or why it has none.
pub fn ifindex(interface: &str) -> Result<u32, String> {
    if interface.is_empty() || interface.len() >= libc::IFNAMSIZ {
        return Err(format!(
            "interface name {interface:?}: must be 1 to {} bytes",
            libc::IFNAMSIZ - 1
        ));
    }
    let c = std::ffi::CString::new(interface)
        .map_err(|_| format!("interface name {interface:?} has a NUL byte"))?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(format!("no interface named {interface:?}"));
    }
    Ok(idx)
}

/// Rx queues of the interface as sysfs lists them (None if it cannot tell).
pub fn rx_queues(interface: &str) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{interface}/queues")).ok()?;
    Some(
        dir.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count(),
    )
}

/// Makes the interface promiscuous for as long as the returned socket is open.
fn promiscuous(interface: &str) -> Result<OwnedFd, String> {
    let idx = ifindex(interface)?;
    // SAFETY: plain socket call; protocol 0 receives nothing.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!(
            "cannot make {interface} promiscuous: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mr = libc::packet_mreq {
        mr_ifindex: idx as i32,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    // SAFETY: mr is a valid packet_mreq of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mr as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot make {interface} promiscuous: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

impl Port for AfXdpPort {
    /// An interface: ARP and ND frames go out and come back like any other.
    fn resolves_neighbours(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn open(&mut self, queues: usize) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
        let err = |s: String| PortError::new(&self.name, s);
        if self.bound.is_some() {
            return Err(err("port opened twice".into()));
        }
        if queues == 0 {
            return Err(err("needs at least one queue".into()));
        }
        ifindex(&self.interface).map_err(err)?;
        if let Some(have) = rx_queues(&self.interface) {
            if have < queues {
                return Err(err(format!(
                    "interface {} has {have} rx queues, the device has {queues} workers \
                     (worker k binds queue k: `ethtool -L {} combined {queues}`, or a veth \
                     made with numrxqueues/numtxqueues {queues})",
                    self.interface, self.interface
                )));
            }
        }
        if self.options.promiscuous {
            self._promisc = Some(promiscuous(&self.interface).map_err(err)?);
        }
        self.counters = (0..queues)
            .map(|_| Arc::new(CachePadded::new(QueueCounters::default())))
            .collect();

        // Queue 0 finds the mode; the others bind the same way.
        let attempts = self.options.attempts();
        let mut first = None;
        let mut refused = Vec::new();
        for (i, &b) in attempts.iter().enumerate() {
            match self.open_queue(0, b) {
                Ok(q) => {
                    first = Some((b, q));
                    break;
                }
                Err(e) => {
                    if let Some(next) = attempts.get(i + 1) {
                        log::warn!("port {}: {e}; falling back to {next}", self.name);
                    }
                    refused.push(e);
                }
            }
        }
        let Some((bound, q0)) = first else {
            return Err(err(refused.join("; ")));
        };
        log::info!(
            "port {}: {} queue(s) of {} bound {bound}",
            self.name,
            queues,
            self.interface
        );
        let mut out: Vec<Box<dyn PortQueue>> = vec![Box::new(q0)];
        for k in 1..queues {
            out.push(Box::new(self.open_queue(k, bound).map_err(err)?));
        }
        self.bound = Some(bound);
        // The interface's queue choice (RSS, a veth's sender) is not our Toeplitz
        // owner in general: the queue that receives a frame hands it to its owner.
        Ok(self.handoff.wrap(out, self.options.handoff_ring))
    }

    fn set_waker(&mut self, queue: usize, waker: Thread) {
        self.handoff.set_waker(queue, waker);
    }

    /// The port's own counters, all queues together.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let sum = |f: fn(&QueueCounters) -> &AtomicU64| -> u64 {
            self.counters
                .iter()
                .map(|c| f(c).load(Ordering::Relaxed))
                .sum()
        };
        let (handed, handoff_drops) = self.handoffs();
        vec![
            ("handoffs", handed),
            ("handoff_drops", handoff_drops),
            ("rx_no_buffer", sum(|c| &c.rx_no_buffer)),
            ("tx_too_long", sum(|c| &c.tx_too_long)),
            ("tx_no_frame", sum(|c| &c.tx_no_frame)),
            ("wakeup_errors", sum(|c| &c.wakeup_errors)),
            ("kernel_rx_dropped", sum(|c| &c.kernel_rx_dropped)),
            ("kernel_rx_invalid", sum(|c| &c.kernel_rx_invalid)),
            ("kernel_rx_ring_full", sum(|c| &c.kernel_rx_ring_full)),
            ("kernel_fill_ring_empty", sum(|c| &c.kernel_fill_ring_empty)),
            ("kernel_tx_invalid", sum(|c| &c.kernel_tx_invalid)),
        ]
    }
}

/// Counts kept by the worker, published when they change.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
struct Local {
    rx_no_buffer: u64,
    tx_too_long: u64,
    tx_no_frame: u64,
    wakeup_errors: u64,
}

/// One queue: an XDP socket on queue k and its UMEM, owned by worker k.
struct XdpQueue {
    // Field order is drop order: the rings (each holds the socket) before the UMEM.
    fill: FillQueue,
    comp: CompQueue,
    tx: TxQueue,
    rx: RxQueue,
    umem: Umem,
    /// Rx frames owned by us, waiting to go to the fill ring.
    rx_free: Vec<FrameDesc>,
    /// Tx frames owned by us.
    tx_free: Vec<FrameDesc>,
    /// Descriptors read from the rx or completion ring.
    scratch: [FrameDesc; BURST],
    pool: PacketPool,
    mtu: usize,
    counters: Arc<CachePadded<QueueCounters>>,
    local: Local,
    polls: u32,
    /// A tx wakeup failed (the kernel sends at most a batch per kick in copy mode, or
    /// was busy): frames may wait in the tx ring, so an idle poll kicks again.
    tx_owed: bool,
}

impl XdpQueue {
    /// Gives free rx frames to the kernel; pokes it when it asks (fill ring ran dry).
    fn refill(&mut self) {
        let free = self.rx_free.len();
        if free == 0 {
            return;
        }
        let n = self.fill.nb_free(free as u32) as usize;
        let n = n.min(free);
        if n == 0 {
            return;
        }
        // SAFETY: these frames are ours (not in any ring) and belong to this UMEM.
        let done = unsafe { self.fill.produce(&self.rx_free[free - n..]) };
        self.rx_free.truncate(free - done);
        if self.fill.needs_wakeup() && self.fill.wakeup(self.rx.fd_mut(), 0).is_err() {
            self.local.wakeup_errors += 1;
        }
    }

    /// Asks the kernel to send what the tx ring holds, when it wants to be asked.
    fn kick_tx(&mut self) {
        self.tx_owed = false;
        if self.tx.needs_wakeup() && self.tx.wakeup().is_err() {
            self.local.wakeup_errors += 1;
            self.tx_owed = true;
        }
    }

    /// Takes back tx frames the kernel has sent.
    fn reclaim(&mut self) {
        // SAFETY: the completion ring returns our own tx frames.
        let n = unsafe { self.comp.consume(&mut self.scratch) };
        self.tx_free.extend_from_slice(&self.scratch[..n]);
    }

    fn publish(&mut self, before: Local) {
        if self.local == before {
            return;
        }
        let c = &self.counters;
        let l = self.local;
        c.rx_no_buffer.store(l.rx_no_buffer, Ordering::Relaxed);
        c.tx_too_long.store(l.tx_too_long, Ordering::Relaxed);
        c.tx_no_frame.store(l.tx_no_frame, Ordering::Relaxed);
        c.wakeup_errors.store(l.wakeup_errors, Ordering::Relaxed);
    }

    fn read_kernel_stats(&mut self) {
        if let Ok(s) = self.rx.fd().xdp_statistics() {
            let c = &self.counters;
            c.kernel_rx_dropped.store(s.rx_dropped(), Ordering::Relaxed);
            c.kernel_rx_invalid
                .store(s.rx_invalid_descs(), Ordering::Relaxed);
            c.kernel_rx_ring_full
                .store(s.rx_ring_full(), Ordering::Relaxed);
            c.kernel_fill_ring_empty
                .store(s.rx_fill_ring_empty_descs(), Ordering::Relaxed);
            c.kernel_tx_invalid
                .store(s.tx_invalid_descs(), Ordering::Relaxed);
        }
    }
}

impl PortQueue for XdpQueue {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        self.polls = self.polls.wrapping_add(1);
        if self.polls & (STATS_EVERY - 1) == 0 {
            self.read_kernel_stats();
        }
        let before = self.local;
        let room = burst.capacity() - burst.len();
        // SAFETY: the rx ring hands us frames of this UMEM that the kernel is done with.
        let n = unsafe { self.rx.consume(&mut self.scratch[..room]) };
        let mut got = 0;
        for d in &self.scratch[..n] {
            // SAFETY: the frame is ours until it goes back to the fill ring below.
            let data = unsafe { self.umem.data(d) };
            let frame = data.contents();
            match self.pool.alloc() {
                Some(mut p) if frame.len() <= p.tailroom() => {
                    p.set_len(frame.len());
                    p.data_mut().copy_from_slice(frame);
                    // Cannot fail: at most `room` frames were taken.
                    burst.push(p);
                    got += 1;
                }
                _ => self.local.rx_no_buffer += 1,
            }
        }
        // Cannot outgrow the capacity: these are rx frames, and there are that many.
        self.rx_free.extend_from_slice(&self.scratch[..n]);
        self.refill();
        self.publish(before);
        got
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        if burst.is_empty() {
            return 0;
        }
        let before = self.local;
        self.reclaim();
        if self.tx_free.len() < burst.len() {
            // The kernel may be holding sent frames until kicked.
            self.kick_tx();
            self.reclaim();
        }
        let room = (self.tx.nb_free(burst.len() as u32) as usize).min(self.tx_free.len());
        let mut descs: arrayvec::ArrayVec<FrameDesc, BURST> = arrayvec::ArrayVec::new();
        let (umem, tx_free, mtu, local) =
            (&self.umem, &mut self.tx_free, self.mtu, &mut self.local);
        burst.retain(|p: &mut PacketBuf| {
            if descs.len() == room {
                local.tx_no_frame += 1;
                return true; // stays: the caller counts it as a tx drop
            }
            if p.len() > mtu {
                local.tx_too_long += 1;
                return true;
            }
            let mut d = tx_free.pop().expect("room <= tx_free.len()");
            // SAFETY: a free tx frame of this UMEM: no ring holds it.
            let mut data = unsafe { umem.data_mut(&mut d) };
            let mut c = data.cursor();
            c.set_pos(0);
            // Cannot fail: p.len() <= mtu = the frame's data room.
            let _ = c.write_all(p.data());
            descs.push(d);
            false // sent: its buffer goes back to the pool
        });
        let sent = descs.len();
        if sent > 0 {
            // SAFETY: frames of this UMEM, ours until the completion ring returns them;
            // the ring has room for all of them (nb_free above).
            let n = unsafe { self.tx.produce(&descs) };
            debug_assert_eq!(n, sent);
            self.kick_tx();
        }
        self.publish(before);
        sent
    }

    /// Called when the worker idles: frames a failed kick left behind go now.
    fn flush(&mut self) {
        self.reclaim();
        if self.tx_owed {
            let before = self.local;
            self.kick_tx();
            self.publish(before);
        }
    }
}

impl Drop for XdpQueue {
    /// The last kernel statistics, while the socket is still open.
    fn drop(&mut self) {
        self.read_kernel_stats();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::test_veth::Veth;

    fn opts() -> AfXdpOptions {
        AfXdpOptions::default()
    }

    #[test]
    fn defaults_are_valid() {
        let o = opts();
        o.check_with_page(4096).unwrap();
        assert_eq!(o.rx_frames(), 2048);
        assert_eq!(o.mtu(), 1792);
        assert_eq!(o.umem_bytes(), 8 << 20);
    }

    #[test]
    fn geometry_errors_name_the_key() {
        let cases: Vec<(AfXdpOptions, &str)> = vec![
            (
                AfXdpOptions {
                    frame_size: 3000,
                    ..opts()
                },
                "frame_size = 3000",
            ),
            (
                AfXdpOptions {
                    frame_size: 1024,
                    ..opts()
                },
                "frame_size = 1024",
            ),
            (
                AfXdpOptions {
                    frame_size: 8192,
                    ..opts()
                },
                "frame_size = 8192",
            ),
            (
                AfXdpOptions {
                    fill_size: 1000,
                    ..opts()
                },
                "fill_size = 1000",
            ),
            (
                AfXdpOptions {
                    rx_size: 16,
                    ..opts()
                },
                "rx_size = 16",
            ),
            (
                AfXdpOptions {
                    tx_size: 1 << 21,
                    ..opts()
                },
                "tx_size",
            ),
            (
                AfXdpOptions {
                    comp_size: 1024,
                    ..opts()
                },
                "comp_size = 1024",
            ),
            (
                AfXdpOptions {
                    frame_count: 4095,
                    ..opts()
                },
                "frame_count = 4095: must be at least fill_size + tx_size (4096)",
            ),
            (
                AfXdpOptions {
                    frame_count: 1 << 20,
                    frame_size: 4096,
                    ..opts()
                },
                "frame_count = 1048576: frame_count * frame_size = 4294967296 bytes, more than",
            ),
            (
                AfXdpOptions {
                    pool_buffers: 10,
                    ..opts()
                },
                "pool_buffers = 10",
            ),
            (
                AfXdpOptions {
                    xdp_mode: XdpMode::Skb,
                    zero_copy: ZeroCopy::On,
                    ..opts()
                },
                "zero_copy = true",
            ),
        ];
        for (o, want) in cases {
            let e = o.check_with_page(4096).unwrap_err();
            assert!(e.starts_with(want.split(' ').next().unwrap()), "{e}");
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains('\n'));
        }
        // 4096-byte frames are fine on 4 KiB pages, not above them.
        let big = AfXdpOptions {
            frame_size: 4096,
            ..opts()
        };
        big.check_with_page(4096).unwrap();
        assert!(big.check_with_page(2048).is_err());
        assert_eq!(big.mtu(), 3840);
    }

    #[test]
    fn attempts_follow_the_modes() {
        let b = |native, zero_copy| Bound { native, zero_copy };
        let with = |xdp_mode, zero_copy| {
            AfXdpOptions {
                xdp_mode,
                zero_copy,
                ..opts()
            }
            .attempts()
        };
        assert_eq!(
            with(XdpMode::Auto, ZeroCopy::Auto),
            vec![b(true, true), b(true, false), b(false, false)]
        );
        assert_eq!(
            with(XdpMode::Auto, ZeroCopy::Off),
            vec![b(true, false), b(false, false)]
        );
        assert_eq!(with(XdpMode::Auto, ZeroCopy::On), vec![b(true, true)]);
        assert_eq!(
            with(XdpMode::Native, ZeroCopy::Auto),
            vec![b(true, true), b(true, false)]
        );
        assert_eq!(with(XdpMode::Native, ZeroCopy::On), vec![b(true, true)]);
        assert_eq!(with(XdpMode::Native, ZeroCopy::Off), vec![b(true, false)]);
        assert_eq!(with(XdpMode::Skb, ZeroCopy::Auto), vec![b(false, false)]);
        assert_eq!(with(XdpMode::Skb, ZeroCopy::Off), vec![b(false, false)]);
        assert_eq!(b(true, true).to_string(), "native, zero-copy");
        assert_eq!(b(false, false).to_string(), "skb, copy");
    }

    #[test]
    fn missing_interface_is_an_error() {
        let e = AfXdpPort::new("p0", "nosuchif0", [0; 6], opts())
            .err()
            .unwrap()
            .to_string();
        assert_eq!(e, "port p0: no interface named \"nosuchif0\"");
        let e = AfXdpPort::new("p0", "", [0; 6], opts())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("interface name"), "{e}");
        let e = AfXdpPort::new("p0", "a-name-longer-than-15", [0; 6], opts())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("1 to 15 bytes"), "{e}");
    }

    #[test]
    fn bad_options_are_refused_before_anything_is_opened() {
        let e = AfXdpPort::new(
            "p0",
            "lo",
            [0; 6],
            AfXdpOptions {
                frame_count: 100,
                ..opts()
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.starts_with("port p0: frame_count = 100"), "{e}");
    }

    #[test]
    fn explain_adds_the_usual_meaning() {
        let io = std::io::Error::from_raw_os_error(libc::EPERM);
        let s = explain("cannot bind queue 0 (native, copy)", &"x", Some(&io), "v0");
        assert!(s.contains("no permission"), "{s}");
        let io = std::io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        let s = explain(
            "cannot bind queue 0 (native, zero-copy)",
            &"x",
            Some(&io),
            "v0",
        );
        assert!(s.contains("not supported by the driver of v0"), "{s}");
        assert_eq!(explain("what", &"why", None, "v0"), "what: why");
    }

    /// A plain AF_PACKET socket on an interface: the other end of the wire.
    struct Raw(OwnedFd);

    impl Raw {
        fn open(interface: &str) -> Raw {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket call.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            // SAFETY: a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data; zero is a valid start.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex(interface).unwrap() as i32;
            // SAFETY: sll is a valid sockaddr_ll of the size given.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            let on: libc::c_int = 1;
            // SAFETY: an int option of the right size.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_AUXDATA,
                    &on as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            Raw(fd)
        }

        fn send(&self, frame: &[u8]) {
            // SAFETY: frame is a valid buffer of that length.
            let n = unsafe {
                libc::send(
                    self.0.as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    0,
                )
            };
            assert_eq!(
                n,
                frame.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
        }

        /// The next frame that arrived on the interface, as it was on the wire: frames
        /// this interface sent are skipped, and a VLAN tag the kernel took out into the
        /// aux data (it does so or not depending on load and offloads) is put back.
        fn recv(&self) -> Option<Vec<u8>> {
            loop {
                let mut buf = vec![0u8; 4096];
                // SAFETY: plain data; zero is a valid start.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut cmsg = [0u64; 16];
                let mut iov = libc::iovec {
                    iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                    iov_len: buf.len(),
                };
                // SAFETY: plain data; zero is a valid start.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_name = &mut sll as *mut _ as *mut libc::c_void;
                msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = std::mem::size_of_val(&cmsg);
                // SAFETY: every pointer in msg is valid for the sizes given.
                let n = unsafe { libc::recvmsg(self.0.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
                if n <= 0 {
                    return None;
                }
                if sll.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                buf.truncate(n as usize);
                // SAFETY: msg was filled by recvmsg; the CMSG macros walk its buffer.
                let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
                while !c.is_null() {
                    // SAFETY: c points at a control message inside cmsg.
                    let h = unsafe { &*c };
                    if h.cmsg_level == libc::SOL_PACKET && h.cmsg_type == libc::PACKET_AUXDATA {
                        // SAFETY: a PACKET_AUXDATA message carries a tpacket_auxdata.
                        let aux = unsafe {
                            std::ptr::read_unaligned(
                                libc::CMSG_DATA(c) as *const libc::tpacket_auxdata
                            )
                        };
                        if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 && buf.len() >= 12 {
                            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                                aux.tp_vlan_tpid
                            } else {
                                0x8100
                            };
                            let mut tag = tpid.to_be_bytes().to_vec();
                            tag.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
                            buf.splice(12..12, tag);
                        }
                    }
                    // SAFETY: walks the same control buffer.
                    c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
                }
                return Some(buf);
            }
        }
    }

    fn frames(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut src = [0u8; 16];
                src[..4].copy_from_slice(&[10, 9, 0, 1]);
                let mut dst = [0u8; 16];
                dst[..4].copy_from_slice(&[10, 9, 0, 2]);
                let spec = crate::wire::FrameSpec {
                    src_mac: [2, 0, 0, 0, 0, 1],
                    dst_mac: [2, 0, 0, 0, 0, 2],
                    vlan: if i % 2 == 1 { 7 } else { 0 },
                    v6: false,
                    proto: crate::wire::PROTO_UDP,
                    src,
                    dst,
                    sport: 1000 + i as u16,
                    dport: 53,
                    tcp_flags: 0,
                    payload_len: 20 + i,
                };
                let mut buf = [0u8; 2048];
                let len = crate::wire::build(&spec, &mut buf).unwrap();
                buf[..len].to_vec()
            })
            .collect()
    }

    fn small() -> AfXdpOptions {
        AfXdpOptions {
            frame_count: 512,
            fill_size: 256,
            comp_size: 256,
            rx_size: 256,
            tx_size: 256,
            pool_buffers: 256,
            ..opts()
        }
    }

    /// Frames both ways through one queue on a veth, in the given mode.
    fn round_trip(tag: &str, xdp_mode: XdpMode, want: Bound) {
        let Some(veth) = Veth::or_skip(tag) else {
            return;
        };
        let options = AfXdpOptions {
            xdp_mode,
            ..small()
        };
        let mut port = AfXdpPort::new("p0", &veth.a, [2, 0, 0, 0, 0, 2], options).unwrap();
        let mut qs = port.open(1).unwrap();
        assert_eq!(port.bound(), Some(want));
        let e = port.open(1).err().unwrap().to_string();
        assert!(e.contains("opened twice"), "{e}");
        let q = &mut qs[0];
        let wire = Raw::open(&veth.b);
        let sent = frames(40);

        for f in &sent {
            wire.send(f);
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < sent.len() && std::time::Instant::now() < deadline {
            let mut burst = Burst::new();
            if q.rx_burst(&mut burst) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            got.extend(burst.iter().map(|p| p.data().to_vec()));
        }
        // Only our frames: IPv6 is off on both ends, nothing else talks on the pair.
        assert_eq!(got.len(), sent.len());
        for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
            assert!(
                g == s,
                "frame {i} received as {:02x?}",
                &g[..g.len().min(20)]
            );
        }
        assert_eq!(port.pool().available(), 256);

        let pool = port.pool().clone();
        for chunk in sent.chunks(BURST) {
            let mut burst: Burst = chunk.iter().map(|f| pool.alloc_from(f).unwrap()).collect();
            assert_eq!(q.tx_burst(&mut burst), chunk.len());
            assert!(burst.is_empty());
        }
        assert_eq!(pool.available(), 256, "sent buffers went back to the pool");
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while out.len() < sent.len() && std::time::Instant::now() < deadline {
            match wire.recv() {
                Some(f) => out.push(f),
                None => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        assert_eq!(out.len(), sent.len(), "sent through the XDP socket");
        for (i, (o, s)) in out.iter().zip(&sent).enumerate() {
            assert!(o == s, "frame {i} sent as {o:02x?}, wanted {s:02x?}");
        }

        // Too long for a UMEM frame: stays in the burst, counted.
        let big = PacketPool::new(2, 4000).unwrap();
        let mut burst: Burst = Burst::new();
        burst.push(big.alloc_from(&[0u8; 3000]).unwrap());
        assert_eq!(q.tx_burst(&mut burst), 0);
        assert_eq!(burst.len(), 1);
        let c = port.counters();
        assert!(c.contains(&("tx_too_long", 1)), "{c:?}");
    }

    #[test]
    fn veth_round_trip_skb_mode() {
        round_trip(
            "s",
            XdpMode::Skb,
            Bound {
                native: false,
                zero_copy: false,
            },
        );
    }

    #[test]
    fn veth_round_trip_auto_is_native_copy() {
        round_trip(
            "n",
            XdpMode::Auto,
            Bound {
                native: true,
                zero_copy: false,
            },
        );
    }

    #[test]
    fn too_few_interface_queues_is_an_error() {
        let Some(veth) = Veth::or_skip("q") else {
            return;
        };
        let mut port = AfXdpPort::new("p0", &veth.a, [0; 6], small()).unwrap();
        let e = port.open(2).err().unwrap().to_string();
        assert!(
            e.contains("has 1 rx queues, the device has 2 workers"),
            "{e}"
        );
    }

    #[test]
    fn zero_copy_on_veth_is_refused_with_the_reason() {
        let Some(veth) = Veth::or_skip("z") else {
            return;
        };
        let options = AfXdpOptions {
            zero_copy: ZeroCopy::On,
            ..small()
        };
        let mut port = AfXdpPort::new("p0", &veth.a, [0; 6], options).unwrap();
        let e = port.open(1).err().unwrap().to_string();
        eprintln!("{e}");
        assert!(e.contains("cannot bind queue 0 (native, zero-copy)"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
