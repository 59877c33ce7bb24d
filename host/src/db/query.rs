//! Reads through the engine: k-NN (fanned out to the shards and merged), filters, traversal,
//! hybrid queries and stats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::collection::{Collection, Slot};
use super::commit::recover_slot;
use super::{Database, Inner};
use crate::error::{Error, Result};
use crate::model::{
    id_order, CollectionStats, Direction, Hit, HybridHit, NodeKey, SearchOptions, Step,
    TraverseOptions,
};
use crate::runtime::{wit, CallError, CallResult, ShardInstance};

/// How long an engine call may run: the configured query limit, cut to what is left of the
/// caller's deadline. A deadline already passed refuses the call before the engine runs.
fn budget(limit: Duration, deadline: Option<Instant>, what: &str) -> Result<Duration> {
    let Some(d) = deadline else {
        return Ok(limit);
    };
    match d.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left.min(limit)),
        _ => Err(Error::DeadlineExceeded(format!(
            "the request's time ran out before {what}"
        ))),
    }
}

/// Runs `f` on one shard with the time it may take. A trap rebuilds the shard (after any
/// commit in flight) and reports the failure; the process and the other shards carry on.
fn on_shard<T>(
    inner: &Inner,
    coll: &Collection,
    shard: u32,
    deadline: Option<Instant>,
    f: impl FnOnce(&mut ShardInstance, Duration) -> CallResult<T>,
) -> Result<T> {
    let (mut slot, replica) = coll.lock_any(shard)?;
    let inst = match &mut *slot {
        Slot::Ready(i) => i,
        Slot::Broken(reason) => {
            return Err(Error::Unavailable {
                collection: coll.spec.name.clone(),
                shard,
                reason: reason.clone(),
            })
        }
    };
    let timeout = budget(inst.query_timeout(), deadline, "the engine call")?;
    match f(inst, timeout) {
        Ok(v) => Ok(v),
        Err(CallError::Engine(wit::EngineError::Invalid(m))) => Err(Error::Invalid(m)),
        Err(CallError::Engine(e)) => Err(Error::Engine(format!("{e:?}"))),
        Err(CallError::Trap(reason)) => {
            inner.counters.trap();
            tracing::warn!(collection = %coll.spec.name, shard, %reason, "engine trapped; rebuilding shard");
            drop(slot);
            let _gate = inner.commit_gate.lock().unwrap_or_else(|p| p.into_inner());
            let mut slot = coll.lock(shard, replica)?;
            *slot = recover_slot(inner, &coll.spec, shard, None);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::DeadlineExceeded(format!(
                    "the engine was stopped at the request's deadline (collection `{}` shard {shard})",
                    coll.spec.name
                )));
            }
            Err(Error::EngineTrap {
                collection: coll.spec.name.clone(),
                shard,
                reason,
            })
        }
    }
}

/// Runs `f` on every shard, in parallel (rayon's pool, so no thread is started per query)
/// when there are several.
fn fan_out<T: Send>(
    inner: &Inner,
    coll: &Collection,
    deadline: Option<Instant>,
    f: impl Fn(&mut ShardInstance, Duration) -> CallResult<T> + Sync,
) -> Result<Vec<T>> {
    use rayon::prelude::*;
    let n = coll.shard_count();
    if n == 1 {
        return Ok(vec![on_shard(inner, coll, 0, deadline, &f)?]);
    }
    (0..n)
        .into_par_iter()
        .map(|s| on_shard(inner, coll, s, deadline, &f))
        .collect()
}

fn to_hits(rows: Vec<Vec<wit::Hit>>) -> Vec<Vec<Hit>> {
    rows.into_iter()
        .map(|r| {
            r.into_iter()
                .map(|h| Hit {
                    id: h.id,
                    score: h.score,
                })
                .collect()
        })
        .collect()
}

fn node_of(n: wit::NodeRef) -> NodeKey {
    NodeKey::new(n.collection, n.id)
}

