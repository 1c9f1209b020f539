//! Memory reserved at start: anonymous mappings, pre-faulted, with transparent huge
//! pages requested. The flow tables and packet pools live here so that a full table is
//! an answer and never an out-of-memory on the packet path.

use std::ptr::NonNull;

/// A zero-filled, fixed-size array of `T` in its own mapping.
///
/// `T` must be valid when all-zero (plain counters, indices, arrays of them).
pub struct Region<T> {
    ptr: NonNull<T>,
    len: usize,
    bytes: usize,
}

// SAFETY: a Region owns its mapping exclusively, like a Box<[T]>.
unsafe impl<T: Send> Send for Region<T> {}
unsafe impl<T: Sync> Sync for Region<T> {}

#[derive(Debug)]
pub struct ReserveError {
    pub bytes: usize,
    pub errno: i32,
}

impl std::fmt::Display for ReserveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot reserve {} bytes: {}",
            self.bytes,
            std::io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for ReserveError {}

const HUGE_PAGE: usize = 2 << 20;

impl<T> Region<T> {
    /// Maps `len` zeroed elements. Large regions ask for transparent huge pages and
    /// are pre-faulted, so the memory exists before the first packet arrives.
    pub fn zeroed(len: usize) -> Result<Region<T>, ReserveError> {
        let len = len.max(1);
        let size = std::mem::size_of::<T>().max(1);
        assert!(
            std::mem::align_of::<T>() <= 4096,
            "Region alignment is the page"
        );
        let want = len.checked_mul(size).ok_or(ReserveError {
            bytes: usize::MAX,
            errno: libc::ENOMEM,
        })?;
        let bytes = want.div_ceil(4096) * 4096;
        // SAFETY: a fresh private anonymous mapping; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ReserveError {
                bytes,
                errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            });
        }
        if bytes >= HUGE_PAGE {
            // SAFETY: advice on our own mapping; failure only means small pages.
            unsafe { libc::madvise(ptr, bytes, libc::MADV_HUGEPAGE) };
        }
        // Touch every page now: the reservation is real memory, not a promise.
        // SAFETY: ptr..ptr+bytes is our writable mapping.
        unsafe {
            let base = ptr as *mut u8;
            let mut off = 0;
            while off < bytes {
                base.add(off).write_volatile(0);
                off += 4096;
            }
        }
        Ok(Region {
            ptr: NonNull::new(ptr as *mut T).expect("mmap returned null"),
            len,
            bytes,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes mapped for this region.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T> std::ops::Deref for Region<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: len elements, zero-initialised, valid for T by the type's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> std::ops::DerefMut for Region<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as above, and &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for Region<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping we created; T needs no drop (plain data).
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_and_writable() {
        let mut r: Region<u64> = Region::zeroed(10_000).unwrap();
        assert_eq!(r.len(), 10_000);
        assert!(r.iter().all(|&v| v == 0));
        r[9_999] = 7;
        assert_eq!(r[9_999], 7);
        assert!(r.bytes() >= 80_000);
    }
}
