//! `just bench`: our engine side by side with hnswlib, faiss and exact search on the shared
//! dataset, in one run on one machine. Writes docs/BENCHMARKS.md and docs/benchmarks.json.
//!
//! cargo bench -p vektagraf --bench ann -- [--dataset DIR] [--efs 10,16,20,24,32,48,64,128,256] [--skip-hora] [--skip-anchors]
//!     [--only native,wasm1,wasm2,hora,anchors] [--no-write]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{arg, has, read_f32, rss_mib};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vektagraf::model::{Batch, CollectionSpec, IndexKind, Metric, SearchOptions};
use vektagraf::{Database, DatabaseConfig};
use vektagraf_engine_core as core;

const DIM: usize = 384;
const K: usize = 10;
const M: u32 = 16;
const EFC: u32 = 200;
const BATCH: usize = 1000;

struct Data {
    base: Vec<f32>,
    queries: Vec<f32>,
    gt: Vec<i32>,
    n: usize,
}

#[derive(Serialize, Deserialize, Clone)]
struct Run {
    ef: u32,
    recall: f64,
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Serialize, Deserialize, Clone, Default)]
#[serde(default)]
struct System {
    system: String,
    build_threads: u32,
    build_s: f64,
    build_vps: f64,
    memory_mib: f64,
    snapshot_mib: Option<f64>,
    cold_start_s: Option<f64>,
    runs: Vec<Run>,
}

fn recall(data: &Data, answers: &[Vec<usize>]) -> f64 {
    let mut hits = 0;
    for (i, a) in answers.iter().enumerate() {
        let gt = &data.gt[i * 100..i * 100 + K];
        hits += a
            .iter()
            .take(K)
            .filter(|x| gt.contains(&(**x as i32)))
            .count();
    }
    hits as f64 / (answers.len() * K) as f64
}

