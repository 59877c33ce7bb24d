//! One shard of one collection: its objects' properties, the vector index over their vectors,
//! and the queries that combine them. Every method either does all it was asked or, on
//! [`EngineError::Invalid`], nothing.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::codec::{Reader, Sink, SliceSource, Source, Writer};
use crate::distance::{distance, score};
use crate::filter::Filter;
use crate::hnsw::Hnsw;
use crate::hora_index::HoraIndex;
use crate::index::{Scored, VectorIndex};
use crate::traverse::{bfs, EdgeSource, Step, TraverseRequest};
use crate::{
    id_order, validate_vector, CollectionConfig, EngineError, Hit, IndexKind, Metric, Mutation,
};

const MAGIC: &[u8; 8] = b"VKGSHARD";
/// Format 2 holds ids and slots but no properties or live vectors: the host's stored objects
/// have them and fill them in ([`Shard::restore_fill`]). Format 1 held everything; still read.
const FORMAT: u32 = 2;
/// Rebuild the index once this share of its slots are tombstones (and there are enough of them
/// to be worth it): deleted nodes still cost search time.
const REBUILD_DEAD_RATIO: f64 = 0.25;
const REBUILD_MIN_DEAD: u32 = 256;
/// Filters matching at most this many objects are answered by exact search: cheaper than a
/// graph walk that must skip almost everything, and always complete.
const EXACT_FILTER_MAX: usize = 2048;

struct Obj {
    props: Props,
    slot: Option<u32>,
}

/// An object's properties: parsed, or (after a restore) the stored JSON text, checked to be
/// a JSON object and parsed when a filter first needs it ([`Shard::parse_all`]). A restore
/// then builds no map per object: that was most of its time and of the shard's memory.
enum Props {
    Parsed(Map<String, Value>),
    Text(Box<str>),
}

impl Props {
    /// The parsed map; empty for text (callers parse every text first).
    fn map(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match self {
            Props::Parsed(m) => m,
            Props::Text(_) => EMPTY.get_or_init(Map::new),
        }
    }

    /// An estimate of the bytes this takes beyond the object itself.
    fn memory_bytes(&self) -> usize {
        match self {
            Props::Parsed(m) => m.len() * 48,
            Props::Text(t) => t.len(),
        }
    }
}

/// A k-NN query against one shard.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest<'a> {
    /// `count` rows of the collection's dimension.
    pub vectors: &'a [f32],
    pub k: usize,
    /// 0: the collection's `ef_search`.
    pub ef: usize,
    pub filter: Option<&'a str>,
    /// Brute force over the full vectors instead of the graph: exact, and slower.
    pub exact: bool,
}

/// Counters for `stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStats {
    pub objects: u64,
    pub vectors: u64,
    pub deleted_slots: u64,
    pub memory_bytes: u64,
    pub index: IndexKind,
}

pub struct Shard {
    config: CollectionConfig,
    shard_no: u32,
    index: Box<dyn VectorIndex>,
    objects: HashMap<String, Obj>,
    /// Owner of each index slot; `None` once the slot is a tombstone.
    slot_owner: Vec<Option<String>>,
    dead: u32,
    /// A format-2 snapshot read and waiting for its objects; the shard above is unchanged
    /// until [`Shard::restore_finish`].
    restoring: Option<Box<Restoring>>,
    /// Whether some object's properties are still text ([`Props::Text`]).
    unparsed: bool,
}

struct Restoring {
    index: Box<dyn VectorIndex>,
    objects: HashMap<String, Obj>,
    slot_owner: Vec<Option<String>>,
    dead: u32,
    /// Which slots were filled in (one flag per slot: no set of ids to hash twice per object).
    filled: Vec<bool>,
    /// Objects without a slot (no vector) not filled in yet.
    unfilled_slotless: std::collections::HashSet<String>,
    /// Objects that differ from the snapshot (their slot was retired).
    changed: Vec<String>,
}

impl Restoring {
    fn retire(&mut self, id: &str) {
        let Some(o) = self.objects.get_mut(id) else {
            return;
        };
        if let Some(s) = o.slot.take() {
            self.index.remove(s);
            if let Some(owner) = self.slot_owner.get_mut(s as usize) {
                *owner = None;
            }
            self.dead += 1;
        }
        self.changed.push(id.to_owned());
    }
}

