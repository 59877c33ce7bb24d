//! A node's state as rows other nodes can merge: a consistent export of everything (a new
//! node's bootstrap), digests per key bucket and the rows of chosen buckets (anti-entropy),
//! and the log's horizon: below it, entries were trimmed (or a snapshot stood in for them).
//!
//! A row is one key (an object, or an edge under its source) with every version storage
//! keeps for it: the visible one and the others (hidden siblings, tombstones). Merging a row
//! is merging each of its versions as a remote write would, so rows from any node, in any
//! order, any number of times, leave the same state (`replication::version::merge`).

use std::collections::BTreeSet;

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::records::{decode, LogNode, SiblingValue, StoredEdge, StoredObject, StoredSibling};
use super::{keys, Digest, Store, WriteTxn, APPLIED, EDGES_OUT, META, OBJECTS, OPLOG, VERSIONS};
use crate::error::{Error, Result};
use crate::model::CollectionSpec;
use crate::replication::version::Clock;

/// Keys fall into this many buckets (by the first byte of SHA-256 of their object's key).
pub const BUCKETS: usize = 256;

/// One key and every version stored for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRow {
    pub key: RowKey,
    pub versions: Vec<StoredSibling>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RowKey {
    Object(LogNode),
    Edge {
        from: LogNode,
        label: String,
        to: LogNode,
    },
}

impl StateRow {
    /// About its encoded size (vectors and texts), for cutting messages.
    pub fn approx_size(&self) -> usize {
        64 + self
            .versions
            .iter()
            .map(|v| {
                48 + match &v.value {
                    SiblingValue::Object { properties, vector } => {
                        properties.len() + vector.as_ref().map_or(0, |v| v.len() * 4)
                    }
                    SiblingValue::Edge { properties } => properties.len(),
                    SiblingValue::Deleted => 0,
                }
            })
            .sum::<usize>()
    }
}

/// What a state export starts with: the clock it is consistent at, the collections, and
/// what the tombstones the exporting node forgot had seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateHeader {
    pub clock: Clock,
    /// As JSON, the specs' one stored form (postcard cannot skip their optional fields).
    #[serde(with = "specs_as_json")]
    pub collections: Vec<CollectionSpec>,
    pub collected: Clock,
    /// Every plugin record and component (full exports only: a repair of some buckets of
    /// one collection carries none).
    pub plugins: Vec<crate::plugins::PluginRecord>,
    pub plugin_blobs: Vec<Vec<u8>>,
}

mod specs_as_json {
    use serde::{de::Error as _, ser::Error as _, Deserialize, Deserializer, Serializer};

    use crate::model::CollectionSpec;

    pub fn serialize<S: Serializer>(specs: &[CollectionSpec], s: S) -> Result<S::Ok, S::Error> {
        let texts = specs
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(S::Error::custom)?;
        s.collect_seq(texts)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CollectionSpec>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| serde_json::from_str(t).map_err(D::Error::custom))
            .collect()
    }
}

fn node(c: &str, id: &str) -> LogNode {
    LogNode {
        collection: c.to_owned(),
        id: id.to_owned(),
    }
}

/// The bucket of a key: that of its object (an edge goes with its source).
fn bucket_of(key: &[u8]) -> Option<u8> {
    let parts = keys::parts(key)?;
    let (c, id) = (parts.first()?, parts.get(1)?);
    Some(Sha256::digest(keys::node(c, id))[0])
}

/// A row's 128-bit hash (table tag, key, stored bytes): rows add up to the digest.
fn row_hash(tag: u8, k: &[u8], v: &[u8]) -> u128 {
    let mut h = Sha256::new();
    h.update([tag]);
    h.update((k.len() as u32).to_le_bytes());
    h.update(k);
    h.update(v);
    let bytes: [u8; 32] = h.finalize().into();
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes[..16]);
    u128::from_le_bytes(first)
}

/// Whether a `versions` row is a lone tombstone of a key with nothing visible: what tombstone
/// collection forgets, at its own pace on each node, so the digest leaves it out.
fn lone_tombstone(
    objects: &redb::ReadOnlyTable<&[u8], &[u8]>,
    edges: &redb::ReadOnlyTable<&[u8], &[u8]>,
    k: &[u8],
    v: &[u8],
) -> Result<bool> {
    let siblings: Vec<StoredSibling> = decode("versions", v)?;
    let [only] = siblings.as_slice() else {
        return Ok(false);
    };
    if only.value != SiblingValue::Deleted {
        return Ok(false);
    }
    Ok(match keys::parts(k).map(|p| p.len()) {
        Some(2) => objects.get(k)?.is_none(),
        Some(5) => edges.get(k)?.is_none(),
        _ => false,
    })
}