/// Runs every query one at a time on this thread.
fn timed(data: &Data, ef: u32, mut one: impl FnMut(&[f32]) -> Result<Vec<usize>>) -> Result<Run> {
    let mut lat = Vec::with_capacity(data.queries.len() / DIM);
    let mut answers = Vec::with_capacity(lat.capacity());
    let t0 = Instant::now();
    for q in data.queries.chunks_exact(DIM) {
        let s = Instant::now();
        answers.push(one(q)?);
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let total = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    Ok(Run {
        ef,
        recall: recall(data, &answers),
        qps: answers.len() as f64 / total,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

fn engine_err(e: core::EngineError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn native(data: &Data, efs: &[u32]) -> Result<System> {
    let cfg = core::CollectionConfig {
        name: "bench".into(),
        dimension: DIM as u32,
        metric: core::Metric::Dot,
        index: core::IndexKind::Hnsw,
        m: M,
        ef_construction: EFC,
        ef_search: 64,
        shards: 1,
    };
    let before = rss_mib();
    let mut shard = core::shard::Shard::new(cfg, 0).map_err(engine_err)?;
    let t0 = Instant::now();
    for start in (0..data.n).step_by(BATCH) {
        let end = (start + BATCH).min(data.n);
        let batch = (start..end)
            .map(|i| {
                core::Mutation::Upsert(core::Object {
                    id: i.to_string(),
                    properties: "{}".into(),
                    vector: Some(data.base[i * DIM..(i + 1) * DIM].to_vec()),
                })
            })
            .collect();
        shard.apply(batch).map_err(engine_err)?;
    }
    let build = t0.elapsed().as_secs_f64();
    let snapshot = shard.snapshot().map_err(engine_err)?.len();
    let mut sys = System {
        system: "vektagraf-hnsw native (same guest code)".into(),
        build_threads: 1,
        build_s: build,
        build_vps: data.n as f64 / build,
        memory_mib: rss_mib() - before,
        snapshot_mib: Some(snapshot as f64 / (1 << 20) as f64),
        ..Default::default()
    };
    for &ef in efs {
        sys.runs.push(timed(data, ef, |q| {
            let req = core::shard::SearchRequest {
                vectors: q,
                k: K,
                ef: ef as usize,
                filter: None,
                ..Default::default()
            };
            let hits = shard.search(&req).map_err(engine_err)?;
            Ok(hits[0].iter().filter_map(|h| h.id.parse().ok()).collect())
        })?);
    }
    Ok(sys)
}

fn wasm(data: &Data, efs: &[u32], shards: u32, index: IndexKind) -> Result<System> {
    let dir = tempfile::tempdir()?;
    let before = rss_mib();
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    let mut spec = CollectionSpec::new("bench", DIM as u32);
    // The data is unit-norm, so cosine ranks as inner product; hora cannot do plain dot.
    spec.metric = if index == IndexKind::Hora {
        Metric::Cosine
    } else {
        Metric::Dot
    };
    spec.shards = shards;
    spec.index = index;
    spec.m = M;
    spec.ef_construction = EFC;
    db.create_collection(spec)?;
    let t0 = Instant::now();
    for start in (0..data.n).step_by(BATCH) {
        let end = (start + BATCH).min(data.n);
        let mut b = Batch::new();
        for i in start..end {
            let v = data.base[i * DIM..(i + 1) * DIM].to_vec();
            b.upsert("bench", &i.to_string(), Value::Null, Some(v));
        }
        db.write(b)?;
    }
    let build = t0.elapsed().as_secs_f64();
    let memory = rss_mib() - before;
    let label = match (index, shards) {
        (IndexKind::Hnsw, 1) => "vektagraf-hnsw via Wasm, 1 shard".to_owned(),
        (IndexKind::Hnsw, s) => format!("vektagraf-hnsw via Wasm, {s} shards"),
        (IndexKind::Hora, _) => "hora via Wasm, 1 shard".to_owned(),
    };
    let mut sys = System {
        system: label,
        build_threads: shards,
        build_s: build,
        build_vps: data.n as f64 / build,
        memory_mib: memory,
        ..Default::default()
    };
    db.close()?;
    let store = vektagraf::store::Store::open(dir.path())?;
    let snap: usize = (0..shards)
        .filter_map(|s| store.get_snapshot("bench", s).ok().flatten())
        .map(|(meta, _)| meta.size as usize)
        .sum();
    drop(store);
    sys.snapshot_mib = (snap > 0).then(|| snap as f64 / (1 << 20) as f64);
    let t0 = Instant::now();
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    db.search("bench", &data.queries[..DIM], &SearchOptions::k(K))?;
    sys.cold_start_s = Some(t0.elapsed().as_secs_f64());
    for &ef in efs {
        let opts = SearchOptions {
            k: K,
            ef: Some(ef),
            filter: None,
            ..Default::default()
        };
        sys.runs.push(timed(data, ef, |q| {
            let hits = db.search("bench", q, &opts)?;
            Ok(hits.iter().filter_map(|h| h.id.parse().ok()).collect())
        })?);
    }
    Ok(sys)
}

fn anchors(dataset: &Path, efs: &[u32]) -> Result<Vec<System>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target/bench-venv");
    let py = venv.join("bin/python");
    let ready = py.exists()
        && Command::new(&py)
            .args(["-c", "import numpy, hnswlib, faiss"])
            .status()?
            .success();
    if !ready {
        eprintln!(
            "setting up {} (numpy, hnswlib, faiss-cpu)...",
            venv.display()
        );
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()?
            .success()
            && Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "numpy",
                    "hnswlib",
                    "faiss-cpu",
                ])
                .status()?
                .success();
        if !ok {
            bail!("could not set up the Python anchors in {}", venv.display());
        }
    }
    let efs_arg = efs.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let out = Command::new(&py)
        .arg(root.join("bench/anchors.py"))
        .arg(dataset)
        .args(["--efs", &efs_arg, "--m", &M.to_string()])
        .args(["--ef-construction", &EFC.to_string()])
        .output()?;
    if !out.status.success() {
        bail!(
            "anchors.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(serde_json::from_value(v["systems"].clone())?)
}

/// Highest QPS among runs with recall at least `r`.
fn best_qps(s: &System, r: f64) -> Option<f64> {
    s.runs
        .iter()
        .filter(|x| x.recall >= r)
        .map(|x| x.qps)
        .max_by(f64::total_cmp)
}

fn find<'a>(systems: &'a [System], prefix: &str, threads: u32) -> Option<&'a System> {
    systems
        .iter()
        .find(|s| s.system.starts_with(prefix) && s.build_threads == threads)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
        _ => Value::Null,
    }
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dataset = arg("--dataset")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/data/debian-pkgs"));
    let efs: Vec<u32> = arg("--efs")
        .unwrap_or_else(|| "10,16,20,24,32,48,64,128,256".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let base = read_f32(&dataset.join("base.f32"))?;
    let gt = std::fs::read(dataset.join("gt.i32"))?;
    let data = Data {
        n: base.len() / DIM,
        base,
        queries: read_f32(&dataset.join("queries.f32"))?,
        gt: gt
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    let date = common::utc_now();
    let load = common::loadavg();
    // `--only native,wasm1,wasm2,hora,anchors` runs a subset (for working on one of them).
    let only = arg("--only");
    let run = |what: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == what))
    };
    let mut systems = Vec::new();
    if run("native") {
        eprintln!("our index, native...");
        systems.push(native(&data, &efs)?);
    }
    if run("wasm1") {
        eprintln!("our index via Wasm, 1 shard...");
        systems.push(wasm(&data, &efs, 1, IndexKind::Hnsw)?);
    }
    if run("wasm2") {
        eprintln!("our index via Wasm, 2 shards...");
        systems.push(wasm(&data, &efs, 2, IndexKind::Hnsw)?);
    }
    if run("hora") && !has("--skip-hora") {
        eprintln!("hora via Wasm...");
        systems.push(wasm(&data, &efs, 1, IndexKind::Hora)?);
    }
    if run("anchors") && !has("--skip-anchors") {
        eprintln!("anchors (hnswlib, faiss, numpy)...");
        systems.extend(anchors(&dataset, &efs)?);
    }
    let ours = find(&systems, "vektagraf-hnsw via Wasm, 1", 1);
    let ours2 = find(&systems, "vektagraf-hnsw via Wasm, 2", 2);
    let nat = find(&systems, "vektagraf-hnsw native", 1);
    let h1 = find(&systems, "hnswlib", 1);
    let h2 = find(&systems, "hnswlib", 2);
    let wasm_native: Vec<Value> = match (ours, nat) {
        (Some(o), Some(n)) => o
            .runs
            .iter()
            .zip(&n.runs)
            .map(|(a, b)| json!({"ef": a.ef, "ratio": (a.qps / b.qps * 100.0).round() / 100.0}))
            .collect(),
        _ => vec![],
    };
    let at = |s: Option<&System>, r| s.and_then(|s| best_qps(s, r));
    let summary = json!({
        "qps_vs_hnswlib_at_recall_0.95": ratio(at(ours, 0.95), at(h1, 0.95)),
        "qps_vs_hnswlib_at_recall_0.99": ratio(at(ours, 0.99), at(h1, 0.99)),
        "build_vs_hnswlib_1_thread": ratio(ours.map(|s| s.build_vps), h1.map(|s| s.build_vps)),
        "build_vs_hnswlib_2_threads": ratio(ours2.map(|s| s.build_vps), h2.map(|s| s.build_vps)),
        "wasm_over_native_qps": wasm_native,
        "cold_start_over_build": ratio(ours.and_then(|s| s.cold_start_s), ours.map(|s| s.build_s)),
    });
    let (cpu, cores) = common::machine();
    let report = json!({
        "date": date,
        "machine": {"cpu": cpu, "cores": cores, "loadavg_at_start": load.trim()},
        "command": "cargo bench -p vektagraf --bench ann",
        "dataset": dataset.display().to_string(),
        "n": data.n, "dim": DIM, "k": K, "m": M, "ef_construction": EFC,
        "summary": summary,
        "systems": systems,
    });
    let md = markdown(&report, &systems);
    if only.is_some() || has("--no-write") {
        println!("{md}");
        return Ok(());
    }
    std::fs::write(
        root.join("docs/benchmarks.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    // Keep the sections the other benchmarks write (separate runs).
    let old = std::fs::read_to_string(root.join("docs/BENCHMARKS.md")).unwrap_or_default();
    let kept: String = common::SECTIONS
        .iter()
        .filter_map(|name| common::section(&old, name))
        .map(|r| format!("\n{}\n", &old[r]))
        .collect();
    std::fs::write(root.join("docs/BENCHMARKS.md"), format!("{md}{kept}"))?;
    println!("{md}");
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn markdown(r: &Value, systems: &[System]) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut s = String::from(
        "# Benchmarks\n\nWritten by `just bench` (`cargo bench -p vektagraf --bench ann`); every \
         figure below comes from one run on one machine.\n\n",
    );
    s += &format!(
        "- date: {}\n- machine: {} ({} cores), load average at start: {}\n\
         - dataset: debian-pkgs, {} x {} (inner product), queries-A (1,000), k = {}, recall \
         against `gt.i32`\n- every HNSW: M = {}, ef_construction = {}\n\
         - queries: one at a time on one thread; ours through the full host path \
         (`Database::search`: validation, the Wasm component, merge)\n\n",
        text(&r["date"]),
        text(&r["machine"]["cpu"]),
        r["machine"]["cores"],
        text(&r["machine"]["loadavg_at_start"]),
        r["n"],
        r["dim"],
        r["k"],
        r["m"],
        r["ef_construction"]
    );
    let sm = &r["summary"];
    s += "## Summary (ratios from this run)\n\n| ratio | value | goal |\n| --- | --- | --- |\n";
    for (label, key, goal) in [
        (
            "our QPS / hnswlib QPS at recall@10 >= 0.95",
            "qps_vs_hnswlib_at_recall_0.95",
            ">= 1.0",
        ),
        (
            "our QPS / hnswlib QPS at recall@10 >= 0.99",
            "qps_vs_hnswlib_at_recall_0.99",
            ">= 1.0",
        ),
        (
            "build throughput / hnswlib, 1 thread",
            "build_vs_hnswlib_1_thread",
            ">= 1.0",
        ),
        (
            "build throughput / hnswlib, 2 threads (2 shards)",
            "build_vs_hnswlib_2_threads",
            ">= 1.0",
        ),
        (
            "Wasm / native QPS of our index, per ef",
            "wasm_over_native_qps",
            ">= 0.85",
        ),
        (
            "cold start / build time",
            "cold_start_over_build",
            "well under 1",
        ),
    ] {
        s += &format!("| {label} | {} | {goal} |\n", sm[key]);
    }
    s += "\n## Build\n\n| system | threads | build s | vectors/s | memory MiB (RSS growth) | \
          snapshot MiB | cold start s |\n| --- | --- | --- | --- | --- | --- | --- |\n";
    for x in systems.iter().filter(|x| x.build_s > 0.0) {
        s += &format!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {} | {} |\n",
            x.system,
            x.build_threads,
            x.build_s,
            x.build_vps,
            x.memory_mib,
            opt(x.snapshot_mib, 1),
            opt(x.cold_start_s, 2)
        );
    }
    s += "\n## Queries\n\n| system | ef | recall@10 | QPS | p50 ms | p99 ms |\n\
          | --- | --- | --- | --- | --- | --- |\n";
    for x in systems {
        for run in &x.runs {
            s += &format!(
                "| {} | {} | {:.4} | {:.0} | {:.3} | {:.3} |\n",
                x.system, run.ef, run.recall, run.qps, run.p50_ms, run.p99_ms
            );
        }
    }
    s += "\nMemory is the growth of the measuring process's resident set while the index was \
          built (for ours it includes redb's cache and the Wasm linear memory). Exact search \
          runs 200 queries. Build time of ours includes durable redb commits of 1,000-row \
          batches (one writer; each batch is applied to the engine, then committed, before the \
          next is sent). Ours with 2 shards applies a batch to both shards in parallel.\n\n\
          How the systems differ: our HNSW walks its graph on 8-bit codes of the vectors (one \
          relaxed-SIMD integer dot product per 16 dimensions, inside Wasm) and re-ranks the ef \
          candidates it found by exact float distance, so returned scores are exact; hnswlib \
          and faiss compute float distances throughout, natively (hnswlib from PyPI is built \
          with -march=native: AVX-512 where the CPU has it). hora is the hora 0.1.1 crate in \
          the same Wasm engine; it has no byte snapshot, so its cold start is a rebuild.\n";
    s
}
