//! The embedded database: `Database::open(dir, config)`. Writes go through one committer thread
//! (group commit, [`commit`]); reads go straight to the engine shards and to storage.

mod collection;
mod commit;
mod engine;
mod materialise;
mod plan;
mod plugins;
mod query;
pub mod recovery;
mod remote;
mod snapshots;
mod state;
mod validate;
pub use validate::check_vector;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use edge_config::DatabaseConfig;

use crate::auth::Tokens;
use crate::error::{Error, Result};
#[cfg(test)]
use crate::model::SearchOptions;
use crate::model::{
    Batch, CollectionSpec, ConflictPolicy, Direction, Edge, NodeKey, Object, ObjectVersion,
    ObjectVersions, Receipt,
};
use crate::replication::version::Clock;
use crate::runtime::{EngineLoad, Runtime, CACHE_DIR, DEFAULT_ENGINE};
use crate::store::Store;
use collection::{Collection, Slot};
use commit::{Committer, Job};
pub use query::Bounded;
pub use recovery::LoadReport;
pub use remote::{Applied, RemoteEntry};
pub use state::StateJob;

/// State shared by the API and the committer.
pub(crate) struct Inner {
    store: Arc<Store>,
    /// The engine every shard runs, and its component's SHA-256; replaced whole by an
    /// engine upgrade (`engine.rs`), between commits.
    runtime: RwLock<(Arc<Runtime>, [u8; 32])>,
    /// Where compiled components are cached.
    cache_dir: std::path::PathBuf,
    /// The engine the database was opened with: what runs without an uploaded one.
    builtin_engine: Arc<[u8]>,
    config: DatabaseConfig,
    collections: RwLock<HashMap<String, Arc<Collection>>>,
    /// Held by the committer for each group, and by a reader that must rebuild a shard, so a
    /// rebuild never drops engine changes of a group that is still being committed.
    commit_gate: Mutex<()>,
    counters: Counters,
    /// The log's applied clock after each commit, for the replicator.
    committed: tokio::sync::watch::Sender<Clock>,
    plugins: crate::plugins::Registry,
}

impl Inner {
    /// Every collection's spec, by name.
    fn specs(&self) -> Vec<CollectionSpec> {
        let map = self.collections.read().unwrap_or_else(|p| p.into_inner());
        let mut specs: Vec<CollectionSpec> = map.values().map(|c| c.spec.clone()).collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }

    fn get(&self, collection: &str, id: &str) -> Result<Option<Object>> {
        self.collection(collection)?;
        let Some(o) = self.store.get_object(collection, id)? else {
            return Ok(None);
        };
        Ok(Some(Object {
            id: id.to_owned(),
            properties: serde_json::from_str(&o.properties)
                .map_err(|e| Error::Storage(format!("properties of `{id}` are damaged: {e}")))?,
            vector: o.vector,
            version: Receipt {
                origin: o.origin,
                seq: o.seq,
                hlc: o.hlc,
            },
        }))
    }

    fn edges(
        &self,
        node: &NodeKey,
        label: Option<&str>,
        direction: Direction,
    ) -> Result<Vec<Edge>> {
        self.collection(&node.collection)?;
        self.store.edges(node, label, direction)
    }
}

/// Hands `make`'s job to the committer and waits for its answer; refuses at once when the
/// commit queue is full.
fn try_submit<T>(
    inner: &Inner,
    jobs: Option<&SyncSender<Job>>,
    make: impl FnOnce(SyncSender<Result<T>>) -> Job,
) -> Result<T> {
    use std::sync::mpsc::TrySendError;
    let (tx, rx) = sync_channel(1);
    let jobs = jobs.ok_or(Error::Closed)?;
    match jobs.try_send(make(tx)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(Error::Overloaded(inner.config.commit_queue)),
        Err(TrySendError::Disconnected(_)) => return Err(Error::Closed),
    }
    rx.recv().map_err(|_| Error::Closed)?
}

/// Owned access to an open database for a plugin call: the same reads as [`Database`] and
/// writes through its committer. Holding one keeps the committer running, so it lives no
/// longer than the call it serves.
#[derive(Clone)]
pub struct DbHandle {
    inner: Arc<Inner>,
    jobs: SyncSender<Job>,
}

impl DbHandle {
    pub fn until(&self, deadline: Option<Instant>) -> Bounded<'_> {
        Bounded::new(&self.inner, deadline)
    }

    pub fn get(&self, collection: &str, id: &str) -> Result<Option<Object>> {
        self.inner.get(collection, id)
    }

    pub fn edges(
        &self,
        node: &NodeKey,
        label: Option<&str>,
        direction: Direction,
    ) -> Result<Vec<Edge>> {
        self.inner.edges(node, label, direction)
    }

    pub fn collections(&self) -> Vec<CollectionSpec> {
        self.inner.specs()
    }

    pub fn write_before(&self, batch: Batch, deadline: Option<Instant>) -> Result<Receipt> {
        if batch.is_empty() {
            return Err(Error::invalid("empty batch"));
        }
        try_submit(&self.inner, Some(&self.jobs), |reply| {
            Job::Write(batch, deadline, reply)
        })
    }
}

