//! Bringing a shard's engine state in line with storage: restore the newest index snapshot,
//! then re-apply the objects touched by later log entries; with no usable snapshot, rebuild
//! from the objects table.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::CollectionSpec;
use crate::runtime::{wit, CallError, Runtime, ShardInstance};
use crate::store::records::{LogWrite, StoredObject};
use crate::store::{Store, VersionVector};

use super::collection::shard_of;

/// Objects are fed to the engine in chunks of this many.
const CHUNK: usize = 1024;

/// How a shard was brought up.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub restored_snapshot: bool,
    pub replayed: u64,
    pub rebuilt: u64,
}

pub(crate) fn upsert_of(id: String, o: StoredObject) -> wit::Mutation {
    wit::Mutation::Upsert(wit::Object {
        id,
        properties: o.properties,
        vector: o.vector,
    })
}

fn apply(inst: &mut ShardInstance, batch: &[wit::Mutation]) -> Result<()> {
    inst.apply(batch)
        .map(|_| ())
        .map_err(|e| Error::Engine(format!("{}: {}", inst.label(), e.message())))
}

/// A ready instance for `shard` of `spec`, matching what storage holds.
pub(crate) fn load_shard(
    rt: &Runtime,
    store: &Arc<Store>,
    spec: &CollectionSpec,
    shard: u32,
) -> Result<(ShardInstance, LoadReport)> {
    let mut inst = rt.instantiate(spec, shard, store.clone())?;
    let mut report = LoadReport::default();
    let mut covered: Option<VersionVector> = None;
    // A snapshot older than what the log still holds cannot be brought up to date by replay.
    let horizon = store.horizon()?;
    let snapshot = store.get_snapshot(&spec.name, shard)?.filter(|(meta, _)| {
        let usable = horizon
            .0
            .iter()
            .all(|(o, h)| meta.covered.get(o).copied().unwrap_or(0) >= *h);
        if !usable {
            tracing::info!(collection = %spec.name, shard, "index snapshot predates the log's horizon; rebuilding from storage");
        }
        usable
    });
    if let Some((meta, chunks)) = snapshot {
        match inst.restore(meta.size, chunks) {
            Ok(()) => {
                covered = Some(meta.covered);
                report.restored_snapshot = true;
            }
            Err(e) => {
                tracing::warn!(shard = inst.label(), error = %e.message(), "index snapshot unusable; rebuilding from storage");
                if matches!(e, CallError::Trap(_)) {
                    inst = rt.instantiate(spec, shard, store.clone())?;
                } else {
                    // A refused restore leaves the shard as it was: empty.
                }
            }
        }
    }
    if let Some(vv) = covered {
        match replay(&mut inst, store, spec, shard, &vv)? {
            Some(n) => {
                report.replayed = n;
                return Ok((inst, report));
            }
            None => {
                tracing::warn!(
                    shard = inst.label(),
                    "index snapshot predates a drop of its collection; rebuilding from storage"
                );
                report.restored_snapshot = false;
                inst = rt.instantiate(spec, shard, store.clone())?;
            }
        }
    }
    report.rebuilt = rebuild(&mut inst, store, spec, shard)?;
    Ok((inst, report))
}

/// Feeds every object of the shard from storage.
fn rebuild(
    inst: &mut ShardInstance,
    store: &Store,
    spec: &CollectionSpec,
    shard: u32,
) -> Result<u64> {
    let mut after: Option<String> = None;
    let mut total = 0;
    loop {
        let rows =
            store.scan_objects(&spec.name, after.as_deref(), CHUNK * spec.shards as usize)?;
        let Some((last, _)) = rows.last() else { break };
        after = Some(last.clone());
        let batch: Vec<wit::Mutation> = rows
            .into_iter()
            .filter(|(id, _)| shard_of(id, spec.shards) == shard)
            .map(|(id, o)| upsert_of(id, o))
            .collect();
        total += batch.len() as u64;
        apply(inst, &batch)?;
    }
    Ok(total)
}

/// Re-applies the current stored state of every object of this shard touched after `covered`.
/// `None` (nothing applied) if a later entry drops the collection: the snapshot belongs to an
/// earlier collection of the same name. (A drop deletes the snapshots in its own transaction,
/// so this is a guard, not the normal path.)
fn replay(
    inst: &mut ShardInstance,
    store: &Store,
    spec: &CollectionSpec,
    shard: u32,
    covered: &VersionVector,
) -> Result<Option<u64>> {
    let mut touched = BTreeSet::new();
    for (_, _, entry) in store.log_after(covered)? {
        for w in entry.writes {
            let node = match w {
                LogWrite::Upsert { node, .. } | LogWrite::Delete { node, .. } => node,
                LogWrite::DropCollection { name } if name == spec.name => return Ok(None),
                _ => continue,
            };
            if node.collection == spec.name && shard_of(&node.id, spec.shards) == shard {
                touched.insert(node.id);
            }
        }
    }
    let ids: Vec<String> = touched.into_iter().collect();
    for chunk in ids.chunks(CHUNK) {
        let mut batch = Vec::with_capacity(chunk.len());
        for id in chunk {
            batch.push(match store.get_object(&spec.name, id)? {
                Some(o) => upsert_of(id.clone(), o),
                None => wit::Mutation::Delete(id.clone()),
            });
        }
        apply(inst, &batch)?;
    }
    Ok(Some(ids.len() as u64))
}
