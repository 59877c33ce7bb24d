//! The memory one call may use: all its linear memories and tables together (a component may
//! hold several core instances, each with its own memory), counted as they grow. A growth past
//! the cap traps the plugin at once, and the limiter remembers it, so the call's failure is
//! reported as memory whatever error wasmtime wraps it in.

use wasmtime::ResourceLimiter;

/// Most core instances, memories and tables one call may create: far more than a component
/// built by a Rust toolchain uses, and few enough that their address space reservations stay
/// small.
const MAX_INSTANCES: usize = 256;
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;

/// A growth refused because it would pass the cap.
#[derive(Debug, thiserror::Error)]
#[error("growing to {wanted} bytes in all would pass the memory cap of {cap} bytes")]
pub(super) struct MemoryCapReached {
    pub wanted: usize,
    pub cap: usize,
}

/// Counts the bytes of memories and tables of one call's store.
#[derive(Debug)]
pub(super) struct CallLimiter {
    cap: usize,
    used: usize,
    /// What the growth being attempted adds (taken back if it fails).
    pending: usize,
    /// A growth was refused for the cap.
    pub refused: bool,
}

impl CallLimiter {
    pub fn new(cap: u64) -> Self {
        CallLimiter {
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            used: 0,
            pending: 0,
            refused: false,
        }
    }

    /// Bytes of memories and tables in use.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used
    }

    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let added = desired.saturating_sub(current);
        let wanted = self.used.saturating_add(added);
        if wanted > self.cap {
            self.refused = true;
            return Err(MemoryCapReached {
                wanted,
                cap: self.cap,
            }
            .into());
        }
        self.used = wanted;
        self.pending = added;
        Ok(true)
    }

    fn failed(&mut self) {
        self.used = self.used.saturating_sub(self.pending);
        self.pending = 0;
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own declared maximum: `memory.grow` answers -1, as in any runtime.
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.grow(current, desired)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        // Each table element takes a pointer's worth of the host's memory.
        let size = std::mem::size_of::<usize>();
        self.grow(current.saturating_mul(size), desired.saturating_mul(size))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.failed();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_the_cap() {
        let mut l = CallLimiter::new(1 << 20);
        assert!(matches!(l.memory_growing(0, 512 << 10, None), Ok(true)));
        assert!(matches!(l.memory_growing(0, 256 << 10, None), Ok(true)));
        assert!(matches!(l.table_growing(0, 1024, None), Ok(true)));
        assert!(!l.refused);
        // Past its own maximum: refused without an error, nothing counted.
        assert!(matches!(
            l.memory_growing(512 << 10, 1 << 20, Some(512 << 10)),
            Ok(false)
        ));
        let err = l.memory_growing(512 << 10, 1 << 20, None);
        assert!(err.is_err_and(|e| e.downcast_ref::<MemoryCapReached>().is_some()));
        assert!(l.refused);
        assert_eq!(l.used(), (768 << 10) + 8 * 1024);
        // A growth the operating system refused is not counted.
        assert!(matches!(
            l.memory_growing(256 << 10, 320 << 10, None),
            Ok(true)
        ));
        assert!(l.memory_grow_failed(wasmtime::Error::msg("no")).is_ok());
        assert_eq!(l.used(), (768 << 10) + 8 * 1024);
    }
}
