//! Durable state in redb: the source of truth. Table layouts are in docs/storage.md.
//!
//! Every write batch is one [`WriteTxn`] that changes state *and* appends to the operation log;
//! the engine's in-memory indexes are derived from these tables and can always be rebuilt.

pub mod keys;
mod plugins;
pub mod records;
mod resolved;
mod snapshots;
mod state;
mod tokens;
pub use resolved::Resolved;
pub use state::{RowKey, StateExport, StateHeader, StateRow, BUCKETS};
pub use tokens::StoredToken;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use redb::{Database as Redb, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::model::{CollectionSpec, Direction, Edge, NodeKey};
use records::{decode, encode, LogEntry, StoredEdge, StoredObject, StoredSibling};
use snapshots::SnapshotDir;
pub use snapshots::{Finished, Location, SnapshotWriter};

/// Bumped when a table's layout changes; a directory of a newer format is refused.
/// 2: per-key versions (the `versions` table, record version 2). A format-1 database opens
/// as is (its records decode as having seen nothing but themselves).
/// 3: index snapshots in files (`index_snapshot_meta` version 2). An older database opens as
/// is and is marked 3, so that a build which cannot read the new rows refuses it.
pub const FORMAT_VERSION: u64 = 3;
pub const DB_FILE: &str = "vektagraf.redb";
/// redb's page cache (reads, and half of it for pages a write transaction has not yet
/// written). Small on purpose: an open reads every object once, and redb keeps what it read
/// until the cache is full; the OS caches the file anyway. 16 MiB instead of 64 took the peak
/// RSS of opening the 61k dataset for one query from 1.70x to 1.33x the engine's memory, with
/// the import time and write latencies of the ann bench unchanged.
const CACHE_BYTES: usize = 16 << 20;
/// Index snapshot files, beside the database file.
pub const SNAPSHOT_DIR: &str = "snapshots";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const COLLECTIONS: TableDefinition<&str, &str> = TableDefinition::new("collections");
const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const EDGES_OUT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("edges_out");
const EDGES_IN: TableDefinition<&[u8], ()> = TableDefinition::new("edges_in");
const OPLOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("oplog");
const APPLIED: TableDefinition<u64, u64> = TableDefinition::new("applied");
/// Index snapshots before they were chunked; dropped when the first chunked one is written.
const SNAPSHOTS_UNCHUNKED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_snapshots");
const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_snapshot_meta");
const SNAPSHOT_CHUNKS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("index_snapshot_chunks");
/// Node-local collection metadata: collection name -> JSON text (not in the operation log).
const COLLECTION_META: TableDefinition<&str, &str> = TableDefinition::new("collection_meta");
/// API tokens: token id -> [`StoredToken`] (hash of the secret, never the secret).
/// Versions of an object (key: its node key) or edge (key: its `edges_out` key) besides the
/// visible one: tombstones and siblings the collection's policy does not show.
const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// Plugin records by name (`plugins::record::PluginRecord`), replicated through the log.
const PLUGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugins");
/// Objects whose visible value a resolver plugin merged from their siblings
/// (`resolved::Resolved`), by object key; read over the visible row.
const RESOLVED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("resolved");
/// Component bytes by SHA-256, one copy per content.
const PLUGIN_BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("plugin_blobs");

/// Version vector: origin node -> highest sequence number applied.
pub type VersionVector = BTreeMap<u64, u64>;

/// A stored snapshot's description; its bytes are read a chunk at a time by
/// [`Store::get_snapshot`]'s reader.
pub struct SnapshotMeta {
    pub covered: VersionVector,
    /// Total length of the engine bytes.
    pub size: u64,
    pub location: Location,
}

/// A read transaction held across several reads (see [`Store::read_view`]).
pub struct ReadView(redb::ReadTransaction);

/// A snapshot's bytes, a chunk at a time.
pub type SnapshotBytes = Box<dyn Iterator<Item = Result<Vec<u8>>> + Send>;

/// The chunks of one snapshot of an earlier build, read lazily from one read transaction.
struct SnapshotChunks {
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    key: Vec<u8>,
    next: u32,
    count: u32,
}

impl Iterator for SnapshotChunks {
    type Item = Result<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next == self.count {
            return None;
        }
        let key = keys::chunk(&self.key, self.next);
        self.next += 1;
        Some(match self.table.get(key.as_slice()) {
            Ok(Some(v)) => Ok(v.value().to_vec()),
            Ok(None) => Err(Error::Storage("an index snapshot chunk is missing".into())),
            Err(e) => Err(e.into()),
        })
    }
}

pub struct Store {
    /// Shared by every transaction; taken exclusively only to compact the file.
    db: std::sync::RwLock<Redb>,
    path: PathBuf,
    node_id: u64,
    faults: Arc<Faults>,
    snapshots: SnapshotDir,
    /// Held while a snapshot file is renamed and its row committed, and while unnamed files
    /// are swept, so a sweep never takes a file about to be named.
    snapshot_files: std::sync::Mutex<()>,
    /// Set by the first write transaction after opening: `compact` has nothing to reclaim (and
    /// skips its walk over every page) when this process wrote nothing.
    wrote: std::sync::atomic::AtomicBool,
}

