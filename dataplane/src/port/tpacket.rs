//! One AF_PACKET socket with a memory-mapped TPACKET_V3 rx ring and tx ring (Linux
//! `packet_mmap`). This file owns every system call and every `unsafe` block of the
//! `af_packet` backend; `af_packet.rs` turns it into a port.
//!
//! Layout of the one mapping: the rx ring (`block_count` blocks of `block_size` bytes)
//! followed by the tx ring (fixed frames of `frame_size` bytes, packed into blocks of
//! the same size). Ownership of ring memory is handed between kernel and us by status
//! words: an rx *block* belongs to us while its `block_status` has `TP_STATUS_USER`
//! and goes back when we store `TP_STATUS_KERNEL`; a tx *frame* is ours while its
//! `tp_status` has neither `SEND_REQUEST` nor `SENDING`, and goes to the kernel when
//! we store `SEND_REQUEST` (and `sendto` kicks the ring). Those words are accessed as
//! atomics with acquire/release ordering: they publish the bytes around them.
//!
//! V3 is used for both rings (tx on V3 exists since Linux 4.11: fixed-size frames,
//! `tp_next_offset` 0, frame data at `TPACKET_ALIGN(sizeof(tpacket3_hdr))`).
//!
//! The socket has PACKET_VNET_HDR on, for transmit: each tx frame starts with a
//! `virtio_net_hdr` whose `hdr_len` is the whole frame, so the kernel copies the frame
//! into the skb's linear part. Without it the skb holds the frame (past the Ethernet
//! header) as a fragment pointing into our ring, and a veth (any path that must not
//! keep user pages) then allocates a page and copies it: measured on the device's
//! transmit to a veth, about 10% of the worker's time (`skb_copy_ubufs`). Received
//! frames get a header too, before `tp_mac`, which rx ignores.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// `tpacket_versions::TPACKET_V3`.
const TPACKET_V3: libc::c_int = 2;
/// Where frame data starts in a tx frame: `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`
/// (the kernel's `tp_hdrlen - sizeof(struct sockaddr_ll)` without PACKET_TX_HAS_OFF).
pub const TX_DATA_OFFSET: usize =
    (std::mem::size_of::<libc::tpacket3_hdr>() + libc::TPACKET_ALIGNMENT - 1)
        & !(libc::TPACKET_ALIGNMENT - 1);
/// `PACKET_VNET_HDR` (linux/if_packet.h) and `sizeof(struct virtio_net_hdr)`.
const PACKET_VNET_HDR: libc::c_int = 15;
const VNET_HDR_LEN: usize = 10;
/// `TP_STATUS_SENDING` (not in libc's list).
const TP_STATUS_SENDING: u32 = 1 << 1;
/// Largest mapping we agree to ask for (the kernel's own limits are per block).
const MAX_RING_BYTES: u64 = 1 << 30;

/// Sizes of the two rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per block, a multiple of the page size (rx blocks and tx blocks).
    pub block_size: u32,
    /// Rx blocks.
    pub block_count: u32,
    /// Bytes per tx frame (header + data), a multiple of 16.
    pub frame_size: u32,
    /// Tx frames; rounded up to whole blocks.
    pub tx_frames: u32,
    /// A partly filled rx block is handed to us after this many ms (latency bound at
    /// low rates; the kernel's `tp_retire_blk_tov`).
    pub block_timeout_ms: u32,
}

