//! `vektagraf demo`: a temporary database loaded with 2,500 Debian packages (games, editors,
//! shells and their direct dependencies, cut from the shared dataset by
//! scripts/make_demo_sample.py), then a few queries a person can read.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::backend::Backend;
use super::import::{import, ImportFiles, Progress};
use crate::model::{CollectionSpec, Direction, NodeKey, SearchOptions, TraverseOptions};
use crate::{Database, DatabaseConfig};

pub const VECTORS: &[u8] = include_bytes!("../../demo-data/vectors.f32");
pub const META: &[u8] = include_bytes!("../../demo-data/meta.jsonl");
pub const EDGES: &[u8] = include_bytes!("../../demo-data/edges.tsv");
pub const COLLECTION: &str = "packages";

/// Writes the embedded sample to `dir` and imports it into a new `packages` collection.
pub fn load_sample(db: &dyn Backend, dir: &Path, progress: Progress) -> Result<()> {
    let files = ImportFiles {
        vectors: dir.join("vectors.f32"),
        meta: Some(dir.join("meta.jsonl")),
        edges: Some(dir.join("edges.tsv")),
    };
    std::fs::write(&files.vectors, VECTORS)?;
    std::fs::write(files.meta.as_ref().context("meta")?, META)?;
    std::fs::write(files.edges.as_ref().context("edges")?, EDGES)?;
    db.create_collection(CollectionSpec::new(COLLECTION, 384))?;
    import(db, COLLECTION, &files, 500, progress)?;
    Ok(())
}

fn vector_of(db: &Database, id: &str) -> Result<Vec<f32>> {
    db.get(COLLECTION, id)?
        .and_then(|o| o.vector)
        .with_context(|| format!("demo sample lacks `{id}`"))
}

fn describe(db: &Database, id: &str) -> String {
    db.get(COLLECTION, id)
        .ok()
        .flatten()
        .and_then(|o| {
            o.properties
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

pub fn run(json_out: bool) -> Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let db = Database::open(tmp.path().join("db"), DatabaseConfig::default())?;
    let progress = if json_out {
        Progress::Quiet
    } else {
        Progress::Bars
    };
    if !json_out {
        println!("Vektagraf demo: loading 2,500 Debian packages (384-d MiniLM embeddings + dependency edges) into {}", tmp.path().display());
    }
    load_sample(&db, tmp.path(), progress)?;
    let stats = db.stats(COLLECTION)?;
    let mut report = json!({"objects": stats.objects, "vectors": stats.vectors, "queries": []});
    if !json_out {
        println!(
            "loaded {} objects; the engine (a Wasm component) holds {:.1} MiB\n",
            stats.objects,
            stats.engine_memory_bytes as f64 / (1 << 20) as f64
        );
    }
    let mut record = |title: String, rows: Vec<(String, String)>| {
        if !json_out {
            println!("{title}");
            for (a, b) in &rows {
                println!("  {a:<28} {b}");
            }
            println!();
        }
        if let Some(q) = report["queries"].as_array_mut() {
            q.push(json!({"query": title, "rows": rows}));
        }
    };

    for id in ["vim", "zsh", "supertuxkart"] {
        let hits = db.search(COLLECTION, &vector_of(&db, id)?, &SearchOptions::k(6))?;
        record(
            format!("Packages most like `{id}` ({}):", describe(&db, id)),
            hits.into_iter()
                .filter(|h| h.id != id)
                .map(|h| (format!("{:.3}  {}", h.score, h.id), describe(&db, &h.id)))
                .collect(),
        );
    }

    let filter = json!({"section": "games", "installed_size": {"$lt": 2000}});
    let hits = db.search(
        COLLECTION,
        &vector_of(&db, "nethack-console")?,
        &SearchOptions {
            k: 5,
            ef: None,
            filter: Some(filter.clone()),
            ..Default::default()
        },
    )?;
    record(
        format!("Like `nethack-console`, filtered by {filter}:"),
        hits.into_iter()
            .map(|h| (format!("{:.3}  {}", h.score, h.id), describe(&db, &h.id)))
            .collect(),
    );

    let steps = db.traverse(
        &NodeKey::new(COLLECTION, "0ad"),
        &TraverseOptions {
            label: Some("depends".into()),
            direction: Direction::Out,
            depth: 2,
            limit: 12,
        },
    )?;
    record(
        "What `0ad` depends on, two hops deep (graph traversal):".into(),
        steps
            .into_iter()
            .skip(1)
            .map(|s| {
                let via = s
                    .via
                    .map(|(l, from)| format!("{l} of {}", from.id))
                    .unwrap_or_default();
                (
                    format!("{}{}", "  ".repeat(s.depth as usize - 1), s.node.id),
                    via,
                )
            })
            .collect(),
    );

    let hybrid = db.hybrid(
        COLLECTION,
        &vector_of(&db, "fish")?,
        &SearchOptions::k(3),
        &TraverseOptions {
            label: None,
            direction: Direction::Out,
            depth: 1,
            limit: 4,
        },
    )?;
    record(
        "Hybrid: the 3 packages nearest `fish`, each with what it depends on:".into(),
        hybrid
            .into_iter()
            .map(|h| {
                let deps: Vec<String> = h.neighbours.into_iter().map(|s| s.node.id).collect();
                (
                    format!("{:.3}  {}", h.hit.score, h.hit.id),
                    format!("-> {}", deps.join(", ")),
                )
            })
            .collect(),
    );

    db.close()?;
    if json_out {
        println!("{report}");
    } else {
        println!("Try it on your own data: vektagraf --data DIR collection create NAME --dim N; vektagraf --data DIR import NAME --vectors FILE");
    }
    Ok(())
}