/// Storage faults injected on purpose, so tests can reach the paths where a write transaction
/// fails part-way (a staged write) or at its end (the commit). Each is a countdown: 0 is off
/// (the only cost when unused is one relaxed atomic load per call), `n` makes the `n`-th call
/// from now fail once.
#[doc(hidden)]
#[derive(Default)]
pub struct Faults {
    writes: AtomicU32,
    commits: AtomicU32,
}

impl Faults {
    /// The `n`-th write staged in a [`WriteTxn`] from now fails (`put_collection`,
    /// `drop_collection`, `put_object` (an object's versions), `link` (an edge's versions),
    /// `append_log` and `set_meta` each count one); 0 disarms.
    pub fn fail_write(&self, n: u32) {
        self.writes.store(n, Ordering::SeqCst);
    }

    /// The `n`-th [`WriteTxn::commit`] from now fails without committing; 0 disarms.
    pub fn fail_commit(&self, n: u32) {
        self.commits.store(n, Ordering::SeqCst);
    }

    fn check(counter: &AtomicU32, what: &str) -> Result<()> {
        if counter.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let before = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match before {
            Ok(1) => Err(Error::Storage(format!("injected storage fault at {what}"))),
            _ => Ok(()),
        }
    }
}

fn random_node_id() -> u64 {
    // No RNG crate needed for a one-off id: hash the time, the pid and a stack address.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

impl Store {
    /// Opens (or creates) the database file in `dir`, refusing a newer format.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join(DB_FILE);
        // redb's default cache is 1 GiB: a restore that reads every object would keep them
        // all in memory twice (its cache and the engine). The OS caches the file anyway.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| Error::Format {
                path: path.clone(),
                reason: format!("cannot open as a Vektagraf database: {e}"),
            })?;
        let txn = db.begin_write()?;
        let node_id;
        {
            let mut meta = txn.open_table(META)?;
            let format = meta.get("format_version")?.map(|v| v.value());
            match format {
                Some(v) if v > FORMAT_VERSION => {
                    return Err(Error::Format {
                        path,
                        reason: format!(
                            "written in storage format {v} by a newer Vektagraf; this build reads up to {FORMAT_VERSION}"
                        ),
                    })
                }
                Some(FORMAT_VERSION) => {}
                _ => {
                    meta.insert("format_version", FORMAT_VERSION)?;
                }
            }
            let existing = meta.get("node_id")?.map(|v| v.value());
            node_id = match existing {
                Some(id) => id,
                None => {
                    let id = random_node_id();
                    meta.insert("node_id", id)?;
                    id
                }
            };
            // Create every table so readers never meet a missing one.
            txn.open_table(COLLECTIONS)?;
            txn.open_table(OBJECTS)?;
            txn.open_table(EDGES_OUT)?;
            txn.open_table(EDGES_IN)?;
            txn.open_table(OPLOG)?;
            txn.open_table(APPLIED)?;
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(SNAPSHOT_CHUNKS)?;
            txn.open_table(TOKENS)?;
            txn.open_table(PLUGINS)?;
            txn.open_table(RESOLVED)?;
            txn.open_table(PLUGIN_BLOBS)?;
            txn.open_table(COLLECTION_META)?;
            txn.open_table(VERSIONS)?;
        }
        txn.commit()?;
        let store = Store {
            db: std::sync::RwLock::new(db),
            path,
            node_id,
            faults: Arc::default(),
            snapshots: SnapshotDir::open(dir.join(SNAPSHOT_DIR))?,
            snapshot_files: std::sync::Mutex::default(),
            wrote: Default::default(),
        };
        store.sweep_snapshots()?;
        Ok(store)
    }

    /// Storage fault injection, for tests.
    #[doc(hidden)]
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    fn redb(&self) -> std::sync::RwLockReadGuard<'_, Redb> {
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write transactions of the store begin here (see `wrote`; `trim_log` marks it itself,
    /// only when it removed something).
    fn redb_write(&self) -> Result<redb::WriteTransaction> {
        self.wrote.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(self.redb().begin_write()?)
    }

    /// Gives the database file's free pages back to the file system when they are more than
    /// 40% of it (and at least 1 MiB; a B-tree's pages are never all full, so a compacted
    /// file still has a quarter or so): after a large import, say, whose log entries
    /// were trimmed. Needs no transaction to be open; if one is, nothing happens. Returns the
    /// bytes the file shrank by.
    pub fn compact(&self) -> Result<u64> {
        if !self.wrote.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(0);
        }
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        let before = file_len(&self.path)?;
        let txn = db.begin_write()?;
        let fragmented = txn.stats()?.fragmented_bytes();
        txn.abort()?;
        if fragmented < (1 << 20).max(before / 5 * 2) {
            return Ok(0);
        }
        for _ in 0..8 {
            match db.compact() {
                Ok(true) => {}
                Ok(false) => break,
                Err(redb::CompactionError::TransactionInProgress) => return Ok(0),
                Err(e) => return Err(Error::Storage(format!("compacting the database: {e}"))),
            }
        }
        Ok(before.saturating_sub(file_len(&self.path)?))
    }

    pub fn meta(&self, key: &str) -> Result<Option<u64>> {
        let txn = self.redb().begin_read()?;
        Ok(txn.open_table(META)?.get(key)?.map(|v| v.value()))
    }

    pub fn collections(&self) -> Result<Vec<CollectionSpec>> {
        let txn = self.redb().begin_read()?;
        let table = txn.open_table(COLLECTIONS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (name, spec) = row?;
            out.push(serde_json::from_str(spec.value()).map_err(|e| {
                Error::Storage(format!(
                    "collection `{}` record is damaged: {e}",
                    name.value()
                ))
            })?);
        }
        Ok(out)
    }

    pub fn applied(&self) -> Result<VersionVector> {
        let txn = self.redb().begin_read()?;
        let table = txn.open_table(APPLIED)?;
        let mut vv = VersionVector::new();
        for row in table.iter()? {
            let (o, s) = row?;
            vv.insert(o.value(), s.value());
        }
        Ok(vv)
    }

    pub fn get_object(&self, collection: &str, id: &str) -> Result<Option<StoredObject>> {
        let txn = self.redb().begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        let key = keys::node(collection, id);
        let found = table.get(key.as_slice())?;
        let Some(o) = found.map(|v| decode("object", v.value())).transpose()? else {
            return Ok(None);
        };
        resolved::over(&txn.open_table(RESOLVED)?, &key, o)
    }

    /// An object's visible version and its other versions, read together.
    pub fn object_versions(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<(Option<StoredObject>, Vec<StoredSibling>)> {
        let key = keys::node(collection, id);
        let txn = self.redb().begin_read()?;
        let visible = txn
            .open_table(OBJECTS)?
            .get(key.as_slice())?
            .map(|v| decode("object", v.value()))
            .transpose()?;
        let others = txn
            .open_table(VERSIONS)?
            .get(key.as_slice())?
            .map(|v| decode("versions", v.value()))
            .transpose()?;
        Ok((visible, others.unwrap_or_default()))
    }

    /// Up to `limit` objects of a collection with ids after `after`, in key order.
    pub fn scan_objects(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredObject)>> {
        let prefix = keys::collection_prefix(collection);
        let start = match after {
            Some(id) => {
                let mut k = keys::node(collection, id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let end = keys::prefix_end(&prefix);
        let txn = self.redb().begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        let merged = txn.open_table(RESOLVED)?;
        let mut out = Vec::with_capacity(limit.min(4096));
        for row in table.range(start.as_slice()..end.as_slice())? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row?;
            let id = match keys::parts(k.value()).as_deref() {
                Some([_, id]) => (*id).to_owned(),
                _ => return Err(Error::Storage("an object key is damaged".into())),
            };
            if let Some(o) = resolved::over(&merged, k.value(), decode("object", v.value())?)? {
                out.push((id, o));
            }
        }
        Ok(out)
    }

    /// Edges of `node` in one direction (`Out` or `In`), optionally of one label, in key order.
    /// An edge shows only while both its ends exist: replication can deliver a link before the
    /// object it points to, or keep a link that raced with the delete of one of its ends
    /// (docs/replication.md, "Links and deletes").
    pub fn edges(&self, node: &NodeKey, label: Option<&str>, dir: Direction) -> Result<Vec<Edge>> {
        self.edges_at(&self.read_view()?, node, label, dir)
    }

    /// One consistent view of storage, for several reads that must agree (a traversal's
    /// hops).
    pub fn read_view(&self) -> Result<ReadView> {
        Ok(ReadView(self.redb().begin_read()?))
    }

    /// [`Store::edges`] as `view` sees them.
    pub fn edges_at(
        &self,
        view: &ReadView,
        node: &NodeKey,
        label: Option<&str>,
        dir: Direction,
    ) -> Result<Vec<Edge>> {
        let mut prefix = keys::node(&node.collection, &node.id);
        if let Some(l) = label {
            keys::part(&mut prefix, l);
        }
        let end = keys::prefix_end(&prefix);
        let txn = &view.0;
        let objects = txn.open_table(OBJECTS)?;
        let exists = |k: &NodeKey| -> Result<bool> {
            Ok(objects
                .get(keys::node(&k.collection, &k.id).as_slice())?
                .is_some())
        };
        if !exists(node)? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let split = |k: &[u8]| -> Result<(String, NodeKey)> {
            match keys::parts(k).as_deref() {
                Some([_, _, label, c, id]) => Ok(((*label).to_owned(), NodeKey::new(*c, *id))),
                _ => Err(Error::Storage("an edge key is damaged".into())),
            }
        };
        let props = txn.open_table(EDGES_OUT)?;
        if matches!(dir, Direction::Out | Direction::Both) {
            for row in props.range(prefix.as_slice()..end.as_slice())? {
                let (k, v) = row?;
                let (label, to) = split(k.value())?;
                if !exists(&to)? {
                    continue;
                }
                let e: StoredEdge = decode("edge", v.value())?;
                out.push(Edge {
                    from: node.clone(),
                    label,
                    to,
                    properties: parse_json(&e.properties)?,
                });
            }
        }
        if matches!(dir, Direction::In | Direction::Both) {
            let table = txn.open_table(EDGES_IN)?;
            for row in table.range(prefix.as_slice()..end.as_slice())? {
                let (k, _) = row?;
                let (label, from) = split(k.value())?;
                if !exists(&from)? {
                    continue;
                }
                let stored = props.get(keys::edge(&from, &label, node).as_slice())?;
                let properties = match stored {
                    Some(v) => parse_json(&decode::<StoredEdge>("edge", v.value())?.properties)?,
                    None => serde_json::Value::Null,
                };
                out.push(Edge {
                    from,
                    label,
                    to: node.clone(),
                    properties,
                });
            }
        }
        Ok(out)
    }

    /// Log entries after `covered`, for every origin, in (origin, seq) order.
    pub fn log_after(&self, covered: &VersionVector) -> Result<Vec<(u64, u64, LogEntry)>> {
        let txn = self.redb().begin_read()?;
        let table = txn.open_table(OPLOG)?;
        let mut out = Vec::new();
        // Each origin's entries after what is covered, read by key range (not the whole log):
        // every origin with entries is in `applied`.
        for row in txn.open_table(APPLIED)?.iter()? {
            let origin = row?.0.value();
            let from = covered.get(&origin).copied().unwrap_or(0).saturating_add(1);
            for row in table.range((origin, from)..=(origin, u64::MAX))? {
                let (k, v) = row?;
                let (origin, seq) = k.value();
                out.push((origin, seq, decode("log entry", v.value())?));
            }
        }
        Ok(out)
    }

    /// Entries `from..=to` of one origin's log (fewer if some are not there).
    pub fn log_range(&self, origin: u64, from: u64, to: u64) -> Result<Vec<(u64, u64, LogEntry)>> {
        let txn = self.redb().begin_read()?;
        let table = txn.open_table(OPLOG)?;
        let mut out = Vec::new();
        for row in table.range((origin, from)..=(origin, to))? {
            let (k, v) = row?;
            let (origin, seq) = k.value();
            out.push((origin, seq, decode("log entry", v.value())?));
        }
        Ok(out)
    }

    pub fn log_len(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.redb().begin_read()?;
        Ok(txn.open_table(OPLOG)?.len()?)
    }

    /// The newest snapshot of a shard and a reader of its bytes (for chunks of an earlier
    /// build, one read transaction, so they match the description even if a newer snapshot is
    /// published meanwhile; a file is opened before this returns, so its replacement cannot
    /// take it away).
    pub fn get_snapshot(
        &self,
        collection: &str,
        shard: u32,
    ) -> Result<Option<(SnapshotMeta, SnapshotBytes)>> {
        let txn = self.redb().begin_read()?;
        let key = keys::shard(collection, shard);
        let Some(meta) = txn
            .open_table(SNAPSHOTS)?
            .get(key.as_slice())?
            .map(|v| decode_snapshot_meta(v.value()))
            .transpose()?
        else {
            return Ok(None);
        };
        let bytes: SnapshotBytes = match &meta.location {
            Location::Chunks(count) => Box::new(SnapshotChunks {
                table: txn.open_table(SNAPSHOT_CHUNKS)?,
                key,
                next: 0,
                count: *count,
            }),
            Location::File(name) => {
                let _files = self.lock_snapshot_files();
                Box::new(self.snapshots.reader(name, meta.size)?)
            }
        };
        Ok(Some((meta, bytes)))
    }

    /// A new snapshot file for `shard` of `collection`, to stream the engine's bytes into.
    pub fn snapshot_file(&self, collection: &str, shard: u32) -> Result<SnapshotWriter> {
        self.snapshots.create(collection, shard)
    }

    fn lock_snapshot_files(&self) -> std::sync::MutexGuard<'_, ()> {
        self.snapshot_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `file` the shard's snapshot, covering `covered`, in one durable transaction, and
    /// deletes what it replaces. Returns false (and deletes the file) if the collection is
    /// gone.
    pub fn publish_snapshot(
        &self,
        collection: &str,
        shard: u32,
        covered: VersionVector,
        file: Finished,
    ) -> Result<bool> {
        let _files = self.lock_snapshot_files();
        let key = keys::shard(collection, shard);
        let meta = SnapshotMeta {
            covered,
            size: file.size,
            location: Location::File(file.name.clone()),
        };
        // Sealed before the write transaction, so writers never wait for the directory sync.
        if let Err(e) = self.snapshots.seal(&file) {
            file.discard();
            return Err(e);
        }
        let txn = self.redb_write()?;
        if txn.open_table(COLLECTIONS)?.get(collection)?.is_none() {
            drop(txn);
            self.snapshots.remove(&file.name);
            return Ok(false);
        }
        txn.delete_table(SNAPSHOTS_UNCHUNKED)?;
        let old = {
            let mut table = txn.open_table(SNAPSHOTS)?;
            let old = table
                .get(key.as_slice())?
                .map(|v| decode_snapshot_meta(v.value()))
                .transpose()?;
            table.insert(key.as_slice(), encode_snapshot_meta(&meta).as_slice())?;
            old
        };
        if let Some(SnapshotMeta {
            location: Location::Chunks(n),
            ..
        }) = &old
        {
            let mut chunks = txn.open_table(SNAPSHOT_CHUNKS)?;
            for i in 0..*n {
                chunks.remove(keys::chunk(&key, i).as_slice())?;
            }
        }
        if let Err(e) = txn.commit() {
            self.snapshots.remove(&file.name);
            return Err(e.into());
        }
        if let Some(SnapshotMeta {
            location: Location::File(name),
            ..
        }) = old
        {
            self.snapshots.remove(&name);
        }
        Ok(true)
    }

    /// Deletes snapshot files no row names (a crash between a file's rename and its row, a
    /// dropped collection). Returns how many went.
    pub fn sweep_snapshots(&self) -> Result<usize> {
        let _files = self.lock_snapshot_files();
        let txn = self.redb().begin_read()?;
        let mut keep = HashSet::new();
        for row in txn.open_table(SNAPSHOTS)?.iter()? {
            let (_, v) = row?;
            if let Location::File(name) = decode_snapshot_meta(v.value())?.location {
                keep.insert(name);
            }
        }
        self.snapshots.sweep(&keep)
    }

    /// A collection's node-local metadata (JSON text), read in one transaction with the check
    /// that the collection exists: `Err(UnknownCollection)` if it does not, `Ok(None)` if it
    /// has none.
    pub fn collection_meta(&self, collection: &str) -> Result<Option<String>> {
        let txn = self.redb().begin_read()?;
        if txn.open_table(COLLECTIONS)?.get(collection)?.is_none() {
            return Err(Error::UnknownCollection(collection.to_owned()));
        }
        let table = txn.open_table(COLLECTION_META)?;
        let found = table.get(collection)?.map(|v| v.value().to_owned());
        Ok(found)
    }

    /// Replaces a collection's node-local metadata durably. The check that the collection
    /// exists is made in the same write transaction, so it cannot race with a drop (redb runs
    /// one write transaction at a time): a drop either comes first (this fails) or removes it.
    pub fn put_collection_meta(&self, collection: &str, json: &str) -> Result<()> {
        let txn = self.redb_write()?;
        if txn.open_table(COLLECTIONS)?.get(collection)?.is_none() {
            return Err(Error::UnknownCollection(collection.to_owned()));
        }
        txn.open_table(COLLECTION_META)?.insert(collection, json)?;
        txn.commit()?;
        Ok(())
    }

    pub fn begin_write(&self) -> Result<WriteTxn> {
        Ok(WriteTxn {
            txn: self.redb_write()?,
            faults: self.faults.clone(),
        })
    }
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .len())
}

fn parse_json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| Error::Storage(format!("stored properties are damaged: {e}")))
}

