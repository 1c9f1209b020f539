//! Packet buffers and the pool they come from.
//!
//! A pool is one region of fixed-size buffers reserved at start; a `PacketBuf` owns one
//! buffer and gives it back to its pool when dropped, so ownership of every buffer is
//! in the types (as in ixy.rs): a packet is either in a pool, in a ring, or held by
//! exactly one piece of code. Nothing is allocated per packet.

use std::ptr::NonNull;
use std::sync::Arc;

use arrayvec::ArrayVec;
use crossbeam_queue::ArrayQueue;

use crate::mem::{Region, ReserveError};

/// Packets moved per rx/tx call.
pub const BURST: usize = 32;

/// Bytes kept free in front of every frame, so a VLAN tag can be pushed in place.
pub const HEADROOM: usize = 64;

/// Up to `BURST` packets, on the stack.
pub type Burst = ArrayVec<PacketBuf, BURST>;

struct PoolInner {
    mem: Region<u8>,
    buf_size: usize,
    count: u32,
    free: ArrayQueue<u32>,
}

/// A fixed set of packet buffers. Cloning shares the same buffers.
#[derive(Clone)]
pub struct PacketPool {
    inner: Arc<PoolInner>,
}

impl PacketPool {
    /// Reserves `count` buffers that each hold a frame of up to `frame_size` bytes
    /// (plus the headroom).
    pub fn new(count: u32, frame_size: usize) -> Result<PacketPool, ReserveError> {
        let buf_size = (HEADROOM + frame_size).div_ceil(64) * 64;
        let mem = Region::zeroed(buf_size * count as usize)?;
        let free = ArrayQueue::new(count.max(1) as usize);
        for i in 0..count {
            let _ = free.push(i);
        }
        Ok(PacketPool {
            inner: Arc::new(PoolInner {
                mem,
                buf_size,
                count,
                free,
            }),
        })
    }

    /// A buffer with an empty frame, or `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<PacketBuf> {
        let idx = self.inner.free.pop()?;
        Some(PacketBuf {
            pool: NonNull::from(&*self.inner),
            idx,
            off: HEADROOM as u16,
            len: 0,
        })
    }

    /// A buffer holding a copy of `frame`; `None` when the pool is exhausted or the
    /// frame does not fit.
    pub fn alloc_from(&self, frame: &[u8]) -> Option<PacketBuf> {
        if frame.len() > self.frame_capacity() {
            return None;
        }
        let mut p = self.alloc()?;
        p.set_len(frame.len());
        p.data_mut().copy_from_slice(frame);
        Some(p)
    }

    /// Largest frame a buffer holds.
    pub fn frame_capacity(&self) -> usize {
        (self.inner.buf_size - HEADROOM).min(u16::MAX as usize)
    }

    pub fn capacity(&self) -> u32 {
        self.inner.count
    }

    /// Buffers currently in the pool (not held by anyone).
    pub fn available(&self) -> usize {
        self.inner.free.len()
    }
}

impl Drop for PacketPool {
    fn drop(&mut self) {
        // Buffers point at the pool without a reference count (that would be an atomic
        // per packet on two cores). If this is the last handle and buffers are still
        // out, keep the memory alive rather than let them dangle.
        if Arc::strong_count(&self.inner) == 1 && self.inner.free.len() != self.inner.count as usize
        {
            std::mem::forget(self.inner.clone());
        }
    }
}

/// One frame in a pool buffer. Dropping it returns the buffer to the pool.
pub struct PacketBuf {
    pool: NonNull<PoolInner>,
    idx: u32,
    off: u16,
    len: u16,
}

// SAFETY: a PacketBuf is the only handle to its buffer; the pool outlives it (see
// PacketPool::drop) and its free list is a lock-free MPMC queue.
unsafe impl Send for PacketBuf {}

impl PacketBuf {
    #[inline]
    fn pool(&self) -> &PoolInner {
        // SAFETY: the pool is kept alive while any buffer is out.
        unsafe { self.pool.as_ref() }
    }