fn new_index(c: &CollectionConfig) -> Box<dyn VectorIndex> {
    let (dim, m, efc) = (
        c.dimension as usize,
        c.m as usize,
        c.ef_construction as usize,
    );
    match c.index {
        IndexKind::Hnsw => Box::new(Hnsw::new(dim, c.metric, m, efc)),
        IndexKind::Hora => Box::new(HoraIndex::new(dim, c.metric, m, efc)),
    }
}

/// Normalises a copy for cosine; other metrics use the vector as it is. A vector already of
/// unit length (within rounding) is kept bit for bit, so preparing twice changes nothing.
fn prepared(metric: Metric, v: &[f32]) -> Vec<f32> {
    let mut out = v.to_vec();
    if metric == Metric::Cosine {
        let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
        if (norm - 1.0).abs() > 4.0 * f32::EPSILON {
            out.iter_mut().for_each(|x| *x /= norm);
        }
    }
    out
}

/// Checks that `text` is a JSON object without building it (no allocation per value): what
/// [`parse_props`] would accept, so the text can be parsed later without failing.
fn check_props(id: &str, text: &str) -> Result<(), EngineError> {
    if !text.trim_start().starts_with('{') {
        return parse_props(id, text).map(|_| ());
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| {
            EngineError::invalid(format!("object `{id}`: properties are not valid JSON: {e}"))
        })
}

fn parse_props(id: &str, text: &str) -> Result<Map<String, Value>, EngineError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(EngineError::invalid(format!(
            "object `{id}`: properties must be a JSON object, found `{other}`"
        ))),
        Err(e) => Err(EngineError::invalid(format!(
            "object `{id}`: properties are not valid JSON: {e}"
        ))),
    }
}

impl Shard {
    pub fn new(config: CollectionConfig, shard_no: u32) -> Result<Self, EngineError> {
        let dim = config.dimension as usize;
        if dim == 0
            || dim > crate::quant::MAX_DIMENSION
            || config.m < 2
            || config.m > 64
            || config.ef_construction == 0
        {
            return Err(EngineError::invalid(format!(
                "collection `{}`: dimension must be in 1..={}, m in 2..=64, ef_construction > 0",
                config.name,
                crate::quant::MAX_DIMENSION
            )));
        }
        if config.index == IndexKind::Hora && config.metric == Metric::Dot {
            return Err(EngineError::invalid(format!(
                "collection `{}`: the hora index cannot search by inner product (hora 0.1.1 returns the farthest vectors); use the hnsw index, or cosine",
                config.name
            )));
        }
        Ok(Self {
            index: new_index(&config),
            config,
            shard_no,
            objects: HashMap::new(),
            slot_owner: Vec::new(),
            dead: 0,
            restoring: None,
            unparsed: false,
        })
    }

    pub fn config(&self) -> &CollectionConfig {
        &self.config
    }

    /// Applies a batch in order. Validates the whole batch first, so an invalid batch changes
    /// nothing. Returns how many mutations were applied.
    pub fn apply(&mut self, batch: Vec<Mutation>) -> Result<u32, EngineError> {
        let mut parsed = Vec::with_capacity(batch.len());
        for m in batch {
            parsed.push(match m {
                Mutation::Upsert(o) => {
                    let props = parse_props(&o.id, &o.properties)?;
                    if let Some(v) = &o.vector {
                        validate_vector(&self.config, &o.id, v)?;
                    }
                    let v = o.vector.as_deref().map(|v| prepared(self.config.metric, v));
                    (o.id, Some((props, v)))
                }
                Mutation::Delete(id) => (id, None),
            });
        }
        let n = parsed.len() as u32;
        for (id, change) in parsed {
            match change {
                Some((props, vector)) => self.upsert(id, props, vector)?,
                None => {
                    if let Some(old) = self.objects.remove(&id) {
                        self.retire(old.slot);
                    }
                }
            }
        }
        self.index.flush()?;
        if self.dead >= REBUILD_MIN_DEAD
            && f64::from(self.dead) > REBUILD_DEAD_RATIO * f64::from(self.index.slots())
        {
            self.rebuild()?;
        }
        Ok(n)
    }

