//! Our HNSW (Malkov & Yashunin): incremental insert, delete by tombstone, byte snapshots,
//! vectors in large contiguous blocks, a reused visited set and no per-query allocation beyond the result.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::codec::{Reader, Writer};
use crate::distance::distance;
use crate::index::{Scored, VectorIndex};
use crate::quant::{Codes, Query};
use crate::rows::Rows;
use crate::{EngineError, IndexKind, Metric};

/// Format 2 and later hold no vector of a live slot (the host's stored objects have them, and
/// a restore fills them in; a fingerprint per slot catches one that changed since); format 3
/// changed the fingerprint ([`fingerprint`]; format 2's is [`serial_fingerprint`]); format 1
/// held every vector. All three are read.
const FORMAT: u32 = 3;
const FORMAT_SERIAL_FINGERPRINTS: u32 = 2;

/// Lanes of [`fingerprint`]: independent FNV-1a chains, so the multiplies overlap (and
/// vectorise) instead of each waiting for the one before.
const FP_LANES: usize = 16;

/// A vector's 32-bit fingerprint: tells whether a filled-in vector is the one a slot was
/// indexed with. 32-bit FNV-1a over its bits in [`FP_LANES`] interleaved chains (component
/// `i` goes to chain `i % FP_LANES`), the chains then folded by 64-bit FNV-1a with the length.
fn fingerprint(v: &[f32]) -> u32 {
    const BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut lanes = [BASIS; FP_LANES];
    let mut chunks = v.chunks_exact(FP_LANES);
    for c in &mut chunks {
        for j in 0..FP_LANES {
            lanes[j] = (lanes[j] ^ c[j].to_bits()).wrapping_mul(PRIME);
        }
    }
    for (j, x) in chunks.remainder().iter().enumerate() {
        lanes[j] = (lanes[j] ^ x.to_bits()).wrapping_mul(PRIME);
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in lanes.into_iter().chain([v.len() as u32]) {
        h ^= u64::from(w);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// Format 2's fingerprint: one FNV-1a chain over the bits, folded to 32 bits (every multiply
/// waits for the one before; kept to check restores of format-2 snapshots).
fn serial_fingerprint(v: &[f32]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in v {
        h ^= u64::from(x.to_bits());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// A restored index waiting for its live vectors: which slots have theirs (deleted ones
/// count as filled). The fingerprints to check them against are [`Hnsw::fingerprints`].
struct Filling {
    filled: Vec<bool>,
    /// The snapshot's fingerprints are format 2's ([`serial_fingerprint`]).
    serial: bool,
}

#[derive(Clone, Copy, PartialEq)]
struct Near(f32, u32);
impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Near {
    /// Max-heap on distance: the top is the farthest.
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Far(std::cmp::Reverse<Near>);

/// Visited marks, reused across searches: one bit per slot, so the marks of a whole shard sit
/// in a few cache lines' worth of L1/L2 (61k slots: 7.7 KiB). The words a search set are
/// remembered and only those are cleared by the next reset, so a reset costs what the
/// search touched, not the shard's size.
#[derive(Default)]
struct Visited {
    bits: Vec<u64>,
    /// Indexes of the words set since the last reset.
    touched: Vec<u32>,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        let words = n.div_ceil(64);
        if self.touched.len() * 8 > self.bits.len() {
            self.bits.iter_mut().for_each(|w| *w = 0);
        } else {
            for &w in &self.touched {
                self.bits[w as usize] = 0;
            }
        }
        self.touched.clear();
        if self.bits.len() < words {
            self.bits.resize(words, 0);
        }
    }
    /// Marks `i`; true if it was not marked yet.
    #[inline]
    fn insert(&mut self, i: u32) -> bool {
        let w = (i >> 6) as usize;
        let bit = 1u64 << (i & 63);
        let word = self.bits[w];
        if word & bit != 0 {
            return false;
        }
        if word == 0 {
            self.touched.push(w as u32);
        }
        self.bits[w] = word | bit;
        true
    }
}

/// One entry of the search beam: estimated distance, slot, and whether it was expanded.
#[derive(Clone, Copy)]
struct Cand {
    d: f32,
    id: u32,
    done: bool,
}

/// `(d, id)` strictly before `(e, jd)`: distance, then slot (deterministic ties).
#[inline]
fn before(d: f32, id: u32, e: f32, jd: u32) -> bool {
    d < e || (d == e && id < jd)
}

pub struct Hnsw {
    dim: usize,
    metric: Metric,
    m: usize,
    m0: usize,
    ef_construction: usize,
    level_mult: f64,
    /// Exact vectors, for re-ranking, snapshots and `vector()`.
    vectors: Rows<f32>,
    /// 8-bit codes of the same vectors: the graph walk reads only these.
    codes: Codes,
    levels: Vec<u8>,
    /// Layer 0 links: per slot a block of `m0 + 1` words, `[count, n1, .., n_m0]`.
    layer0: Vec<u32>,
    /// Upper layers: per slot, `level` blocks of `m + 1` words.
    upper: Vec<Vec<u32>>,
    deleted: Vec<bool>,
    /// Per slot the [`fingerprint`] of its vector, 0 for a deleted slot: kept up to date by
    /// insert, fill and remove, so a snapshot writes it as is instead of hashing every vector
    /// (61k x 384-d: tens of milliseconds of the committer's time).
    fingerprints: Vec<u32>,
    entry: Option<u32>,
    max_level: u8,
    rng: u64,
    scratch: Scratch,
    /// The quantised query of the current search or insert.
    query: Query,
    /// Working memory of inserts, reused between calls.
    build: Build,
    /// Whether any slot is deleted; `None` until a search asks (a snapshot's tombstones are
    /// counted once, on the first search after reading it).
    any_deleted: Option<bool>,
    /// Set between reading a format-2 snapshot and [`VectorIndex::seal`].
    filling: Option<Filling>,
}

/// Per-search working memory, kept between searches so a query allocates nothing.
#[derive(Default)]
struct Scratch {
    visited: Visited,
    /// Filtered searches: the candidates still to expand, closest on top.
    candidates: BinaryHeap<Far>,
    /// Unfiltered searches: the `ef` closest found so far, sorted, each marked once expanded
    /// (results and candidates in one array: a candidate farther than the `ef`-th result is
    /// never expanded, so it need not be kept).
    beam: Vec<Cand>,
    /// The `ef` closest accepted nodes found, sorted closest first (the output).
    results: Vec<Near>,
    /// Unvisited neighbours of the node being expanded, and their estimated distances.
    ids: Vec<u32>,
    dists: Vec<f32>,
}

/// Per-insert working memory.
#[derive(Default)]
struct Build {
    /// Quantised neighbours kept by the heuristic.
    pool: Vec<Query>,
    /// A neighbour's code as a query while its list is pruned.
    base: Query,
    /// Candidates of a pruned list.
    cands: Vec<Near>,
    /// Neighbours chosen by the heuristic.
    kept: Vec<u32>,
    /// The new node's neighbours on each of its layers, top layer first, flat.
    chosen: Vec<u32>,
    /// Where each layer's neighbours end in `chosen`.
    ends: Vec<usize>,
}

impl Hnsw {
    pub fn new(dim: usize, metric: Metric, m: usize, ef_construction: usize) -> Self {
        let m = m.max(2);
        Self {
            dim,
            metric,
            m,
            m0: 2 * m,
            ef_construction: ef_construction.max(m),
            level_mult: 1.0 / (m as f64).ln(),
            vectors: Rows::new(dim),
            codes: Codes::new(dim),
            levels: Vec::new(),
            layer0: Vec::new(),
            upper: Vec::new(),
            deleted: Vec::new(),
            fingerprints: Vec::new(),
            entry: None,
            max_level: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            scratch: Scratch::default(),
            query: Query::default(),
            build: Build::default(),
            any_deleted: None,
            filling: None,
        }
    }

    #[inline]
    fn vec(&self, i: u32) -> &[f32] {
        self.vectors.row(i as usize)
    }

    #[inline]
    fn dist_to(&self, q: &Query, i: u32) -> f32 {
        self.codes.distance(self.metric, q, i)
    }

    #[inline]
    fn links(&self, i: u32, level: u8) -> &[u32] {
        if level == 0 {
            let s = i as usize * (self.m0 + 1);
            let n = self.layer0[s] as usize;
            &self.layer0[s + 1..s + 1 + n]
        } else {
            let s = (level as usize - 1) * (self.m + 1);
            let block = &self.upper[i as usize];
            let n = block[s] as usize;
            &block[s + 1..s + 1 + n]
        }
    }

    fn set_links(&mut self, i: u32, level: u8, links: &[u32]) {
        let (block, cap) = if level == 0 {
            let s = i as usize * (self.m0 + 1);
            (&mut self.layer0[s..s + self.m0 + 1], self.m0)
        } else {
            let s = (level as usize - 1) * (self.m + 1);
            (&mut self.upper[i as usize][s..s + self.m + 1], self.m)
        };
        let n = links.len().min(cap);
        block[0] = n as u32;
        block[1..1 + n].copy_from_slice(&links[..n]);
    }

    fn random_level(&mut self) -> u8 {
        // splitmix64: deterministic, so a rebuilt index has the same shape.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-u.ln() * self.level_mult) as u32).min(16) as u8
    }

    /// Greedy descent on one upper layer: move to any closer neighbour until none is closer.
    fn greedy(
        &self,
        sc: &mut Scratch,
        q: &Query,
        mut cur: u32,
        mut cur_d: f32,
        level: u8,
    ) -> (u32, f32) {
        loop {
            let links = self.links(cur, level);
            sc.dists.resize(links.len().max(sc.dists.len()), 0.0);
            self.codes.distances(self.metric, q, links, &mut sc.dists);
            let mut changed = false;
            for (&n, &d) in links.iter().zip(&sc.dists) {
                if d < cur_d {
                    cur_d = d;
                    cur = n;
                    changed = true;
                }
            }
            if !changed {
                return (cur, cur_d);
            }
        }
    }

    /// Marks the unvisited neighbours of `c` on `level` and puts them and their estimated
    /// distances in `sc.ids` and `sc.dists` (computed together, four at a time).
    #[inline]
    fn expand(&self, sc: &mut Scratch, q: &Query, c: u32, level: u8) {
        sc.ids.clear();
        for &n in self.links(c, level) {
            if sc.visited.insert(n) {
                sc.ids.push(n);
            }
        }
        if sc.dists.len() < sc.ids.len() {
            sc.dists.resize(sc.ids.len(), 0.0);
        }
        self.codes.distances(self.metric, q, &sc.ids, &mut sc.dists);
    }

    /// Beam search on one layer. Leaves the `ef` closest accepted nodes in `sc.results`,
    /// closest first. Without `accept` every node is accepted.
    /// Takes the scratch apart from `self` so the loop reads the graph without re-borrowing.
    fn search_layer(
        &self,
        sc: &mut Scratch,
        q: &Query,
        entry: (u32, f32),
        ef: usize,
        level: u8,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) {
        let ef = ef.max(1);
        sc.visited.reset(self.levels.len());
        sc.visited.insert(entry.0);
        match accept {
            None => self.search_beam(sc, q, entry, ef, level),
            Some(accept) => self.search_filtered(sc, q, entry, ef, level, accept),
        }
    }

    /// [`Hnsw::search_layer`] accepting every node: hnswlib's search with its two heaps
    /// folded into one sorted array of at most `ef` entries. The next node expanded is the
    /// closest not yet expanded; the search ends when every entry was expanded (hnswlib's
    /// "closest candidate farther than the farthest result"). Same nodes expanded in the same
    /// order as with the heaps.
    fn search_beam(&self, sc: &mut Scratch, q: &Query, entry: (u32, f32), ef: usize, level: u8) {
        sc.beam.clear();
        sc.beam.push(Cand {
            d: entry.1,
            id: entry.0,
            done: false,
        });
        let mut cur = 0;
        while cur < sc.beam.len() {
            sc.beam[cur].done = true;
            let c = sc.beam[cur].id;
            self.expand(sc, q, c, level);
            // Every entry before `next` has been expanded.
            let mut next = cur + 1;
            let beam = &mut sc.beam;
            for (&n, &dn) in sc.ids.iter().zip(&sc.dists) {
                let full = beam.len() >= ef;
                if full && beam.last().is_some_and(|w| !before(dn, n, w.d, w.id)) {
                    continue;
                }
                let pos = beam.partition_point(|e| before(e.d, e.id, dn, n));
                if full {
                    beam.pop();
                }
                beam.insert(
                    pos,
                    Cand {
                        d: dn,
                        id: n,
                        done: false,
                    },
                );
                next = next.min(pos);
            }
            cur = next;
            while cur < beam.len() && beam[cur].done {
                cur += 1;
            }
        }
        sc.results.clear();
        sc.results.extend(sc.beam.iter().map(|c| Near(c.d, c.id)));
    }

    /// [`Hnsw::search_layer`] with a filter: rejected nodes are still walked through (they
    /// are candidates) but never results, so the candidates need their own heap.
    fn search_filtered(
        &self,
        sc: &mut Scratch,
        q: &Query,
        entry: (u32, f32),
        ef: usize,
        level: u8,
        accept: &dyn Fn(u32) -> bool,
    ) {
        sc.candidates.clear();
        sc.results.clear();
        sc.candidates
            .push(Far(std::cmp::Reverse(Near(entry.1, entry.0))));
        if accept(entry.0) {
            sc.results.push(Near(entry.1, entry.0));
        }
        while let Some(Far(std::cmp::Reverse(Near(d, c)))) = sc.candidates.pop() {
            let full = sc.results.len() >= ef;
            if full && sc.results.last().is_some_and(|w| d > w.0) {
                break;
            }
            self.expand(sc, q, c, level);
            for (&n, &dn) in sc.ids.iter().zip(&sc.dists) {
                let full = sc.results.len() >= ef;
                if full && sc.results.last().is_some_and(|w| dn >= w.0) {
                    continue;
                }
                sc.candidates.push(Far(std::cmp::Reverse(Near(dn, n))));
                if accept(n) {
                    let pos = sc.results.partition_point(|e| before(e.0, e.1, dn, n));
                    sc.results.insert(pos, Near(dn, n));
                    sc.results.truncate(ef);
                }
            }
        }
    }

    /// Descends from the entry point to `level + 1`, returning the closest node found.
    fn descend(&self, sc: &mut Scratch, q: &Query, to_level: u8) -> Option<(u32, f32)> {
        let entry = self.entry?;
        let mut cur = (entry, self.dist_to(q, entry));
        let mut level = self.max_level;
        while level > to_level {
            cur = self.greedy(sc, q, cur.0, cur.1, level);
            level -= 1;
        }
        Some(cur)
    }

    /// hnswlib's neighbour heuristic: keep a candidate only if it is closer to the base than to
    /// every neighbour kept so far. `cands` is sorted closest first; `pool` holds the kept
    /// neighbours quantised as queries. With `fill`, slots the heuristic left empty take the
    /// closest pruned candidates ("keepPrunedConnections" in the HNSW paper). The chosen
    /// slots are appended to `kept`.
    fn select(
        &self,
        cands: &[Near],
        max: usize,
        pool: &mut Vec<Query>,
        fill: bool,
        kept: &mut Vec<u32>,
    ) {
        let start = kept.len();
        for c in cands {
            let n = kept.len() - start;
            if n >= max {
                break;
            }
            if pool[..n].iter().all(|k| self.dist_to(k, c.1) > c.0) {
                if pool.len() == n {
                    pool.push(Query::default());
                }
                pool[n].set_from_code(&self.codes, c.1);
                kept.push(c.1);
            }
        }
        if fill {
            for c in cands {
                if kept.len() - start >= max {
                    break;
                }
                if !kept[start..].contains(&c.1) {
                    kept.push(c.1);
                }
            }
        }
    }

    /// Links `node` from `neighbour`, pruning `neighbour`'s list with the heuristic when full.
    fn connect(&mut self, b: &mut Build, node: u32, neighbour: u32, level: u8) {
        let cap = if level == 0 { self.m0 } else { self.m };
        let current = self.links(neighbour, level);
        if current.len() < cap {
            let (block, n) = self.block_mut(neighbour, level);
            block[1 + n] = node;
            block[0] = n as u32 + 1;
            return;
        }
        b.base.set_from_code(&self.codes, neighbour);
        b.cands.clear();
        for &c in current.iter().chain(std::iter::once(&node)) {
            b.cands.push(Near(self.dist_to(&b.base, c), c));
        }
        b.cands.sort_unstable();
        b.kept.clear();
        self.select(&b.cands, cap, &mut b.pool, false, &mut b.kept);
        self.set_links(neighbour, level, &b.kept);
    }

    /// The link block of `i` on `level` (`[count, links..]`, `cap + 1` words) and its count.
    fn block_mut(&mut self, i: u32, level: u8) -> (&mut [u32], usize) {
        let block = if level == 0 {
            let s = i as usize * (self.m0 + 1);
            &mut self.layer0[s..s + self.m0 + 1]
        } else {
            let s = (level as usize - 1) * (self.m + 1);
            &mut self.upper[i as usize][s..s + self.m + 1]
        };
        let n = block[0] as usize;
        (block, n)
    }

    fn read_inner(r: &mut Reader<'_>) -> Result<Self, EngineError> {
        let bad = |what: &str| EngineError::State(format!("hnsw snapshot: {what}"));
        let format = r.u32("hnsw format")?;
        if !matches!(format, 1 | FORMAT_SERIAL_FINGERPRINTS | FORMAT) {
            return Err(bad("unknown format version"));
        }
        let dim = r.u32("dimension")? as usize;
        let metric = match r.u8("metric")? {
            0 => Metric::Cosine,
            1 => Metric::Dot,
            2 => Metric::Euclidean,
            _ => return Err(bad("unknown metric")),
        };
        let m = r.u32("m")? as usize;
        let ef_construction = r.u32("ef_construction")? as usize;
        // Checked before anything is sized by them (the checksum is only checked at the end).
        if dim == 0 || dim > crate::quant::MAX_DIMENSION {
            return Err(bad("dimension out of range"));
        }
        if !(2..=1 << 16).contains(&m) {
            return Err(bad("m out of range"));
        }
        let mut h = Hnsw::new(dim, metric, m, ef_construction);
        h.rng = r.u64("rng")?;
        let entry = r.u32("entry")?;
        h.max_level = r.u8("max level")?;
        if format == 1 {
            let floats = r.f32s_each("vectors", dim.max(1), |run| {
                h.vectors.extend_flat(run);
                h.codes.extend_flat(run);
            })?;
            if floats % dim != 0 {
                return Err(bad("vectors are not whole rows"));
            }
        }
        h.levels = r.bytes("levels")?;
        h.layer0 = r.u32s("layer 0")?;
        h.deleted = r.bytes("deleted")?.iter().map(|b| *b != 0).collect();
        let n = h.levels.len();
        for i in 0..n {
            let block = if h.levels[i] > 0 {
                r.u32s("upper links")?
            } else {
                Vec::new()
            };
            if block.len() != h.levels[i] as usize * (h.m + 1) {
                return Err(bad("upper links do not match levels"));
            }
            h.upper.push(block);
        }
        if format != 1 {
            let fingerprints = r.u32s("fingerprints")?;
            let dead = h.deleted.iter().filter(|d| **d).count();
            // Every slot gets a row now; deleted ones their stored vector, live ones theirs
            // when the restore fills them in.
            let mut dead_rows: Vec<f32> = Vec::new();
            let floats = r.f32s_each("vectors of deleted slots", dim, |run| {
                dead_rows.extend_from_slice(run)
            })?;
            if fingerprints.len() != n || floats != dead * dim || h.deleted.len() != n {
                return Err(bad("array sizes disagree"));
            }
            // Zero rows (not written: fresh memory), then the deleted slots' vectors.
            h.vectors.extend_zeroed(n);
            let dead_slots = h.deleted.iter().enumerate().filter(|(_, d)| **d);
            for ((i, _), row) in dead_slots.zip(dead_rows.chunks_exact(dim)) {
                h.vectors.row_mut(i).copy_from_slice(row);
            }
            // 0 for deleted slots, whatever the writer put there.
            h.fingerprints = fingerprints;
            for (f, d) in h.fingerprints.iter_mut().zip(&h.deleted) {
                if *d {
                    *f = 0;
                }
            }
            h.filling = Some(Filling {
                filled: h.deleted.clone(),
                serial: format == FORMAT_SERIAL_FINGERPRINTS,
            });
        }
        if h.vectors.len() != n || h.layer0.len() != n * (h.m0 + 1) || h.deleted.len() != n {
            return Err(bad("array sizes disagree"));
        }
        if format == 1 {
            // Format 1 held every vector and no fingerprint: hash them once, here.
            h.fingerprints = (0..n)
                .map(|i| {
                    if h.deleted[i] {
                        0
                    } else {
                        fingerprint(h.vectors.row(i))
                    }
                })
                .collect();
        }
        h.entry = (entry != u32::MAX).then_some(entry);
        // Every link must point at a slot that exists, or a search would index out of bounds.
        let n32 = n as u32;
        let links_ok = (0..n32).all(|i| {
            (0..=h.levels[i as usize]).all(|l| {
                let s = if l == 0 {
                    i as usize * (h.m0 + 1)
                } else {
                    (l as usize - 1) * (h.m + 1)
                };
                let block = if l == 0 {
                    &h.layer0[s..]
                } else {
                    &h.upper[i as usize][s..]
                };
                let cap = if l == 0 { h.m0 } else { h.m };
                let c = block[0] as usize;
                // A link on layer `l` must reach a node that is on layer `l` too.
                c <= cap
                    && block[1..1 + c]
                        .iter()
                        .all(|&x| x < n32 && h.levels[x as usize] >= l)
            })
        });
        if !links_ok || h.entry.is_some_and(|e| e >= n32) {
            return Err(bad("a link points outside the index"));
        }
        // Searches descend from the entry point's top layer.
        let top = h.entry.map_or(0, |e| h.levels[e as usize]);
        if h.max_level != top || (h.entry.is_none() && n > 0) {
            return Err(bad("the entry point does not match the levels"));
        }
        Ok(h)
    }

    pub fn read(r: &mut Reader<'_>) -> Result<Self, EngineError> {
        Self::read_inner(r)
    }
}

impl VectorIndex for Hnsw {
    fn kind(&self) -> IndexKind {
        IndexKind::Hnsw
    }

    fn insert(&mut self, slot: u32, v: &[f32]) -> Result<(), EngineError> {
        if slot as usize != self.levels.len() {
            return Err(EngineError::State(format!(
                "hnsw: slot {slot} inserted out of order (next is {})",
                self.levels.len()
            )));
        }
        if v.len() != self.dim {
            return Err(EngineError::invalid("hnsw: vector has the wrong dimension"));
        }
        let level = self.random_level();
        self.vectors.push(v);
        self.codes.push(v);
        self.levels.push(level);
        self.layer0.resize(self.layer0.len() + self.m0 + 1, 0);
        self.upper.push(vec![0; level as usize * (self.m + 1)]);
        self.deleted.push(false);
        self.fingerprints.push(fingerprint(v));

        let mut q = std::mem::take(&mut self.query);
        q.set(v);
        let mut sc = std::mem::take(&mut self.scratch);
        let Some(mut ep) = self.descend(&mut sc, &q, level) else {
            self.query = q;
            self.scratch = sc;
            self.entry = Some(slot);
            self.max_level = level;
            return Ok(());
        };
        let top = level.min(self.max_level);
        let mut b = std::mem::take(&mut self.build);
        b.chosen.clear();
        b.ends.clear();
        for l in (0..=top).rev() {
            self.search_layer(&mut sc, &q, ep, self.ef_construction, l, None);
            if let Some(best) = sc.results.first() {
                ep = (best.1, best.0);
            }
            // A new node gets a full list. On debian-pkgs (real MiniLM embeddings) that lifts
            // recall at ef 16 from 0.946 to 0.952; on the synthetic 1M set of `just
            // bench-scale` it lowers it (0.79 -> 0.77 at ef 16, 1 shard): a trade-off, not a
            // free win. Pruning existing lists stays pure heuristic (filling those too cost
            // ~15% of build speed).
            let start = b.chosen.len();
            self.select(&sc.results, self.m, &mut b.pool, true, &mut b.chosen);
            self.set_links(slot, l, &b.chosen[start..]);
            b.ends.push(b.chosen.len());
        }
        let mut start = 0;
        for (i, l) in (0..=top).rev().enumerate() {
            let end = b.ends[i];
            for j in start..end {
                let n = b.chosen[j];
                self.connect(&mut b, slot, n, l);
            }
            start = end;
        }
        self.query = q;
        self.scratch = sc;
        self.build = b;
        if level > self.max_level {
            self.max_level = level;
            self.entry = Some(slot);
        }
        Ok(())
    }

    fn remove(&mut self, slot: u32) {
        if let Some(d) = self.deleted.get_mut(slot as usize) {
            *d = true;
            self.any_deleted = Some(true);
            self.fingerprints[slot as usize] = 0;
        }
    }

    fn search(
        &mut self,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Scored> {
        let mut query = std::mem::take(&mut self.query);
        query.set(q);
        let mut sc = std::mem::take(&mut self.scratch);
        let Some(ep) = self.descend(&mut sc, &query, 0) else {
            self.query = query;
            self.scratch = sc;
            return Vec::new();
        };
        let any_deleted = *self
            .any_deleted
            .get_or_insert_with(|| self.deleted.iter().any(|d| *d));
        let deleted = &self.deleted;
        let live = |s: u32| !deleted[s as usize];
        let both = |s: u32| live(s) && accept.is_none_or(|a| a(s));
        let filter: Option<&dyn Fn(u32) -> bool> = match (accept, any_deleted) {
            (None, false) => None,
            (None, true) => Some(&live),
            (Some(_), _) => Some(&both),
        };
        self.search_layer(&mut sc, &query, ep, ef.max(k), 0, filter);
        // The walk ranked by 8-bit estimates; the answer is ranked by exact distances. A
        // candidate whose estimate minus its error bound is already farther than the k-th
        // exact distance found cannot be in the answer, so its vector is never read: same
        // answer as re-ranking every candidate.
        let mut out: Vec<Scored> = Vec::with_capacity(k + 1);
        for n in &sc.results {
            if k == 0 {
                break;
            }
            if out.len() == k {
                let kth = out[k - 1].1;
                if n.0 - self.codes.error_bound(self.metric, &query, n.1) > kth {
                    continue;
                }
            }
            let d = distance(self.metric, q, self.vec(n.1));
            let pos = out.partition_point(|e| before(e.1, e.0, d, n.1));
            if pos < k {
                out.insert(pos, (n.1, d));
                out.truncate(k);
            }
        }
        self.query = query;
        self.scratch = sc;
        out
    }

    fn vector(&self, slot: u32) -> Option<&[f32]> {
        let i = slot as usize;
        (i < self.levels.len() && !self.deleted[i]).then(|| self.vec(slot))
    }

    fn slots(&self) -> u32 {
        self.levels.len() as u32
    }

    fn memory_bytes(&self) -> usize {
        self.vectors.memory_bytes()
            + self.codes.memory_bytes()
            + self.layer0.capacity() * 4
            + self
                .upper
                .iter()
                .map(|u| u.capacity() * 4 + 24)
                .sum::<usize>()
            + self.levels.capacity()
            + self.deleted.capacity()
            + self.fingerprints.capacity() * 4
            + self.scratch.visited.bits.capacity() * 8
    }

    fn fill(&mut self, slot: u32, vector: &[f32]) -> bool {
        let i = slot as usize;
        let Some(f) = &mut self.filling else {
            return false;
        };
        if vector.len() != self.dim || i >= f.filled.len() || f.filled[i] {
            return false;
        }
        f.filled[i] = true;
        let fp = fingerprint(vector);
        let was = if f.serial {
            serial_fingerprint(vector)
        } else {
            fp
        };
        let same = self.fingerprints[i] == was;
        // The slot now holds this vector (the shard retires it if it is not the snapshot's).
        self.fingerprints[i] = fp;
        self.vectors.row_mut(i).copy_from_slice(vector);
        same
    }

    fn seal(&mut self) -> Vec<u32> {
        let Some(f) = self.filling.take() else {
            return Vec::new();
        };
        // One pass over every row (quantising in `fill` instead measured slower).
        self.codes = Codes::new(self.dim);
        self.codes.reserve(self.vectors.len());
        for run in self.vectors.runs() {
            self.codes.extend_flat(run);
        }
        (0..f.filled.len() as u32)
            .filter(|&i| !f.filled[i as usize])
            .collect()
    }

    fn write(&self, w: &mut Writer) -> Result<(), EngineError> {
        // Maintained by insert/fill/remove: no vector is read here.
        self.write_as(w, FORMAT, &self.fingerprints)
    }
}

impl Hnsw {
    /// The snapshot body in `format` (2 or 3), with these fingerprints.
    fn write_as(
        &self,
        w: &mut Writer,
        format: u32,
        fingerprints: &[u32],
    ) -> Result<(), EngineError> {
        w.u32(format);
        w.u32(self.dim as u32);
        w.u8(match self.metric {
            Metric::Cosine => 0,
            Metric::Dot => 1,
            Metric::Euclidean => 2,
        });
        w.u32(self.m as u32);
        w.u32(self.ef_construction as u32);
        w.u64(self.rng);
        w.u32(self.entry.unwrap_or(u32::MAX));
        w.u8(self.max_level);
        w.bytes(&self.levels);
        w.u32s(&self.layer0);
        let deleted: Vec<u8> = self.deleted.iter().map(|d| *d as u8).collect();
        w.bytes(&deleted);
        for block in &self.upper {
            if !block.is_empty() {
                w.u32s(block);
            }
        }
        let n = self.levels.len() as u32;
        w.u32s(fingerprints);
        let dead: Vec<u32> = (0..n).filter(|&i| self.deleted[i as usize]).collect();
        w.f32_runs(dead.len() * self.dim, dead.iter().map(|&i| self.vec(i)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::SliceSource;

    fn points(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                (0..dim)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                    })
                    .collect()
            })
            .collect()
    }

    fn exact(data: &[Vec<f32>], q: &[f32], k: usize, skip: &[u32]) -> Vec<u32> {
        let mut all: Vec<(f32, u32)> = data
            .iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(&(*i as u32)))
            .map(|(i, v)| (distance(Metric::Euclidean, q, v), i as u32))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        all.into_iter().take(k).map(|x| x.1).collect()
    }

    #[test]
    fn recall_on_random_data_is_high_and_deletes_are_never_returned() {
        let data = points(2000, 24, 7);
        let mut h = built(&data, Metric::Euclidean, 16, 100);
        let deleted: Vec<u32> = (0..2000).step_by(10).collect();
        for &d in &deleted {
            h.remove(d);
        }
        let queries = points(50, 24, 99);
        let mut hits = 0;
        for q in &queries {
            let got: Vec<u32> = h.search(q, 10, 64, None).into_iter().map(|x| x.0).collect();
            assert!(
                got.iter().all(|g| !deleted.contains(g)),
                "deleted slot returned"
            );
            let want = exact(&data, q, 10, &deleted);
            hits += got.iter().filter(|g| want.contains(g)).count();
        }
        let recall = hits as f64 / 500.0;
        assert!(recall > 0.9, "recall {recall}");
    }

    #[test]
    fn beam_and_filtered_walks_agree_when_nothing_is_filtered() {
        let data = points(1500, 16, 21);
        let mut h = built(&data, Metric::Dot, 8, 60);
        for q in points(30, 16, 4) {
            for ef in [1, 10, 50] {
                let fast = h.search(&q, 10, ef, None);
                let all = |_: u32| true;
                assert_eq!(fast, h.search(&q, 10, ef, Some(&all)), "ef {ef}");
                // The bounded re-rank answers as re-ranking every candidate would.
                let mut full: Vec<Scored> = h
                    .scratch
                    .results
                    .iter()
                    .map(|n| (n.1, distance(Metric::Dot, &q, h.vec(n.1))))
                    .collect();
                full.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                full.truncate(10);
                assert_eq!(fast, full, "ef {ef}");
            }
        }
    }

    #[test]
    fn snapshot_round_trip_answers_identically() {
        let data = points(500, 8, 3);
        let mut h = built(&data, Metric::Dot, 8, 50);
        for d in [3, 4, 250, 499] {
            h.remove(d);
        }
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        h.write(&mut w).expect("write");
        let total = w.finish().expect("finish");
        let mut back = Hnsw::read(&mut Reader::new(&mut SliceSource(&buf), total).expect("reader"))
            .expect("read");
        // The live vectors are not in the bytes: they are filled in, and checked.
        assert!(
            !back.fill(0, &data[1]),
            "a vector other than the slot's is caught"
        );
        for (i, v) in data.iter().enumerate().skip(1) {
            if ![3, 4, 250, 499].contains(&i) {
                assert!(back.fill(i as u32, v), "slot {i}");
            }
        }
        assert!(!back.fill(1, &data[1]), "a slot is filled once");
        assert_eq!(back.seal(), Vec::<u32>::new());
        back.vectors.row_mut(0).copy_from_slice(&data[0]);
        back.codes = Codes::new(8);
        for run in back.vectors.runs() {
            back.codes.extend_flat(run);
        }
        // Deleted slots (they still route searches) came back from the bytes, live ones
        // from the fill: every slot holds its vector.
        for i in 0..500 {
            assert_eq!(back.vec(i), h.vec(i), "slot {i}");
        }
        for q in points(20, 8, 5) {
            assert_eq!(h.search(&q, 5, 40, None), back.search(&q, 5, 40, None));
        }
        // Corrupt a link count: reading must fail instead of trusting it.
        let bad = &buf[..buf.len() / 2];
        let mut src = SliceSource(bad);
        let mut r = Reader::new(&mut src, bad.len() as u64).expect("reader");
        assert!(Hnsw::read(&mut r).is_err());
    }

    /// An index of `data` (rows of one width) inserted in order.
    fn built(data: &[Vec<f32>], metric: Metric, m: usize, ef_construction: usize) -> Hnsw {
        let dim = data.first().map_or(0, Vec::len);
        let mut h = Hnsw::new(dim, metric, m, ef_construction);
        for (i, v) in data.iter().enumerate() {
            h.insert(i as u32, v).expect("insert");
        }
        h
    }

    /// What a snapshot used to compute by hashing every vector at write time.
    fn recomputed(h: &Hnsw) -> Vec<u32> {
        recomputed_by(h, fingerprint)
    }

    /// Every slot's vector hashed with `hash` (0 for deleted slots).
    fn recomputed_by(h: &Hnsw, hash: fn(&[f32]) -> u32) -> Vec<u32> {
        (0..h.slots())
            .map(|i| {
                if h.deleted[i as usize] {
                    0
                } else {
                    hash(h.vec(i))
                }
            })
            .collect()
    }

    fn round_trip(h: &Hnsw) -> Hnsw {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        h.write(&mut w).expect("write");
        let total = w.finish().expect("finish");
        Hnsw::read(&mut Reader::new(&mut SliceSource(&buf), total).expect("reader")).expect("read")
    }

    #[test]
    fn a_restore_quantises_what_it_is_filled_with_as_a_build_did() {
        let data = points(300, 20, 9);
        let mut h = built(&data, Metric::Euclidean, 8, 40);
        h.remove(12);
        let mut back = round_trip(&h);
        for i in (0..h.slots()).rev() {
            if !h.deleted[i as usize] {
                assert!(back.fill(i, h.vec(i)), "slot {i}");
            }
        }
        assert!(back.seal().is_empty());
        // Dead slots from the snapshot's bytes, live ones from their fill: the same codes.
        for i in 0..h.slots() as usize {
            assert_eq!(back.codes.row(i), h.codes.row(i), "slot {i}");
        }
        for q in points(10, 20, 3) {
            assert_eq!(h.search(&q, 5, 40, None), back.search(&q, 5, 40, None));
        }
    }

    #[test]
    fn a_format_2_snapshot_is_checked_with_its_own_fingerprints() {
        let data = points(200, 8, 5);
        let mut h = built(&data, Metric::Dot, 8, 40);
        h.remove(3);
        let serial = recomputed_by(&h, serial_fingerprint);
        assert_ne!(serial, h.fingerprints, "the two hashes differ");
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        h.write_as(&mut w, FORMAT_SERIAL_FINGERPRINTS, &serial)
            .expect("write");
        let total = w.finish().expect("finish");
        let mut back = Hnsw::read(&mut Reader::new(&mut SliceSource(&buf), total).expect("reader"))
            .expect("read");
        for i in 0..h.slots() {
            if h.deleted[i as usize] {
                continue;
            }
            let v: Vec<f32> = if i == 17 {
                vec![0.5; 8]
            } else {
                h.vec(i).to_vec()
            };
            // Its own vectors match format 2's hashes; the one that changed does not.
            assert_eq!(back.fill(i, &v), i != 17, "slot {i}");
        }
        assert!(back.seal().is_empty());
        // From now on the slots hold format 3's fingerprints.
        back.remove(17);
        assert_eq!(back.fingerprints, recomputed(&back));
        assert_eq!(round_trip(&back).fingerprints, recomputed(&back));
    }

    #[test]
    fn fingerprints_kept_up_to_date_equal_recomputed_ones() {
        let data = points(300, 8, 11);
        let mut h = built(&data, Metric::Euclidean, 8, 40);
        assert_eq!(h.fingerprints, recomputed(&h));
        // A replaced object is a retired slot and a new one.
        for d in [0, 7, 150, 299] {
            h.remove(d);
            h.insert(
                h.slots(),
                &data[d as usize].iter().map(|x| -x).collect::<Vec<_>>(),
            )
            .expect("insert");
        }
        h.remove(42);
        assert_eq!(h.fingerprints, recomputed(&h));
        // Restored and filled in: with its own vectors, with one that changed since (the
        // fingerprint follows the vector the slot now holds), and one never filled in.
        let mut back = round_trip(&h);
        assert_eq!(back.fingerprints, recomputed(&h), "the snapshot's values");
        for i in 0..h.slots() {
            if h.deleted[i as usize] || i == 5 {
                continue;
            }
            let v: Vec<f32> = if i == 9 {
                vec![0.5; 8]
            } else {
                h.vec(i).to_vec()
            };
            assert_eq!(back.fill(i, &v), i != 9, "slot {i}");
        }
        assert_eq!(back.seal(), vec![5]);
        assert_eq!(back.fingerprints[9], fingerprint(&[0.5; 8]));
        // The shard retires those two.
        back.remove(5);
        back.remove(9);
        assert_eq!(back.fingerprints, recomputed(&back));
        back.insert(back.slots(), &[0.25; 8]).expect("insert");
        assert_eq!(back.fingerprints, recomputed(&back));
        assert_eq!(round_trip(&back).fingerprints, recomputed(&back));
    }

    #[test]
    fn a_format_1_snapshot_is_read_and_gets_its_fingerprints() {
        let data = points(200, 8, 13);
        let mut h = built(&data, Metric::Dot, 8, 40);
        h.remove(3);
        // Format 1 as earlier builds wrote it: every vector, no fingerprints.
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.u32(1);
        w.u32(8);
        w.u8(1);
        w.u32(h.m as u32);
        w.u32(h.ef_construction as u32);
        w.u64(h.rng);
        w.u32(h.entry.unwrap_or(u32::MAX));
        w.u8(h.max_level);
        w.f32_runs(h.slots() as usize * 8, h.vectors.runs());
        w.bytes(&h.levels);
        w.u32s(&h.layer0);
        let deleted: Vec<u8> = h.deleted.iter().map(|d| *d as u8).collect();
        w.bytes(&deleted);
        for block in h.upper.iter().filter(|b| !b.is_empty()) {
            w.u32s(block);
        }
        let total = w.finish().expect("finish");
        let mut back = Hnsw::read(&mut Reader::new(&mut SliceSource(&buf), total).expect("reader"))
            .expect("read");
        assert!(back.filling.is_none(), "a format-1 index is complete");
        assert_eq!(back.fingerprints, recomputed(&h));
        for q in points(10, 8, 17) {
            assert_eq!(h.search(&q, 5, 40, None), back.search(&q, 5, 40, None));
        }
    }
}
