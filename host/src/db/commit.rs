//! The committer: one thread that owns every write. It folds concurrent batches into one
//! durable redb transaction (group commit). For each batch it validates, applies the change to
//! the engine shards, then stages it in the transaction with its log entry; the engine goes
//! first so a batch that makes the engine fail (trap, memory cap) is refused before anything
//! is stored. If staging a batch in storage or the commit itself fails, the group is abandoned
//! and every shard a batch of it changed is rebuilt from storage.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::{Batch, CollectionSpec, Receipt};
use crate::replication::hlc::{system_wall_ms, Hlc};
use crate::replication::version::Clock;
use crate::runtime::{wit, CallError};
use crate::store::records::{LogEntry, LogWrite};
use crate::store::WriteTxn;

use super::collection::{Collection, Slot};
use super::materialise::{dropped_key, Context, Materialised, ShardKey, Source, Stamp};
use super::plan;
use super::remote::{Applied, RemoteEntry};
use super::snapshots::Publisher;
use super::{recovery, Inner};

pub(crate) enum Job {
    Write(Batch, Option<Instant>, SyncSender<Result<Receipt>>),
    /// Other nodes' entries, each origin's in order after what is applied.
    Remote(Vec<RemoteEntry>, SyncSender<Applied>),
    CreateCollection(CollectionSpec, SyncSender<Result<bool>>),
    DropCollection(String, SyncSender<Result<bool>>),
    /// Answered once every snapshot is written, with what says when they are all durable
    /// (the caller waits for that, not the committer).
    Checkpoint(SyncSender<Result<super::snapshots::Flushed>>),
    /// Forget tombstones covered by this stable clock.
    Collect(Clock, SyncSender<Result<u64>>),
    /// Merge another node's state (a bootstrap snapshot, an anti-entropy repair).
    State(super::state::StateJob, SyncSender<Result<u64>>),
    /// Upload, enable, disable, roll back or delete a plugin.
    Plugin(
        super::plugins::PluginChange,
        SyncSender<Result<crate::plugins::PluginRecord>>,
    ),
}

/// A shard's answer to its part of a batch; the flag says whether it must be rebuilt.
type ShardOutcome = Result<(), (Error, bool)>;

/// Engine changes of the current group, per shard, in order: what a rebuilt shard must get
/// again until the group is committed.
#[derive(Default)]
pub(super) struct Pending {
    pub by_shard: BTreeMap<ShardKey, Vec<Vec<wit::Mutation>>>,
}

pub(crate) struct Committer {
    pub(super) inner: Arc<Inner>,
    pub(super) origin: u64,
    next_seq: u64,
    pub(super) hlc: Hlc,
    /// Collections whose engine state is newer than their stored snapshots, with how many
    /// mutations they took since.
    pub(super) dirty: HashMap<String, u64>,
    /// Objects in each collection at its last snapshot. A snapshot is due after
    /// `max(snapshot_every_ops, that size / SNAPSHOT_SIZE_DIVISOR)` mutations (see
    /// [`snapshot_interval`]).
    snapshot_size: HashMap<String, u64>,
    /// Makes written snapshot files durable off this thread.
    pub(super) publisher: Publisher,
}

impl Committer {
    pub fn new(inner: Arc<Inner>, dirty: HashMap<String, u64>) -> Result<Self> {
        let origin = inner.store.node_id();
        let next_seq = inner.store.applied()?.get(&origin).copied().unwrap_or(0) + 1;
        let hlc = Hlc::resume(inner.store.meta("hlc")?.unwrap_or(0));
        let publisher = Publisher::start(inner.store.clone())
            .map_err(|e| Error::io("starting the snapshot thread", e))?;
        Ok(Self {
            inner,
            origin,
            next_seq,
            hlc,
            dirty,
            snapshot_size: HashMap::new(),
            publisher,
        })
    }