/// Reads that give up at a deadline: every engine call gets at most the time that is left
/// (the epoch deadline of the call), and none starts once it has passed.
/// From [`Database::until`]; the `Database` methods of the same names have no deadline.
pub struct Bounded<'a> {
    inner: &'a Inner,
    deadline: Option<Instant>,
}

impl<'a> Bounded<'a> {
    pub(crate) fn new(inner: &'a Inner, deadline: Option<Instant>) -> Self {
        Bounded { inner, deadline }
    }
}

impl Database {
    /// Reads bounded by `deadline` (`None`: only the configured engine limits).
    pub fn until(&self, deadline: Option<Instant>) -> Bounded<'_> {
        Bounded::new(&self.inner, deadline)
    }

    /// The k nearest objects to `vector`, best first.
    pub fn search(
        &self,
        collection: &str,
        vector: &[f32],
        opts: &SearchOptions,
    ) -> Result<Vec<Hit>> {
        self.until(None).search(collection, vector, opts)
    }

    /// k-NN for each row of `vectors` (row-major, the collection's dimension), in one call per
    /// shard.
    pub fn search_batch(
        &self,
        collection: &str,
        vectors: &[f32],
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        self.until(None).search_batch(collection, vectors, opts)
    }

    /// Ids of objects that match `expression` (docs/query.md), in id order
    /// ([`crate::model::id_order`]), at most `limit`.
    pub fn filter(
        &self,
        collection: &str,
        expression: &Value,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.until(None).filter(collection, expression, limit)
    }

    /// Breadth-first traversal from `start` along stored edges.
    pub fn traverse(&self, start: &NodeKey, opts: &TraverseOptions) -> Result<Vec<Step>> {
        self.until(None).traverse(start, opts)
    }

    /// k-NN, then each hit expanded along its edges.
    pub fn hybrid(
        &self,
        collection: &str,
        vector: &[f32],
        search: &SearchOptions,
        expand: &TraverseOptions,
    ) -> Result<Vec<HybridHit>> {
        self.until(None).hybrid(collection, vector, search, expand)
    }

    pub fn stats(&self, collection: &str) -> Result<CollectionStats> {
        self.until(None).stats(collection)
    }
}

