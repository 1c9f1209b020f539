//! The XDP sender: the kernel's own packet generator for the real-port benchmark.
//!
//! `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` (Linux >= 5.18) runs an XDP
//! program over frames from a page pool in a loop inside one system call, and
//! transmits the frames the program returns `XDP_TX` for through the test's ingress
//! interface's `ndo_xdp_xmit`. On a veth that puts each frame straight into the
//! peer's receive ring as an `xdp_frame`: no socket, no skb, no qdisc on the sending
//! side, so one core offers several times what an AF_PACKET tx ring offers. The
//! peer needs its NAPI receive path on (an XDP program, or GRO: `sender.rs` turns it on).
//!
//! The program here (hand-assembled below, no compiler or loader needed) writes frame
//! `cursor` of a BPF array of frames over the packet, advances the cursor round-robin
//! and returns `XDP_TX`: the same frames in the same order as the AF_PACKET sender.
//!
//! This file owns every `bpf()` call and `unsafe` block of the sender.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
const XDP_DROP: i32 = 1;
const XDP_TX: i32 = 3;
/// Frames per test-run call: about 50 ms at 2 Mpps, so the deadline is checked often.
const FRAMES_PER_CALL: u32 = 1 << 17;
/// Frames the kernel runs the program over before it flushes them to the device.
const BATCH: u32 = 64;

/// `union bpf_attr` for BPF_MAP_CREATE (the fields used; the kernel zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for BPF_MAP_UPDATE_ELEM.
#[repr(C)]
#[derive(Default)]
struct MapUpdate {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_PROG_LOAD.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN.
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
}

/// `struct xdp_md`, the test run's context: which interface the frames "arrive" on
/// (and, with `XDP_TX`, leave by).
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<libc::c_long, String> {
    // SAFETY: `attr` is a live `repr(C)` prefix of `union bpf_attr` of the size given;
    // every pointer in it points at memory that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        Ok(r)
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The few instruction forms the program uses (`linux/bpf_common.h`, `linux/bpf.h`).
mod asm {
    use super::Insn;
    const LD: u8 = 0x00;
    const LDX: u8 = 0x01;
    const STX: u8 = 0x03;
    const ST: u8 = 0x02;
    const ALU64: u8 = 0x07;
    const JMP: u8 = 0x05;
    const DW: u8 = 0x18;
    const W: u8 = 0x00;
    const MEM: u8 = 0x60;
    const IMM: u8 = 0x00;
    const K: u8 = 0x00;
    const X: u8 = 0x08;
    const ADD: u8 = 0x00;
    const MOV: u8 = 0xb0;
    const JEQ: u8 = 0x10;
    const JGT: u8 = 0x20;
    const JLT: u8 = 0xa0;
    const CALL: u8 = 0x80;
    const EXIT: u8 = 0x90;
    /// `BPF_PSEUDO_MAP_FD`: the 64-bit immediate is a map's file descriptor.
    const PSEUDO_MAP_FD: u8 = 1;
    /// `bpf_map_lookup_elem`.
    pub const MAP_LOOKUP: i32 = 1;
    /// Size codes for loads and stores.
    pub const SZ_W: u8 = 0x00;
    pub const SZ_H: u8 = 0x08;
    pub const SZ_B: u8 = 0x10;
    pub const SZ_DW: u8 = 0x18;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        }
    }
    pub fn mov(dst: u8, src: u8) -> Insn {
        insn(ALU64 | MOV | X, dst, src, 0, 0)
    }
    pub fn mov_imm(dst: u8, imm: i32) -> Insn {
        insn(ALU64 | MOV | K, dst, 0, 0, imm)
    }
    pub fn add_imm(dst: u8, imm: i32) -> Insn {
        insn(ALU64 | ADD | K, dst, 0, 0, imm)
    }
    /// `dst = *(size *)(src + off)`.
    pub fn load(size: u8, dst: u8, src: u8, off: i16) -> Insn {
        insn(LDX | MEM | size, dst, src, off, 0)
    }
    /// `*(size *)(dst + off) = src`.
    pub fn store(size: u8, dst: u8, off: i16, src: u8) -> Insn {
        insn(STX | MEM | size, dst, src, off, 0)
    }
    /// `*(u32 *)(dst + off) = imm`.
    pub fn store_imm_w(dst: u8, off: i16, imm: i32) -> Insn {
        insn(ST | MEM | W, dst, 0, off, imm)
    }
    /// `dst = map fd` (two instruction slots).
    pub fn load_map(dst: u8, fd: i32) -> [Insn; 2] {
        [
            insn(LD | IMM | DW, dst, PSEUDO_MAP_FD, 0, fd),
            insn(0, 0, 0, 0, 0),
        ]
    }
    pub fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
        insn(JMP | JEQ | K, dst, 0, off, imm)
    }
    pub fn jlt_imm(dst: u8, imm: i32, off: i16) -> Insn {
        insn(JMP | JLT | K, dst, 0, off, imm)
    }
    pub fn jgt(dst: u8, src: u8, off: i16) -> Insn {
        insn(JMP | JGT | X, dst, src, off, 0)
    }
    pub fn call(helper: i32) -> Insn {
        insn(JMP | CALL, 0, 0, 0, helper)
    }
    pub fn exit() -> Insn {
        insn(JMP | EXIT, 0, 0, 0, 0)
    }
}