    pub fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            while group.len() < self.inner.config.group_commit_max {
                match jobs.try_recv() {
                    Ok(j) => group.push(j),
                    Err(_) => break,
                }
            }
            self.process(group);
        }
    }

    fn process(&mut self, group: Vec<Job>) {
        let inner = self.inner.clone();
        let _gate = inner.commit_gate.lock().unwrap_or_else(|p| p.into_inner());
        let mut writes = Vec::new();
        for job in group {
            match job {
                Job::Write(_, Some(deadline), reply) if Instant::now() >= deadline => {
                    let _ = reply.send(Err(Error::DeadlineExceeded(
                        "the write waited in the commit queue past its deadline; nothing was written"
                            .into(),
                    )));
                }
                Job::Write(b, _, reply) => writes.push((b, reply)),
                Job::CreateCollection(spec, reply) => {
                    self.commit_writes(std::mem::take(&mut writes));
                    let _ = reply.send(self.create_collection(spec));
                }
                Job::DropCollection(name, reply) => {
                    self.commit_writes(std::mem::take(&mut writes));
                    let _ = reply.send(self.drop_collection(&name));
                }
                Job::Remote(entries, reply) => {
                    self.commit_writes(std::mem::take(&mut writes));
                    let _ = reply.send(self.apply_remote(entries));
                }
                Job::Collect(stable, reply) => {
                    self.commit_writes(std::mem::take(&mut writes));
                    let _ = reply.send(self.inner.store.collect_tombstones(&stable, 10_000));
                }
                Job::State(job, reply) => {
                    self.commit_writes(std::mem::take(&mut writes));
                    let _ = reply.send(self.merge_state(job));
                }
                Job::Checkpoint(reply) => {
                    self.commit_writes(std::mem::take(&mut writes));
                    let flushed = self.checkpoint(false).map(|()| self.publisher.flushed());
                    let _ = reply.send(flushed);
                }
                Job::Plugin(change, reply) => {
                    self.commit_writes(std::mem::take(&mut writes));
                    let _ = reply.send(self.change_plugin(change));
                }
            }
        }
        self.commit_writes(writes);
        self.disable_faulty_resolvers();
    }

    fn stamp(&mut self) -> (u64, u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (seq, self.hlc.now(system_wall_ms()))
    }

    fn create_collection(&mut self, spec: CollectionSpec) -> Result<bool> {
        if let Ok(existing) = self.inner.collection(&spec.name) {
            if existing.spec == spec {
                return Ok(false);
            }
            return Err(Error::CollectionConflict {
                name: spec.name.clone(),
                existing: serde_json::to_string(&existing.spec).unwrap_or_default(),
            });
        }
        let json = serde_json::to_string(&spec).map_err(|e| Error::Storage(e.to_string()))?;
        self.commit_alone(|txn, _| {
            stage_create(txn, &spec)?;
            Ok(LogWrite::CreateCollection { spec: json })
        })?;
        self.inner.load_collection(spec)?;
        Ok(true)
    }

    /// Drops a collection in one durable transaction with its log entry, then unregisters it
    /// (its engine instances go when the last read holding them finishes). Later batches,
    /// also of the same group, resolve the name afresh and fail with `UnknownCollection`.
    fn drop_collection(&mut self, name: &str) -> Result<bool> {
        if self.inner.collection(name).is_err() {
            return Ok(false);
        }
        // A snapshot still on its way must not land on a collection made later with this name.
        self.publisher.flush();
        self.commit_alone(|txn, _| {
            stage_drop(txn, name)?;
            Ok(LogWrite::DropCollection {
                name: name.to_owned(),
            })
        })?;
        self.unregister(name);
        self.sweep_snapshots();
        Ok(true)
    }

    pub(super) fn unregister(&mut self, name: &str) {
        let removed = self
            .inner
            .collections
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.dirty.remove(name);
        self.snapshot_size.remove(name);
        drop(removed);
    }

    /// Commits one collection or plugin change as its own logged transaction: `stage` stores
    /// it (given the entry's HLC) and returns its log write. A failure anywhere gives the
    /// sequence number back: the log has no gaps.
    pub(super) fn commit_alone(
        &mut self,
        stage: impl FnOnce(&mut WriteTxn, u64) -> Result<LogWrite>,
    ) -> Result<()> {
        let seq_before = self.next_seq;
        let stored = (|| -> Result<()> {
            let mut txn = self.inner.store.begin_write()?;
            let (seq, hlc) = self.stamp();
            let write = stage(&mut txn, hlc)?;
            txn.append_log(
                self.origin,
                seq,
                &LogEntry {
                    hlc,
                    writes: vec![write],
                },
            )?;
            txn.set_meta("hlc", hlc)?;
            txn.commit()
        })();
        if stored.is_err() {
            self.next_seq = seq_before;
        } else {
            self.publish();
        }
        stored
    }

    /// Tells the replicator what the log now holds.
    pub(super) fn publish(&self) {
        if let Ok(applied) = self.inner.store.applied() {
            self.inner.committed.send_replace(Clock(applied));
        }
    }

    /// Counts what a materialised entry did.
    pub(super) fn tally(&mut self, m: &Materialised, counts: &mut HashMap<String, u64>) {
        for (c, n) in &m.changed {
            *counts.entry(c.clone()).or_default() += n;
        }
        for p in &m.conflicts {
            self.inner.counters.conflict(*p);
        }
    }

    fn commit_writes(&mut self, group: Vec<(Batch, SyncSender<Result<Receipt>>)>) {
        if group.is_empty() {
            return;
        }
        let mut txn = match self.inner.store.begin_write() {
            Ok(t) => t,
            Err(e) => {
                let msg = e.to_string();
                for (_, reply) in group {
                    let _ = reply.send(Err(Error::Storage(msg.clone())));
                }
                return;
            }
        };
        let mut pending = Pending::default();
        let mut accepted = Vec::new();
        let mut counts: HashMap<String, u64> = HashMap::new();
        let seq_before = self.next_seq;
        let mut fatal: Option<Error> = None;
        for (batch, reply) in group {
            if fatal.is_some() {
                let _ = reply.send(Err(Error::Storage(
                    "an earlier batch of the same commit failed".into(),
                )));
                continue;
            }
            match self.stage(&mut txn, &mut pending, &batch) {
                Ok((receipt, m)) => {
                    self.tally(&m, &mut counts);
                    accepted.push((reply, receipt));
                }
                Err(Staged::Rejected(e)) => {
                    let _ = reply.send(Err(e));
                }
                Err(Staged::Fatal(e)) => {
                    let _ = reply.send(Err(Error::Storage(e.to_string())));
                    fatal = Some(e);
                }
            }
        }
        let result = match fatal {
            Some(e) => Err(e),
            None => txn.commit(),
        };
        match result {
            Ok(()) => {
                self.publish();
                for (reply, receipt) in accepted {
                    let _ = reply.send(Ok(receipt));
                }
                for (c, n) in counts {
                    *self.dirty.entry(c).or_default() += n;
                }
                self.snapshot_if_due();
            }
            Err(e) => {
                // Nothing of this group is stored: give the sequence numbers back and bring
                // the shards back to what storage holds.
                self.next_seq = seq_before;
                let touched: Vec<ShardKey> = pending.by_shard.keys().cloned().collect();
                for (c, s) in touched {
                    self.recover(&c, s, &Pending::default());
                }
                let msg = e.to_string();
                for (reply, _) in accepted {
                    let _ = reply.send(Err(Error::Storage(format!("commit failed: {msg}"))));
                }
            }
        }
    }

    /// Validates one batch, applies it to the engine and stages it in `txn`.
    fn stage(
        &mut self,
        txn: &mut WriteTxn,
        pending: &mut Pending,
        batch: &Batch,
    ) -> std::result::Result<(Receipt, Materialised), Staged> {
        let mut get = collections(self.inner.clone());
        let writes = plan::plan(batch, &mut get).map_err(Staged::Rejected)?;
        let (seq, hlc) = self.stamp();
        let stamp = Stamp {
            origin: self.origin,
            seq,
            hlc,
        };
        let staged = self.materialise(txn, pending, &mut get, stamp, Source::Local, writes);
        if staged.is_err() {
            // Nothing of it is staged: the next batch takes this sequence number.
            self.next_seq = seq;
        }
        let m = staged?;
        Ok((
            Receipt {
                origin: self.origin,
                seq,
                hlc,
            },
            m,
        ))
    }

    /// The shared step: works out what the entry does, gives the engine its part (a refusal
    /// there refuses the entry), then stages state and the log entry in `txn`.
    pub(super) fn materialise(
        &mut self,
        txn: &mut WriteTxn,
        pending: &mut Pending,
        get: &mut dyn FnMut(&str) -> Result<Arc<Collection>>,
        stamp: Stamp,
        source: Source,
        writes: Vec<LogWrite>,
    ) -> std::result::Result<Materialised, Staged> {
        let writes = writes.into_iter().map(|w| (stamp, w)).collect();
        self.materialise_each(txn, pending, get, source, writes, Some(stamp))
    }

    /// `materialise` for writes under stamps of their own; logged (under `log`) or not.
    pub(super) fn materialise_each(
        &mut self,
        txn: &mut WriteTxn,
        pending: &mut Pending,
        get: &mut dyn FnMut(&str) -> Result<Arc<Collection>>,
        source: Source,
        writes: Vec<(Stamp, LogWrite)>,
        log: Option<Stamp>,
    ) -> std::result::Result<Materialised, Staged> {
        let mut cx = Context {
            txn,
            collection: get,
        };
        let mut m = Materialised::compute(&mut cx, source, writes)
            .map_err(Staged::classify)?
            .finish(&self.inner.plugins);
        let mut collections: HashMap<String, Arc<Collection>> = HashMap::new();
        for ((c, _), muts) in m.engine.iter_mut() {
            if !collections.contains_key(c) {
                let coll = (cx.collection)(c).map_err(Staged::Rejected)?;
                collections.insert(c.clone(), coll);
            }
            let spec = &collections[c].spec;
            for mutation in muts.iter_mut() {
                if let wit::Mutation::Upsert(o) = mutation {
                    if super::validate::fit_for_index(spec, o) {
                        self.inner
                            .counters
                            .unindexed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        // A refused entry leaves the engine as it was (`apply_to_engine` rebuilt what took it).
        self.apply_to_engine(&collections, &m.engine, pending)
            .map_err(Staged::Rejected)?;
        // From here the engine holds this entry: record it before anything can fail, so a
        // rollback of the group (a storage failure below, or the commit) rebuilds its shards.
        for (k, muts) in &m.engine {
            pending
                .by_shard
                .entry(k.clone())
                .or_default()
                .push(muts.clone());
        }
        let stored = (|| -> Result<()> {
            m.store(txn)?;
            if let Some(stamp) = log {
                txn.append_log(
                    stamp.origin,
                    stamp.seq,
                    &LogEntry {
                        hlc: stamp.hlc,
                        writes: m.log.clone(),
                    },
                )?;
            }
            txn.set_meta("hlc", self.hlc.last())
        })();
        stored.map_err(Staged::Fatal)?;
        Ok(m)
    }

    /// Applies a batch's engine changes shard by shard (in parallel). If any shard refuses or
    /// traps, the shards that took it are rebuilt, so the engine is as before the batch.
    fn apply_to_engine(
        &mut self,
        collections: &HashMap<String, Arc<Collection>>,
        plan: &BTreeMap<ShardKey, Vec<wit::Mutation>>,
        pending: &Pending,
    ) -> Result<()> {
        let results: Vec<(ShardKey, ShardOutcome)> = std::thread::scope(|scope| {
            let handles: Vec<_> = plan
                .iter()
                .map(|((c, s), muts)| {
                    let coll = collections[c].clone();
                    let key = (c.clone(), *s);
                    let work = move || apply_one(&coll, key.1, muts);
                    if plan.len() == 1 {
                        Err(work())
                    } else {
                        Ok(scope.spawn(work))
                    }
                })
                .collect();
            plan.keys()
                .cloned()
                .zip(handles)
                .map(|(k, h)| {
                    let r = match h {
                        Err(r) => r,
                        Ok(h) => h.join().unwrap_or_else(|_| {
                            Err((Error::Engine("engine thread panicked".into()), true))
                        }),
                    };
                    (k, r)
                })
                .collect()
        });
        let failed = results
            .iter()
            .find_map(|(_, r)| r.as_ref().err().map(|(e, _)| e.to_string()));
        let Some(first_error) = failed else {
            return Ok(());
        };
        let mut error = None;
        for ((c, s), r) in results {
            match r {
                // Took the batch although another shard did not: undo by rebuilding.
                Ok(()) => self.recover(&c, s, pending),
                Err((e, needs_rebuild)) => {
                    if matches!(e, Error::EngineTrap { .. }) {
                        self.inner.counters.trap();
                    }
                    if needs_rebuild {
                        self.recover(&c, s, pending);
                    }
                    error.get_or_insert(e);
                }
            }
        }
        Err(error.unwrap_or(Error::Engine(first_error)))
    }

    /// Rebuilds every replica of a shard from storage plus the current group's pending changes.
    pub(super) fn recover(&self, collection: &str, shard: u32, pending: &Pending) {
        let Ok(coll) = self.inner.collection(collection) else {
            return;
        };
        for r in 0..coll.replica_count(shard) {
            let Ok(mut slot) = coll.lock(shard, r) else {
                return;
            };
            *slot = recover_slot(
                &self.inner,
                &coll.spec,
                shard,
                pending.by_shard.get(&(collection.to_owned(), shard)),
            );
        }
    }

    fn due(&self, collection: &str, changes: u64) -> bool {
        let every = self.inner.config.snapshot_every_ops;
        let size = self.snapshot_size.get(collection).copied().unwrap_or(0);
        every > 0 && changes >= snapshot_interval(every, size)
    }

    pub(super) fn snapshot_if_due(&mut self) {
        if self.dirty.iter().any(|(c, n)| self.due(c, *n)) {
            if let Err(e) = self.checkpoint(true) {
                tracing::warn!(error = %e, "writing index snapshots failed");
            }
        }
    }

    /// Snapshots dirty collections (only those past the threshold when `due_only`). Each
    /// shard's engine streams its state into a file here; the file is made durable and
    /// published by the snapshot thread (`publisher.flush()` waits for that).
    pub(super) fn checkpoint(&mut self, due_only: bool) -> Result<()> {
        let names: Vec<String> = self
            .dirty
            .iter()
            .filter(|(c, n)| !due_only || self.due(c, **n))
            .map(|(c, _)| c.clone())
            .collect();
        let covered = self.inner.store.applied()?;
        for name in &names {
            let coll = self.inner.collection(name)?;
            let mut objects = 0;
            for s in 0..coll.shard_count() {
                // Every replica holds the same state: snapshot the first.
                let mut slot = coll.lock(s, 0)?;
                let Slot::Ready(inst) = &mut *slot else {
                    continue;
                };
                objects += inst.stats(inst.query_timeout()).map_or(0, |st| st.objects);
                let file = self.inner.store.snapshot_file(name, s)?;
                let started = std::time::Instant::now();
                match inst.snapshot_into(file) {
                    Ok(file) => {
                        // What writes queued behind this checkpoint wait for, per shard.
                        tracing::debug!(
                            shard = inst.label(),
                            bytes = file.bytes(),
                            ms = started.elapsed().as_secs_f64() * 1e3,
                            "snapshot streamed"
                        );
                        self.publisher.publish(name, s, covered.clone(), file)
                    }
                    Err(CallError::Engine(wit::EngineError::Unsupported(_))) => {}
                    Err(CallError::Engine(e)) => {
                        tracing::warn!(shard = inst.label(), error = ?e, "snapshot refused")
                    }
                    Err(CallError::Trap(t)) => {
                        self.inner.counters.trap();
                        tracing::warn!(shard = inst.label(), trap = %t, "snapshot trapped; rebuilding shard");
                        *slot = recover_slot(&self.inner, &coll.spec, s, None);
                    }
                }
            }
            self.snapshot_size.insert(name.clone(), objects);
            self.dirty.remove(name);
        }
        Ok(())
    }

    /// Deletes snapshot files no shard uses any more (after a drop or a state merge).
    pub(super) fn sweep_snapshots(&self) {
        self.publisher.flush();
        if let Err(e) = self.inner.store.sweep_snapshots() {
            tracing::warn!(error = %e, "removing unused index snapshots failed");
        }
    }
}

/// A snapshot of a collection of `size` objects is due after this many mutations: a fiftieth
/// of the collection, at least `floor` (`snapshot_every_ops`).
///
/// What a restart after a crash replays is at most this many re-inserts (about 330 us each at
/// 61k x 384-d), against a clean open that restores the snapshot and fills it in (about 8 us
/// per object): replaying 2% of the collection costs about what the clean open does, at any
/// size, so a crash recovery takes about twice a clean open. The price is snapshot writing:
/// each snapshot's pass on the committer is under 0.4 us per object (graph bytes only; 22-67
/// ms for 61k on a loaded 2-core machine), so per mutation 50 times that, about 20 us or 6% of
/// an insert; and every mutation writes about 50 x 170 bytes of snapshot file (off the
/// committer), the same order as its own redb write.
pub(super) fn snapshot_interval(floor: u64, size: u64) -> u64 {
    floor.max(size / SNAPSHOT_SIZE_DIVISOR)
}

/// See [`snapshot_interval`].
pub(super) const SNAPSHOT_SIZE_DIVISOR: u64 = 50;

/// Looks collections up by name, each once per batch (a batch keeps the collection it started
/// with, even if a drop unregisters it meanwhile).
pub(super) fn collections(inner: Arc<Inner>) -> impl FnMut(&str) -> Result<Arc<Collection>> {
    let mut cache: HashMap<String, Arc<Collection>> = HashMap::new();
    move |name: &str| {
        if let Some(c) = cache.get(name) {
            return Ok(c.clone());
        }
        let c = inner.collection(name)?;
        cache.insert(name.to_owned(), c.clone());
        Ok(c)
    }
}

/// Stages a new collection (and forgets that one of its name was dropped).
pub(super) fn stage_create(txn: &mut WriteTxn, spec: &CollectionSpec) -> Result<()> {
    txn.put_collection(spec)?;
    txn.set_meta(&dropped_key(&spec.name), 0)
}

/// Stages a drop, remembering the name: remote writes into it that were made before they saw
/// the drop are discarded, not waited for.
pub(super) fn stage_drop(txn: &mut WriteTxn, name: &str) -> Result<()> {
    txn.drop_collection(name)?;
    txn.set_meta(&dropped_key(name), 1)
}

pub(super) enum Staged {
    /// The batch is refused; the transaction and engine are as before it.
    Rejected(Error),
    /// Storage failed mid-batch: the whole group must be abandoned. The batch's engine
    /// changes are in `pending`, so the rollback rebuilds its shards too.
    Fatal(Error),
}

impl Staged {
    /// Storage errors abandon the group; anything else refuses the batch.
    fn classify(e: Error) -> Staged {
        match e {
            Error::Storage(_) | Error::Io { .. } => Staged::Fatal(e),
            e => Staged::Rejected(e),
        }
    }
}

/// Applies one shard's part of a batch to every replica of the shard: the first replica first
/// (a refusal there leaves all of them as they were), then the others in parallel. The flag
/// says whether the shard must be rebuilt.
fn apply_one(coll: &Collection, shard: u32, muts: &[wit::Mutation]) -> ShardOutcome {
    apply_replica(coll, shard, 0, muts)?;
    let results: Vec<ShardOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..coll.replica_count(shard))
            .map(|r| scope.spawn(move || apply_replica(coll, shard, r, muts)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err((Error::Engine("engine thread panicked".into()), true)))
            })
            .collect()
    });
    // The first replica took the batch, so a later failure leaves the replicas apart.
    match results.into_iter().find_map(Result::err) {
        Some((e, _)) => Err((e, true)),
        None => Ok(()),
    }
}