/// Engine failures since open (for metrics).
#[derive(Default)]
pub(crate) struct Counters {
    pub engine_traps: AtomicU64,
    pub shard_rebuilds: AtomicU64,
    /// Writes that met a concurrent version, by policy (in `POLICIES` order).
    pub conflicts: [AtomicU64; 4],
    /// Remote writes into collections dropped here.
    pub discarded: AtomicU64,
    /// Vectors kept out of the index because the collection here cannot take them (a remote
    /// write into a collection created elsewhere with another dimension, a resolver's output).
    pub unindexed: AtomicU64,
    /// Engine upgrades (or rollbacks) this node could not carry out.
    pub engine_switch_failures: AtomicU64,
}

/// The conflict policies in the order `Counters::conflicts` counts them.
pub const POLICIES: [ConflictPolicy; 4] = [
    ConflictPolicy::LastWriteWins,
    ConflictPolicy::FirstWriteWins,
    ConflictPolicy::VectorClock,
    ConflictPolicy::Manual,
];

impl Counters {
    pub fn conflict(&self, p: ConflictPolicy) {
        if let Some(i) = POLICIES.iter().position(|x| *x == p) {
            self.conflicts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn trap(&self) {
        self.engine_traps.fetch_add(1, Ordering::Relaxed);
    }

    pub fn engine_switch_failed(&self) {
        self.engine_switch_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rebuild(&self) {
        self.shard_rebuilds.fetch_add(1, Ordering::Relaxed);
    }
}

/// How often engine instances failed and were rebuilt since the database was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    pub traps: u64,
    pub rebuilds: u64,
}

impl Inner {
    fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownCollection(name.to_owned()))
    }

    /// The engine shards are loaded on now.
    fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Loads every replica of every shard of a collection (in parallel) and registers it.
    fn load_collection(&self, spec: CollectionSpec) -> Result<Vec<LoadReport>> {
        let (collection, reports) = self.build_collection(&self.runtime(), spec);
        let name = collection.spec.name.clone();
        self.collections
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, Arc::new(collection));
        Ok(reports)
    }

    /// Every replica of every shard of a collection loaded on `runtime` (in parallel); a
    /// shard that fails to load is `Broken`.
    fn build_collection(
        &self,
        runtime: &Runtime,
        spec: CollectionSpec,
    ) -> (Collection, Vec<LoadReport>) {
        use rayon::prelude::*;
        let replicas = self.config.read_replicas.max(1);
        let loaded: Vec<(Slot, LoadReport)> = (0..spec.shards as usize * replicas)
            .into_par_iter()
            .map(|i| {
                let s = (i / replicas) as u32;
                match recovery::load_shard(runtime, &self.store, &spec, s) {
                    Ok((inst, report)) => (Slot::Ready(Box::new(inst)), report),
                    Err(e) => {
                        tracing::error!(collection = %spec.name, shard = s, error = %e, "shard failed to load");
                        (Slot::Broken(e.to_string()), LoadReport::default())
                    }
                }
            })
            .collect();
        // One report per shard (its first replica's), and the slots grouped by shard.
        let mut slots: Vec<Vec<Slot>> = Vec::new();
        let mut reports = Vec::new();
        for (i, (slot, report)) in loaded.into_iter().enumerate() {
            if i % replicas == 0 {
                slots.push(Vec::with_capacity(replicas));
                reports.push(report);
            }
            if let Some(last) = slots.last_mut() {
                last.push(slot);
            }
        }
        (Collection::new(spec, slots), reports)
    }
}

/// Meta key: set once a node with peers ran on this database.
const REPLICATED: &str = "replicated";

/// An open database directory. Cheap to share between threads (`&Database` is enough).
pub struct Database {
    inner: Arc<Inner>,
    tokens: Tokens,
    jobs: Option<SyncSender<Job>>,
    committer: Option<JoinHandle<()>>,
    startup: Vec<(String, Vec<LoadReport>)>,
}

impl Database {
    /// Opens (or creates) a database in `dir` with the built-in engine.
    pub fn open(dir: impl AsRef<Path>, config: DatabaseConfig) -> Result<Database> {
        Self::open_with_engine(dir.as_ref(), config, DEFAULT_ENGINE)
    }

