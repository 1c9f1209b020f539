//! Software prefetch hints. No-ops where the architecture has none.

#[inline(always)]
pub fn read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline(always)]
pub fn write<T>(p: *const T) {
    // x86 has no separate write hint in stable intrinsics; T0 brings the line close.
    read(p)
}

/// Like `read`, but only as far as L2. A prefetch into L1 holds one of the core's
/// few L1 miss buffers until the line arrives; lines needed a while later (the
/// pipeline's frame headers) wait in L2 without taking one (dpbench 1M: +6%).
#[inline(always)]
pub fn read_l2<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T1)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
