//! Shared helpers for the integration tests: the shared dataset, temporary databases and exact
//! search to check the engine against.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;
use vektagraf::model::{Batch, CollectionSpec, Metric};
use vektagraf::{Database, DatabaseConfig};

pub const DIM: usize = 384;

/// `../shared/data/debian-pkgs` beside the checkout (CI and developers have it there), or
/// `VEKTAGRAF_DATASET`.
pub fn dataset_dir() -> PathBuf {
    std::env::var_os("VEKTAGRAF_DATASET")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/debian-pkgs")
        })
}

fn read_f32(path: &PathBuf, max_rows: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading {} (the shared dataset must sit beside the checkout)",
            path.display()
        )
    })?;
    Ok(bytes
        .chunks_exact(4)
        .take(max_rows * DIM)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The first `rows` base vectors with their metadata, and the first `queries` query vectors.
pub struct Sample {
    pub base: Vec<f32>,
    pub meta: Vec<(String, Value)>,
    pub queries: Vec<f32>,
}

pub fn load_sample(rows: usize, queries: usize) -> Result<Sample> {
    let dir = dataset_dir();
    let base = read_f32(&dir.join("base.f32"), rows)?;
    let queries = read_f32(&dir.join("queries.f32"), queries)?;
    let text = std::fs::read_to_string(dir.join("base.jsonl"))?;
    let meta = text
        .lines()
        .take(rows)
        .map(|l| {
            let mut v: Value = serde_json::from_str(l)?;
            let id = v["id"].as_str().context("id")?.to_owned();
            if let Some(o) = v.as_object_mut() {
                o.remove("id");
            }
            Ok((id, v))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Sample {
        base,
        meta,
        queries,
    })
}

/// Exact top-k by inner product: row indices, best first (ties to the smaller index).
pub fn exact_top_k(base: &[f32], q: &[f32], k: usize, keep: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = base
        .chunks_exact(q.len())
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(i, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum(), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|x| x.1).collect()
}

/// A database in a fresh temporary directory.
pub fn temp_db(config: DatabaseConfig) -> Result<(tempfile::TempDir, Database)> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), config)?;
    Ok((dir, db))
}

/// Creates `name` (dot product, given shards) and loads the sample into it in batches.
pub fn load_into(db: &Database, name: &str, sample: &Sample, shards: u32) -> Result<()> {
    let mut spec = CollectionSpec::new(name, DIM as u32);
    spec.metric = Metric::Dot;
    spec.shards = shards;
    db.create_collection(spec)?;
    for (chunk_no, chunk) in sample.meta.chunks(1000).enumerate() {
        let mut b = Batch::new();
        for (i, (id, props)) in chunk.iter().enumerate() {
            let row = chunk_no * 1000 + i;
            b.upsert(
                name,
                id,
                props.clone(),
                Some(sample.base[row * DIM..(row + 1) * DIM].to_vec()),
            );
        }
        db.write(b)?;
    }
    Ok(())
}
pub mod bench;
pub mod mesh;
pub mod node;
pub mod plugins;
pub mod proxy;