/// The program: `i = cursor; cursor = (i + 1) % frames; copy frames[i] over the
/// packet; XDP_TX` (XDP_DROP if a lookup fails or the packet is too short, which the
/// verifier needs ruled out and which cannot happen).
fn program(cursor_fd: i32, frames_fd: i32, frame_count: u32, frame_len: usize) -> Vec<Insn> {
    use asm::*;
    let mut p = vec![mov(6, 1)]; // r6 = ctx
                                 // r0 = &cursor[0]
    p.push(store_imm_w(10, -4, 0));
    p.extend(load_map(1, cursor_fd));
    p.extend([mov(2, 10), add_imm(2, -4), call(MAP_LOOKUP)]);
    let drop_if_null_1 = p.len();
    p.push(jeq_imm(0, 0, 0)); // patched: to the drop
    p.extend([
        load(SZ_DW, 7, 0, 0), // r7 = i
        mov(8, 7),
        add_imm(8, 1),
        jlt_imm(8, frame_count as i32, 1),
        mov_imm(8, 0),
        store(SZ_DW, 0, 0, 8),  // cursor = next
        store(SZ_W, 10, -8, 7), // key = i
    ]);
    // r0 = &frames[i]
    p.extend(load_map(1, frames_fd));
    p.extend([mov(2, 10), add_imm(2, -8), call(MAP_LOOKUP)]);
    let drop_if_null_2 = p.len();
    p.push(jeq_imm(0, 0, 0));
    // r2 = data, r3 = data_end; the packet must hold the frame.
    p.extend([
        load(SZ_W, 2, 6, 0),
        load(SZ_W, 3, 6, 4),
        mov(4, 2),
        add_imm(4, frame_len as i32),
    ]);
    let drop_if_short = p.len();
    p.push(jgt(4, 3, 0));
    let mut off = 0usize;
    for (size, bytes) in [(SZ_DW, 8), (SZ_W, 4), (SZ_H, 2), (SZ_B, 1)] {
        while frame_len - off >= bytes {
            p.push(load(size, 5, 0, off as i16));
            p.push(store(size, 2, off as i16, 5));
            off += bytes;
        }
    }
    p.extend([mov_imm(0, XDP_TX), exit()]);
    let drop = p.len();
    p.extend([mov_imm(0, XDP_DROP), exit()]);
    for at in [drop_if_null_1, drop_if_null_2, drop_if_short] {
        p[at].off = (drop - at - 1) as i16;
    }
    p
}

/// A loaded sender: the program and its two maps, bound to one interface.
pub struct XdpSender {
    prog: OwnedFd,
    _maps: [OwnedFd; 2],
    ifindex: u32,
    template: Vec<u8>,
}