    fn upsert(
        &mut self,
        id: String,
        props: Map<String, Value>,
        vector: Option<Vec<f32>>,
    ) -> Result<(), EngineError> {
        let old_slot = self.objects.get(&id).and_then(|o| o.slot);
        let same = match (old_slot.and_then(|s| self.index.vector(s)), &vector) {
            (Some(old), Some(new)) => old == new.as_slice(),
            (None, None) => true,
            _ => false,
        };
        let slot = if same {
            old_slot
        } else {
            self.retire(old_slot);
            match vector {
                Some(v) => Some(self.add_vector(&id, &v)?),
                None => None,
            }
        };
        self.objects.insert(
            id,
            Obj {
                props: Props::Parsed(props),
                slot,
            },
        );
        Ok(())
    }

    fn add_vector(&mut self, id: &str, v: &[f32]) -> Result<u32, EngineError> {
        let slot = self.index.slots();
        self.index.insert(slot, v)?;
        self.slot_owner.push(Some(id.to_owned()));
        Ok(slot)
    }

    fn retire(&mut self, slot: Option<u32>) {
        if let Some(s) = slot {
            self.index.remove(s);
            self.slot_owner[s as usize] = None;
            self.dead += 1;
        }
    }

    /// Re-inserts the live vectors into a fresh index, dropping tombstones.
    fn rebuild(&mut self) -> Result<(), EngineError> {
        let mut fresh = new_index(&self.config);
        let mut owners = Vec::with_capacity(self.objects.len());
        for (old, owner) in self.slot_owner.iter().enumerate() {
            let (Some(id), Some(v)) = (owner, self.index.vector(old as u32)) else {
                continue;
            };
            let slot = owners.len() as u32;
            fresh.insert(slot, v)?;
            owners.push(Some(id.clone()));
            if let Some(o) = self.objects.get_mut(id) {
                o.slot = Some(slot);
            }
        }
        fresh.flush()?;
        self.index = fresh;
        self.slot_owner = owners;
        self.dead = 0;
        Ok(())
    }

    /// The id and properties of the object owning `slot` (none for a tombstone).
    fn object_of_slot(&self, slot: u32) -> Option<(&str, &Map<String, Value>)> {
        let id = self.slot_owner.get(slot as usize)?.as_ref()?;
        Some((id, self.objects.get(id)?.props.map()))
    }

    /// k-NN for each query row, best first.
    pub fn search(&mut self, req: &SearchRequest<'_>) -> Result<Vec<Vec<Hit>>, EngineError> {
        let dim = self.config.dimension as usize;
        if !req.vectors.len().is_multiple_of(dim) {
            return Err(EngineError::invalid(format!(
                "query vectors have {} values, not a multiple of the dimension {dim}",
                req.vectors.len()
            )));
        }
        let filter = req.filter.map(Filter::parse).transpose()?;
        if filter.is_some() {
            self.parse_all();
        }
        // One pass over the shard per request (not per query row) decides who matches.
        let allowed: Option<Vec<bool>> = filter.as_ref().map(|f| {
            (0..self.index.slots())
                .map(|s| {
                    self.object_of_slot(s)
                        .is_some_and(|(id, p)| f.matches(id, p))
                })
                .collect()
        });
        let matching = match &allowed {
            Some(a) => a.iter().filter(|x| **x).count(),
            None => self.slot_owner.len() - self.dead as usize,
        };
        let ef = if req.ef == 0 {
            self.config.ef_search as usize
        } else {
            req.ef
        };
        let mut out = Vec::with_capacity(req.vectors.len() / dim);
        for (row, q) in req.vectors.chunks_exact(dim).enumerate() {
            validate_vector(&self.config, &format!("query row {row}"), q)?;
            let q = prepared(self.config.metric, q);
            let want = req.k.min(matching);
            let accept = |s: u32| allowed.as_ref().is_none_or(|a| a[s as usize]);
            let mut found: Vec<Scored> = Vec::new();
            if !req.exact && (allowed.is_none() || matching > EXACT_FILTER_MAX) {
                let filter = allowed.is_some().then_some(&accept as &dyn Fn(u32) -> bool);
                found = self.index.search(&q, req.k, ef, filter);
            }
            if req.exact || found.len() < want {
                found = self.exact(&q, req.k, &accept);
            }
            out.push(
                found
                    .into_iter()
                    .filter_map(|(s, d)| {
                        let id = self.slot_owner.get(s as usize)?.clone()?;
                        Some(Hit {
                            id,
                            score: score(self.config.metric, d),
                        })
                    })
                    .collect(),
            );
        }
        Ok(out)
    }

