//! A bounded single-producer single-consumer ring of owned items (packet buffers),
//! moved in bursts. One atomic load and one store per burst on each side.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

struct Shared<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// Next slot the consumer reads (written by the consumer only).
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes (written by the producer only).
    tail: CachePadded<AtomicUsize>,
}

// SAFETY: slots are handed from one thread to the other through the head/tail
// protocol; each slot is accessed by one side at a time.
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = *self.head.get_mut();
        let tail = *self.tail.get_mut();
        for i in head..tail {
            // SAFETY: slots in head..tail hold initialised items nobody else owns now.
            unsafe { (*self.slots[i & self.mask].get()).assume_init_drop() };
        }
    }
}

pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: usize,
    head_cache: usize,
}

pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    tail_cache: usize,
}

/// A ring holding up to `capacity` (rounded up to a power of two) items.
pub fn ring<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(2).next_power_of_two();
    let slots = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Vec<_>>()
        .into_boxed_slice();
    let shared = Arc::new(Shared {
        slots,
        mask: cap - 1,
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
    });
    (
        Producer {
            shared: shared.clone(),
            tail: 0,
            head_cache: 0,
        },
        Consumer {
            shared,
            head: 0,
            tail_cache: 0,
        },
    )
}

impl<T: Send> Producer<T> {
    fn free(&mut self) -> usize {
        let cap = self.shared.mask + 1;
        if self.tail - self.head_cache == cap {
            self.head_cache = self.shared.head.load(Ordering::Acquire);
        }
        cap - (self.tail - self.head_cache)
    }

    /// Moves items from the front of `items` into the ring until it is full; returns
    /// how many moved (the rest stay in `items`, in order).
    pub fn push_from<const N: usize>(&mut self, items: &mut arrayvec::ArrayVec<T, N>) -> usize {
        let mut free = self.free();
        if free < items.len() {
            self.head_cache = self.shared.head.load(Ordering::Acquire);
            free = self.free();
        }
        let n = free.min(items.len());
        for (i, item) in items.drain(..n).enumerate() {
            let slot = &self.shared.slots[(self.tail + i) & self.shared.mask];
            // SAFETY: the slot is free (between tail and head + cap), only we write it.
            unsafe { (*slot.get()).write(item) };
        }
        self.tail += n;
        self.shared.tail.store(self.tail, Ordering::Release);
        n
    }

    /// Pushes one item; gives it back when the ring is full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        if self.free() == 0 {
            self.head_cache = self.shared.head.load(Ordering::Acquire);
            if self.free() == 0 {
                return Err(item);
            }
        }
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: as in push_from.
        unsafe { (*slot.get()).write(item) };
        self.tail += 1;
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Items in the ring (as seen by the producer).
    pub fn len(&self) -> usize {
        self.tail - self.shared.head.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Send> Consumer<T> {
    /// Moves up to `N - out.len()` items into `out`; returns how many.
    #[inline]
    pub fn pop_into<const N: usize>(&mut self, out: &mut arrayvec::ArrayVec<T, N>) -> usize {
        let want = N - out.len();
        if self.tail_cache - self.head < want {
            self.tail_cache = self.shared.tail.load(Ordering::Acquire);
        }
        let n = (self.tail_cache - self.head).min(want);
        for i in 0..n {
            let slot = &self.shared.slots[(self.head + i) & self.shared.mask];
            // SAFETY: slots in head..tail were written by the producer (Acquire above).
            let item = unsafe { (*slot.get()).assume_init_read() };
            // SAFETY: n <= N - out.len().
            unsafe { out.push_unchecked(item) };
        }
        self.head += n;
        if n > 0 {
            self.shared.head.store(self.head, Ordering::Release);
            self.prefetch_next(N);
        }
        n
    }

    /// Brings the slots of the next `count` items into cache while this burst is
    /// processed: they were written by the other core, and reading them cold costs a
    /// cross-core transfer per line. Only slots the producer has published (below the
    /// tail seen) are touched. A hint: it changes no state.
    #[inline]
    fn prefetch_next(&self, count: usize) {
        let per_line = (64 / std::mem::size_of::<T>().max(1)).max(1);
        let end = self.tail_cache.min(self.head + count) & !(per_line - 1);
        let mut i = self.head;
        while i < end {
            crate::prefetch::read(self.shared.slots[i & self.shared.mask].get());
            i += per_line;
        }
    }

    /// Pops one item.
    pub fn pop(&mut self) -> Option<T> {
        if self.tail_cache == self.head {
            self.tail_cache = self.shared.tail.load(Ordering::Acquire);
            if self.tail_cache == self.head {
                return None;
            }
        }
        let slot = &self.shared.slots[self.head & self.shared.mask];
        // SAFETY: as in pop_into.
        let item = unsafe { (*slot.get()).assume_init_read() };
        self.head += 1;
        self.shared.head.store(self.head, Ordering::Release);
        Some(item)
    }

    pub fn len(&self) -> usize {
        self.shared.tail.load(Ordering::Acquire) - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrayvec::ArrayVec;

    #[test]
    fn fifo_and_full() {
        let (mut p, mut c) = ring::<u32>(4);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(9));
        let mut out: ArrayVec<u32, 3> = ArrayVec::new();
        assert_eq!(c.pop_into(&mut out), 3);
        assert_eq!(out.as_slice(), &[0, 1, 2]);
        assert_eq!(c.pop(), Some(3));
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn burst_push_keeps_rest() {
        let (mut p, mut c) = ring::<u32>(4);
        let mut items: ArrayVec<u32, 8> = (0..6).collect();
        assert_eq!(p.push_from(&mut items), 4);
        assert_eq!(items.as_slice(), &[4, 5]);
        assert_eq!(c.pop(), Some(0));
        assert_eq!(p.push_from(&mut items), 1);
        assert_eq!(items.as_slice(), &[5]);
    }

    #[test]
    fn drops_leftovers() {
        let item = Arc::new(());
        {
            let (mut p, _c) = ring::<Arc<()>>(4);
            p.push(item.clone()).unwrap();
            p.push(item.clone()).unwrap();
            assert_eq!(Arc::strong_count(&item), 3);
        }
        assert_eq!(Arc::strong_count(&item), 1);
    }

    #[test]
    fn threads_pass_everything_in_order() {
        let (mut p, mut c) = ring::<u64>(64);
        const N: u64 = 200_000;
        let t = std::thread::spawn(move || {
            let mut next = 0;
            while next < N {
                if p.push(next).is_ok() {
                    next += 1;
                }
            }
        });
        let mut expect = 0;
        while expect < N {
            let mut out: ArrayVec<u64, 32> = ArrayVec::new();
            c.pop_into(&mut out);
            for v in out {
                assert_eq!(v, expect);
                expect += 1;
            }
        }
        t.join().unwrap();
    }
}
