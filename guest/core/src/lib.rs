//! The index and query logic of one shard of a Vektagraf collection.
//!
//! This crate does no I/O: the engine component (`guest/engine`) wraps it behind the WIT
//! `shard` interface, and the host benchmarks it natively to measure what Wasm costs.
//!
//! - [`distance`]: SIMD-friendly distance kernels.
//! - [`index`]: the [`index::VectorIndex`] trait, with our [`hnsw::Hnsw`] and hora behind it.
//! - [`filter`]: property filter expressions (JSON) and their evaluation.
//! - [`traverse`]: breadth-first graph traversal over an [`traverse::EdgeSource`].
//! - [`shard`]: the state of one shard (objects, properties, index) and its queries.
//! - [`codec`]: the little-endian byte reader/writer used by snapshots.

pub mod codec;
pub mod distance;
pub mod filter;
pub mod hnsw;
pub mod hora_index;
pub mod index;
pub mod quant;
pub mod rows;
pub mod shard;
pub mod traverse;

/// How vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Cosine,
    Dot,
    Euclidean,
}

/// Which vector index a collection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Hnsw,
    Hora,
}

/// A collection's parameters, as far as one shard needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionConfig {
    pub name: String,
    pub dimension: u32,
    pub metric: Metric,
    pub index: IndexKind,
    pub m: u32,
    pub ef_construction: u32,
    pub ef_search: u32,
    pub shards: u32,
}

/// An object as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub id: String,
    /// A JSON object, as text.
    pub properties: String,
    pub vector: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    Upsert(Object),
    Delete(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f32,
}

/// Errors of the engine core. Each says what was wrong; none leaves a shard half-changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The request is wrong; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The shard is in no state to answer (not initialised, unreadable snapshot).
    #[error("{0}")]
    State(String),
    /// The index cannot do this.
    #[error("{0}")]
    Unsupported(String),
}

impl EngineError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// Checks a vector for a collection: length, finiteness and (for cosine) a non-zero norm.
/// The host runs the same rules before anything is written; the engine checks again because a
/// NaN reaching an index corrupts it silently.
pub fn validate_vector(config: &CollectionConfig, id: &str, v: &[f32]) -> Result<(), EngineError> {
    if v.len() != config.dimension as usize {
        return Err(EngineError::invalid(format!(
            "object `{id}`: vector has {} dimensions, collection `{}` expects {}",
            v.len(),
            config.name,
            config.dimension
        )));
    }
    if !all_finite(v) {
        let pos = v.iter().position(|x| !x.is_finite()).unwrap_or(0);
        return Err(EngineError::invalid(format!(
            "object `{id}`: vector component {pos} is {} (only finite numbers are allowed)",
            v[pos]
        )));
    }
    if config.metric == Metric::Cosine && v.iter().all(|x| *x == 0.0) {
        return Err(EngineError::invalid(format!(
            "object `{id}`: zero vector has no direction, so cosine similarity is undefined"
        )));
    }
    Ok(())
}

/// Whether every component is finite: the largest magnitude's bits (an integer max per lane,
/// which vectorises, where `all(is_finite)` stops at each element) below infinity's. Twin of
/// the host's `db::validate::all_finite` (the two workspaces share no crate).
pub fn all_finite(v: &[f32]) -> bool {
    const ABS: u32 = 0x7fff_ffff;
    const INF: u32 = 0x7f80_0000;
    let mut lanes = [0u32; 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for j in 0..16 {
            lanes[j] = lanes[j].max(c[j].to_bits() & ABS);
        }
    }
    let tail = chunks.remainder().iter().map(|x| x.to_bits() & ABS);
    lanes.into_iter().chain(tail).all(|m| m < INF)
}

/// Id order, in which `filter` answers: ids that are canonical unsigned decimal integers
/// (digits only, no leading zero unless `0`, at most `u64::MAX`) first, by value; then every
/// other id by its bytes. Twin of `vektagraf_proto::model::id_order` (the host merges shard
/// answers with it): change both together, and their tests share their cases.
pub fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn number(s: &str) -> Option<u64> {
        let b = s.as_bytes();
        let canonical =
            !b.is_empty() && b.iter().all(u8::is_ascii_digit) && (b[0] != b'0' || b.len() == 1);
        if canonical {
            s.parse().ok()
        } else {
            None
        }
    }
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.as_bytes().cmp(b.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::id_order;
    use std::cmp::Ordering;

    /// In id order; the same list is in `proto/src/model.rs`'s test of its twin.
    const IN_ORDER: [&str; 16] = [
        "0",
        "1",
        "2",
        "10",
        "99",
        "18446744073709551615",
        "",
        "+1",
        "-1",
        "00",
        "01",
        "18446744073709551616",
        "1a",
        "A",
        "a",
        "é",
    ];

    #[test]
    fn all_finite_finds_any_non_finite_component_anywhere() {
        for len in [0, 1, 15, 16, 17, 384, 385] {
            let v: Vec<f32> = (0..len).map(|i| (i as f32 - 7.5) * 1e30).collect();
            assert!(crate::all_finite(&v), "len {len}");
            for pos in 0..len {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                    let mut w = v.clone();
                    w[pos] = bad;
                    assert!(!crate::all_finite(&w), "len {len}, {bad} at {pos}");
                }
                let mut w = v.clone();
                w[pos] = f32::MAX;
                assert!(crate::all_finite(&w));
            }
        }
    }

    #[test]
    fn id_order_puts_numbers_first_by_value_then_bytes() {
        for (i, a) in IN_ORDER.iter().enumerate() {
            for (j, b) in IN_ORDER.iter().enumerate() {
                assert_eq!(id_order(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
        let mut shuffled = IN_ORDER;
        shuffled.reverse();
        shuffled.sort_by(|a, b| id_order(a, b));
        assert_eq!(shuffled, IN_ORDER);
        assert_eq!(id_order("7", "7"), Ordering::Equal);
    }
}