    fn exact(&self, q: &[f32], k: usize, accept: &dyn Fn(u32) -> bool) -> Vec<Scored> {
        let mut all: Vec<Scored> = (0..self.index.slots())
            .filter(|&s| accept(s))
            .filter_map(|s| {
                self.index
                    .vector(s)
                    .map(|v| (s, distance(self.config.metric, q, v)))
            })
            .collect();
        let by = |a: &Scored, b: &Scored| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
        if all.len() > k {
            all.select_nth_unstable_by(k, by);
            all.truncate(k);
        }
        all.sort_by(by);
        all
    }

    /// Ids of objects matching `expression`, in id order ([`crate::id_order`]), at most
    /// `limit`: the first `limit` are selected before only they are sorted.
    pub fn filter(&mut self, expression: &str, limit: usize) -> Result<Vec<String>, EngineError> {
        let f = Filter::parse(expression)?;
        self.parse_all();
        let mut ids: Vec<&String> = self
            .objects
            .iter()
            .filter(|(id, o)| f.matches(id, o.props.map()))
            .map(|(id, _)| id)
            .collect();
        let by = |a: &&String, b: &&String| id_order(a, b);
        if ids.len() > limit {
            if limit > 0 {
                ids.select_nth_unstable_by(limit - 1, by);
            }
            ids.truncate(limit);
        }
        ids.sort_unstable_by(by);
        Ok(ids.into_iter().cloned().collect())
    }

    /// Parses the properties a restore left as text (once: the first filter after it).
    fn parse_all(&mut self) {
        if !std::mem::take(&mut self.unparsed) {
            return;
        }
        for (id, o) in self.objects.iter_mut() {
            if let Props::Text(t) = &o.props {
                // The text was checked at the restore, so this does not fail; if it did, the
                // object would match as one without properties rather than stop the shard.
                o.props = Props::Parsed(parse_props(id, t).unwrap_or_default());
            }
        }
    }

    pub fn traverse(
        &self,
        source: &mut dyn EdgeSource,
        req: &TraverseRequest,
    ) -> Result<Vec<Step>, EngineError> {
        bfs(source, req).map_err(EngineError::State)
    }

    pub fn stats(&self) -> ShardStats {
        let props: usize = self
            .objects
            .iter()
            .map(|(id, o)| id.len() + 64 + o.props.memory_bytes())
            .sum();
        ShardStats {
            objects: self.objects.len() as u64,
            vectors: (self.slot_owner.len() - self.dead as usize) as u64,
            deleted_slots: u64::from(self.dead),
            memory_bytes: (self.index.memory_bytes() + props) as u64,
            index: self.index.kind(),
        }
    }

    /// The shard as bytes: magic, format, config, objects, index, CRC-32 (docs/storage.md).
    pub fn snapshot(&self) -> Result<Vec<u8>, EngineError> {
        let mut out = Vec::new();
        self.snapshot_to(&mut out)?;
        Ok(out)
    }

    /// Streams the snapshot into `sink` a chunk at a time; returns its length.
    pub fn snapshot_to(&self, sink: &mut dyn Sink) -> Result<u64, EngineError> {
        if self.restoring.is_some() {
            return Err(EngineError::State("a restore is in progress".into()));
        }
        let mut w = Writer::new(sink);
        w.raw(MAGIC);
        w.u32(FORMAT);
        write_config(&mut w, &self.config, self.shard_no);
        // Objects with a vector in slot order (deterministic, without sorting every id: that
        // was a fifth of the pass), then the few without one, sorted. Readers take any order.
        let mut loose: Vec<&String> = self
            .objects
            .iter()
            .filter(|(_, o)| o.slot.is_none())
            .map(|(id, _)| id)
            .collect();
        loose.sort_unstable();
        let owned = self.slot_owner.iter().flatten().count();
        if owned + loose.len() != self.objects.len() {
            return Err(EngineError::State(format!(
                "snapshot: {owned} slot owners and {} objects without a vector, but {} objects",
                loose.len(),
                self.objects.len()
            )));
        }
        w.u64(self.objects.len() as u64);
        for (slot, id) in self.slot_owner.iter().enumerate() {
            if let Some(id) = id {
                w.str(id);
                w.u32(slot as u32);
            }
        }
        for id in loose {
            w.str(id);
            w.u32(u32::MAX);
        }
        self.index.write(&mut w)?;
        w.finish()
    }