    /// Opens with another engine component (same WIT world). The compiled component is cached
    /// in `dir/engine-cache` (see [`Database::engine_load`]).
    pub fn open_with_engine(dir: &Path, config: DatabaseConfig, engine: &[u8]) -> Result<Database> {
        let store = Arc::new(Store::open(dir)?);
        let store_applied = store.applied()?;
        // After `Store::open`: redb's lock on the directory makes this process the only one
        // writing its engine cache.
        let cache_dir = dir.join(CACHE_DIR);
        let (runtime, hash) = engine::at_open(&store, engine, &config, &cache_dir)?;
        let plugins = crate::plugins::Registry::load(
            store.clone(),
            config.plugins.clone(),
            Some(&dir.join(crate::plugins::sandbox::CACHE_DIR)),
        )?;
        let inner = Arc::new(Inner {
            store,
            runtime: RwLock::new((Arc::new(runtime), hash)),
            cache_dir,
            builtin_engine: Arc::from(engine),
            config,
            collections: RwLock::new(HashMap::new()),
            commit_gate: Mutex::new(()),
            counters: Counters::default(),
            committed: tokio::sync::watch::Sender::new(Clock(store_applied)),
            plugins,
        });
        let mut reports = Vec::new();
        for spec in inner.store.collections()? {
            let name = spec.name.clone();
            let r = inner.load_collection(spec)?;
            tracing::info!(collection = %name, reports = ?r, "collection loaded");
            reports.push((name, r));
        }
        let committer = Committer::new(inner.clone(), commit::dirty_after_open(&reports))?;
        // Beyond `commit_queue` waiting batches, `write` blocks and `write_before` refuses.
        let (tx, rx) = sync_channel(inner.config.commit_queue);
        let handle = std::thread::Builder::new()
            .name("vektagraf-commit".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| Error::io("starting the commit thread", e))?;
        Ok(Database {
            tokens: Tokens::load(inner.store.clone())?,
            inner,
            jobs: Some(tx),
            committer: Some(handle),
            startup: reports,
        })
    }

    fn submit<T>(&self, make: impl FnOnce(SyncSender<Result<T>>) -> Job) -> Result<T> {
        let (tx, rx) = sync_channel(1);
        self.jobs
            .as_ref()
            .ok_or(Error::Closed)?
            .send(make(tx))
            .map_err(|_| Error::Closed)?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Like `submit`, but refuses at once when the commit queue is full instead of waiting
    /// (for a server, where waiting would tie up a thread per queued request).
    fn try_submit<T>(&self, make: impl FnOnce(SyncSender<Result<T>>) -> Job) -> Result<T> {
        try_submit(&self.inner, self.jobs.as_ref(), make)
    }

    /// A handle for work that must own its access to the database (a plugin call's wasmtime
    /// store): reads, and writes through the committer. `None` once closed.
    pub fn handle(&self) -> Option<DbHandle> {
        Some(DbHandle {
            inner: self.inner.clone(),
            jobs: self.jobs.clone()?,
        })
    }

    /// Creates a collection. Returns false if it already existed with the same spec; an error if
    /// it exists with another.
    pub fn create_collection(&self, spec: CollectionSpec) -> Result<bool> {
        spec.validate()?;
        self.submit(|reply| Job::CreateCollection(spec, reply))
    }

    /// Drops a collection durably: its objects, every edge touching them (also edges from
    /// objects of other collections), its index snapshots and its metadata
    /// ([`collection_meta`](Self::collection_meta)), in one transaction with its log entry.
    /// Returns false (and writes nothing) if there was no such collection. Reads already
    /// running on it finish; later calls naming it get [`Error::UnknownCollection`], and so
    /// does a write batch that reaches the committer after the drop.
    pub fn drop_collection(&self, name: &str) -> Result<bool> {
        self.submit(|reply| Job::DropCollection(name.to_owned(), reply))
    }

    /// A collection's metadata: JSON stored beside it by the node's HTTP API (the Qdrant API
    /// keeps the vector form and payload index schema there). It is **node-local**: written
    /// straight to storage, not through the committer, and not in the operation log, so
    /// replication will not carry it. Dropping the collection removes it. `Ok(None)` if none
    /// was set; [`Error::UnknownCollection`] if the collection does not exist.
    pub fn collection_meta(&self, name: &str) -> Result<Option<serde_json::Value>> {
        let Some(text) = self.inner.store.collection_meta(name)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Storage(format!("metadata of collection `{name}` is damaged: {e}")))
    }

