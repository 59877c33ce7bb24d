//! The hora crate's HNSW behind [`VectorIndex`]. hora 0.1.1 has no delete (we keep tombstones
//! and filter them out), builds only on `build` (we call it from `flush`), fixes `ef` at
//! construction (we over-fetch `max(ef, k)` instead) and can only snapshot through files, so a
//! hora shard is rebuilt from storage after a restart.

use hora::core::ann_index::ANNIndex;
use hora::core::metrics::Metric as HoraMetric;
use hora::index::hnsw_idx::HNSWIndex;
use hora::index::hnsw_params::HNSWParams;

use crate::codec::Writer;
use crate::distance::distance;
use crate::index::{Scored, VectorIndex};
use crate::{EngineError, IndexKind, Metric};

pub struct HoraIndex {
    inner: HNSWIndex<f32, u32>,
    metric: Metric,
    dim: usize,
    /// hora keeps vectors privately; exact search and rebuilds need them, so we keep a copy.
    vectors: Vec<f32>,
    deleted: Vec<bool>,
    pending: bool,
}

impl HoraIndex {
    pub fn new(dim: usize, metric: Metric, m: usize, ef_construction: usize) -> Self {
        let params = HNSWParams::<f32>::default()
            .max_item(1 << 31)
            .n_neighbor(m)
            .n_neighbor0(2 * m)
            .ef_build(ef_construction)
            // hora searches max(ef_search, k); we pass max(ef, k) as k per query.
            .ef_search(1);
        Self {
            inner: HNSWIndex::new(dim, &params),
            metric,
            dim,
            vectors: Vec::new(),
            deleted: Vec::new(),
            pending: false,
        }
    }

    fn hora_metric(&self) -> HoraMetric {
        // hora 0.1.1 orders its DotProduct distances the wrong way round (it returns the
        // farthest vectors). Cosine vectors are normalised, where euclidean order is the same
        // as cosine order; plain dot product is refused for hora at collection creation.
        match self.metric {
            Metric::Dot => HoraMetric::DotProduct,
            Metric::Cosine | Metric::Euclidean => HoraMetric::Euclidean,
        }
    }
}

impl VectorIndex for HoraIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Hora
    }

    fn insert(&mut self, slot: u32, v: &[f32]) -> Result<(), EngineError> {
        if slot as usize != self.deleted.len() || v.len() != self.dim {
            return Err(EngineError::State(format!(
                "hora: bad insert of slot {slot}"
            )));
        }
        self.inner
            .add(v, slot)
            .map_err(|e| EngineError::State(format!("hora: {e}")))?;
        self.vectors.extend_from_slice(v);
        self.deleted.push(false);
        self.pending = true;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), EngineError> {
        if self.pending {
            let metric = self.hora_metric();
            self.inner
                .build(metric)
                .map_err(|e| EngineError::State(format!("hora build: {e}")))?;
            self.pending = false;
        }
        Ok(())
    }

    fn remove(&mut self, slot: u32) {
        if let Some(d) = self.deleted.get_mut(slot as usize) {
            *d = true;
        }
    }

    fn search(
        &mut self,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Scored> {
        if self.deleted.is_empty() {
            return Vec::new();
        }
        let found = self.inner.search(q, ef.max(k));
        let mut out: Vec<Scored> = found
            .into_iter()
            .filter(|&s| !self.deleted[s as usize] && accept.is_none_or(|a| a(s)))
            .filter_map(|s| self.vector(s).map(|v| (s, distance(self.metric, q, v))))
            .collect();
        out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        out
    }

    fn vector(&self, slot: u32) -> Option<&[f32]> {
        let i = slot as usize;
        (i < self.deleted.len() && !self.deleted[i])
            .then(|| &self.vectors[i * self.dim..(i + 1) * self.dim])
    }

    fn slots(&self) -> u32 {
        self.deleted.len() as u32
    }

    fn memory_bytes(&self) -> usize {
        // hora's own graph and vector copy, roughly, plus ours.
        self.vectors.capacity() * 4 * 2 + self.deleted.len() * (2 * 32 * 8 + 64)
    }

    fn write(&self, _out: &mut Writer) -> Result<(), EngineError> {
        Err(EngineError::Unsupported(
            "hora indexes have no byte snapshot; rebuild from storage".into(),
        ))
    }
}