    #[inline]
    fn base(&self) -> *mut u8 {
        let pool = self.pool();
        // SAFETY: idx < count, so the buffer lies inside the region.
        unsafe { pool.mem.as_ptr().add(self.idx as usize * pool.buf_size) }
    }

    /// The frame.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: off + len <= buf_size is kept by every method that changes them.
        unsafe { std::slice::from_raw_parts(self.base().add(self.off as usize), self.len as usize) }
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(); &mut self owns the buffer.
        unsafe {
            std::slice::from_raw_parts_mut(self.base().add(self.off as usize), self.len as usize)
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for the frame after its start.
    pub fn tailroom(&self) -> usize {
        self.pool().buf_size - self.off as usize
    }

    /// Room in front of the frame.
    pub fn headroom(&self) -> usize {
        self.off as usize
    }

    /// Sets the frame length (new bytes keep whatever the buffer held).
    ///
    /// # Panics
    /// If `len` is larger than the tailroom; callers check `tailroom()` first.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.tailroom(), "frame longer than its buffer");
        self.len = len as u16;
    }

    /// Grows the frame at the front by `n` bytes; false (and no change) without room.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> bool {
        if n > self.off as usize {
            return false;
        }
        self.off -= n as u16;
        self.len += n as u16;
        true
    }

    /// Removes `n` bytes from the front; false (and no change) if the frame is shorter.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len as usize {
            return false;
        }
        self.off += n as u16;
        self.len -= n as u16;
        true
    }

    /// A copy of this frame in a fresh buffer of the same pool (mirror and snoop copies).
    #[inline]
    pub fn copy(&self) -> Option<PacketBuf> {
        let pool = self.pool();
        let idx = pool.free.pop()?;
        let mut p = PacketBuf {
            pool: self.pool,
            idx,
            off: HEADROOM as u16,
            len: 0,
        };
        if self.len() > p.tailroom() {
            return None; // `p` goes back to the pool
        }
        p.len = self.len;
        p.data_mut().copy_from_slice(self.data());
        Some(p)
    }

    /// Asks the CPU to bring the start of the frame into L2 (see `prefetch::read_l2`).
    #[inline(always)]
    pub fn prefetch(&self) {
        crate::prefetch::read_l2(unsafe { self.base().add(self.off as usize) });
    }
}

impl Drop for PacketBuf {
    #[inline]
    fn drop(&mut self) {
        let idx = self.idx;
        // Cannot fail: the queue holds every buffer of the pool and this one is out.
        let _ = self.pool().free.push(idx);
    }
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PacketBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_returns_on_drop() {
        let pool = PacketPool::new(4, 128).unwrap();
        let a = pool.alloc_from(&[1, 2, 3]).unwrap();
        assert_eq!(a.data(), &[1, 2, 3]);
        assert_eq!(pool.available(), 3);
        let b = a.copy().unwrap();
        assert_eq!(b.data(), &[1, 2, 3]);
        assert_eq!(pool.available(), 2);
        drop(a);
        drop(b);
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn exhaustion_is_none() {
        let pool = PacketPool::new(2, 128).unwrap();
        let _a = pool.alloc().unwrap();
        let _b = pool.alloc().unwrap();
        assert!(pool.alloc().is_none());
        assert!(pool.alloc_from(&[0; 4]).is_none());
    }

    #[test]
    fn too_long_frame_is_refused() {
        let pool = PacketPool::new(2, 128).unwrap();
        assert!(pool.alloc_from(&[0; 4096]).is_none());
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn front_adjust() {
        let pool = PacketPool::new(1, 128).unwrap();
        let mut p = pool.alloc_from(&[9; 20]).unwrap();
        assert!(p.push_front(4));
        assert_eq!(p.len(), 24);
        assert!(p.pull_front(8));
        assert_eq!(p.len(), 16);
        assert!(!p.pull_front(17));
        assert!(!p.push_front(HEADROOM + 100));
    }

    #[test]
    fn buffer_outliving_pool_handle_stays_valid() {
        let pool = PacketPool::new(2, 128).unwrap();
        let p = pool.alloc_from(&[5; 10]).unwrap();
        drop(pool);
        assert_eq!(p.data(), &[5; 10]);
    }
}