    /// Replaces a collection's node-local metadata (see
    /// [`collection_meta`](Self::collection_meta)) durably; [`Error::UnknownCollection`] if the
    /// collection does not exist. Checked in the same storage transaction as the write, so it
    /// never leaves metadata behind a concurrent drop.
    pub fn set_collection_meta(&self, name: &str, value: &serde_json::Value) -> Result<()> {
        let text = serde_json::to_string(value).map_err(|e| Error::invalid(e.to_string()))?;
        self.inner.store.put_collection_meta(name, &text)
    }

    pub fn collections(&self) -> Vec<CollectionSpec> {
        self.inner.specs()
    }

    pub fn collection_spec(&self, name: &str) -> Result<CollectionSpec> {
        Ok(self.inner.collection(name)?.spec.clone())
    }

    /// Commits a batch atomically and durably. Invalid batches write nothing.
    pub fn write(&self, batch: Batch) -> Result<Receipt> {
        self.write_before(batch, None)
    }

    /// Like [`write`](Self::write), for servers: refused without effect if the committer has
    /// not started on it by `deadline`, or at once ([`Error::Overloaded`]) if the commit queue
    /// is full.
    pub fn write_before(&self, batch: Batch, deadline: Option<Instant>) -> Result<Receipt> {
        if batch.is_empty() {
            return Err(Error::invalid("empty batch"));
        }
        self.try_submit(|reply| Job::Write(batch, deadline, reply))
    }

    /// Applies other nodes' log entries (each origin's in sequence after what is applied here)
    /// under each collection's conflict policy, durably, in one transaction per collection
    /// change. Returns what was applied; entries after an error are not.
    pub fn apply_remote(&self, entries: Vec<RemoteEntry>) -> Applied {
        let (tx, rx) = sync_channel(1);
        let sent = self
            .jobs
            .as_ref()
            .map(|jobs| jobs.send(Job::Remote(entries, tx)).is_ok());
        if sent != Some(true) {
            return Applied {
                through: Clock::default(),
                error: Some(Error::Closed),
            };
        }
        rx.recv().unwrap_or(Applied {
            through: Clock::default(),
            error: Some(Error::Closed),
        })
    }

    /// Per origin, the last log entry applied here.
    pub fn applied_clock(&self) -> std::collections::BTreeMap<u64, u64> {
        self.inner.committed.borrow().0.clone()
    }

    /// The log's applied clock, updated after every commit (local or remote).
    pub fn watch_log(&self) -> tokio::sync::watch::Receiver<Clock> {
        self.inner.committed.subscribe()
    }

    /// Entries `from..=to` of one origin's log.
    pub fn log_range(&self, origin: u64, from: u64, to: u64) -> Result<Vec<RemoteEntry>> {
        self.inner.store.log_range(origin, from, to)
    }

    /// Writes that met a concurrent version since open, by policy; and remote writes
    /// discarded because their collection was dropped here.
    pub fn conflict_counts(&self) -> ([(ConflictPolicy, u64); 4], u64) {
        let c = &self.inner.counters;
        let mut out = [(ConflictPolicy::LastWriteWins, 0); 4];
        for (i, p) in POLICIES.iter().enumerate() {
            out[i] = (*p, c.conflicts[i].load(Ordering::Relaxed));
        }
        (out, c.discarded.load(Ordering::Relaxed))
    }

    /// Vectors kept in storage but out of the index since open, because the collection here
    /// cannot take them: remote writes into a collection another region created with other
    /// parameters at the same time, or a resolver plugin's output (`validate::fit_for_index`).
    pub fn unindexed_vectors(&self) -> u64 {
        self.inner.counters.unindexed.load(Ordering::Relaxed)
    }

    /// Forgets tombstones every node has seen (`stable`: the clock every peer has confirmed,
    /// from the replicator); returns how many. Runs between commits.
    pub fn collect_tombstones(&self, stable: Clock) -> Result<u64> {
        self.submit(|reply| Job::Collect(stable, reply))
    }

    /// Merges one step of another node's state export (`export_state` there): a bootstrap
    /// snapshot or an anti-entropy repair. Runs between commits.
    pub fn merge_state(&self, job: StateJob) -> Result<u64> {
        self.submit(|reply| Job::State(job, reply))
    }

    /// A consistent export of this node's state (all of it, or some key buckets of one
    /// collection), read a chunk at a time.
    pub fn export_state(
        &self,
        only: Option<(String, std::collections::BTreeSet<u8>)>,
    ) -> Result<crate::store::StateExport> {
        self.inner.store.export(only)
    }

    /// The applied clock and every collection's digest sum, read together.
    pub fn digests(&self) -> Result<(Clock, Vec<(String, u128)>)> {
        self.inner.store.digests()
    }

    /// The applied clock and the collection's digest per key bucket, read together.
    pub fn bucket_digests(&self, collection: &str) -> Result<(Clock, Vec<u128>)> {
        self.inner.store.bucket_digests(collection)
    }