/// Every hashed row of a collection in one read transaction: `f(bucket, hash, tag)`.
fn each_row(
    txn: &redb::ReadTransaction,
    collection: &str,
    mut f: impl FnMut(u8, u128, u8),
) -> Result<()> {
    let prefix = keys::collection_prefix(collection);
    let end = keys::prefix_end(&prefix);
    let objects = txn.open_table(OBJECTS)?;
    let edges = txn.open_table(EDGES_OUT)?;
    let versions = txn.open_table(VERSIONS)?;
    for (tag, table) in [(b'o', &objects), (b'e', &edges), (b'v', &versions)] {
        for row in table.range(prefix.as_slice()..end.as_slice())? {
            let (k, v) = row?;
            let (k, v) = (k.value(), v.value());
            if tag == b'v' && lone_tombstone(&objects, &edges, k, v)? {
                continue;
            }
            let bucket =
                bucket_of(k).ok_or_else(|| Error::Storage("a state key is damaged".into()))?;
            f(bucket, row_hash(tag, k, v), tag);
        }
    }
    Ok(())
}

fn applied_in(txn: &redb::ReadTransaction) -> Result<Clock> {
    let mut c = Clock::default();
    for row in txn.open_table(APPLIED)?.iter()? {
        let (o, s) = row?;
        c.add(o.value(), s.value());
    }
    Ok(c)
}

/// `meta` keys `horizon:<origin hex>`: per origin, the highest seq no longer in the log.
const HORIZON_PREFIX: &str = "horizon:";
const HORIZON_END: &str = "horizon;";

fn horizon_key(origin: u64) -> String {
    format!("{HORIZON_PREFIX}{origin:016x}")
}

fn clock_under(
    meta: &impl ReadableTable<&'static str, u64>,
    from: &str,
    to: &str,
) -> Result<Clock> {
    let mut c = Clock::default();
    for row in meta.range(from..to)? {
        let (k, v) = row?;
        if let Some(o) = k
            .value()
            .strip_prefix(from)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        {
            c.add(o, v.value());
        }
    }
    Ok(c)
}

impl Store {
    /// The collection's state digest: an order-independent hash of its resolved state —
    /// every object (visible version with its properties, vector and version), every edge out
    /// of its objects, and every other version kept (hidden siblings, and tombstones that
    /// decide something). Each row hashes to 128 bits (SHA-256 of table, key and stored
    /// bytes) and the rows add up modulo 2^128, so equal state gives equal digests whatever
    /// order it was written in, and bucket sums add up to the collection's. Lone tombstones
    /// (nothing visible under the key) are left out: each node forgets them at its own pace.
    pub fn digest(&self, collection: &str) -> Result<Digest> {
        let txn = self.redb().begin_read()?;
        let mut out = Digest::default();
        each_row(&txn, collection, |_, h, tag| {
            out.sum = out.sum.wrapping_add(h);
            match tag {
                b'o' => out.objects += 1,
                b'e' => out.edges += 1,
                _ => out.versions += 1,
            }
        })?;
        Ok(out)
    }

    /// The applied clock and every collection's digest sum, read together.
    pub fn digests(&self) -> Result<(Clock, Vec<(String, u128)>)> {
        let txn = self.redb().begin_read()?;
        let clock = applied_in(&txn)?;
        let mut out = Vec::new();
        for spec in self.collections()? {
            let mut sum = 0u128;
            each_row(&txn, &spec.name, |_, h, _| sum = sum.wrapping_add(h))?;
            out.push((spec.name, sum));
        }
        Ok((clock, out))
    }

    /// The applied clock and the collection's digest per key bucket, read together.
    pub fn bucket_digests(&self, collection: &str) -> Result<(Clock, Vec<u128>)> {
        let txn = self.redb().begin_read()?;
        let clock = applied_in(&txn)?;
        let mut out = vec![0u128; BUCKETS];
        each_row(&txn, collection, |b, h, _| {
            out[b as usize] = out[b as usize].wrapping_add(h)
        })?;
        Ok((clock, out))
    }

    /// A consistent export of the whole state (every collection), or of some buckets of one
    /// collection.
    pub fn export(&self, only: Option<(String, BTreeSet<u8>)>) -> Result<StateExport> {
        let txn = self.redb().begin_read()?;
        let clock = applied_in(&txn)?;
        let collected = clock_under(&txn.open_table(META)?, "collected:", "collected;")?;
        let mut collections = Vec::new();
        for row in txn.open_table(super::COLLECTIONS)?.iter()? {
            let (_, v) = row?;
            let spec: CollectionSpec = serde_json::from_str(v.value())
                .map_err(|e| Error::Storage(format!("a collection spec is damaged: {e}")))?;
            if only.as_ref().is_none_or(|(c, _)| *c == spec.name) {
                collections.push(spec);
            }
        }
        let mut plugins = Vec::new();
        let mut plugin_blobs = Vec::new();
        if only.is_none() {
            for row in txn.open_table(super::PLUGINS)?.iter()? {
                plugins.push(super::records::decode("plugin", row?.1.value())?);
            }
            for row in txn.open_table(super::PLUGIN_BLOBS)?.iter()? {
                plugin_blobs.push(row?.1.value().to_vec());
            }
        }
        Ok(StateExport {
            header: StateHeader {
                clock,
                collections,
                collected,
                plugins,
                plugin_blobs,
            },
            objects: txn.open_table(OBJECTS)?,
            edges: txn.open_table(EDGES_OUT)?,
            versions: txn.open_table(VERSIONS)?,
            buckets: only.map(|(_, b)| b),
            collection: 0,
            phase: 0,
            after: None,
        })
    }