fn apply_replica(
    coll: &Collection,
    shard: u32,
    replica: usize,
    muts: &[wit::Mutation],
) -> ShardOutcome {
    let mut slot = coll.lock(shard, replica).map_err(|e| (e, false))?;
    let inst = match &mut *slot {
        Slot::Ready(i) => i,
        Slot::Broken(reason) => {
            return Err((
                Error::Unavailable {
                    collection: coll.spec.name.clone(),
                    shard,
                    reason: reason.clone(),
                },
                false,
            ))
        }
    };
    match inst.apply(muts) {
        Ok(_) => Ok(()),
        Err(CallError::Engine(wit::EngineError::Invalid(m))) => Err((Error::Invalid(m), false)),
        Err(CallError::Engine(e)) => Err((Error::Engine(format!("{e:?}")), true)),
        Err(CallError::Trap(reason)) => Err((
            Error::EngineTrap {
                collection: coll.spec.name.clone(),
                shard,
                reason,
            },
            true,
        )),
    }
}

/// A fresh slot for a shard: loaded from storage, then given the pending changes again.
pub(super) fn recover_slot(
    inner: &Inner,
    spec: &CollectionSpec,
    shard: u32,
    pending: Option<&Vec<Vec<wit::Mutation>>>,
) -> Slot {
    let loaded = recovery::load_shard(&inner.runtime(), &inner.store, spec, shard).and_then(
        |(mut inst, _)| {
            for muts in pending.into_iter().flatten() {
                inst.apply(muts).map_err(|e| Error::Engine(e.message()))?;
            }
            Ok(inst)
        },
    );
    inner.counters.rebuild();
    match loaded {
        Ok(inst) => {
            tracing::info!(collection = %spec.name, shard, "shard rebuilt from storage");
            Slot::Ready(Box::new(inst))
        }
        Err(e) => {
            tracing::error!(collection = %spec.name, shard, error = %e, "shard could not be rebuilt");
            Slot::Broken(e.to_string())
        }
    }
}