    /// Per origin, the highest seq the operation log no longer holds.
    pub fn log_horizon(&self) -> Result<Clock> {
        self.inner.store.horizon()
    }

    /// Trims the operation log: entries every peer has confirmed (`stable`; `None` when the
    /// node has no peers), that every index snapshot covers (a restart replays the log after
    /// them) and older than `retention`. Returns how many entries went.
    pub fn trim_log(&self, stable: Option<&Clock>, retention: std::time::Duration) -> Result<u64> {
        let store = &self.inner.store;
        let upto = match stable {
            Some(c) => c.clone(),
            None => Clock(store.applied()?),
        };
        // Only what an index snapshot covers: with none yet, everything stays (so a node's
        // log is never emptied under entries a peer or a test is about to read).
        let Some(floor) = store.snapshot_floor()? else {
            return Ok(0);
        };
        let upto = Clock(
            upto.0
                .iter()
                .filter_map(|(o, s)| {
                    let f = floor.0.get(o).copied().unwrap_or(0).min(*s);
                    (f > 0).then_some((*o, f))
                })
                .collect(),
        );
        // HLC stamps are `wall_ms << 16 | counter`.
        let before = match retention.as_millis() as u64 {
            0 => u64::MAX,
            r => crate::replication::hlc::system_wall_ms().saturating_sub(r) << 16,
        };
        let mut total = 0;
        loop {
            let n = store.trim_log(&upto, before, 10_000)?;
            total += n;
            if n < 10_000 {
                return Ok(total);
            }
        }
    }

    /// The collection's state digest: equal on two nodes exactly when they hold the same
    /// objects, edges and versions (docs/replication.md). Reads the whole collection.
    pub fn digest(&self, collection: &str) -> Result<crate::store::Digest> {
        self.inner.collection(collection)?;
        self.inner.store.digest(collection)
    }

    /// API tokens stored in this database (used by the node).
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Engine traps and shard rebuilds since open.
    pub fn engine_counters(&self) -> EngineCounters {
        let c = &self.inner.counters;
        EngineCounters {
            traps: c.engine_traps.load(Ordering::Relaxed),
            rebuilds: c.shard_rebuilds.load(Ordering::Relaxed),
        }
    }

    /// Size of the database file in bytes.
    pub fn storage_bytes(&self) -> u64 {
        std::fs::metadata(self.inner.store.path()).map_or(0, |m| m.len())
    }