impl Geometry {
    /// Checks the sizes against what the kernel accepts, with `page` the page size.
    pub fn check(&self, page: usize) -> Result<(), String> {
        let page = page as u32;
        if self.block_size == 0 || !self.block_size.is_multiple_of(page) {
            return Err(format!(
                "block_size = {}: must be a non-zero multiple of the page size ({page})",
                self.block_size
            ));
        }
        if !self.block_size.is_power_of_two() {
            // The kernel allocates blocks by page order: other sizes waste memory.
            return Err(format!(
                "block_size = {}: must be a power of two",
                self.block_size
            ));
        }
        if self.block_count == 0 {
            return Err("block_count = 0: must be at least 1".into());
        }
        let min_frame = (TX_DATA_OFFSET + VNET_HDR_LEN + 64) as u32;
        if self.frame_size < min_frame
            || !self
                .frame_size
                .is_multiple_of(libc::TPACKET_ALIGNMENT as u32)
            || self.frame_size > self.block_size
        {
            return Err(format!(
                "frame_size = {}: must be a multiple of 16 from {min_frame} to block_size ({})",
                self.frame_size, self.block_size
            ));
        }
        if self.tx_frames == 0 {
            return Err("tx_frames = 0: must be at least 1".into());
        }
        if self.block_timeout_ms == 0 || self.block_timeout_ms > 1000 {
            return Err(format!(
                "block_timeout_ms = {}: must be 1 to 1000",
                self.block_timeout_ms
            ));
        }
        let total = self.rx_bytes() as u64 + self.tx_bytes() as u64;
        if total > MAX_RING_BYTES {
            return Err(format!(
                "rings of {total} bytes per queue: at most {MAX_RING_BYTES}"
            ));
        }
        Ok(())
    }

    /// Largest frame a tx frame carries (after its `virtio_net_hdr`).
    pub fn max_tx_frame(&self) -> usize {
        self.frame_size as usize - TX_DATA_OFFSET - VNET_HDR_LEN
    }

    pub fn frames_per_block(&self) -> u32 {
        self.block_size / self.frame_size
    }

    /// Tx blocks holding at least `tx_frames` frames.
    pub fn tx_blocks(&self) -> u32 {
        self.tx_frames.div_ceil(self.frames_per_block())
    }

    /// Tx frames actually in the ring (whole blocks).
    pub fn tx_frame_count(&self) -> u32 {
        self.tx_blocks() * self.frames_per_block()
    }

    pub fn rx_bytes(&self) -> usize {
        self.block_size as usize * self.block_count as usize
    }

    pub fn tx_bytes(&self) -> usize {
        self.block_size as usize * self.tx_blocks() as usize
    }

    /// Byte offset of tx frame `i` from the start of the tx ring.
    pub fn tx_frame_offset(&self, i: u32) -> usize {
        let fpb = self.frames_per_block();
        (i / fpb) as usize * self.block_size as usize
            + (i % fpb) as usize * self.frame_size as usize
    }
}

/// How to open one socket.
#[derive(Clone, Debug)]
pub struct SocketOptions {
    pub ifindex: u32,
    pub geometry: Geometry,
    /// Frames sent skip the interface's qdisc (PACKET_QDISC_BYPASS).
    pub qdisc_bypass: bool,
    pub promiscuous: bool,
}

/// The interface index of `name`, or a message saying it does not exist.
pub fn ifindex(name: &str) -> Result<u32, String> {
    let c = CString::new(name).map_err(|_| format!("interface name {name:?} contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(format!(
            "no such interface {name:?} ({})",
            io::Error::last_os_error()
        ));
    }
    Ok(idx)
}

fn os_error(what: &str) -> String {
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("{what}: {e} (AF_PACKET needs root or CAP_NET_RAW)")
        }
        _ => format!("{what}: {e}"),
    }
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, value: &T, what: &str) -> Result<(), String> {
    // SAFETY: `value` points at a live `T` and its exact size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(os_error(&format!("setsockopt({what})")));
    }
    Ok(())
}

/// The mapping of both rings; unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned; nothing refers to the
        // mapping any more (it is owned by the one Socket being dropped).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A received frame, still in the rx block.
pub struct RxFrame<'a> {
    /// The frame as the kernel stored it (without a VLAN tag the NIC took off).
    pub data: &'a [u8],
    /// Length on the wire; larger than `data` when the ring cut the frame short.
    pub wire_len: usize,
    /// The VLAN tag (TPID, TCI) the kernel took off the frame, to be put back.
    pub vlan: Option<(u16, u16)>,
}