/// Snapshot description: `u8 version, u32 n, n x (u64 origin, u64 seq), u64 size`, then for
/// version 1 `u32 chunks` (in `index_snapshot_chunks`), for version 2 the file's name (`u32
/// length, bytes`); all LE.
fn encode_snapshot_meta(s: &SnapshotMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + s.covered.len() * 16);
    out.push(match s.location {
        Location::Chunks(_) => 1,
        Location::File(_) => 2,
    });
    out.extend_from_slice(&(s.covered.len() as u32).to_le_bytes());
    for (o, q) in &s.covered {
        out.extend_from_slice(&o.to_le_bytes());
        out.extend_from_slice(&q.to_le_bytes());
    }
    out.extend_from_slice(&s.size.to_le_bytes());
    match &s.location {
        Location::Chunks(n) => out.extend_from_slice(&n.to_le_bytes()),
        Location::File(name) => {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
    }
    out
}

fn decode_snapshot_meta(v: &[u8]) -> Result<SnapshotMeta> {
    let bad = || Error::Storage("index snapshot record is damaged".into());
    let (&version, rest) = v.split_first().ok_or_else(bad)?;
    if !matches!(version, 1 | 2) {
        return Err(bad());
    }
    let (n, mut rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let mut covered = VersionVector::new();
    for _ in 0..u32::from_le_bytes(*n) {
        let (o, r) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let (q, r) = r.split_first_chunk::<8>().ok_or_else(bad)?;
        covered.insert(u64::from_le_bytes(*o), u64::from_le_bytes(*q));
        rest = r;
    }
    let (size, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
    let (n, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let n = u32::from_le_bytes(*n);
    let location = if version == 1 {
        if !rest.is_empty() {
            return Err(bad());
        }
        Location::Chunks(n)
    } else {
        let name = std::str::from_utf8(rest).map_err(|_| bad())?;
        if name.len() != n as usize || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(bad());
        }
        Location::File(name.to_owned())
    };
    Ok(SnapshotMeta {
        covered,
        size: u64::from_le_bytes(*size),
        location,
    })
}

impl Store {
    /// Removes tombstones every node has seen: a `versions` row whose only version is a
    /// tombstone covered by `stable` (and whose key has no visible version). No write that
    /// has not seen such a tombstone can still arrive (see `Core::stable`), so forgetting it
    /// changes no outcome. At most `limit` rows per call; returns how many went.
    pub fn collect_tombstones(
        &self,
        stable: &crate::replication::version::Clock,
        limit: usize,
    ) -> Result<u64> {
        let txn = self.redb_write()?;
        let mut gone = Vec::new();
        {
            let versions = txn.open_table(VERSIONS)?;
            let objects = txn.open_table(OBJECTS)?;
            let edges = txn.open_table(EDGES_OUT)?;
            for row in versions.iter()? {
                if gone.len() >= limit {
                    break;
                }
                let (k, v) = row?;
                let siblings: Vec<StoredSibling> = decode("versions", v.value())?;
                let [only] = siblings.as_slice() else {
                    continue;
                };
                if only.value != records::SiblingValue::Deleted
                    || !stable.contains(only.origin, only.seq)
                {
                    continue;
                }
                let key = k.value();
                let visible = match keys::parts(key).map(|p| p.len()) {
                    Some(2) => objects.get(key)?.is_some(),
                    Some(5) => edges.get(key)?.is_some(),
                    _ => true,
                };
                if !visible {
                    let v = crate::replication::version::Version::new(
                        only.hlc,
                        only.origin,
                        only.seq,
                        &only.seen,
                    );
                    gone.push((key.to_vec(), v.context));
                }
            }
        }
        {
            // What the forgotten tombstones had seen is remembered for the node as a whole: a
            // later write to such a key has seen them (see `WriteTxn::collected`), so nodes that
            // still hold a tombstone judge that write as its successor, not its rival.
            let mut versions = txn.open_table(VERSIONS)?;
            let mut meta = txn.open_table(META)?;
            for (k, context) in &gone {
                versions.remove(k.as_slice())?;
                for (o, q) in &context.0 {
                    let key = collected_key(*o);
                    let old = meta.get(key.as_str())?.map_or(0, |v| v.value());
                    if *q > old {
                        meta.insert(key.as_str(), *q)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(gone.len() as u64)
    }
}

/// `meta` keys `collected:<origin hex>`: per origin, the highest seq the collected tombstones
/// had seen.
const COLLECTED_PREFIX: &str = "collected:";
const COLLECTED_END: &str = "collected;";

fn collected_key(origin: u64) -> String {
    format!("{COLLECTED_PREFIX}{origin:016x}")
}

/// A collection's state digest (see [`Store::digest`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    pub sum: u128,
    pub objects: u64,
    pub edges: u64,
    /// Rows of other versions: tombstones and hidden siblings.
    pub versions: u64,
}

impl Digest {
    /// 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// One write transaction: state and log change together or not at all.
pub struct WriteTxn {
    txn: redb::WriteTransaction,
    faults: Arc<Faults>,
}

impl WriteTxn {
    fn fault(&self, what: &str) -> Result<()> {
        Faults::check(&self.faults.writes, what)
    }

    pub fn put_collection(&mut self, spec: &CollectionSpec) -> Result<()> {
        self.fault("put_collection")?;
        let json = serde_json::to_string(spec).map_err(|e| Error::Storage(e.to_string()))?;
        self.txn
            .open_table(COLLECTIONS)?
            .insert(spec.name.as_str(), json.as_str())?;
        Ok(())
    }

    /// Removes a collection and everything keyed by it: its row, its objects, every edge out of
    /// or into any of its objects (also from objects of other collections, in both edge
    /// tables), its index snapshots (meta and chunks) and its node-local metadata. Returns
    /// whether the collection existed.
    pub fn drop_collection(&mut self, name: &str) -> Result<bool> {
        self.fault("drop_collection")?;
        let existed = self.txn.open_table(COLLECTIONS)?.remove(name)?.is_some();
        self.txn.open_table(COLLECTION_META)?.remove(name)?;
        let prefix = keys::collection_prefix(name);
        let end = keys::prefix_end(&prefix);
        let range = prefix.as_slice()..end.as_slice();
        // Versions rows of its objects and of the edges out of them share the prefix.
        for table in [OBJECTS, SNAPSHOTS, SNAPSHOT_CHUNKS, VERSIONS, RESOLVED] {
            self.txn
                .open_table(table)?
                .retain_in(range.clone(), |_, _| false)?;
        }
        // Unchunked snapshots of earlier builds are never read; drop them as `put_snapshot` does.
        self.txn.delete_table(SNAPSHOTS_UNCHUNKED)?;
        let mut outs = self.txn.open_table(EDGES_OUT)?;
        let mut ins = self.txn.open_table(EDGES_IN)?;
        let mut versions = self.txn.open_table(VERSIONS)?;
        // Edges out of its objects: their reverse entries, wherever the target lives.
        for row in outs.range(range.clone())? {
            let (k, _) = row?;
            if let Some(&[c, id, label, tc, tid]) = keys::parts(k.value()).as_deref() {
                let reverse = keys::edge(&NodeKey::new(tc, tid), label, &NodeKey::new(c, id));
                ins.remove(reverse.as_slice())?;
            }
        }
        outs.retain_in(range.clone(), |_, _| false)?;
        // Edges into its objects that are left come from objects of other collections.
        for row in ins.range(range.clone())? {
            let (k, _) = row?;
            if let Some(&[c, id, label, fc, fid]) = keys::parts(k.value()).as_deref() {
                let forward = keys::edge(&NodeKey::new(fc, fid), label, &NodeKey::new(c, id));
                outs.remove(forward.as_slice())?;
                versions.remove(forward.as_slice())?;
            }
        }
        ins.retain_in(range, |_, _| false)?;
        Ok(existed)
    }

    pub fn object_exists(&self, node: &NodeKey) -> Result<bool> {
        let table = self.txn.open_table(OBJECTS)?;
        let found = table
            .get(keys::node(&node.collection, &node.id).as_slice())?
            .is_some();
        Ok(found)
    }

    /// An object's visible version and its other versions (tombstones, hidden siblings).
    pub fn object_versions(
        &self,
        node: &NodeKey,
    ) -> Result<(Option<StoredObject>, Vec<StoredSibling>)> {
        let key = keys::node(&node.collection, &node.id);
        let table = self.txn.open_table(OBJECTS)?;
        let visible = table
            .get(key.as_slice())?
            .map(|v| decode("object", v.value()))
            .transpose()?;
        Ok((visible, self.others(&key)?))
    }

    /// An edge's visible version and its other versions.
    pub fn edge_versions(
        &self,
        from: &NodeKey,
        label: &str,
        to: &NodeKey,
    ) -> Result<(Option<StoredEdge>, Vec<StoredSibling>)> {
        let key = keys::edge(from, label, to);
        let table = self.txn.open_table(EDGES_OUT)?;
        let visible = table
            .get(key.as_slice())?
            .map(|v| decode("edge", v.value()))
            .transpose()?;
        Ok((visible, self.others(&key)?))
    }

    fn others(&self, key: &[u8]) -> Result<Vec<StoredSibling>> {
        let table = self.txn.open_table(VERSIONS)?;
        let others = table
            .get(key)?
            .map(|v| decode("versions", v.value()))
            .transpose()?;
        Ok(others.unwrap_or_default())
    }

    fn put_others(&mut self, key: &[u8], others: &[StoredSibling]) -> Result<()> {
        let mut table = self.txn.open_table(VERSIONS)?;
        if others.is_empty() {
            table.remove(key)?;
        } else {
            table.insert(key, encode(&others.to_vec())?.as_slice())?;
        }
        Ok(())
    }

    /// Stores an object's versions: the visible one (none: absent to readers) and the others.
    pub fn put_object_versions(
        &mut self,
        node: &NodeKey,
        visible: Option<&StoredObject>,
        others: &[StoredSibling],
    ) -> Result<()> {
        self.fault("put_object")?;
        let key = keys::node(&node.collection, &node.id);
        {
            let mut table = self.txn.open_table(OBJECTS)?;
            match visible {
                Some(o) => table.insert(key.as_slice(), encode(o)?.as_slice())?,
                None => table.remove(key.as_slice())?,
            };
        }
        self.put_others(&key, others)
    }

    /// Stores an edge's versions (both directions for the visible one).
    pub fn put_edge_versions(
        &mut self,
        from: &NodeKey,
        label: &str,
        to: &NodeKey,
        visible: Option<&StoredEdge>,
        others: &[StoredSibling],
    ) -> Result<()> {
        self.fault("link")?;
        let key = keys::edge(from, label, to);
        let reverse = keys::edge(to, label, from);
        match visible {
            Some(e) => {
                self.txn
                    .open_table(EDGES_OUT)?
                    .insert(key.as_slice(), encode(e)?.as_slice())?;
                self.txn
                    .open_table(EDGES_IN)?
                    .insert(reverse.as_slice(), ())?;
            }
            None => {
                self.txn.open_table(EDGES_OUT)?.remove(key.as_slice())?;
                self.txn.open_table(EDGES_IN)?.remove(reverse.as_slice())?;
            }
        }
        self.put_others(&key, others)
    }

    /// Every stored edge out of or into `node`, as `(from, label, to)`.
    pub fn edges_touching(&self, node: &NodeKey) -> Result<Vec<(NodeKey, String, NodeKey)>> {
        let key = keys::node(&node.collection, &node.id);
        let end = keys::prefix_end(&key);
        let mut out = Vec::new();
        for row in self
            .txn
            .open_table(EDGES_OUT)?
            .range(key.as_slice()..end.as_slice())?
        {
            if let Some([_, _, label, c, id]) = keys::parts(row?.0.value()).as_deref() {
                out.push((node.clone(), (*label).to_owned(), NodeKey::new(*c, *id)));
            }
        }
        for row in self
            .txn
            .open_table(EDGES_IN)?
            .range(key.as_slice()..end.as_slice())?
        {
            if let Some([_, _, label, c, id]) = keys::parts(row?.0.value()).as_deref() {
                out.push((NodeKey::new(*c, *id), (*label).to_owned(), node.clone()));
            }
        }
        Ok(out)
    }

    /// Appends entry `seq` of `origin`'s log. Each origin's log is contiguous: `seq` must
    /// follow the last one applied from that origin (1 for the first), or nothing is written
    /// and the error names the gap, so `applied[origin]` always means "every entry up to here".
    pub fn append_log(&mut self, origin: u64, seq: u64, entry: &LogEntry) -> Result<()> {
        self.fault("append_log")?;
        let mut applied = self.txn.open_table(APPLIED)?;
        let last = applied.get(origin)?.map_or(0, |v| v.value());
        if seq != last + 1 {
            return Err(Error::Storage(format!(
                "operation log of origin {origin:016x}: entry {seq} does not follow entry {last}"
            )));
        }
        applied.insert(origin, seq)?;
        drop(applied);
        self.txn
            .open_table(OPLOG)?
            .insert((origin, seq), encode(entry)?.as_slice())?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.txn.open_table(META)?.get(key)?.map(|v| v.value()))
    }

    /// Everything the tombstones this node has collected had seen (`collect_tombstones`).
    pub fn collected(&self) -> Result<crate::replication::version::Clock> {
        let mut c = crate::replication::version::Clock::default();
        let table = self.txn.open_table(META)?;
        for row in table.range(COLLECTED_PREFIX..COLLECTED_END)? {
            let (k, v) = row?;
            if let Some(o) = k
                .value()
                .strip_prefix(COLLECTED_PREFIX)
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            {
                c.add(o, v.value());
            }
        }
        Ok(c)
    }

    pub fn set_meta(&mut self, key: &str, value: u64) -> Result<()> {
        self.fault("set_meta")?;
        self.txn.open_table(META)?.insert(key, value)?;
        Ok(())
    }

    /// Commits durably: when this returns, the batch survives a crash.
    pub fn commit(self) -> Result<()> {
        Faults::check(&self.faults.commits, "commit")?;
        self.txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_origins_log_is_contiguous() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let store = Store::open(dir.path())?;
        let entry = LogEntry {
            hlc: 1,
            writes: Vec::new(),
        };
        let mut txn = store.begin_write()?;
        txn.append_log(7, 1, &entry)?;
        txn.append_log(7, 2, &entry)?;
        for (origin, seq, says) in [
            (7, 4, "entry 4 does not follow entry 2"),
            (7, 2, "entry 2 does not follow entry 2"),
            (8, 2, "entry 2 does not follow entry 0"),
        ] {
            match txn.append_log(origin, seq, &entry) {
                Err(Error::Storage(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("({origin}, {seq}) was accepted: {other:?}"),
            }
        }
        txn.append_log(8, 1, &entry)?;
        txn.commit()?;
        let applied = store.applied()?;
        assert_eq!(applied.get(&7), Some(&2));
        assert_eq!(applied.get(&8), Some(&1));
        let all = |c: &[(u64, u64)]| -> Result<Vec<(u64, u64)>> {
            let covered: VersionVector = c.iter().copied().collect();
            Ok(store
                .log_after(&covered)?
                .into_iter()
                .map(|(o, s, _)| (o, s))
                .collect())
        };
        assert_eq!(all(&[])?, [(7, 1), (7, 2), (8, 1)]);
        assert_eq!(all(&[(7, 1)])?, [(7, 2), (8, 1)]);
        assert_eq!(all(&[(7, 2), (8, 1)])?, []);
        assert_eq!(all(&[(8, 5)])?, [(7, 1), (7, 2)]);
        Ok(())
    }
}
