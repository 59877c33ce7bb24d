//! Linear memory for engine instances, backed by transparent huge pages on Linux.
//!
//! An engine instance holds a shard's vectors, codes and graph in one linear memory (136 MiB
//! for the 61k shared dataset, about 2 GiB per million 384-d vectors), and a search reads it at
//! random. With 4 KiB pages, filling that memory at open costs one page fault per 4 KiB, and a
//! search misses the TLB on most rows it touches. Asking the kernel for 2 MiB pages
//! (`madvise(MADV_HUGEPAGE)`, honoured when `/sys/kernel/mm/transparent_hugepage/enabled` is
//! `always` or `madvise`, the common defaults) removes most of both.
//!
//! Everything else is what wasmtime's own memory does: one reservation of the whole
//! addressable size plus the guard region, inaccessible (`PROT_NONE`) beyond the current size,
//! made accessible as the memory grows, never moved. Where the kernel refuses huge pages, the
//! memory works the same with small ones.

// The workspace denies `unsafe`: this module maps memory itself, which is nothing but unsafe
// calls. Each one says why it is sound.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::NonNull;

use rustix::mm::{self, Advice, MapFlags, MprotectFlags, ProtFlags};
use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

/// Reservation when wasmtime leaves the size to us (it passes one for 32-bit memories on
/// 64-bit hosts, which is what the engine uses): the whole 32-bit address space.
const DEFAULT_RESERVATION: usize = 4 << 30;

/// Creates [`HugePageMemory`]s (`Config::with_host_memory`).
pub(crate) struct HugePageCreator;

/// One linear memory: `reserved + guard` bytes mapped at `base`, the first `size` of them
/// readable and writable.
struct HugePageMemory {
    base: NonNull<u8>,
    size: usize,
    reserved: usize,
    guard: usize,
}

// SAFETY: the mapping is owned by this value alone (wasmtime accesses it through `as_ptr` under
// its own synchronisation, as it does its built-in memories); nothing here is tied to a thread.
unsafe impl Send for HugePageMemory {}
// SAFETY: as above; `&self` methods only read the numbers.
unsafe impl Sync for HugePageMemory {}

// SAFETY: `new_memory` returns a zero-filled memory of `minimum` accessible bytes, followed,
// up to `reserved` and then `guard` more bytes, by inaccessible address space that belongs to
// it, so JIT code that elides bounds checks against the reservation and the guard faults
// instead of touching other memory. The base never moves (`grow_to` refuses to go past the
// reservation instead).
unsafe impl MemoryCreator for HugePageCreator {
    fn new_memory(
        &self,
        _ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        let reserved = reserved_size_in_bytes
            .unwrap_or_else(|| {
                maximum
                    .unwrap_or(DEFAULT_RESERVATION)
                    .min(DEFAULT_RESERVATION)
            })
            .max(minimum);
        let total = reserved
            .checked_add(guard_size_in_bytes)
            .ok_or("linear memory reservation overflows")?;
        // SAFETY: a new private anonymous mapping at an address the kernel chooses: it aliases
        // nothing. `NORESERVE`: address space only, no memory is committed until touched.
        let base = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                total,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| format!("reserving {total} bytes for a linear memory: {e}"))?;
        let base = NonNull::new(base.cast::<u8>()).ok_or("mmap returned a null mapping")?;
        let mut memory = HugePageMemory {
            base,
            size: 0,
            reserved,
            guard: guard_size_in_bytes,
        };
        // SAFETY: the range is the start of our own mapping. Advice only: the kernel may
        // ignore it (huge pages disabled), and the memory works the same.
        if let Err(e) =
            unsafe { mm::madvise(base.as_ptr().cast(), reserved, Advice::LinuxHugepage) }
        {
            tracing::debug!(error = %e, "huge pages unavailable for engine memory");
        }
        memory.grow_to(minimum).map_err(|e| {
            format!("making the first {minimum} bytes of a linear memory accessible: {e}")
        })?;
        Ok(Box::new(memory))
    }
}

// SAFETY: `byte_size` bytes from `as_ptr` are accessible and owned by this memory; growth makes
// more of its own reservation accessible without moving the base, and never past it.
unsafe impl LinearMemory for HugePageMemory {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.reserved
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if new_size <= self.size {
            return Ok(());
        }
        if new_size > self.reserved {
            wasmtime::bail!(
                "linear memory of {} bytes cannot grow to {new_size}",
                self.reserved
            );
        }
        // SAFETY: `size..new_size` lies inside our reservation (checked above); `size` is a
        // multiple of the Wasm page (64 KiB), so of the system page, as mprotect needs. The
        // pages were never accessible, so nothing can hold a reference into them.
        unsafe {
            mm::mprotect(
                self.base.as_ptr().add(self.size).cast::<c_void>(),
                new_size - self.size,
                MprotectFlags::READ | MprotectFlags::WRITE,
            )
        }?;
        self.size = new_size;
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for HugePageMemory {
    fn drop(&mut self) {
        // SAFETY: the whole mapping made in `new_memory`; wasmtime drops a memory only after the
        // instances using it.
        if let Err(e) = unsafe { mm::munmap(self.base.as_ptr().cast(), self.reserved + self.guard) }
        {
            tracing::warn!(error = %e, "unmapping an engine memory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_in_place_zeroed_and_refuses_past_its_reservation() {
        let ty = MemoryType::new(1, None);
        let mut m = HugePageCreator
            .new_memory(ty, 65536, None, Some(1 << 24), 1 << 16)
            .expect("memory");
        let base = m.as_ptr();
        assert_eq!(m.byte_size(), 65536);
        m.grow_to(3 * 65536).expect("grow");
        assert_eq!(m.as_ptr(), base, "the base never moves");
        // SAFETY: the first 3 Wasm pages are accessible now.
        let bytes = unsafe { std::slice::from_raw_parts_mut(base, 3 * 65536) };
        assert!(bytes.iter().all(|&b| b == 0), "new memory reads as zeros");
        bytes[3 * 65536 - 1] = 7;
        assert_eq!(bytes[3 * 65536 - 1], 7);
        assert!(m.grow_to((1 << 24) + 65536).is_err());
        assert_eq!(m.byte_size(), 3 * 65536);
    }
}
