//! A collection at run time: its spec and, per shard, one or more engine instances holding
//! the same state ("replicas", `engine.read_replicas`). A `Store` runs one call at a time, so
//! replicas are how one shard serves several searches at once: a read takes any free replica;
//! a write is applied to every replica of its shards before it commits (so after its commit
//! every replica has it), at the cost of one copy of the shard's memory per replica.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::error::{Error, Result};
use crate::model::{CollectionSpec, Metric};
use crate::runtime::{wit, ShardInstance};

/// A shard's instance, or why it has none.
pub(crate) enum Slot {
    Ready(Box<ShardInstance>),
    Broken(String),
}

pub(crate) struct Collection {
    pub spec: CollectionSpec,
    /// `shards[s][r]`: replica `r` of shard `s`.
    shards: Vec<Vec<Mutex<Slot>>>,
    /// Where a read starts looking for a free replica (spreads waiting readers).
    next_reader: AtomicUsize,
}

/// FNV-1a: stable across builds and platforms, so an object always lands on the same shard.
pub(crate) fn shard_of(id: &str, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

impl Collection {
    /// `slots[s]` holds the replicas of shard `s` (at least one each).
    pub fn new(spec: CollectionSpec, slots: Vec<Vec<Slot>>) -> Self {
        Self {
            spec,
            shards: slots
                .into_iter()
                .map(|r| r.into_iter().map(Mutex::new).collect())
                .collect(),
            next_reader: AtomicUsize::new(0),
        }
    }

    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    fn replicas(&self, shard: u32) -> Result<&[Mutex<Slot>]> {
        self.shards
            .get(shard as usize)
            .map(Vec::as_slice)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| Error::Engine(format!("no shard {shard}")))
    }

    pub fn replica_count(&self, shard: u32) -> usize {
        self.replicas(shard).map_or(0, <[_]>::len)
    }

    /// Replica `replica` of `shard`.
    pub fn lock(&self, shard: u32, replica: usize) -> Result<MutexGuard<'_, Slot>> {
        let m = self
            .replicas(shard)?
            .get(replica)
            .ok_or_else(|| Error::Engine(format!("no replica {replica} of shard {shard}")))?;
        // A panic while holding the lock can only come from host code between calls; the slot
        // itself is still consistent (calls are atomic), so keep serving.
        Ok(m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A free replica of `shard` for a read, and its number: the first free one, so a lightly
    /// loaded shard keeps using the same instance (its memory stays in cache); only when all
    /// are busy does a read wait, on one chosen in turn.
    pub fn lock_any(&self, shard: u32) -> Result<(MutexGuard<'_, Slot>, usize)> {
        let replicas = self.replicas(shard)?;
        for (r, m) in replicas.iter().enumerate() {
            match m.try_lock() {
                Ok(g) => return Ok((g, r)),
                Err(TryLockError::Poisoned(p)) => return Ok((p.into_inner(), r)),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let r = self.next_reader.fetch_add(1, Ordering::Relaxed) % replicas.len();
        Ok((self.lock(shard, r)?, r))
    }

    /// A shard with a free replica right now (the first one if none is): for calls any
    /// instance can answer, such as traversals, so they do not queue behind k-NN on one shard.
    pub fn free_shard(&self) -> u32 {
        for (s, replicas) in self.shards.iter().enumerate() {
            if replicas.iter().any(|m| m.try_lock().is_ok()) {
                return s as u32;
            }
        }
        0
    }

    /// Whether `a` ranks before `b` for this collection's metric.
    pub fn better(&self, a: f32, b: f32) -> std::cmp::Ordering {
        match self.spec.metric {
            Metric::Cosine | Metric::Dot => b.total_cmp(&a),
            Metric::Euclidean => a.total_cmp(&b),
        }
    }

    /// Merges per-shard answers into the overall best `k`.
    pub fn merge(
        &self,
        parts: Vec<Vec<Vec<wit::Hit>>>,
        rows: usize,
        k: usize,
    ) -> Vec<Vec<wit::Hit>> {
        let mut out: Vec<Vec<wit::Hit>> = (0..rows).map(|_| Vec::new()).collect();
        for part in parts {
            for (row, hits) in part.into_iter().enumerate() {
                if let Some(o) = out.get_mut(row) {
                    o.extend(hits);
                }
            }
        }
        for hits in &mut out {
            hits.sort_by(|a, b| self.better(a.score, b.score).then_with(|| a.id.cmp(&b.id)));
            hits.truncate(k);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_any_shard_can_answer_go_to_a_free_one() {
        let spec = CollectionSpec::new("c", 3);
        let slots = (0..3)
            .map(|s| vec![Slot::Broken(format!("shard {s}"))])
            .collect();
        let coll = Collection::new(spec, slots);
        assert_eq!(coll.free_shard(), 0);
        let busy0 = coll.lock(0, 0).expect("shard 0");
        assert_eq!(coll.free_shard(), 1, "shard 0 is busy");
        let busy1 = coll.lock(1, 0).expect("shard 1");
        assert_eq!(coll.free_shard(), 2);
        let busy2 = coll.lock(2, 0).expect("shard 2");
        assert_eq!(coll.free_shard(), 0, "all busy: wait on the first");
        drop((busy0, busy1, busy2));
    }

    #[test]
    fn shard_assignment_is_stable_and_spreads() {
        assert_eq!(shard_of("libc6", 4), shard_of("libc6", 4));
        let mut counts = [0; 4];
        for i in 0..4000 {
            counts[shard_of(&format!("pkg-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
        assert_eq!(shard_of("anything", 1), 0);
    }
}