/// Counters the kernel keeps for the socket (PACKET_STATISTICS, reset on read).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelStats {
    pub packets: u64,
    pub drops: u64,
}

/// A bound AF_PACKET socket with its rings. `Send`: one worker uses it at a time.
pub struct Socket {
    fd: Arc<OwnedFd>,
    map: Mapping,
    geometry: Geometry,
    /// Current rx block, packets left in it, offset of the next packet header.
    rx_block: u32,
    rx_left: u32,
    rx_offset: usize,
    /// Next tx frame to fill; frames marked that the kernel has not taken yet.
    tx_head: u32,
    tx_pending: u32,
    /// Tx frames the kernel refused (TP_STATUS_WRONG_FORMAT).
    pub tx_wrong_format: u64,
    /// Kicks after which marked frames were still waiting (the kernel ran out of
    /// socket send buffer or another error): they are kicked again later.
    pub tx_kick_retries: u64,
}

// SAFETY: the mapping is private to this socket; the kernel side is synchronised by
// the status words. Moving the socket to another thread moves that ownership.
unsafe impl Send for Socket {}

impl Socket {
    /// Opens a socket on `o.ifindex` with both rings mapped, bound to the interface,
    /// ignoring its own outgoing frames.
    pub fn open(o: &SocketOptions) -> Result<Socket, String> {
        let g = o.geometry;
        g.check(page_size())?;
        // Protocol 0 until bind: the socket receives nothing before it is bound to the
        // interface (with ETH_P_ALL here it would see every interface meanwhile).
        // SAFETY: plain system call.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os_error("socket(AF_PACKET)"));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(&fd, libc::PACKET_VERSION, &TPACKET_V3, "PACKET_VERSION V3")?;
        // Before the rings: the kernel refuses it once they exist.
        setsockopt(&fd, PACKET_VNET_HDR, &1i32, "PACKET_VNET_HDR")?;
        let rx = libc::tpacket_req3 {
            tp_block_size: g.block_size,
            tp_block_nr: g.block_count,
            tp_frame_size: g.frame_size,
            tp_frame_nr: g.block_size / g.frame_size * g.block_count,
            tp_retire_blk_tov: g.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::PACKET_RX_RING, &rx, "PACKET_RX_RING")?;
        // The kernel refuses a tx ring on V3 with the rx-only fields set.
        let tx = libc::tpacket_req3 {
            tp_block_size: g.block_size,
            tp_block_nr: g.tx_blocks(),
            tp_frame_size: g.frame_size,
            tp_frame_nr: g.tx_frame_count(),
            tp_retire_blk_tov: 0,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::PACKET_TX_RING, &tx, "PACKET_TX_RING")?;
        let len = g.rx_bytes() + g.tx_bytes();
        // SAFETY: maps the socket's rings; the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error(&format!("mmap of {len} bytes of rings")));
        }
        let map = Mapping {
            base: NonNull::new(base.cast()).ok_or("mmap returned null")?,
            len,
        };
        if o.qdisc_bypass {
            setsockopt(&fd, libc::PACKET_QDISC_BYPASS, &1i32, "PACKET_QDISC_BYPASS")?;
        }
        // What we send must not come back in our own rx ring (nor in a sibling's).
        setsockopt(
            &fd,
            libc::PACKET_IGNORE_OUTGOING,
            &1i32,
            "PACKET_IGNORE_OUTGOING",
        )?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = o.ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(os_error(&format!("bind to ifindex {}", o.ifindex)));
        }
        if o.promiscuous {
            let mreq = libc::packet_mreq {
                mr_ifindex: o.ifindex as i32,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(
                &fd,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq,
                "PACKET_ADD_MEMBERSHIP promisc",
            )?;
        }
        Ok(Socket {
            fd: Arc::new(fd),
            map,
            geometry: g,
            rx_block: 0,
            rx_left: 0,
            rx_offset: 0,
            tx_head: 0,
            tx_pending: 0,
            tx_kick_retries: 0,
            tx_wrong_format: 0,
        })
    }

    /// Joins fanout group `group` (hash mode): the kernel spreads the interface's
    /// frames over the group's sockets by a symmetric flow hash.
    pub fn join_fanout(&self, group: u16) -> Result<(), String> {
        let arg: u32 = u32::from(group) | (libc::PACKET_FANOUT_HASH << 16);
        setsockopt(
            &self.fd,
            libc::PACKET_FANOUT,
            &arg,
            &format!("PACKET_FANOUT group {group}"),
        )
    }

    /// A handle on the descriptor for reading kernel statistics from another thread.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.fd.clone())
    }

    /// The byte at `offset` of the mapping, as a pointer.
    #[inline]
    fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset < self.map.len);
        // SAFETY: callers pass offsets inside the mapping (block and frame offsets
        // computed from the geometry the rings were made with).
        unsafe { self.map.base.as_ptr().add(offset) }
    }

    /// A status word inside the mapping as an atomic.
    #[inline]
    fn status(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: status words are 4-byte aligned u32s inside the mapping (block
        // descriptors and frame headers start on 16-byte boundaries), shared with the
        // kernel, which reads and writes them as plain words: atomics are how we
        // order our accesses around them.
        unsafe { &*(self.at(offset) as *const AtomicU32) }
    }

    fn block_offset(&self, b: u32) -> usize {
        b as usize * self.geometry.block_size as usize
    }

    /// The next received frame, if any; it stays in the ring until `rx_advance`.
    #[inline]
    pub fn rx_peek(&mut self) -> Option<RxFrame<'_>> {
        let bs = self.geometry.block_size as usize;
        let block = self.block_offset(self.rx_block);
        if self.rx_left == 0 {
            let status_off = block + std::mem::offset_of!(libc::tpacket_block_desc, hdr);
            if self.status(status_off).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                return None;
            }
            // SAFETY: the block is ours (TP_STATUS_USER, acquired above); its
            // descriptor sits at its start.
            let (num, first) = unsafe {
                let bd = &*(self.at(block) as *const libc::tpacket_block_desc);
                (bd.hdr.bh1.num_pkts, bd.hdr.bh1.offset_to_first_pkt as usize)
            };
            if num == 0 || first >= bs {
                self.release_block();
                return None;
            }
            self.rx_left = num;
            self.rx_offset = first;
        }
        let hdr_len = std::mem::size_of::<libc::tpacket3_hdr>();
        if self.rx_offset + hdr_len > bs {
            self.release_block();
            return None;
        }
        // SAFETY: the header lies inside our block (checked above).
        let h = unsafe { &*(self.at(block + self.rx_offset) as *const libc::tpacket3_hdr) };
        let start = self.rx_offset + h.tp_mac as usize;
        let len = h.tp_snaplen as usize;
        if start + len > bs {
            // A header that points outside its block: never written by a sane kernel.
            self.release_block();
            return None;
        }
        let vlan = (h.tp_status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
            let tpid = if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                h.hv1.tp_vlan_tpid
            } else {
                0x8100
            };
            (tpid, h.hv1.tp_vlan_tci as u16)
        });
        let wire_len = h.tp_len as usize;
        // SAFETY: start..start+len is inside our block (checked above) and stays ours
        // until rx_advance, which needs &mut self.
        let data = unsafe { std::slice::from_raw_parts(self.at(block + start), len) };
        Some(RxFrame {
            data,
            wire_len,
            vlan,
        })
    }

    /// Moves past the frame `rx_peek` returned; gives the block back after its last.
    #[inline]
    pub fn rx_advance(&mut self) {
        if self.rx_left == 0 {
            return;
        }
        let block = self.block_offset(self.rx_block);
        // SAFETY: rx_peek checked that this header lies inside our block.
        let next = unsafe {
            (*(self.at(block + self.rx_offset) as *const libc::tpacket3_hdr)).tp_next_offset
        };
        self.rx_left -= 1;
        self.rx_offset += next as usize;
        if self.rx_left == 0 {
            self.release_block();
        }
    }

    fn release_block(&mut self) {
        let block = self.block_offset(self.rx_block);
        let status_off = block + std::mem::offset_of!(libc::tpacket_block_desc, hdr);
        self.status(status_off)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.rx_left = 0;
        self.rx_block = (self.rx_block + 1) % self.geometry.block_count;
    }

    /// Copies `frame` into the next free tx frame and marks it for sending; false when
    /// the ring is full or the frame does not fit (checked by the caller first).
    #[inline]
    pub fn tx_put(&mut self, frame: &[u8]) -> bool {
        if frame.len() > self.geometry.max_tx_frame() {
            return false;
        }
        let off = self.geometry.rx_bytes() + self.geometry.tx_frame_offset(self.tx_head);
        let status_off = off + std::mem::offset_of!(libc::tpacket3_hdr, tp_status);
        let s = self.status(status_off).load(Ordering::Acquire);
        if s & (libc::TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING) != 0 {
            return false;
        }
        if s & libc::TP_STATUS_WRONG_FORMAT != 0 {
            self.tx_wrong_format += 1;
        }
        // SAFETY: the frame is ours (status checked with acquire); header and data
        // (frame.len() <= max_tx_frame) lie inside it.
        unsafe {
            let h = self.at(off) as *mut libc::tpacket3_hdr;
            (*h).tp_next_offset = 0;
            (*h).tp_len = (VNET_HDR_LEN + frame.len()) as u32;
            (*h).tp_snaplen = (VNET_HDR_LEN + frame.len()) as u32;
            std::ptr::copy_nonoverlapping(
                vnet_header(frame.len()).as_ptr(),
                self.at(off + TX_DATA_OFFSET),
                VNET_HDR_LEN,
            );
            std::ptr::copy_nonoverlapping(
                frame.as_ptr(),
                self.at(off + TX_DATA_OFFSET + VNET_HDR_LEN),
                frame.len(),
            );
        }
        self.status(status_off)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx_head = (self.tx_head + 1) % self.geometry.tx_frame_count();
        self.tx_pending += 1;
        true
    }

    /// Asks the kernel to send the frames marked so far (one `sendto`, not waiting).
    /// The kernel takes frames in ring order and may stop early (with `MSG_DONTWAIT`
    /// a full socket send buffer ends the walk): frames it left stay marked and
    /// pending, and the next kick sends them. A kick that sends nothing new is cheap.
    pub fn tx_kick(&mut self) {
        if self.tx_pending == 0 {
            return;
        }
        // SAFETY: a send of no bytes with no address: the kernel walks the tx ring.
        // Its result does not say which frames it took; the status words do.
        let _ = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        // Frames go in order, so the last one marked tells: once the kernel has
        // taken it (no longer SEND_REQUEST), it has taken all before it.
        let frames = self.geometry.tx_frame_count();
        let last = (self.tx_head + frames - 1) % frames;
        let off = self.geometry.rx_bytes() + self.geometry.tx_frame_offset(last);
        let status_off = off + std::mem::offset_of!(libc::tpacket3_hdr, tp_status);
        let s = self.status(status_off).load(Ordering::Acquire);
        if s & libc::TP_STATUS_SEND_REQUEST == 0 {
            self.tx_pending = 0;
        } else {
            self.tx_kick_retries += 1;
        }
    }

    /// Frames marked for sending that no kick has taken yet.
    pub fn tx_pending(&self) -> u32 {
        self.tx_pending
    }
}

