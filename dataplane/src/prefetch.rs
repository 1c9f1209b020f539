//! Software prefetch hints. No-ops where the architecture has none.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{_MM_HINT_T0 as TO_L1, _MM_HINT_T1 as TO_L2};
#[cfg(not(target_arch = "x86_64"))]
const TO_L1: i32 = 0;
#[cfg(not(target_arch = "x86_64"))]
const TO_L2: i32 = 0;

#[inline(always)]
fn hint<const LEVEL: i32, T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<LEVEL>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Brings the line at `p` into L1.
#[inline(always)]
pub fn read<T>(p: *const T) {
    hint::<TO_L1, T>(p)
}

/// A line about to be written: x86 has no separate write hint in stable intrinsics;
/// L1 brings the line close.
#[inline(always)]
pub fn write<T>(p: *const T) {
    read(p)
}

/// Like `read`, but only as far as L2. A prefetch into L1 holds one of the core's
/// few L1 miss buffers until the line arrives; lines needed a while later (the
/// pipeline's frame headers) wait in L2 without taking one (dpbench 1M: +6%).
#[inline(always)]
pub fn read_l2<T>(p: *const T) {
    hint::<TO_L2, T>(p)
}