impl Bounded<'_> {
    fn coll(&self, name: &str) -> Result<Arc<Collection>> {
        self.inner.collection(name)
    }

    /// The k nearest objects to `vector`, best first.
    pub fn search(
        &self,
        collection: &str,
        vector: &[f32],
        opts: &SearchOptions,
    ) -> Result<Vec<Hit>> {
        let dim = self.coll(collection)?.spec.dimension as usize;
        if vector.len() != dim {
            return Err(Error::invalid(format!(
                "query has {} values; collection `{collection}` needs rows of {dim} (one row here)",
                vector.len()
            )));
        }
        Ok(self
            .search_batch(collection, vector, opts)?
            .pop()
            .unwrap_or_default())
    }

    /// k-NN for each row of `vectors` (row-major, the collection's dimension), in one call per
    /// shard.
    pub fn search_batch(
        &self,
        collection: &str,
        vectors: &[f32],
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        let coll = self.coll(collection)?;
        let dim = coll.spec.dimension as usize;
        if vectors.is_empty() || !vectors.len().is_multiple_of(dim) {
            return Err(Error::invalid(format!(
                "query has {} values; collection `{collection}` needs rows of {dim}",
                vectors.len()
            )));
        }
        if opts.k == 0 || opts.k > 10_000 {
            return Err(Error::invalid(format!(
                "k must be in 1..=10000, got {}",
                opts.k
            )));
        }
        for (row, q) in vectors.chunks_exact(dim).enumerate() {
            super::validate::check_vector(&coll.spec, &format!("query row {row}"), q)?;
        }
        let req = wit::SearchRequest {
            vectors: vectors.to_vec(),
            count: (vectors.len() / dim) as u32,
            k: opts.k as u32,
            ef: opts.ef.unwrap_or(0),
            filter: opts.filter.as_ref().map(Value::to_string),
            exact: opts.exact,
        };
        let parts = fan_out(self.inner, &coll, self.deadline, |inst, t| {
            inst.search(&req, t)
        })?;
        Ok(to_hits(coll.merge(parts, vectors.len() / dim, opts.k)))
    }

    /// Ids of objects that match `expression` (docs/query.md), in id order
    /// ([`crate::model::id_order`]), at most `limit`.
    pub fn filter(
        &self,
        collection: &str,
        expression: &Value,
        limit: usize,
    ) -> Result<Vec<String>> {
        let coll = self.coll(collection)?;
        let text = expression.to_string();
        let limit32 = u32::try_from(limit).unwrap_or(u32::MAX);
        let mut ids: Vec<String> = fan_out(self.inner, &coll, self.deadline, |inst, t| {
            inst.filter(&text, limit32, t)
        })?
        .into_iter()
        .flatten()
        .collect();
        // Each shard answered its first `limit` in id order; the first `limit` of all of them
        // are among those (the engine's order is the same function: see `id_order`).
        ids.sort_unstable_by(|a, b| id_order(a, b));
        ids.truncate(limit);
        Ok(ids)
    }

    /// Breadth-first traversal from `start` along stored edges.
    pub fn traverse(&self, start: &NodeKey, opts: &TraverseOptions) -> Result<Vec<Step>> {
        let coll = self.coll(&start.collection)?;
        if self
            .inner
            .store
            .get_object(&start.collection, &start.id)?
            .is_none()
        {
            return Err(Error::UnknownObject {
                collection: start.collection.clone(),
                id: start.id.clone(),
            });
        }
        let req = wit::TraverseRequest {
            start: wit::NodeRef {
                collection: start.collection.clone(),
                id: start.id.clone(),
            },
            label: opts.label.clone(),
            direction: match opts.direction {
                Direction::Out => wit::Direction::Out,
                Direction::In => wit::Direction::In,
                Direction::Both => wit::Direction::Both,
            },
            depth: opts.depth,
            limit: opts.limit,
        };
        // Edges come from storage, so any shard's instance can walk them: one that is free.
        let shard = coll.free_shard();
        let steps = on_shard(self.inner, &coll, shard, self.deadline, |inst, t| {
            inst.traverse(&req, t)
        })?;
        Ok(steps
            .into_iter()
            .map(|s| Step {
                node: node_of(s.node),
                depth: s.depth,
                via: s.via.map(|e| (e.label, node_of(e.other))),
            })
            .collect())
    }

    /// k-NN, then each hit expanded along its edges.
    pub fn hybrid(
        &self,
        collection: &str,
        vector: &[f32],
        search: &SearchOptions,
        expand: &TraverseOptions,
    ) -> Result<Vec<HybridHit>> {
        let hits = self.search(collection, vector, search)?;
        hits.into_iter()
            .map(|hit| {
                let mut steps = self.traverse(&NodeKey::new(collection, &hit.id), expand)?;
                steps.retain(|s| s.depth > 0);
                Ok(HybridHit {
                    hit,
                    neighbours: steps,
                })
            })
            .collect()
    }

    pub fn stats(&self, collection: &str) -> Result<CollectionStats> {
        let coll = self.coll(collection)?;
        let parts = fan_out(self.inner, &coll, self.deadline, |inst, t| inst.stats(t))?;
        let snapshot_seq = (0..coll.shard_count())
            .filter_map(|s| self.inner.store.get_snapshot(collection, s).ok().flatten())
            .map(|(meta, _)| {
                meta.covered
                    .get(&self.inner.store.node_id())
                    .copied()
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        Ok(CollectionStats {
            spec: coll.spec.clone(),
            objects: parts.iter().map(|p| p.objects).sum(),
            vectors: parts.iter().map(|p| p.vectors).sum(),
            deleted_slots: parts.iter().map(|p| p.deleted_slots).sum(),
            engine_memory_bytes: parts.iter().map(|p| p.memory_bytes).sum(),
            snapshot_seq,
        })
    }
}