fn map(value_size: u32, entries: u32) -> Result<OwnedFd, String> {
    let mut attr = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size,
        max_entries: entries,
        map_flags: 0,
    };
    let fd = bpf(BPF_MAP_CREATE, &mut attr).map_err(|e| format!("BPF_MAP_CREATE: {e}"))?;
    // SAFETY: a fresh descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn map_put(map: &OwnedFd, key: u32, value: &[u8]) -> Result<(), String> {
    let mut attr = MapUpdate {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: value.as_ptr() as u64,
        ..MapUpdate::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
        .map(|_| ())
        .map_err(|e| format!("BPF_MAP_UPDATE_ELEM: {e}"))
}

impl XdpSender {
    /// Loads the program with `frames` (all of one length) for interface `ifindex` of
    /// the calling thread's network namespace.
    pub fn new(frames: &[Vec<u8>], ifindex: u32) -> Result<XdpSender, String> {
        let len = frames.first().map(|f| f.len()).ok_or("no frames to send")?;
        if frames.iter().any(|f| f.len() != len) || !(14..=256).contains(&len) {
            return Err("the XDP sender needs frames of one length, 14 to 256 bytes".into());
        }
        let count = u32::try_from(frames.len())
            .ok()
            .filter(|&n| n < i32::MAX as u32)
            .ok_or("too many frames for the XDP sender")?;
        let value_size = len.next_multiple_of(8);
        let cursor = map(8, 1)?;
        let table = map(value_size as u32, count)?;
        let mut value = vec![0u8; value_size];
        for (i, f) in frames.iter().enumerate() {
            value[..len].copy_from_slice(f);
            map_put(&table, i as u32, &value)?;
        }
        let insns = program(cursor.as_raw_fd(), table.as_raw_fd(), count, len);
        let license = c"GPL";
        let mut log = vec![0u8; 1 << 16];
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
        };
        let fd = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            format!(
                "BPF_PROG_LOAD: {e}: {}",
                String::from_utf8_lossy(&log[..end]).trim()
            )
        })?;
        Ok(XdpSender {
            // SAFETY: a fresh descriptor the kernel just gave us.
            prog: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            _maps: [cursor, table],
            ifindex,
            template: frames[0].clone(),
        })
    }

    /// Runs the program over `frames` live frames (the kernel sends them by `XDP_TX`).
    fn run(&self, frames: u32) -> Result<(), String> {
        let mut ctx = XdpMd {
            data_end: self.template.len() as u32,
            ingress_ifindex: self.ifindex,
            ..XdpMd::default()
        };
        let mut attr = TestRun {
            prog_fd: self.prog.as_raw_fd() as u32,
            data_size_in: self.template.len() as u32,
            data_in: self.template.as_ptr() as u64,
            repeat: frames,
            ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
            ctx_in: &mut ctx as *mut XdpMd as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: BATCH,
            ..TestRun::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr)
            .map(|_| ())
            .map_err(|e| format!("BPF_PROG_TEST_RUN (live frames): {e}"))
    }

    /// Sends for `secs` from the calling thread; the frames the program ran over (each
    /// handed to the interface's XDP transmit) and the time taken.
    pub fn blast(&self, secs: u64) -> Result<(u64, Duration), String> {
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let mut sent = 0u64;
        while Instant::now() < end {
            self.run(FRAMES_PER_CALL)?;
            sent += u64::from(FRAMES_PER_CALL);
        }
        Ok((sent, start.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_copies_whole_frames_and_jumps_to_the_drop() {
        let p = program(3, 4, 10, 60);
        // 60 bytes: 7 double words and one word, a load and a store each.
        let copies = p.iter().filter(|i| i.code & 0x07 == 0x03).count();
        assert_eq!(copies, 8 + 2, "8 copy stores + cursor + key");
        let drop = p.len() - 2;
        assert_eq!(p[drop].imm, XDP_DROP);
        for (at, i) in p.iter().enumerate() {
            if i.code == 0x15 || i.code == 0x2d {
                assert_eq!(
                    at as i64 + 1 + i64::from(i.off),
                    drop as i64,
                    "jump at {at}"
                );
            }
        }
    }
}