    /// Whether every shard of every collection has a working engine instance.
    pub fn broken_shards(&self) -> Vec<String> {
        let map = self
            .inner
            .collections
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for c in map.values() {
            for s in 0..c.shard_count() {
                for r in 0..c.replica_count(s) {
                    if let Ok(slot) = c.lock(s, r) {
                        if let Slot::Broken(reason) = &*slot {
                            out.push(format!("{}/{s} (replica {r}): {reason}", c.spec.name));
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Writes index snapshots of every shard changed since its last one, so the next open
    /// restores instead of rebuilding.
    ///
    /// A database that has never replicated (no node with peers ran on it) then trims the
    /// operation log the snapshots cover: nothing else would ever read it. A node with peers
    /// trims only what every peer has acknowledged (docs/replication.md).
    pub fn checkpoint(&self) -> Result<()> {
        // The committer answers once the snapshots are written; making them durable is the
        // snapshot thread's work, waited for here, so writes queued behind do not wait too.
        self.submit(Job::Checkpoint)?.wait();
        if self.inner.store.meta(REPLICATED)?.unwrap_or(0) == 0 {
            self.trim_log(None, std::time::Duration::ZERO)?;
        }
        Ok(())
    }

    /// Records that this database replicates with peers: from now on its log is kept until
    /// they have it, not trimmed at every checkpoint.
    pub fn note_replication(&self) -> Result<()> {
        let mut txn = self.inner.store.begin_write()?;
        txn.set_meta(REPLICATED, 1)?;
        txn.commit()
    }

    pub fn get(&self, collection: &str, id: &str) -> Result<Option<Object>> {
        self.inner.get(collection, id)
    }

    /// Every version of an object — the visible one, siblings written concurrently elsewhere
    /// that its collection's policy keeps, a tombstone — with the causal context that a
    /// [`Batch::resolve`](crate::model::Batch::resolve) passes back to replace exactly these.
    pub fn versions(&self, collection: &str, id: &str) -> Result<ObjectVersions> {
        use crate::replication::version::Version;
        use crate::store::records::SiblingValue;
        self.inner.collection(collection)?;
        let (visible, others) = self.inner.store.object_versions(collection, id)?;
        let parse = |text: &str| {
            serde_json::from_str(text)
                .map_err(|e| Error::Storage(format!("properties of `{id}` are damaged: {e}")))
        };
        let mut context = Clock::default();
        let mut out = Vec::new();
        if let Some(o) = visible {
            context.merge(&o.version().context);
            out.push(ObjectVersion {
                hlc: o.hlc,
                origin: o.origin,
                seq: o.seq,
                visible: true,
                properties: Some(parse(&o.properties)?),
                vector: o.vector,
            });
        }
        for s in others {
            context.merge(&Version::new(s.hlc, s.origin, s.seq, &s.seen).context);
            let (properties, vector) = match s.value {
                SiblingValue::Object { properties, vector } => (Some(parse(&properties)?), vector),
                _ => (None, None),
            };
            out.push(ObjectVersion {
                hlc: s.hlc,
                origin: s.origin,
                seq: s.seq,
                visible: false,
                properties,
                vector,
            });
        }
        out.sort_by_key(|v| (v.hlc, v.origin));
        Ok(ObjectVersions {
            context: context.to_token(),
            versions: out,
        })
    }

    /// Stored edges of an object.
    pub fn edges(
        &self,
        node: &NodeKey,
        label: Option<&str>,
        direction: Direction,
    ) -> Result<Vec<Edge>> {
        self.inner.edges(node, label, direction)
    }

    /// How each collection's shards were brought up by `open` (snapshot restored, objects
    /// replayed or rebuilt).
    pub fn startup(&self) -> &[(String, Vec<LoadReport>)] {
        &self.startup
    }

    /// SHA-256 (hex) of the engine component every shard runs: the built-in one, or the
    /// one uploaded as the `engine` plugin.
    pub fn engine_sha256(&self) -> String {
        let hash = self
            .inner
            .runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1;
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// How the running engine component was made ready: deserialized from the verified
    /// cache in the data directory (`cached`), or compiled (and `stored` for the next open).
    pub fn engine_load(&self) -> EngineLoad {
        self.inner.runtime().load().clone()
    }

    /// The node id of this database (origin of its log entries).
    pub fn node_id(&self) -> u64 {
        self.inner.store.node_id()
    }

    /// Checkpoints and stops the committer.
    /// Then gives back the file's free pages if they are many (after a large import whose
    /// log was trimmed, say).
    pub fn close(mut self) -> Result<()> {
        let result = self.checkpoint();
        self.shutdown();
        result?;
        let shrunk = self.inner.store.compact()?;
        if shrunk > 0 {
            tracing::info!(bytes = shrunk, "database file compacted");
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        self.jobs.take();
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
    }

    /// Entries in the operation log (every origin's), for metrics.
    pub fn log_len(&self) -> Result<u64> {
        self.inner.store.log_len()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::runtime::wit;

    /// Matches every object (docs/query.md: `$atLeast` with count 0 always holds).
    pub(crate) const ALL: &str = r#"{"$atLeast": {"count": 0, "of": []}}"#;

    /// The ids the engine holds for a collection, asked of every replica of every shard (the
    /// replicas must agree, and each shard's object count must match its ids).
    pub(crate) fn engine_ids(inner: &Inner, name: &str) -> Result<BTreeSet<String>> {
        let coll = inner.collection(name)?;
        let mut out = BTreeSet::new();
        for s in 0..coll.shard_count() {
            let mut first: Option<BTreeSet<String>> = None;
            for r in 0..coll.replica_count(s) {
                let mut slot = coll.lock(s, r)?;
                let Slot::Ready(inst) = &mut *slot else {
                    panic!("{name}/{s} replica {r} is not ready");
                };
                let t = inst.query_timeout();
                let engine = |e: crate::runtime::CallError| Error::Engine(e.message());
                let ids: BTreeSet<String> = inst
                    .filter(ALL, u32::MAX, t)
                    .map_err(engine)?
                    .into_iter()
                    .collect();
                let objects = inst.stats(t).map_err(engine)?.objects;
                assert_eq!(objects, ids.len() as u64, "{name}/{s} replica {r}");
                match &first {
                    None => first = Some(ids),
                    Some(f) => assert_eq!(f, &ids, "replicas of {name}/{s} differ"),
                }
            }
            out.extend(first.unwrap_or_default());
        }
        Ok(out)
    }

    /// What one writer thread saw: the receipts it got, and the objects (with the sequence
    /// number that wrote them) and edges its acknowledged batches leave.
    #[derive(Default)]
    struct Seen {
        seqs: Vec<u64>,
        objects: BTreeMap<NodeKey, u64>,
        edges: BTreeSet<(NodeKey, NodeKey)>,
        failed: usize,
        refused: usize,
    }

    fn writer(db: &Database, t: usize, rounds: usize) -> Seen {
        let mut seen = Seen::default();
        for i in 0..rounds {
            let a = NodeKey::new("c", format!("t{t}-{i}-a"));
            let b = NodeKey::new("d", format!("t{t}-{i}-b"));
            let v = Some(vec![1.0 + t as f32, 1.0 + i as f32]);
            let mut batch = Batch::new();
            let kind = (i + t) % 6;
            let mut victim = None;
            match kind {
                // Accepted: two objects in two collections and an edge between them, and now
                // and then a delete of one of this writer's earlier objects.
                0..=2 => {
                    batch
                        .upsert("c", &a.id, serde_json::json!({ "t": t, "i": i }), v.clone())
                        .upsert("d", &b.id, serde_json::json!({}), v.clone())
                        .link(a.clone(), "p", b.clone(), serde_json::json!({}));
                    if kind == 2 {
                        victim = seen.objects.keys().next().cloned();
                        if let Some(k) = &victim {
                            batch.delete(&k.collection, &k.id);
                        }
                    }
                }
                // Refused: a vector of the wrong length.
                3 => {
                    batch
                        .upsert("c", &a.id, serde_json::json!({}), v.clone())
                        .upsert("d", &b.id, serde_json::json!({}), Some(vec![1.0; 3]));
                }
                // Refused: an unknown collection.
                4 => {
                    batch
                        .upsert("d", &b.id, serde_json::json!({}), v.clone())
                        .upsert("nope", &a.id, serde_json::json!({}), v.clone());
                }
                // Refused: an edge to an object that does not exist.
                _ => {
                    batch
                        .upsert("c", &a.id, serde_json::json!({}), v.clone())
                        .link(
                            a.clone(),
                            "p",
                            NodeKey::new("d", format!("missing-{t}-{i}")),
                            serde_json::json!({}),
                        );
                }
            }
            match db.write(batch) {
                Ok(receipt) => {
                    assert!(
                        kind <= 2,
                        "writer {t} round {i}: a refused batch was accepted"
                    );
                    seen.seqs.push(receipt.seq);
                    seen.objects.insert(a.clone(), receipt.seq);
                    seen.objects.insert(b.clone(), receipt.seq);
                    seen.edges.insert((a, b));
                    if let Some(k) = victim {
                        seen.objects.remove(&k);
                        seen.edges.retain(|(f, to)| *f != k && *to != k);
                    }
                }
                Err(Error::Storage(_)) => seen.failed += 1,
                Err(Error::Invalid(_)) if kind == 3 || kind == 5 => seen.refused += 1,
                Err(Error::UnknownCollection(n)) if kind == 4 && n == "nope" => seen.refused += 1,
                Err(e) => panic!("writer {t} round {i} (kind {kind}): unexpected {e:?}"),
            }
        }
        seen
    }

    /// The engine (every replica, through filter, search and stats), `get` and storage agree
    /// with what the writers were told.
    fn check_state(db: &Database, objects: &BTreeMap<NodeKey, u64>) -> Result<()> {
        for name in ["c", "d"] {
            let want: BTreeSet<String> = objects
                .keys()
                .filter(|k| k.collection == name)
                .map(|k| k.id.clone())
                .collect();
            assert_eq!(engine_ids(&db.inner, name)?, want, "engine of {name}");
            let filtered: BTreeSet<String> = db
                .filter(
                    name,
                    &serde_json::from_str(ALL).map_err(|e| Error::invalid(e.to_string()))?,
                    100_000,
                )?
                .into_iter()
                .collect();
            assert_eq!(filtered, want, "filter of {name}");
            let opts = SearchOptions {
                exact: true,
                ..SearchOptions::k(10_000)
            };
            let found: BTreeSet<String> = db
                .search(name, &[1.0, 1.0], &opts)?
                .into_iter()
                .map(|h| h.id)
                .collect();
            assert_eq!(found, want, "search of {name}");
            assert_eq!(db.stats(name)?.objects, want.len() as u64);
            let stored: BTreeSet<String> = db
                .inner
                .store
                .scan_objects(name, None, usize::MAX)?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            assert_eq!(stored, want, "storage of {name}");
        }
        for (k, seq) in objects {
            let got = db.get(&k.collection, &k.id)?;
            assert_eq!(got.map(|o| o.version.seq), Some(*seq), "{k:?}");
        }
        Ok(())
    }

    /// Writers race batches into one database, accepted ones and refused ones, while storage
    /// faults are injected now at a staged write, now at a commit. Whatever groups the
    /// committer folds them into, the state is exactly that of the acknowledged batches, and
    /// their sequence numbers are the log, without gaps.
    #[test]
    fn concurrent_writers_with_refusals_and_storage_faults() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let config = DatabaseConfig {
            read_replicas: 2,
            ..DatabaseConfig::default()
        };
        let db = Database::open(dir.path(), config.clone())?;
        for (name, shards) in [("c", 3), ("d", 2)] {
            let mut spec = CollectionSpec::new(name, 2);
            spec.shards = shards;
            db.create_collection(spec)?;
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        let seen: Vec<Seen> = std::thread::scope(|scope| {
            let faults = scope.spawn(|| {
                let mut x: u32 = 0x9e37_79b9;
                let mut armed = 0;
                while !done.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if x.is_multiple_of(3) {
                        db.inner.store.faults().fail_commit(1 + x % 2);
                    } else {
                        db.inner.store.faults().fail_write(1 + x % 40);
                    }
                    armed += 1;
                    std::thread::sleep(std::time::Duration::from_millis(3));
                }
                db.inner.store.faults().fail_write(0);
                db.inner.store.faults().fail_commit(0);
                armed
            });
            let writers: Vec<_> = (0..4)
                .map(|t| {
                    let db = &db;
                    scope.spawn(move || writer(db, t, 60))
                })
                .collect();
            let seen = writers
                .into_iter()
                .map(|h| h.join().expect("writer panicked"))
                .collect();
            done.store(true, Ordering::Relaxed);
            assert!(faults.join().expect("fault thread panicked") > 0);
            seen
        });
        let failed: usize = seen.iter().map(|s| s.failed).sum();
        let refused: usize = seen.iter().map(|s| s.refused).sum();
        let accepted: usize = seen.iter().map(|s| s.seqs.len()).sum();
        assert!(
            failed > 0 && refused > 0 && accepted > 0,
            "{failed} {refused} {accepted}"
        );

        // Each writer's receipts increase; all of them together, after the two collection
        // creations, are exactly the log.
        let mut seqs: Vec<u64> = Vec::new();
        for s in &seen {
            assert!(s.seqs.windows(2).all(|w| w[0] < w[1]));
            seqs.extend(&s.seqs);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (3..3 + accepted as u64).collect::<Vec<_>>());
        let log: Vec<u64> = db
            .inner
            .store
            .log_after(&Default::default())?
            .iter()
            .map(|(_, s, _)| *s)
            .collect();
        assert_eq!(log, (1..3 + accepted as u64).collect::<Vec<_>>());

        let objects: BTreeMap<NodeKey, u64> = seen.iter().flat_map(|s| s.objects.clone()).collect();
        let edges: BTreeSet<(NodeKey, NodeKey)> =
            seen.iter().flat_map(|s| s.edges.clone()).collect();
        check_state(&db, &objects)?;
        let mut stored_edges = BTreeSet::new();
        for k in objects.keys().filter(|k| k.collection == "c") {
            for e in db.edges(k, None, Direction::Out)? {
                stored_edges.insert((e.from, e.to));
            }
        }
        assert_eq!(stored_edges, edges);
        assert!(db.broken_shards().is_empty());

        // And a fresh open rebuilds the same state from storage.
        db.close()?;
        let db = Database::open(dir.path(), config)?;
        check_state(&db, &objects)?;
        db.close()
    }

    /// Each replica, asked directly, holds every committed write.
    #[test]
    fn every_replica_holds_every_committed_write() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let config = DatabaseConfig {
            read_replicas: 3,
            ..DatabaseConfig::default()
        };
        let db = Database::open(dir.path(), config)?;
        let mut spec = CollectionSpec::new("c", 2);
        spec.metric = crate::model::Metric::Euclidean;
        db.create_collection(spec)?;
        let mut b = Batch::new();
        for i in 0..20 {
            b.upsert(
                "c",
                &format!("o{i}"),
                serde_json::json!({}),
                Some(vec![i as f32, 0.0]),
            );
        }
        db.write(b)?;
        let mut b = Batch::new();
        b.delete("c", "o7");
        db.write(b)?;
        let coll = db.inner.collection("c")?;
        assert_eq!(coll.replica_count(0), 3);
        let req = wit::SearchRequest {
            vectors: vec![7.2, 0.0],
            count: 1,
            k: 2,
            ef: 0,
            filter: None,
            exact: false,
        };
        for r in 0..3 {
            let mut slot = coll.lock(0, r)?;
            let Slot::Ready(inst) = &mut *slot else {
                panic!("replica {r} is not ready");
            };
            let timeout = inst.query_timeout();
            let hits = inst
                .search(&req, timeout)
                .map_err(|e| Error::Engine(e.message()))?;
            let ids: Vec<&str> = hits[0].iter().map(|h| h.id.as_str()).collect();
            assert_eq!(ids, ["o8", "o6"], "replica {r}");
        }
        db.close()
    }
}
