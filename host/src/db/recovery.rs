//! Bringing a shard's engine state in line with storage: restore the newest index snapshot,
//! then re-apply the objects touched by later log entries; with no usable snapshot, rebuild
//! from the objects table.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::CollectionSpec;
use crate::runtime::{wit, CallError, CallResult, Runtime, ShardInstance};
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

fn object_of(spec: &CollectionSpec, id: String, o: StoredObject) -> wit::Object {
    let mut object = wit::Object {
        id,
        properties: o.properties,
        vector: o.vector,
    };
    super::validate::fit_for_index(spec, &mut object);
    object
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
    // A snapshot older than what the log still holds cannot be brought up to date by replay.
    let horizon = store.horizon()?;
    let snapshot = match store.get_snapshot(&spec.name, shard) {
        Ok(s) => s,
        Err(e) => {
            // A missing or truncated file: storage still holds every object.
            tracing::warn!(collection = %spec.name, shard, error = %e, "index snapshot unreadable; rebuilding from storage");
            None
        }
    };
    let snapshot = snapshot.filter(|(meta, _)| {
        let usable = horizon
            .0
            .iter()
            .all(|(o, h)| meta.covered.get(o).copied().unwrap_or(0) >= *h);
        if !usable {
            tracing::info!(collection = %spec.name, shard, "index snapshot predates the log's horizon; rebuilding from storage");
        }
        usable
    });
    if let Some((meta, bytes)) = snapshot {
        // What the log changed since the snapshot: those objects may differ from it.
        match touched_since(store, spec, shard, &meta.covered)? {
            None => tracing::warn!(
                shard = inst.label(),
                "index snapshot predates a drop of its collection; rebuilding from storage"
            ),
            Some(touched) => match restore(&mut inst, store, spec, shard, meta.size, bytes) {
                Ok(differ) if differ.iter().all(|id| touched.contains(id)) => {
                    report.restored_snapshot = true;
                    report.replayed = replay(&mut inst, store, spec, &touched)?;
                    return Ok((inst, report));
                }
                Ok(differ) => {
                    tracing::warn!(
                        shard = inst.label(),
                        objects = differ.iter().filter(|id| !touched.contains(*id)).count(),
                        "index snapshot disagrees with stored objects the log did not change; rebuilding from storage"
                    );
                    inst = rt.instantiate(spec, shard, store.clone())?;
                }
                Err(e) => {
                    tracing::warn!(shard = inst.label(), error = %e.message(), "index snapshot unusable; rebuilding from storage");
                    // A refused restore leaves the shard as it was (empty); a trap, who knows.
                    inst = rt.instantiate(spec, shard, store.clone())?;
                }
            },
        }
    }
    report.rebuilt = rebuild(&mut inst, store, spec, shard)?;
    Ok((inst, report))
}

/// Calls `each` with the shard's stored objects, a chunk at a time, in id order.
fn scan_shard(
    store: &Store,
    spec: &CollectionSpec,
    shard: u32,
    mut each: impl FnMut(Vec<wit::Object>) -> Result<()>,
) -> Result<u64> {
    let mut after: Option<String> = None;
    let mut total = 0;
    loop {
        let rows =
            store.scan_objects(&spec.name, after.as_deref(), CHUNK * spec.shards as usize)?;
        let Some((last, _)) = rows.last() else { break };
        after = Some(last.clone());
        let batch: Vec<wit::Object> = rows
            .into_iter()
            .filter(|(id, _)| shard_of(id, spec.shards) == shard)
            .map(|(id, o)| object_of(spec, id, o))
            .collect();
        total += batch.len() as u64;
        each(batch)?;
    }
    Ok(total)
}

/// Chunks the reader thread of [`restore`] may have ready ahead of the engine.
const AHEAD: usize = 2;

/// Restores a snapshot of `size` bytes and fills it in with the shard's stored objects (the
/// snapshot holds no properties or live vectors). Returns the ids that differ from it.
///
/// Storage is read on a second thread, [`AHEAD`] chunks ahead of the engine: reading and
/// decoding the objects (about half of a cold start) overlaps with the engine reading its
/// snapshot and taking the chunks before. A few chunks are in memory at once.
fn restore(
    inst: &mut ShardInstance,
    store: &Store,
    spec: &CollectionSpec,
    shard: u32,
    size: u64,
    bytes: crate::store::SnapshotBytes,
) -> CallResult<Vec<String>> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<wit::Object>>(AHEAD);
        // Taken chunks go back to the reader to be freed: they were allocated there, and
        // freeing them (cross-thread, in the allocator's other arena) is not free.
        let (spent_tx, spent_rx) = std::sync::mpsc::channel::<Vec<wit::Object>>();
        let reader = std::thread::Builder::new()
            .name("vektagraf-restore-read".into())
            .spawn_scoped(scope, move || {
                // A send fails only when the engine side stopped taking chunks (it failed).
                let scanned = scan_shard(store, spec, shard, |batch| {
                    spent_rx.try_iter().for_each(drop);
                    tx.send(batch)
                        .map_err(|_| Error::Engine("the restore stopped".into()))
                });
                drop(tx);
                spent_rx.iter().for_each(drop);
                scanned
            })
            .map_err(|e| {
                CallError::Engine(wit::EngineError::State(format!(
                    "starting the storage reader: {e}"
                )))
            })?;
        let filled = inst.restore(size, bytes).and_then(|()| {
            for batch in &rx {
                inst.restore_fill(&batch)?;
                let _ = spent_tx.send(batch);
            }
            Ok(())
        });
        // Dropping the receiver stops a reader still sending (after an engine error), and
        // dropping the sender of spent chunks lets it finish.
        drop(rx);
        drop(spent_tx);
        let scanned = reader
            .join()
            .unwrap_or_else(|_| Err(Error::Engine("the storage reader panicked".into())));
        filled?;
        if let Err(e) = scanned {
            return Err(CallError::Engine(wit::EngineError::State(format!(
                "reading the stored objects: {e}"
            ))));
        }
        inst.restore_finish()
    })
}

/// Feeds every object of the shard from storage.
fn rebuild(
    inst: &mut ShardInstance,
    store: &Store,
    spec: &CollectionSpec,
    shard: u32,
) -> Result<u64> {
    scan_shard(store, spec, shard, |batch| {
        let batch: Vec<wit::Mutation> = batch.into_iter().map(wit::Mutation::Upsert).collect();
        apply(inst, &batch)
    })
}

/// The ids of this shard's objects that log entries after `covered` touch. `None` if a later
/// entry drops the collection: the snapshot belongs to an earlier collection of the same
/// name. (A drop deletes the snapshots in its own transaction, so this is a guard, not the
/// normal path.)
fn touched_since(
    store: &Store,
    spec: &CollectionSpec,
    shard: u32,
    covered: &VersionVector,
) -> Result<Option<BTreeSet<String>>> {
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
    Ok(Some(touched))
}

/// Re-applies the current stored state of `touched` objects.
fn replay(
    inst: &mut ShardInstance,
    store: &Store,
    spec: &CollectionSpec,
    touched: &BTreeSet<String>,
) -> Result<u64> {
    let ids: Vec<&String> = touched.iter().collect();
    for chunk in ids.chunks(CHUNK) {
        let mut batch = Vec::with_capacity(chunk.len());
        for id in chunk {
            batch.push(match store.get_object(&spec.name, id)? {
                Some(o) => wit::Mutation::Upsert(object_of(spec, (*id).clone(), o)),
                None => wit::Mutation::Delete((*id).clone()),
            });
        }
        apply(inst, &batch)?;
    }
    Ok(ids.len() as u64)
}