    /// Every object as the host stores it (properties as JSON text, the vector as given after
    /// cosine normalisation): what a restore is filled in with, for tests and tools.
    pub fn export(&self) -> Vec<crate::Object> {
        let mut out: Vec<crate::Object> = self
            .objects
            .iter()
            .map(|(id, o)| crate::Object {
                id: id.clone(),
                properties: match &o.props {
                    Props::Parsed(m) => Value::Object(m.clone()).to_string(),
                    Props::Text(t) => t.to_string(),
                },
                vector: o
                    .slot
                    .and_then(|s| self.index.vector(s))
                    .map(<[f32]>::to_vec),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Restores a snapshot from `bytes` and fills it in from `objects` (the stored state it
    /// was taken from); returns the ids that differ from it (see [`Shard::restore_finish`]).
    pub fn restore(
        &mut self,
        bytes: &[u8],
        objects: impl IntoIterator<Item = crate::Object>,
    ) -> Result<Vec<String>, EngineError> {
        self.restore_from(&mut SliceSource(bytes), bytes.len() as u64)?;
        self.restore_fill(objects.into_iter().collect())?;
        self.restore_finish()
    }

    /// Reads a snapshot of a shard with the same configuration, pulling the `total` bytes
    /// from `src` a chunk at a time. Nothing changes until the whole snapshot has been read
    /// and its checksum matched; a format-2 snapshot then waits for
    /// [`Shard::restore_fill`] and [`Shard::restore_finish`] (a format-1 one is in place).
    pub fn restore_from(&mut self, src: &mut dyn Source, total: u64) -> Result<(), EngineError> {
        let mut r = Reader::new(src, total)?;
        if r.fixed(MAGIC.len(), "magic")? != MAGIC {
            return Err(EngineError::State(
                "not a shard snapshot (bad magic)".into(),
            ));
        }
        let format = r.u32("format")?;
        if !matches!(format, 1 | FORMAT) {
            return Err(EngineError::State(format!(
                "shard snapshot format {format} is not supported (this engine reads 1 and {FORMAT})"
            )));
        }
        let (config, shard_no) = read_config(&mut r)?;
        if config != self.config || shard_no != self.shard_no {
            return Err(EngineError::State(format!(
                "snapshot is of collection `{}` shard {shard_no} with other parameters",
                config.name
            )));
        }
        let n = r.u64("object count")?;
        // Sized up front (each object takes at least 12 bytes, so a damaged count cannot
        // reserve more than the snapshot could hold).
        let cap = usize::try_from(n.min(total / 12)).unwrap_or(0);
        let mut objects = HashMap::with_capacity(cap);
        let mut slots = Vec::with_capacity(cap);
        for _ in 0..n {
            let id = r.string("object id")?;
            let props = Props::Parsed(if format == 1 {
                parse_props(&id, &r.string("properties")?)
                    .map_err(|e| EngineError::State(format!("snapshot: {e}")))?
            } else {
                Map::new()
            });
            let slot = r.u32("slot")?;
            let slot = (slot != u32::MAX).then_some(slot);
            if objects.contains_key(&id) {
                return Err(EngineError::State(format!(
                    "snapshot: object `{id}` appears twice"
                )));
            }
            if let Some(s) = slot {
                slots.push((s, id.clone()));
            }
            objects.insert(id, Obj { props, slot });
        }
        let index = crate::index::read(config.index, &mut r)?;
        r.finish()?;
        let mut owners: Vec<Option<String>> = vec![None; index.slots() as usize];
        for (s, id) in slots {
            match owners.get_mut(s as usize) {
                Some(o @ None) if index.vector(s).is_some() => *o = Some(id),
                _ => {
                    return Err(EngineError::State(format!(
                        "snapshot: slot {s} of `{id}` is invalid"
                    )))
                }
            }
        }
        let dead = owners.iter().filter(|o| o.is_none()).count() as u32;
        if format == 1 {
            self.dead = dead;
            self.objects = objects;
            self.slot_owner = owners;
            self.index = index;
            self.restoring = None;
            self.unparsed = false;
        } else {
            self.restoring = Some(Box::new(Restoring {
                filled: vec![false; owners.len()],
                unfilled_slotless: objects
                    .iter()
                    .filter(|(_, o)| o.slot.is_none())
                    .map(|(id, _)| id.clone())
                    .collect(),
                index,
                objects,
                slot_owner: owners,
                dead,
                changed: Vec::new(),
            }));
        }
        Ok(())
    }

    /// Fills a restore in with stored objects (any order, any batches). Objects the snapshot
    /// does not know are skipped (a later write made them; the host applies it). One whose
    /// vector is not the one its slot was indexed with has its slot retired and is reported
    /// by [`Shard::restore_finish`]. Returns how many were taken.
    pub fn restore_fill(&mut self, objects: Vec<crate::Object>) -> Result<u32, EngineError> {
        let metric = self.config.metric;
        let dim = self.config.dimension as usize;
        let r = self
            .restoring
            .as_mut()
            .ok_or_else(|| EngineError::State("no restore is in progress".into()))?;
        let mut taken = 0;
        for o in objects {
            let Some(obj) = r.objects.get_mut(&o.id) else {
                continue;
            };
            // Each object once: a slot's flag, or the set of those without one (a retired
            // object has neither, and counts as filled).
            let first = match obj.slot {
                Some(s) => r
                    .filled
                    .get_mut(s as usize)
                    .is_some_and(|f| !std::mem::replace(f, true)),
                None => r.unfilled_slotless.remove(&o.id),
            };
            if !first {
                continue;
            }
            check_props(&o.id, &o.properties)
                .map_err(|e| EngineError::State(format!("restoring: {e}")))?;
            obj.props = Props::Text(o.properties.into_boxed_str());
            taken += 1;
            let same = match (obj.slot, &o.vector) {
                (Some(s), Some(v)) if v.len() == dim && crate::all_finite(v) => {
                    if metric == Metric::Cosine {
                        r.index.fill(s, &prepared(metric, v))
                    } else {
                        r.index.fill(s, v)
                    }
                }
                (None, None) => true,
                _ => false,
            };
            if !same {
                r.retire(&o.id);
            }
        }
        Ok(taken)
    }

    /// Ends a restore: the restored state replaces the shard. Returns, sorted, the ids whose
    /// stored object is not what the snapshot had — changed since (their slot retired), or
    /// never filled in (deleted since, or storage lost them): the caller re-applies each
    /// from storage, or rebuilds if it has no reason for one to differ. Nothing to do (and
    /// an empty list) when no restore is waiting.
    pub fn restore_finish(&mut self) -> Result<Vec<String>, EngineError> {
        let Some(mut r) = self.restoring.take() else {
            return Ok(Vec::new());
        };
        for s in r.index.seal() {
            if let Some(id) = r.slot_owner.get(s as usize).cloned().flatten() {
                r.retire(&id);
            }
        }
        let mut differ = std::mem::take(&mut r.changed);
        let unfilled = r.slot_owner.iter().zip(&r.filled);
        differ.extend(
            unfilled
                .filter(|(_, &f)| !f)
                .filter_map(|(id, _)| id.clone()),
        );
        differ.extend(r.unfilled_slotless.drain());
        differ.sort();
        differ.dedup();
        self.dead = r.dead;
        self.objects = r.objects;
        self.slot_owner = r.slot_owner;
        self.index = r.index;
        self.unparsed = true;
        Ok(differ)
    }
}

fn write_config(w: &mut Writer, c: &CollectionConfig, shard_no: u32) {
    w.str(&c.name);
    w.u32(c.dimension);
    w.u8(c.metric as u8);
    w.u8(c.index as u8);
    w.u32(c.m);
    w.u32(c.ef_construction);
    w.u32(c.ef_search);
    w.u32(c.shards);
    w.u32(shard_no);
}

fn read_config(r: &mut Reader<'_>) -> Result<(CollectionConfig, u32), EngineError> {
    let bad = |what: &str| EngineError::State(format!("snapshot: unknown {what}"));
    let name = r.string("collection name")?;
    let dimension = r.u32("dimension")?;
    let metric = match r.u8("metric")? {
        0 => Metric::Cosine,
        1 => Metric::Dot,
        2 => Metric::Euclidean,
        _ => return Err(bad("metric")),
    };
    let index = match r.u8("index kind")? {
        0 => IndexKind::Hnsw,
        1 => IndexKind::Hora,
        _ => return Err(bad("index kind")),
    };
    let config = CollectionConfig {
        name,
        dimension,
        metric,
        index,
        m: r.u32("m")?,
        ef_construction: r.u32("ef_construction")?,
        ef_search: r.u32("ef_search")?,
        shards: r.u32("shards")?,
    };
    Ok((config, r.u32("shard number")?))
}
