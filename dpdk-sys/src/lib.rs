//! offloadd's own thin bindings to the system DPDK 22.11.
//!
//! `build.rs` finds DPDK with pkg-config (`libdpdk`), runs bindgen over the EAL,
//! ethdev, mbuf and mempool functions offloadd calls (an allowlist, nothing else), and
//! compiles `shim/shim.c`: real functions around DPDK's inline fast path
//! (`rte_eth_rx_burst`, `rte_eth_tx_burst`, `rte_pktmbuf_alloc[_bulk]`,
//! `rte_pktmbuf_free`, the mbuf data pointer and length, `rte_pktmbuf_append`,
//! `rte_lcore_id`, `rte_errno`) and the RSS constants bindgen cannot evaluate. Those are
//! named `offloadd_*` / `OFFLOADD_*`.
//!
//! Poll-mode drivers are not linked: Debian's DPDK loads them as plugins from its
//! driver directory at `rte_eal_init`.
//!
//! Everything here is `unsafe` raw FFI; `dataplane::port::dpdk` is the safe layer.

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// DPDK's description of an error number (`rte_strerror`, which also knows DPDK's own
/// codes above `__ELASTERROR`).
pub fn strerror(errnum: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or per-thread string.
    unsafe {
        let p = rte_strerror(errnum);
        if p.is_null() {
            return format!("error {errnum}");
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// `rte_errno` of the calling thread.
pub fn errno() -> i32 {
    // SAFETY: reads a thread-local int.
    unsafe { offloadd_errno() }
}
