//! The vector index behind a shard. Slots are dense `u32` labels handed out by the shard; an
//! index never decides which slot a vector gets, so two indexes are interchangeable.

use crate::codec::{Reader, Writer};
use crate::{EngineError, IndexKind};

/// A candidate: slot and index distance (smaller is closer).
pub type Scored = (u32, f32);

pub trait VectorIndex {
    fn kind(&self) -> IndexKind;
    /// Adds `vector` under `slot`, which is always the next unused slot.
    fn insert(&mut self, slot: u32, vector: &[f32]) -> Result<(), EngineError>;
    /// Makes pending inserts searchable (hora builds in batches; ours is incremental).
    fn flush(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
    /// Marks a slot as gone. It may still route searches but is never returned.
    fn remove(&mut self, slot: u32);
    /// The `k` nearest accepted slots, closest first, exploring `ef` candidates. `None`
    /// accepts every slot (and lets an index take a faster path).
    fn search(
        &mut self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Scored>;
    /// The stored vector of a live slot (for exact search and rebuilds).
    fn vector(&self, slot: u32) -> Option<&[f32]>;
    /// Slots handed out so far, deleted ones included.
    fn slots(&self) -> u32;
    fn memory_bytes(&self) -> usize;
    /// Writes the index as bytes, or says it cannot. The bytes hold no vector of a live
    /// slot: a restored index gets those back through [`VectorIndex::fill`].
    fn write(&self, out: &mut Writer) -> Result<(), EngineError>;
    /// During a restore: the vector of live `slot` (the stored object's). False if it is not
    /// the vector the slot was indexed with (the object changed after the snapshot); the
    /// slot then still routes searches, and the caller retires it.
    fn fill(&mut self, slot: u32, vector: &[f32]) -> bool {
        let _ = (slot, vector);
        false
    }
    /// Ends a restore: the live slots [`VectorIndex::fill`] did not reach, which the caller
    /// retires. Searches may run only after this.
    fn seal(&mut self) -> Vec<u32> {
        Vec::new()
    }
}

/// Reads an index written by [`VectorIndex::write`].
pub fn read(kind: IndexKind, r: &mut Reader<'_>) -> Result<Box<dyn VectorIndex>, EngineError> {
    match kind {
        IndexKind::Hnsw => Ok(Box::new(crate::hnsw::Hnsw::read(r)?)),
        IndexKind::Hora => Err(EngineError::Unsupported(
            "hora indexes have no byte snapshot; rebuild from storage".into(),
        )),
    }
}
