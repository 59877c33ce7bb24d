//! Checks a write must pass before anything is stored: each names what was wrong.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{CollectionSpec, Metric, NodeKey};

const MAX_ID_BYTES: usize = 1024;
const MAX_LABEL_BYTES: usize = 256;

pub(crate) fn check_id(key: &NodeKey) -> Result<()> {
    if key.id.is_empty() || key.id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(format!(
            "collection `{}`: object id must be 1 to {MAX_ID_BYTES} bytes, got {}",
            key.collection,
            key.id.len()
        )));
    }
    Ok(())
}

pub(crate) fn check_label(label: &str) -> Result<()> {
    if label.is_empty() || label.len() > MAX_LABEL_BYTES {
        return Err(Error::invalid(format!(
            "edge label must be 1 to {MAX_LABEL_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Properties are a JSON object (possibly empty); returns its text.
pub(crate) fn properties_text(what: &str, v: &Value) -> Result<String> {
    match v {
        Value::Object(_) => Ok(v.to_string()),
        Value::Null => Ok("{}".into()),
        other => Err(Error::invalid(format!(
            "{what}: properties must be a JSON object, found `{other}`"
        ))),
    }
}

/// Length, finiteness and, for cosine, a direction.
pub fn check_vector(spec: &CollectionSpec, id: &str, v: &[f32]) -> Result<()> {
    if v.len() != spec.dimension as usize {
        return Err(Error::invalid(format!(
            "object `{id}`: vector has {} dimensions, collection `{}` expects {}",
            v.len(),
            spec.name,
            spec.dimension
        )));
    }
    if !all_finite(v) {
        if let Some((pos, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(Error::invalid(format!(
                "object `{id}`: vector component {pos} is {x}; only finite numbers are allowed"
            )));
        }
    }
    if spec.metric == Metric::Cosine && v.iter().all(|x| *x == 0.0) {
        return Err(Error::invalid(format!(
            "object `{id}`: a zero vector has no direction, so collection `{}` (cosine) cannot index it",
            spec.name
        )));
    }
    Ok(())
}

/// Whether every component is finite: the largest magnitude's bits (an integer max per lane,
/// which vectorises) below infinity's. Recovery checks every stored vector with this. Twin of
/// the engine's `vektagraf_engine_core::all_finite`.
fn all_finite(v: &[f32]) -> bool {
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

/// Keeps a vector the collection's index cannot take out of the index: the object is indexed
/// without it, and storage keeps it as written. Local writes never get here with such a vector
/// (`check_vector` refused them); a remote write can — its region created the collection with
/// other parameters at the same time (docs/replication.md) — and so can a resolver plugin's
/// output. Refusing it instead would stop that origin's log at this entry for good. Returns
/// whether the vector was left out.
pub(crate) fn fit_for_index(
    spec: &CollectionSpec,
    object: &mut crate::runtime::wit::Object,
) -> bool {
    let Some(v) = &object.vector else {
        return false;
    };
    match check_vector(spec, &object.id, v) {
        Ok(()) => false,
        Err(e) => {
            tracing::warn!(collection = %spec.name, error = %e, "a vector this collection cannot index is kept in storage only");
            object.vector = None;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::all_finite;

    #[test]
    fn all_finite_finds_any_non_finite_component_anywhere() {
        for len in [0, 1, 15, 16, 17, 384, 385] {
            let v: Vec<f32> = (0..len).map(|i| (i as f32 - 7.5) * 1e30).collect();
            assert!(all_finite(&v), "len {len}");
            for pos in 0..len {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                    let mut w = v.clone();
                    w[pos] = bad;
                    assert!(!all_finite(&w), "len {len}, {bad} at {pos}");
                }
            }
        }
    }
}