    /// Per origin, the highest seq the log no longer holds (trimmed, or covered by a state
    /// snapshot this node installed).
    pub fn horizon(&self) -> Result<Clock> {
        let txn = self.redb().begin_read()?;
        clock_under(&txn.open_table(META)?, HORIZON_PREFIX, HORIZON_END)
    }

    /// Per origin, what every index snapshot covers (the least of them): a restart replays
    /// the log after a shard's snapshot, so the log is kept from here on. `None`: no
    /// snapshots (a restart rebuilds from storage and needs no log).
    pub fn snapshot_floor(&self) -> Result<Option<Clock>> {
        let txn = self.redb().begin_read()?;
        let mut floor: Option<Clock> = None;
        for row in txn.open_table(super::SNAPSHOTS)?.iter()? {
            let (_, v) = row?;
            let covered = Clock(super::decode_snapshot_meta(v.value())?.covered);
            floor = Some(match floor {
                None => covered,
                Some(f) => Clock(
                    f.0.iter()
                        .filter_map(|(o, s)| {
                            let c = covered.0.get(o).copied().unwrap_or(0);
                            (c.min(*s) > 0).then_some((*o, c.min(*s)))
                        })
                        .collect(),
                ),
            });
        }
        Ok(floor)
    }

    /// Removes log entries covered by `upto` and stamped before `before_hlc` (each origin's
    /// oldest first, so what is left stays contiguous), at most `limit` in one transaction.
    /// Returns how many went.
    pub fn trim_log(&self, upto: &Clock, before_hlc: u64, limit: usize) -> Result<u64> {
        // Not `redb_write`: a trim that finds nothing leaves nothing for `compact` (below).
        let txn = self.redb().begin_write()?;
        let mut gone = 0u64;
        {
            let mut log = txn.open_table(OPLOG)?;
            let mut meta = txn.open_table(META)?;
            for (&origin, &to) in &upto.0 {
                let mut last = None;
                for row in log.range((origin, 0)..=(origin, to))? {
                    if gone as usize >= limit {
                        break;
                    }
                    let (k, v) = row?;
                    // (No retention window: no need to read the entry's stamp.)
                    if before_hlc != u64::MAX {
                        let entry: super::LogEntry = decode("log entry", v.value())?;
                        if entry.hlc >= before_hlc {
                            break;
                        }
                    }
                    last = Some(k.value().1);
                    gone += 1;
                }
                if let Some(last) = last {
                    log.retain_in((origin, 0)..=(origin, last), |_, _| false)?;
                    let key = horizon_key(origin);
                    let old = meta.get(key.as_str())?.map_or(0, |v| v.value());
                    meta.insert(key.as_str(), old.max(last))?;
                }
            }
        }
        if gone == 0 {
            txn.abort()?;
            return Ok(0);
        }
        txn.commit()?;
        self.wrote.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(gone)
    }
}

impl WriteTxn {
    /// The last entry of `origin` applied (0: none).
    pub fn applied_seq(&self, origin: u64) -> Result<u64> {
        Ok(self
            .txn
            .open_table(APPLIED)?
            .get(origin)?
            .map_or(0, |v| v.value()))
    }

    /// After a state snapshot consistent at `clock` was merged: every origin's log moves on
    /// to `clock` (what it held before that goes, the horizon follows), except `own` (this
    /// node's own entries, which it always holds); what the exporter's collected tombstones
    /// had seen is remembered here too.
    pub fn advance_to(&mut self, clock: &Clock, own: u64, collected: &Clock) -> Result<()> {
        self.fault("advance_to")?;
        let mut applied = self.txn.open_table(APPLIED)?;
        let mut log = self.txn.open_table(OPLOG)?;
        let mut meta = self.txn.open_table(META)?;
        for (&origin, &seq) in &clock.0 {
            let had = applied.get(origin)?.map_or(0, |v| v.value());
            if origin == own || seq <= had {
                continue;
            }
            log.retain_in((origin, 0)..=(origin, seq), |_, _| false)?;
            applied.insert(origin, seq)?;
            meta.insert(horizon_key(origin).as_str(), seq)?;
        }
        for (&origin, &seq) in &collected.0 {
            let key = super::collected_key(origin);
            let old = meta.get(key.as_str())?.map_or(0, |v| v.value());
            meta.insert(key.as_str(), old.max(seq))?;
        }
        Ok(())
    }