/// Collections that a fresh open left newer than their snapshots.
pub(crate) fn dirty_after_open(
    reports: &[(String, Vec<recovery::LoadReport>)],
) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let mut seen = HashSet::new();
    for (name, rs) in reports {
        if rs.iter().any(|r| r.replayed > 0 || r.rebuilt > 0) && seen.insert(name.clone()) {
            out.insert(
                name.clone(),
                rs.iter().map(|r| r.replayed + r.rebuilt).sum(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::sync::mpsc::{sync_channel, Receiver};
    use std::sync::{Arc, Mutex, RwLock};

    use edge_config::DatabaseConfig;
    use serde_json::json;

    use super::{Committer, Job};
    use crate::db::{Counters, Inner};
    use crate::error::{Error, Result};
    use crate::model::{Batch, CollectionSpec, Direction, NodeKey, Receipt};
    use crate::runtime::{Runtime, DEFAULT_ENGINE};
    use crate::store::records::LogWrite;
    use crate::store::Store;

    fn committer(dir: &std::path::Path) -> Result<Committer> {
        committer_with(dir, DatabaseConfig::default())
    }

    fn committer_with(dir: &std::path::Path, config: DatabaseConfig) -> Result<Committer> {
        let store = Arc::new(Store::open(dir)?);
        let runtime = Runtime::new(DEFAULT_ENGINE, config.engine.clone(), None)?;
        let inner = Arc::new(Inner {
            plugins: crate::plugins::Registry::load(store.clone(), config.plugins.clone(), None)?,
            store,
            runtime: RwLock::new((Arc::new(runtime), [0; 32])),
            cache_dir: dir.join("engine-cache"),
            builtin_engine: Arc::from(DEFAULT_ENGINE),
            config,
            collections: RwLock::new(HashMap::new()),
            commit_gate: Mutex::new(()),
            counters: Counters::default(),
            committed: tokio::sync::watch::Sender::new(Default::default()),
        });
        Committer::new(inner, HashMap::new())
    }

    fn write(b: Batch) -> (Job, Receiver<Result<Receipt>>) {
        let (tx, rx) = sync_channel(1);
        (Job::Write(b, None, tx), rx)
    }

    fn answer<T>(rx: &Receiver<Result<T>>) -> Result<T> {
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// One commit group: a batch before the drop commits (and is then dropped with the
    /// collection); the drop is logged; batches after it in the same group resolve the name
    /// afresh and fail with `UnknownCollection`, writing nothing, also to other collections.
    #[test]
    fn a_batch_after_a_drop_in_the_same_group_fails_cleanly() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut c = committer(dir.path())?;
        for name in ["c", "d"] {
            let (tx, rx) = sync_channel(1);
            c.process(vec![Job::CreateCollection(
                CollectionSpec::new(name, 2),
                tx,
            )]);
            assert!(answer(&rx)?);
        }
        let mut before = Batch::new();
        before.upsert("c", "a", json!({}), Some(vec![1.0, 0.0]));
        let mut after = Batch::new();
        after
            .upsert("d", "x", json!({}), Some(vec![1.0, 0.0]))
            .upsert("c", "b", json!({}), Some(vec![0.0, 1.0]));
        let mut unlink = Batch::new();
        unlink.unlink(NodeKey::new("d", "x"), "l", NodeKey::new("c", "a"));
        let (w0, r0) = write(before);
        let (drop_tx, drop_rx) = sync_channel(1);
        let (w1, r1) = write(after);
        let (w2, r2) = write(unlink);
        let (again_tx, again_rx) = sync_channel(1);
        c.process(vec![
            w0,
            Job::DropCollection("c".into(), drop_tx),
            w1,
            w2,
            Job::DropCollection("c".into(), again_tx),
        ]);
        answer(&r0)?;
        assert!(answer(&drop_rx)?);
        assert!(matches!(answer(&r1), Err(Error::UnknownCollection(n)) if n == "c"));
        assert!(matches!(answer(&r2), Err(Error::UnknownCollection(n)) if n == "c"));
        assert!(!answer(&again_rx)?, "a second drop finds nothing");

        let store = &c.inner.store;
        assert!(c.inner.collection("c").is_err());
        assert_eq!(store.get_object("c", "a")?, None);
        assert_eq!(store.get_object("c", "b")?, None);
        assert_eq!(
            store.get_object("d", "x")?,
            None,
            "the refused batch wrote nothing"
        );
        let names: Vec<String> = store.collections()?.into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["d"]);
        let log = store.log_after(&Default::default())?;
        let last = log.last().map(|(_, _, e)| e.writes.clone());
        assert_eq!(
            last,
            Some(vec![LogWrite::DropCollection { name: "c".into() }])
        );
        // Sequence numbers stay dense: nothing refused took one.
        let seqs: Vec<u64> = log.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        assert!(!c.dirty.contains_key("c") && !c.snapshot_size.contains_key("c"));
        assert!(store
            .edges(&NodeKey::new("d", "x"), None, Direction::Both)?
            .is_empty());
        Ok(())
    }

    fn engine_ids(c: &Committer, name: &str) -> Result<BTreeSet<String>> {
        crate::db::tests::engine_ids(&c.inner, name)
    }

    fn stored_ids(c: &Committer, name: &str) -> Result<BTreeSet<String>> {
        Ok(c.inner
            .store
            .scan_objects(name, None, usize::MAX)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Log sequence numbers of this node, which must be 1..=n.
    fn dense_log(c: &Committer) -> Result<u64> {
        let log = c.inner.store.log_after(&Default::default())?;
        let seqs: Vec<u64> = log.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        Ok(seqs.len() as u64)
    }

    /// Two collections of two shards each, read with two replicas per shard.
    fn two_collections(dir: &std::path::Path) -> Result<Committer> {
        let config = DatabaseConfig {
            read_replicas: 2,
            ..DatabaseConfig::default()
        };
        let mut c = committer_with(dir, config)?;
        for name in ["a", "b"] {
            let mut spec = CollectionSpec::new(name, 2);
            spec.shards = 2;
            let (tx, rx) = sync_channel(1);
            c.process(vec![Job::CreateCollection(spec, tx)]);
            assert!(answer(&rx)?);
        }
        Ok(c)
    }

    fn upsert(collection: &str, id: &str) -> Batch {
        let mut b = Batch::new();
        b.upsert(collection, id, json!({ "id": id }), Some(vec![1.0, 0.5]));
        b
    }

    /// A collection whose creation fails in storage (at its row, its log entry, or the commit)
    /// does not exist afterwards and leaves no gap in the log: the next write takes the next
    /// sequence number.
    #[test]
    fn a_failed_collection_creation_leaves_no_gap() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut c = two_collections(dir.path())?;
        type Arm = fn(&crate::store::Faults);
        let faults: [(&str, Arm); 3] = [
            ("row", |f| f.fail_write(1)),
            ("log entry", |f| f.fail_write(2)),
            ("commit", |f| f.fail_commit(1)),
        ];
        for (what, arm) in faults {
            arm(c.inner.store.faults());
            let (tx, rx) = sync_channel(1);
            c.process(vec![Job::CreateCollection(CollectionSpec::new("c", 2), tx)]);
            assert!(answer(&rx).is_err(), "creation should fail at its {what}");
            assert!(c.inner.collection("c").is_err(), "{what}");
            let before = dense_log(&c)?;
            let (w, r) = write(upsert("a", what));
            c.process(vec![w]);
            assert_eq!(answer(&r)?.seq, before + 1, "after a failure at the {what}");
            dense_log(&c)?;
        }
        Ok(())
    }

    /// A storage error while staging the second batch of a group, which touches only
    /// collection `b`: the group is abandoned, every batch of it is answered with an error,
    /// and the engine of both collections holds exactly what storage holds, for a failure at
    /// each of the batch's storage writes (its object, its log entry, the clock).
    #[test]
    fn a_staging_failure_rolls_back_every_shard_the_group_touched() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut c = two_collections(dir.path())?;
        let (w, r) = write(upsert("b", "kept"));
        c.process(vec![w]);
        let last = answer(&r)?.seq;
        // Batch 1 stages three writes (object, log entry, clock); batch 2 fails at its n-th.
        for (n, what) in [(4, "put_object"), (5, "append_log"), (6, "set_meta")] {
            let (w1, r1) = write(upsert("a", &format!("a{n}")));
            let (w2, r2) = write(upsert("b", &format!("b{n}")));
            let mut late = upsert("a", &format!("late{n}"));
            late.upsert("b", &format!("late{n}"), json!({}), Some(vec![0.0, 1.0]));
            let (w3, r3) = write(late);
            c.inner.store.faults().fail_write(n);
            c.process(vec![w1, w2, w3]);
            c.inner.store.faults().fail_write(0);
            let e1 = answer(&r1).expect_err("the group was not committed");
            assert!(
                matches!(&e1, Error::Storage(m) if m.starts_with("commit failed") && m.contains(what)),
                "{e1:?}"
            );
            let e2 = answer(&r2).expect_err("the failing batch");
            assert!(
                matches!(&e2, Error::Storage(m) if m.contains("injected") && m.contains(what)),
                "{e2:?}"
            );
            let e3 = answer(&r3).expect_err("a batch after the failing one");
            assert!(
                matches!(&e3, Error::Storage(m) if m.contains("earlier batch")),
                "{e3:?}"
            );
            for name in ["a", "b"] {
                assert_eq!(
                    engine_ids(&c, name)?,
                    stored_ids(&c, name)?,
                    "{name} after {what}"
                );
            }
            assert_eq!(engine_ids(&c, "a")?, ids(&[]));
            assert_eq!(engine_ids(&c, "b")?, ids(&["kept"]));
            assert_eq!(dense_log(&c)?, last, "nothing of the group is logged");
        }
        // The sequence numbers of the abandoned groups are given back.
        let (w, r) = write(upsert("b", "after"));
        c.process(vec![w]);
        assert_eq!(answer(&r)?.seq, last + 1);
        assert_eq!(engine_ids(&c, "b")?, ids(&["after", "kept"]));
        assert_eq!(dense_log(&c)?, last + 1);
        Ok(())
    }

    /// A failure of the commit itself: no batch of the group is in the engine or in storage
    /// (refused ones neither), and the next write takes the next sequence number.
    #[test]
    fn a_commit_failure_leaves_nothing_and_reuses_sequence_numbers() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut c = two_collections(dir.path())?;
        let mut first = upsert("a", "x");
        first.upsert("b", "x", json!({}), Some(vec![0.0, 1.0]));
        let (w, r) = write(first);
        c.process(vec![w]);
        let last = answer(&r)?.seq;

        let mut both = Batch::new();
        for i in 0..6 {
            both.upsert(
                "a",
                &format!("g{i}"),
                json!({ "i": i }),
                Some(vec![1.0, i as f32]),
            );
        }
        both.delete("b", "x").link(
            NodeKey::new("a", "x"),
            "to",
            NodeKey::new("a", "g0"),
            json!({}),
        );
        let (w1, r1) = write(both);
        let (w2, r2) = write(upsert("b", "y"));
        let mut bad = upsert("a", "bad");
        bad.upsert("a", "short", json!({}), Some(vec![1.0]));
        let (w3, r3) = write(bad);
        let (w4, r4) = write(upsert("b", "z"));
        c.inner.store.faults().fail_commit(1);
        c.process(vec![w1, w2, w3, w4]);
        for r in [&r1, &r2, &r4] {
            let e = answer(r).expect_err("the commit failed");
            assert!(
                matches!(&e, Error::Storage(m) if m.contains("commit failed") && m.contains("injected")),
                "{e:?}"
            );
        }
        assert!(matches!(answer(&r3), Err(Error::Invalid(_))));
        for name in ["a", "b"] {
            assert_eq!(engine_ids(&c, name)?, stored_ids(&c, name)?, "{name}");
            assert_eq!(engine_ids(&c, name)?, ids(&["x"]), "{name}");
        }
        assert!(c
            .inner
            .store
            .edges(&NodeKey::new("a", "x"), None, Direction::Both)?
            .is_empty());
        assert_eq!(dense_log(&c)?, last);

        let (w, r) = write(upsert("b", "y"));
        c.process(vec![w]);
        assert_eq!(answer(&r)?.seq, last + 1, "no gap in the log");
        assert_eq!(engine_ids(&c, "b")?, ids(&["x", "y"]));
        assert_eq!(dense_log(&c)?, last + 1);
        Ok(())
    }
}