/// A `virtio_net_hdr` for a frame of `len` bytes sent as it is (no checksum to fill
/// in, no segmentation): only `hdr_len`, little-endian, the bytes the kernel copies
/// into the skb's linear part: all of them.
fn vnet_header(len: usize) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    h[2..4].copy_from_slice(&(len as u16).to_le_bytes());
    h
}

/// Reads a socket's kernel counters from any thread (the socket itself stays with
/// its worker).
#[derive(Clone)]
pub struct StatsHandle(Arc<OwnedFd>);

impl StatsHandle {
    /// Packets and drops since the last call (the kernel resets them on read).
    pub fn take(&self) -> KernelStats {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writing; the kernel writes at most len.
        let r = unsafe {
            libc::getsockopt(
                self.0.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return KernelStats::default();
        }
        KernelStats {
            packets: u64::from(st.tp_packets),
            drops: u64::from(st.tp_drops),
        }
    }
}

pub fn page_size() -> usize {
    // SAFETY: plain libc call.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g() -> Geometry {
        Geometry {
            block_size: 1 << 16,
            block_count: 8,
            frame_size: 2048,
            tx_frames: 100,
            block_timeout_ms: 1,
        }
    }

    #[test]
    fn header_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<libc::tpacket3_hdr>(), 48);
        assert_eq!(TX_DATA_OFFSET, 48);
        assert_eq!(std::mem::offset_of!(libc::tpacket_block_desc, hdr), 8);
        assert_eq!(std::mem::offset_of!(libc::tpacket3_hdr, tp_status), 20);
    }

    #[test]
    fn vnet_header_asks_for_the_whole_frame_linear() {
        assert_eq!(vnet_header(60), [0, 0, 60, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(vnet_header(1514)[2..4], 1514u16.to_le_bytes());
    }

    #[test]
    fn tx_geometry_rounds_to_blocks() {
        let g = g();
        assert_eq!(g.frames_per_block(), 32);
        assert_eq!(g.tx_blocks(), 4);
        assert_eq!(g.tx_frame_count(), 128);
        assert_eq!(g.tx_bytes(), 4 << 16);
        assert_eq!(g.rx_bytes(), 8 << 16);
        assert_eq!(g.tx_frame_offset(0), 0);
        assert_eq!(g.tx_frame_offset(31), 31 * 2048);
        assert_eq!(g.tx_frame_offset(33), (1 << 16) + 2048);
        assert_eq!(g.max_tx_frame(), 1990);
        // A frame size that does not divide the block leaves the tail unused.
        let odd = Geometry {
            frame_size: 3008,
            ..g
        };
        assert_eq!(odd.frames_per_block(), 21);
        assert_eq!(odd.tx_frame_offset(21), 1 << 16);
        assert!(odd.check(4096).is_ok());
    }

    #[test]
    fn bad_geometry_is_named() {
        let cases = [
            (
                Geometry {
                    block_size: 5000,
                    ..g()
                },
                "block_size",
            ),
            (
                Geometry {
                    block_size: 12288,
                    ..g()
                },
                "power of two",
            ),
            (
                Geometry {
                    block_count: 0,
                    ..g()
                },
                "block_count",
            ),
            (
                Geometry {
                    frame_size: 100,
                    ..g()
                },
                "frame_size",
            ),
            (
                Geometry {
                    frame_size: 2050,
                    ..g()
                },
                "frame_size",
            ),
            (
                Geometry {
                    frame_size: 1 << 17,
                    ..g()
                },
                "frame_size",
            ),
            (
                Geometry {
                    tx_frames: 0,
                    ..g()
                },
                "tx_frames",
            ),
            (
                Geometry {
                    block_timeout_ms: 0,
                    ..g()
                },
                "block_timeout_ms",
            ),
            (
                Geometry {
                    block_count: 1 << 20,
                    ..g()
                },
                "rings of",
            ),
        ];
        for (geo, word) in cases {
            let e = geo.check(4096).unwrap_err();
            assert!(e.contains(word), "{geo:?}: {e}");
        }
        assert!(g().check(4096).is_ok());
    }

    #[test]
    fn unknown_interface_is_an_error() {
        let e = ifindex("no-such-if0").unwrap_err();
        assert!(e.contains("no such interface"), "{e}");
        assert!(ifindex("lo").is_ok());
    }
}