    /// Forgets the collection's index snapshots (its engine state changed outside the log,
    /// so a restart must rebuild it from storage, not replay the log over a snapshot).
    pub fn forget_snapshots(&mut self, collection: &str) -> Result<()> {
        let prefix = keys::collection_prefix(collection);
        let end = keys::prefix_end(&prefix);
        for table in [super::SNAPSHOTS, super::SNAPSHOT_CHUNKS] {
            self.txn
                .open_table(table)?
                .retain_in(prefix.as_slice()..end.as_slice(), |_, _| false)?;
        }
        Ok(())
    }
}

/// A state export in progress: one read transaction, read a chunk at a time.
pub struct StateExport {
    pub header: StateHeader,
    objects: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    edges: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    versions: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    buckets: Option<BTreeSet<u8>>,
    collection: usize,
    /// 0: objects, 1: edges, 2: versions of keys with nothing visible.
    phase: u8,
    after: Option<Vec<u8>>,
}

impl StateExport {
    /// The next rows, about `budget` bytes of them; `None` when done.
    pub fn next_chunk(&mut self, budget: usize) -> Result<Option<Vec<StateRow>>> {
        let mut out = Vec::new();
        let mut size = 0;
        while size < budget {
            let Some(spec) = self.header.collections.get(self.collection) else {
                break;
            };
            let prefix = keys::collection_prefix(&spec.name);
            let end = keys::prefix_end(&prefix);
            let start = match &self.after {
                Some(k) => {
                    let mut k = k.clone();
                    k.push(0);
                    k
                }
                None => prefix.clone(),
            };
            let table = match self.phase {
                0 => &self.objects,
                1 => &self.edges,
                _ => &self.versions,
            };
            let mut exhausted = true;
            for row in table.range(start.as_slice()..end.as_slice())? {
                let (k, v) = row?;
                let k = k.value();
                self.after = Some(k.to_vec());
                if let Some(row) = self.row(k, v.value())? {
                    size += row.approx_size();
                    out.push(row);
                }
                if size >= budget {
                    exhausted = false;
                    break;
                }
            }
            if exhausted {
                self.after = None;
                self.phase += 1;
                if self.phase == 3 {
                    self.phase = 0;
                    self.collection += 1;
                }
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    fn row(&self, k: &[u8], v: &[u8]) -> Result<Option<StateRow>> {
        let damaged = || Error::Storage("a state key is damaged".into());
        if let Some(b) = &self.buckets {
            if !b.contains(&bucket_of(k).ok_or_else(damaged)?) {
                return Ok(None);
            }
        }
        let parts = keys::parts(k).ok_or_else(damaged)?;
        let key = match parts.as_slice() {
            [c, id] => RowKey::Object(node(c, id)),
            [c, id, label, tc, tid] => RowKey::Edge {
                from: node(c, id),
                label: (*label).to_owned(),
                to: node(tc, tid),
            },
            _ => return Err(damaged()),
        };
        let others = |table: &redb::ReadOnlyTable<&[u8], &[u8]>| -> Result<Vec<StoredSibling>> {
            Ok(table
                .get(k)?
                .map(|v| decode("versions", v.value()))
                .transpose()?
                .unwrap_or_default())
        };
        let versions = match self.phase {
            0 => {
                let o: StoredObject = decode("object", v)?;
                let mut all = others(&self.versions)?;
                all.push(StoredSibling {
                    hlc: o.hlc,
                    origin: o.origin,
                    seq: o.seq,
                    seen: o.seen,
                    value: SiblingValue::Object {
                        properties: o.properties,
                        vector: o.vector,
                    },
                });
                all
            }
            1 => {
                let e: StoredEdge = decode("edge", v)?;
                let mut all = others(&self.versions)?;
                all.push(StoredSibling {
                    hlc: e.hlc,
                    origin: e.origin,
                    seq: e.seq,
                    seen: e.seen,
                    value: SiblingValue::Edge {
                        properties: e.properties,
                    },
                });
                all
            }
            _ => {
                // Keys with a visible version went out with it.
                let visible = match key {
                    RowKey::Object(_) => self.objects.get(k)?.is_some(),
                    RowKey::Edge { .. } => self.edges.get(k)?.is_some(),
                };
                if visible {
                    return Ok(None);
                }
                decode("versions", v)?
            }
        };
        Ok(Some(StateRow { key, versions }))
    }
}
