//! `just bench`: our engine side by side with hnswlib, faiss and exact search on the shared
//! dataset, in one run on one machine (issue 16's measurements). Writes docs/BENCHMARKS.md and
//! docs/benchmarks.json unless `--no-write` (or `--only`).
//!
//! How queries are measured: every system answers all query rows in batched calls (ours:
//! `Database::search_batch` with `--batch` rows per call; hnswlib: one `knn_query` over all rows;
//! faiss: one `search`), repeated until `--min-secs` have passed, with 1 and with 2 query
//! threads (ours: one shard opened with `read_replicas: 2`, each thread searching its half of
//! the rows; hnswlib `num_threads`, faiss OpenMP threads). The systems are interleaved per ef
//! (ours at ef X, then hnswlib at ef X, ...; the order reversed every other round) for
//! `--rounds` rounds, and each system keeps its best QPS per ef. hnswlib and faiss run in
//! bench/anchors.py, a subprocess that builds once and answers commands on stdin.
//!
//! cargo bench -p vektagraf --bench ann -- [--dataset DIR] [--efs 10,12,...,256] [--rounds 3]
//!     [--batch 256] [--min-secs 0.5] [--hora] [--skip-anchors] [--no-write]
//!     [--only native,wasm1,wasm2,hora,anchors,disk,writes,cold]
//!     [--write-secs 5] [--write-batch 10] [--write-every-ms 5] [--cold-runs 5]

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::anchors::Anchors;
use common::{arg, dir_bytes, has, list, read_f32, rss_mib};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use vektagraf::model::{Batch, CollectionSpec, IndexKind, Metric, SearchOptions};
use vektagraf::{Database, DatabaseConfig};
use vektagraf_engine_core as core;

const DIM: usize = 384;
const K: usize = 10;
const M: u32 = 16;
const EFC: u32 = 200;
/// Rows per durable write batch while building.
const BATCH: usize = 1000;
/// Fine near the recall targets (0.95 is crossed around ef 16-24, 0.99 around 48-96 here).
const DEFAULT_EFS: &str =
    "10,12,14,16,18,20,22,24,26,28,30,32,34,36,38,40,48,56,64,72,80,88,96,104,112,120,128,160,192,256";
const TARGETS: [f64; 2] = [0.95, 0.99];

const OURS: &str = "vektagraf-hnsw via Wasm, 1 shard";
const OURS2: &str = "vektagraf-hnsw via Wasm, 2 shards";
const NATIVE: &str = "vektagraf-hnsw native (same guest code)";
const HORA: &str = "hora via Wasm, 1 shard";

struct Data {
    base: Vec<f32>,
    queries: Vec<f32>,
    gt: Vec<i32>,
    n: usize,
    nq: usize,
}

/// One system at one ef and one number of query threads, best of the rounds.
#[derive(Serialize, Clone, Default)]
struct Run {
    ef: u32,
    threads: usize,
    recall: f64,
    /// The best of `qps_rounds`.
    qps: f64,
    qps_rounds: Vec<f64>,
    /// One query per call on one thread (lowest over the rounds); only for `threads == 1`.
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

#[derive(Serialize, Clone, Default)]
struct System {
    system: String,
    build_threads: u32,
    build_s: f64,
    build_vps: f64,
    memory_mib: f64,
    /// Ours: the data directory after a checkpoint; native: its snapshot bytes; hnswlib:
    /// `save_index`'s file.
    disk_mib: Option<f64>,
    /// Open (or load) plus the first query, in this process.
    cold_start_s: Option<f64>,
    runs: Vec<Run>,
}

impl System {
    fn run(&mut self, ef: u32, threads: usize) -> &mut Run {
        let i = match self
            .runs
            .iter()
            .position(|r| r.ef == ef && r.threads == threads)
        {
            Some(i) => i,
            None => {
                self.runs.push(Run {
                    ef,
                    threads,
                    ..Default::default()
                });
                self.runs.len() - 1
            }
        };
        &mut self.runs[i]
    }

    /// The best QPS among efs with recall at least `r`, with that ef.
    fn crossing(&self, threads: usize, r: f64) -> Option<(u32, f64)> {
        self.runs
            .iter()
            .filter(|x| x.threads == threads && x.recall >= r)
            .map(|x| (x.ef, x.qps))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

fn recall(data: &Data, answers: &[(usize, Vec<usize>)]) -> f64 {
    let mut hits = 0;
    for (i, a) in answers {
        let gt = &data.gt[i * 100..i * 100 + K];
        hits += a
            .iter()
            .take(K)
            .filter(|x| gt.contains(&(**x as i32)))
            .count();
    }
    hits as f64 / (answers.len() * K) as f64
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Ids answered for each query row of a call.
type Answers = Result<Vec<Vec<usize>>>;
type BatchFn<'a> = dyn Fn(&[f32]) -> Answers + Sync + 'a;
type Part = (usize, Vec<(usize, Vec<usize>)>);

/// Query rows `lo..hi` in calls of `batch` rows, round after round, until every row has been
/// answered once and `deadline` has passed (checked after each call): rows answered, and each
/// row's first answer.
fn walk(
    data: &Data,
    (lo, hi): (usize, usize),
    batch: usize,
    deadline: Instant,
    search: &mut dyn FnMut(&[f32]) -> Answers,
) -> Result<Part> {
    let (mut at, mut rows, mut covered) = (lo, 0, false);
    let mut first = Vec::with_capacity(hi - lo);
    loop {
        let end = (at + batch).min(hi);
        let ids = search(&data.queries[at * DIM..end * DIM])?;
        if !covered {
            first.extend(ids.into_iter().enumerate().map(|(j, x)| (at + j, x)));
        }
        rows += end - at;
        if end == hi {
            covered = true;
            at = lo;
        } else {
            at = end;
        }
        if covered && Instant::now() >= deadline {
            return Ok((rows, first));
        }
    }
}

/// (QPS, recall) from the parts the query threads return after `wall` seconds.
fn tally(data: &Data, parts: Vec<Result<Part>>, wall: f64) -> Result<(f64, f64)> {
    let (mut rows, mut answers) = (0, Vec::with_capacity(data.nq));
    for p in parts {
        let (r, a) = p?;
        rows += r;
        answers.extend(a);
    }
    Ok((rows as f64 / wall, recall(data, &answers)))
}

/// All query rows on this thread (see [`walk`]): QPS = rows answered / wall time, recall from
/// each row's first answer.
fn timed_local(
    data: &Data,
    batch: usize,
    min_secs: f64,
    search: &mut dyn FnMut(&[f32]) -> Answers,
) -> Result<(f64, f64)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(min_secs);
    let part = walk(data, (0, data.nq), batch, deadline, search);
    tally(data, vec![part], started.elapsed().as_secs_f64())
}

/// The same with `threads` threads, each walking its share of the rows (one thread: this one).
fn timed_batches(
    data: &Data,
    threads: usize,
    batch: usize,
    min_secs: f64,
    search: &BatchFn<'_>,
) -> Result<(f64, f64)> {
    if threads <= 1 {
        return timed_local(data, batch, min_secs, &mut |q| search(q));
    }
    let nq = data.nq;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(min_secs);
    let parts: Vec<Result<Part>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                s.spawn(move || {
                    let share = (w * nq / threads, (w + 1) * nq / threads);
                    walk(data, share, batch, deadline, &mut |q| search(q))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a query thread panicked")))
            })
            .collect()
    });
    tally(data, parts, started.elapsed().as_secs_f64())
}

/// Every query row alone, one after the other on this thread: p50 and p99 ms.
fn latency(data: &Data, one: &mut dyn FnMut(&[f32]) -> Answers) -> Result<(f64, f64)> {
    let mut lat = Vec::with_capacity(data.nq);
    for q in data.queries.chunks_exact(DIM) {
        let s = Instant::now();
        one(q)?;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    Ok((pct(&lat, 0.5), pct(&lat, 0.99)))
}

fn engine_err(e: core::EngineError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn ids_of(hits: Vec<Vec<vektagraf::model::Hit>>) -> Vec<Vec<usize>> {
    hits.into_iter()
        .map(|row| row.iter().filter_map(|h| h.id.parse().ok()).collect())
        .collect()
}

fn native_build(data: &Data) -> Result<(System, core::shard::Shard)> {
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
    let sys = System {
        system: NATIVE.into(),
        build_threads: 1,
        build_s: build,
        build_vps: data.n as f64 / build,
        memory_mib: rss_mib() - before,
        disk_mib: Some(snapshot as f64 / MIB),
        ..Default::default()
    };
    Ok((sys, shard))
}

const MIB: f64 = (1 << 20) as f64;

fn config(replicas: usize) -> DatabaseConfig {
    DatabaseConfig {
        read_replicas: replicas,
        ..DatabaseConfig::default()
    }
}

/// Open + one query, in this process.
fn open_and_ask(
    dir: &Path,
    cfg: DatabaseConfig,
    collection: &str,
    q: &[f32],
) -> Result<(Database, f64)> {
    let t0 = Instant::now();
    let db = Database::open(dir, cfg)?;
    db.search(collection, q, &SearchOptions::k(K))?;
    Ok((db, t0.elapsed().as_secs_f64()))
}

/// Builds ours in a fresh directory (one writer, durable batches of `BATCH`), checkpoints, and
/// reopens it for the queries with `replicas` engine instances per shard. With `recovery`, the
/// first open after the build follows a stop without checkpoint, then a clean one is timed.
fn wasm_build(
    data: &Data,
    dir: &Path,
    shards: u32,
    index: IndexKind,
    replicas: usize,
    recovery: Option<&mut Value>,
) -> Result<(System, Database)> {
    let before = rss_mib();
    let db = Database::open(dir, config(1))?;
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
    let q0 = &data.queries[..DIM];
    let db = match recovery {
        Some(out) => {
            // Stop without a checkpoint (every batch was durable), as a crash would leave it.
            drop(db);
            let (db, unclean) = open_and_ask(dir, config(1), "bench", q0)?;
            let report =
                db.startup()
                    .iter()
                    .flat_map(|(_, r)| r.iter())
                    .fold((0, 0, 0), |(s, p, b), r| {
                        (
                            s + r.restored_snapshot as u64,
                            p + r.replayed,
                            b + r.rebuilt,
                        )
                    });
            db.close()?;
            let (db, clean) = open_and_ask(dir, config(1), "bench", q0)?;
            *out = json!({
                "unclean_open_s": unclean, "clean_open_s": clean, "ratio": unclean / clean,
                "restored_snapshots": report.0, "replayed": report.1, "rebuilt": report.2,
            });
            db
        }
        None => db,
    };
    db.close()?;
    let disk = dir_bytes(dir) as f64 / MIB;
    let (db, cold) = open_and_ask(dir, config(1), "bench", q0)?;
    let db = if replicas > 1 {
        drop(db);
        Database::open(dir, config(replicas))?
    } else {
        db
    };
    let label = match (index, shards) {
        (IndexKind::Hnsw, 1) => OURS.to_owned(),
        (IndexKind::Hnsw, _) => OURS2.to_owned(),
        (IndexKind::Hora, _) => HORA.to_owned(),
    };
    let sys = System {
        system: label,
        build_threads: shards,
        build_s: build,
        build_vps: data.n as f64 / build,
        memory_mib: memory,
        disk_mib: Some(disk),
        cold_start_s: Some(cold),
        ..Default::default()
    };
    Ok((sys, db))
}

/// How one system answers queries in the rounds.
enum Target<'a> {
    Native(RefCell<core::shard::Shard>),
    Db(Database, &'a str),
    Py(&'a RefCell<Anchors>, &'static str),
}

struct Entry<'a> {
    /// Index into the systems list.
    sys: usize,
    target: Target<'a>,
    threads: Vec<usize>,
}

struct Knobs {
    batch: usize,
    min_secs: f64,
}

impl Entry<'_> {
    /// (QPS, recall) of all query rows at `ef` with `threads` query threads.
    fn measure(&self, data: &Data, k: &Knobs, ef: u32, threads: usize) -> Result<(f64, f64)> {
        match &self.target {
            Target::Native(shard) => {
                if threads != 1 {
                    bail!("the native shard runs on one thread");
                }
                let mut shard = shard.borrow_mut();
                let mut f = |q: &[f32]| -> Result<Vec<Vec<usize>>> {
                    let req = core::shard::SearchRequest {
                        vectors: q,
                        k: K,
                        ef: ef as usize,
                        ..Default::default()
                    };
                    let hits = shard.search(&req).map_err(engine_err)?;
                    Ok(hits
                        .into_iter()
                        .map(|r| r.iter().filter_map(|h| h.id.parse().ok()).collect())
                        .collect())
                };
                timed_local(data, k.batch, k.min_secs, &mut f)
            }
            Target::Db(db, coll) => {
                let opts = SearchOptions {
                    k: K,
                    ef: Some(ef),
                    ..Default::default()
                };
                let f = |q: &[f32]| -> Result<Vec<Vec<usize>>> {
                    Ok(ids_of(db.search_batch(coll, q, &opts)?))
                };
                timed_batches(data, threads, k.batch, k.min_secs, &f)
            }
            Target::Py(a, name) => {
                let v = a
                    .borrow_mut()
                    .call(&format!("query {name} {ef} {threads} {}", k.min_secs))?;
                Ok((num(&v["qps"])?, num(&v["recall"])?))
            }
        }
    }

    /// p50, p99 ms of single queries on one thread.
    fn latency(&self, data: &Data, ef: u32) -> Result<(f64, f64)> {
        match &self.target {
            Target::Native(shard) => {
                let mut shard = shard.borrow_mut();
                latency(data, &mut |q: &[f32]| {
                    let req = core::shard::SearchRequest {
                        vectors: q,
                        k: K,
                        ef: ef as usize,
                        ..Default::default()
                    };
                    shard.search(&req).map_err(engine_err)?;
                    Ok(vec![])
                })
            }
            Target::Db(db, coll) => {
                let opts = SearchOptions {
                    k: K,
                    ef: Some(ef),
                    ..Default::default()
                };
                latency(data, &mut |q: &[f32]| {
                    db.search(coll, q, &opts)?;
                    Ok(vec![])
                })
            }
            Target::Py(a, name) => {
                let v = a.borrow_mut().call(&format!("latency {name} {ef}"))?;
                Ok((num(&v["p50_ms"])?, num(&v["p99_ms"])?))
            }
        }
    }
}

fn add<'a>(
    systems: &mut Vec<System>,
    sys: System,
    target: Target<'a>,
    threads: Vec<usize>,
) -> Entry<'a> {
    systems.push(sys);
    Entry {
        sys: systems.len() - 1,
        target,
        threads,
    }
}

fn num(v: &Value) -> Result<f64> {
    v.as_f64()
        .with_context(|| format!("expected a number, got {v}"))
}

fn py_system(name: &str, threads: u32, v: &Value) -> Result<System> {
    Ok(System {
        system: name.into(),
        build_threads: threads,
        build_s: num(&v["build_s"])?,
        build_vps: num(&v["build_vps"])?,
        memory_mib: num(&v["memory_mib"])?,
        ..Default::default()
    })
}

/// Issue 16, deliverable 4: the full dataset (vectors, base.jsonl properties, edges.tsv)
/// imported through the CLI binary, which checkpoints when it closes; the directory's bytes
/// against the raw vector bytes.
fn disk(bin: &Path, dir: &Path, dataset: &Path, n: usize) -> Result<Value> {
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new(bin)
            .arg("--data")
            .arg(dir)
            .args(args)
            .stdout(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "vektagraf {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let p = |f: &str| dataset.join(f).display().to_string();
    run(&[
        "collection",
        "create",
        "pkgs",
        "--dim",
        "384",
        "--metric",
        "dot",
        "--shards",
        "1",
    ])?;
    let t0 = Instant::now();
    run(&[
        "import",
        "pkgs",
        "--vectors",
        &p("base.f32"),
        "--meta",
        &p("base.jsonl"),
        "--edges",
        &p("edges.tsv"),
    ])?;
    let import_s = t0.elapsed().as_secs_f64();
    let total = dir_bytes(dir);
    let raw = (n * DIM * 4) as u64;
    let mut entries = serde_json::Map::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        entries.insert(
            e.file_name().to_string_lossy().into_owned(),
            json!(dir_bytes(&e.path())),
        );
    }
    Ok(json!({
        "import_s": import_s, "total_bytes": total, "raw_vector_bytes": raw,
        "ratio": total as f64 / raw as f64, "entries": entries,
    }))
}

/// Issue 16, deliverable 6: open + first query of the imported database, as a whole process
/// (the CLI, `runs` times, with its peak RSS from /usr/bin/time) and in this process.
fn cold(bin: &Path, dir: &Path, data: &Data, runs: usize) -> Result<Value> {
    let qdir = tempfile::tempdir()?;
    let qfile = qdir.path().join("one.f32");
    let bytes: Vec<u8> = data.queries[..DIM]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(&qfile, bytes)?;
    let time = Path::new("/usr/bin/time");
    let (mut wall, mut rss) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut cmd = if time.exists() {
            let mut c = Command::new(time);
            c.args(["-f", "%M"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.arg("--data")
            .arg(dir)
            .args(["search", "pkgs", "--k", "10", "--queries"])
            .arg(&qfile)
            .stdout(Stdio::null());
        let t0 = Instant::now();
        let out = cmd.output()?;
        wall.push(t0.elapsed().as_secs_f64());
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("vektagraf search: {err}");
        }
        if time.exists() {
            if let Some(kib) = err
                .lines()
                .last()
                .and_then(|l| l.trim().parse::<f64>().ok())
            {
                rss.push(kib / 1024.0);
            }
        }
    }
    let mut inproc = Vec::new();
    let mut engine = 0u64;
    for _ in 0..runs {
        let (db, s) = open_and_ask(dir, config(1), "pkgs", &data.queries[..DIM])?;
        inproc.push(s);
        engine = db.stats("pkgs")?.engine_memory_bytes;
        drop(db);
    }
    let first = wall[0];
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], pct(v, 0.5))
    };
    let (best, median) = med(&mut wall);
    let (ibest, imedian) = med(&mut inproc);
    let peak = rss
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let engine_mib = engine as f64 / MIB;
    Ok(json!({
        "runs": runs, "process_first_s": first, "process_best_s": best,
        "process_median_s": median, "in_process_best_s": ibest, "in_process_median_s": imedian,
        "peak_rss_mib": peak, "engine_mib": engine_mib,
        "rss_over_engine": peak.map(|p| p / engine_mib),
    }))
}

/// Issue 16, deliverable 5: one writer upserting `wb` existing objects (their properties, a
/// slightly moved vector) into the imported one-shard database, a batch every `every` (or at
/// once when the one before took longer: no backlog builds up), for `secs` without a snapshot,
/// then while `checkpoint()` snapshots in another thread. The latency of a batch is its
/// `write` call; the batches of the checkpoint's window are those whose call overlapped it.
fn writes(
    dir: &Path,
    dataset: &Path,
    data: &Data,
    secs: f64,
    wb: usize,
    every: Duration,
) -> Result<Value> {
    let text = std::fs::read_to_string(dataset.join("base.jsonl"))?;
    let mut objects = Vec::with_capacity(data.n);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut v: Value = serde_json::from_str(line)?;
        let id = match v.as_object_mut().and_then(|o| o.remove("id")) {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => objects.len().to_string(),
        };
        objects.push((id, v));
    }
    let rows = objects.len().min(data.n);
    let db = Database::open(dir, config(1))?;
    let seq0 = db.stats("pkgs")?.snapshot_seq;
    /// When a batch's `write` call started and returned.
    struct Sample(Instant, Instant);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let t0 = Instant::now();
    let (samples, (c0, c1)) = std::thread::scope(|s| -> Result<_> {
        let writer = s.spawn(|| -> Result<Vec<Sample>> {
            let mut out = Vec::new();
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            let mut next = Instant::now();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut b = Batch::new();
                for _ in 0..wb {
                    let row = i % rows;
                    i += 1;
                    let mut v = data.base[row * DIM..(row + 1) * DIM].to_vec();
                    for x in &mut v {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        *x += ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02;
                    }
                    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    v.iter_mut().for_each(|x| *x /= norm);
                    let (id, props) = &objects[row];
                    b.upsert("pkgs", id, props.clone(), Some(v));
                }
                let sent = Instant::now();
                next = sent + every;
                db.write(b)?;
                out.push(Sample(sent, Instant::now()));
            }
            Ok(out)
        });
        std::thread::sleep(Duration::from_secs_f64(secs));
        let c0 = Instant::now();
        let ckpt = db.checkpoint();
        let c1 = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        ckpt?;
        Ok((samples, (c0, c1)))
    })?;
    let seq1 = db.stats("pkgs")?.snapshot_seq;
    drop(db);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let stats = |from: Instant, to: Instant| {
        let picked: Vec<&Sample> = samples
            .iter()
            .filter(|x| x.1 >= from && x.0 <= to)
            .collect();
        let mut lat: Vec<f64> = picked.iter().map(|x| ms(x.1 - x.0)).collect();
        lat.sort_by(f64::total_cmp);
        // The longest time in the window in which no write returned.
        let mut done: Vec<Instant> = picked.iter().map(|x| x.1.min(to)).collect();
        done.insert(0, from);
        done.push(to);
        let gap = done
            .windows(2)
            .map(|w| ms(w[1].saturating_duration_since(w[0])))
            .fold(0.0, f64::max);
        let span = (to - from).as_secs_f64();
        json!({
            "batches": lat.len(), "batches_per_s": picked.len() as f64 / span,
            "p50_ms": pct(&lat, 0.5), "p99_ms": pct(&lat, 0.99),
            "max_ms": lat.last().copied().unwrap_or(f64::NAN),
            "longest_gap_ms": gap,
        })
    };
    // The first second warms up.
    let warm = t0 + Duration::from_secs(1).min(Duration::from_secs_f64(secs / 2.0));
    Ok(json!({
        "batch": wb, "every_ms": ms(every), "seconds": secs,
        "checkpoint_s": (c1 - c0).as_secs_f64(),
        "snapshot_taken": seq1 > seq0, "snapshot_seq_before": seq0, "snapshot_seq_after": seq1,
        "steady": stats(warm, c0),
        "during_checkpoint": stats(c0, c1),
    }))
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vektagraf"));
    let dataset = arg("--dataset")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/data/debian-pkgs"));
    let dataset = dataset.canonicalize().unwrap_or(dataset);
    let efs: Vec<u32> = list("--efs", DEFAULT_EFS)?;
    let rounds: usize = arg("--rounds").map_or(Ok(3), |s| s.parse())?;
    let knobs = Knobs {
        batch: arg("--batch").map_or(Ok(256), |s| s.parse())?,
        min_secs: arg("--min-secs").map_or(Ok(0.5), |s| s.parse())?,
    };
    let write_secs: f64 = arg("--write-secs").map_or(Ok(5.0), |s| s.parse())?;
    let write_batch: usize = arg("--write-batch").map_or(Ok(10), |s| s.parse())?;
    let write_every: u64 = arg("--write-every-ms").map_or(Ok(5), |s| s.parse())?;
    let cold_runs: usize = arg("--cold-runs").map_or(Ok(5), |s| s.parse())?;
    let base = read_f32(&dataset.join("base.f32"))?;
    let gt = std::fs::read(dataset.join("gt.i32"))?;
    let queries = read_f32(&dataset.join("queries.f32"))?;
    let data = Data {
        n: base.len() / DIM,
        nq: queries.len() / DIM,
        base,
        queries,
        gt: gt
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    let date = common::utc_now();
    let load = common::loadavg();
    let began = Instant::now();
    // `--only native,wasm1,wasm2,hora,anchors,disk,writes,cold` runs a subset (for working on
    // one of them); hora runs only when asked (`--hora`): it takes ~10 minutes.
    let only = arg("--only");
    let run = |what: &str| match only.as_deref() {
        Some(o) => o.split(',').any(|x| x == what),
        None => match what {
            "hora" => has("--hora"),
            "anchors" => !has("--skip-anchors"),
            _ => true,
        },
    };

    // Builds, one after the other (nothing else runs meanwhile).
    let mut systems: Vec<System> = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut recovery = Value::Null;
    let dirs = tempfile::tempdir()?;
    let anchors = if run("anchors") {
        eprintln!("starting bench/anchors.py...");
        let s = |p: &Path| p.display().to_string();
        Some(RefCell::new(Anchors::start(
            &root,
            &[
                "--base".into(),
                s(&dataset.join("base.f32")),
                "--queries".into(),
                s(&dataset.join("queries.f32")),
                "--gt".into(),
                s(&dataset.join("gt.i32")),
                "--m".into(),
                M.to_string(),
                "--ef-construction".into(),
                EFC.to_string(),
            ],
        )?))
    } else {
        None
    };
    // Native first: its memory figure is the process's RSS growth, which memory freed by
    // earlier builds would hide.
    if run("native") {
        eprintln!("build: ours native...");
        let (sys, shard) = native_build(&data)?;
        entries.push(add(
            &mut systems,
            sys,
            Target::Native(RefCell::new(shard)),
            vec![1],
        ));
    }
    if run("wasm1") {
        eprintln!("build: ours via Wasm, 1 shard, 1 writer...");
        let (sys, db) = wasm_build(
            &data,
            &dirs.path().join("wasm1"),
            1,
            IndexKind::Hnsw,
            2,
            Some(&mut recovery),
        )?;
        entries.push(add(&mut systems, sys, Target::Db(db, "bench"), vec![1, 2]));
    }
    if let Some(a) = &anchors {
        eprintln!("build: hnswlib, 1 thread...");
        let v = a.borrow_mut().call("build hnswlib 1")?;
        let mut sys = py_system("hnswlib", 1, &v)?;
        let saved = a.borrow_mut().call("save hnswlib")?;
        sys.disk_mib = saved["disk_mib"].as_f64();
        sys.cold_start_s = saved["cold_start_s"].as_f64();
        entries.push(add(&mut systems, sys, Target::Py(a, "hnswlib"), vec![1, 2]));
    }
    if run("wasm2") {
        eprintln!("build: ours via Wasm, 2 shards, 1 writer...");
        let (sys, db) = wasm_build(
            &data,
            &dirs.path().join("wasm2"),
            2,
            IndexKind::Hnsw,
            1,
            None,
        )?;
        entries.push(add(&mut systems, sys, Target::Db(db, "bench"), vec![1, 2]));
    }
    if let Some(a) = &anchors {
        eprintln!("build: hnswlib, 2 threads (measured, then dropped)...");
        let v = a.borrow_mut().call("build hnswlib 2 drop")?;
        systems.push(py_system("hnswlib", 2, &v)?);
        eprintln!("build: faiss, 1 thread...");
        let v = a.borrow_mut().call("build faiss 1")?;
        let sys = py_system("faiss-hnsw", 1, &v)?;
        entries.push(add(&mut systems, sys, Target::Py(a, "faiss"), vec![1, 2]));
    }
    if run("hora") {
        eprintln!("build: hora via Wasm (slow)...");
        let (sys, db) = wasm_build(
            &data,
            &dirs.path().join("hora"),
            1,
            IndexKind::Hora,
            1,
            None,
        )?;
        entries.push(add(&mut systems, sys, Target::Db(db, "bench"), vec![1]));
    }

    // One untimed pass of every system at the largest ef (fresh replicas fault in their memory).
    let warm = Knobs {
        batch: knobs.batch,
        min_secs: 0.0,
    };
    if let Some(&ef) = efs.iter().max() {
        for e in &entries {
            for &threads in &e.threads {
                e.measure(&data, &warm, ef, threads)?;
            }
        }
    }
    // Queries: interleaved per ef, rounds in alternating order, best QPS of each kept.
    let rounds = if entries.is_empty() { 0 } else { rounds };
    for round in 0..rounds {
        let t = Instant::now();
        let mut order: Vec<usize> = (0..entries.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for &ef in &efs {
            for &e in &order {
                let entry = &entries[e];
                for &threads in &entry.threads {
                    let (qps, rec) = entry.measure(&data, &knobs, ef, threads)?;
                    let r = systems[entry.sys].run(ef, threads);
                    r.recall = rec;
                    r.qps_rounds.push(qps);
                    r.qps = r.qps.max(qps);
                }
                let (p50, p99) = entry.latency(&data, ef)?;
                let r = systems[entry.sys].run(ef, 1);
                r.p50_ms = Some(r.p50_ms.map_or(p50, |x| x.min(p50)));
                r.p99_ms = Some(r.p99_ms.map_or(p99, |x| x.min(p99)));
            }
        }
        eprintln!(
            "round {}/{rounds} took {:.0} s; load average now {}",
            round + 1,
            t.elapsed().as_secs_f64(),
            common::loadavg().trim()
        );
        for e in &entries {
            let s = &systems[e.sys];
            for &th in &e.threads {
                let c: Vec<String> = TARGETS
                    .iter()
                    .map(|&r| {
                        s.crossing(th, r)
                            .map_or("-".into(), |(ef, q)| format!(">= {r}: ef {ef} {q:.0} QPS"))
                    })
                    .collect();
                eprintln!("  {} x{th}: {}", s.system, c.join(", "));
            }
        }
    }
    if let Some(a) = &anchors {
        let v = a.borrow_mut().call("exact 200")?;
        systems.push(System {
            system: "exact-numpy".into(),
            build_threads: 1,
            runs: vec![Run {
                ef: 0,
                threads: 1,
                recall: num(&v["recall"])?,
                qps: num(&v["qps"])?,
                qps_rounds: vec![num(&v["qps"])?],
                p50_ms: v["p50_ms"].as_f64(),
                p99_ms: v["p99_ms"].as_f64(),
            }],
            ..Default::default()
        });
    }
    let versions = anchors
        .as_ref()
        .map_or(Value::Null, |a| a.borrow().hello["versions"].clone());
    drop(entries);
    drop(anchors);

    // The full dataset through the CLI: disk, cold start, writes during a snapshot.
    let full = dirs.path().join("full");
    let mut storage = Value::Null;
    let (mut cold_start, mut write_latency) = (Value::Null, Value::Null);
    if run("disk") || run("cold") || run("writes") {
        eprintln!("importing the full dataset through the CLI...");
        storage = disk(&bin, &full, &dataset, data.n)?;
        if run("cold") {
            eprintln!("cold start, {cold_runs} times...");
            cold_start = cold(&bin, &full, &data, cold_runs)?;
        }
        if run("writes") {
            eprintln!("write latency: {write_secs} s steady, then during a checkpoint...");
            write_latency = writes(
                &full,
                &dataset,
                &data,
                write_secs,
                write_batch,
                Duration::from_millis(write_every),
            )?;
        }
    }

    let (cpu, cores) = common::machine();
    let summary = summary(&systems, &storage, &write_latency, &cold_start, &recovery);
    let report = json!({
        "date": date,
        "machine": {"cpu": cpu, "cores": cores, "loadavg_at_start": load.trim(),
                    "loadavg_at_end": common::loadavg().trim()},
        "wall_s": began.elapsed().as_secs_f64(),
        "command": "cargo bench -p vektagraf --bench ann",
        "dataset": dataset.display().to_string(),
        "n": data.n, "queries": data.nq, "dim": DIM, "k": K, "m": M, "ef_construction": EFC,
        "rounds": rounds, "batch": knobs.batch, "min_secs": knobs.min_secs, "efs": efs,
        "anchor_versions": versions,
        "summary": summary,
        "storage": storage,
        "write_latency": write_latency,
        "cold_start": cold_start,
        "recovery": recovery,
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

fn find<'a>(systems: &'a [System], name: &str, build_threads: u32) -> Option<&'a System> {
    systems
        .iter()
        .find(|s| s.system == name && s.build_threads == build_threads)
}

fn round2(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => round2(a / b),
        _ => Value::Null,
    }
}

/// One row of the Summary table: what, value, goal.
fn summary(
    systems: &[System],
    storage: &Value,
    writes: &Value,
    cold: &Value,
    recovery: &Value,
) -> Value {
    let ours = find(systems, OURS, 1);
    let ours2 = find(systems, OURS2, 2);
    let h1 = find(systems, "hnswlib", 1);
    let h2 = find(systems, "hnswlib", 2);
    let nat = find(systems, NATIVE, 1);
    let at = |s: Option<&System>, t: usize, r: f64| s.and_then(|s| s.crossing(t, r)).map(|x| x.1);
    let mut rows = Vec::new();
    let mut row = |what: String, value: Value, goal: &str| {
        rows.push(json!({"what": what, "value": value, "goal": goal}));
    };
    for t in [1, 2] {
        for r in TARGETS {
            row(
                format!(
                    "QPS ours / hnswlib at recall@10 >= {r}, {t} query thread(s) each, one shard"
                ),
                ratio(at(ours, t, r), at(h1, t, r)),
                ">= 1.0",
            );
        }
    }
    for r in TARGETS {
        row(
            format!("ours, one shard: 2-thread / 1-thread QPS at recall@10 >= {r}"),
            ratio(at(ours, 2, r), at(ours, 1, r)),
            ">= 1.7 (2 cores)",
        );
    }
    for r in TARGETS {
        row(
            format!("hnswlib: 2-thread / 1-thread QPS at recall@10 >= {r}"),
            ratio(at(h1, 2, r), at(h1, 1, r)),
            "(reference)",
        );
    }
    row(
        "build throughput ours / hnswlib, 1 thread (ours: durable commits of 1,000-row batches)"
            .into(),
        ratio(ours.map(|s| s.build_vps), h1.map(|s| s.build_vps)),
        ">= 1.0",
    );
    row(
        "build throughput ours with 2 shards (one writer, shards applied in parallel) / \
         hnswlib 2 threads"
            .into(),
        ratio(ours2.map(|s| s.build_vps), h2.map(|s| s.build_vps)),
        "(a different index: see the next rows)",
    );
    for r in TARGETS {
        row(
            format!(
                "what those 2 shards cost at search, 2 query threads: QPS of the 2-shard \
                 collection / one shard at recall@10 >= {r}"
            ),
            ratio(at(ours2, 2, r), at(ours, 2, r)),
            "(reference)",
        );
    }
    let f = |v: &Value| v.as_f64();
    row(
        "data directory after importing the full dataset (vectors, properties, edges) and a \
         checkpoint / raw vector bytes"
            .into(),
        f(&storage["ratio"]).map_or(Value::Null, round2),
        "<= 2.5",
    );
    row(
        "write latency p99 (ms) of a steady write load (one writer) while a checkpoint \
         snapshots the one-shard 61k collection"
            .into(),
        f(&writes["during_checkpoint"]["p99_ms"]).map_or(Value::Null, |x| json!(x.round())),
        "< 50",
    );
    row(
        "cold start (s): open + first query of the 61k database, whole `vektagraf search` \
         process, best of runs"
            .into(),
        f(&cold["process_best_s"]).map_or(Value::Null, |x| json!((x * 1000.0).round() / 1000.0)),
        "< 0.3",
    );
    row(
        "peak RSS of that process / engine memory (`stats`)".into(),
        f(&cold["rss_over_engine"]).map_or(Value::Null, round2),
        "<= 1.5",
    );
    row(
        "open after a stop without checkpoint / clean open (61k, this bench's collection)".into(),
        f(&recovery["ratio"]).map_or(Value::Null, round2),
        "<= about 2",
    );
    let wn: Vec<f64> = match (ours, nat) {
        (Some(o), Some(n)) => o
            .runs
            .iter()
            .filter(|r| r.threads == 1)
            .filter_map(|a| {
                n.runs
                    .iter()
                    .find(|b| b.ef == a.ef && b.threads == 1)
                    .map(|b| a.qps / b.qps)
            })
            .collect(),
        _ => vec![],
    };
    if !wn.is_empty() {
        let lo = wn.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = wn.iter().copied().fold(0.0, f64::max);
        row(
            "Wasm / native QPS of our index, 1 thread, lowest and highest over the ef grid".into(),
            json!([round2(lo), round2(hi)]),
            ">= 0.85",
        );
    }
    row(
        "disk per million vectors, RSS / engine memory at a million, recovery at a million".into(),
        json!("see Scale (`just bench-scale`)"),
        "<= 4 GB; <= 1.5; <= about 2x a clean open",
    );
    Value::Array(rows)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn markdown(r: &Value, systems: &[System]) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let f = |v: &Value, d: usize| opt(v.as_f64(), d);
    let mut s = String::from(
        "# Benchmarks\n\nWritten by `just bench` (`cargo bench -p vektagraf --bench ann`); every \
         figure below comes from one run on one machine.\n\n",
    );
    s += &format!(
        "- date: {}\n- machine: {} ({} cores), load average at start: {}, at the end: {}; the \
         run took {:.0} s\n- dataset: debian-pkgs, {} x {} (inner product), queries-A ({}), \
         k = {}, recall against `gt.i32`\n- every HNSW: M = {}, ef_construction = {}; \
         anchors: {}\n\n",
        text(&r["date"]),
        text(&r["machine"]["cpu"]),
        r["machine"]["cores"],
        text(&r["machine"]["loadavg_at_start"]),
        text(&r["machine"]["loadavg_at_end"]),
        r["wall_s"].as_f64().unwrap_or(0.0),
        r["n"],
        r["dim"],
        r["queries"],
        r["k"],
        r["m"],
        r["ef_construction"],
        r["anchor_versions"],
    );
    s += &format!(
        "How queries are measured: every system answers all {} query rows in batched calls \
         — ours `Database::search_batch` with {} rows per call through the full host path \
         (validation, the Wasm component, merge), hnswlib one `knn_query` over all rows, faiss \
         one `search` — repeated until {} s have passed; QPS = rows answered / wall time. One \
         query thread: ours on a one-shard collection, hnswlib `num_threads=1`, faiss one \
         OpenMP thread. Two query threads: ours on the same one-shard collection opened with \
         `read_replicas: 2`, two threads each searching their half of the rows in batches; \
         hnswlib `num_threads=2`; faiss two OpenMP threads. The systems are interleaved per ef \
         (ours at ef X, then hnswlib at ef X, ...; the order reversed every other round) for {} \
         rounds, and each keeps its best QPS per ef (every round's QPS is in \
         docs/benchmarks.json). For each recall target the figure is the best QPS among the \
         efs whose recall@10 reaches it (where that system crosses the target on this ef \
         grid). p50/p99 are of single queries, one per call on one thread. hnswlib and faiss \
         run in bench/anchors.py, a subprocess that builds once and answers commands on \
         stdin, idle while ours runs.\n\n",
        r["queries"], r["batch"], r["min_secs"], r["rounds"],
    );
    s += "## Summary (from this run)\n\n| what | value | goal |\n| --- | --- | --- |\n";
    let empty = Vec::new();
    for x in r["summary"].as_array().unwrap_or(&empty) {
        s += &format!(
            "| {} | {} | {} |\n",
            text(&x["what"]),
            match &x["value"] {
                Value::String(v) => v.clone(),
                Value::Null => "-".into(),
                v => v.to_string(),
            },
            text(&x["goal"])
        );
    }
    s += "\n## Recall targets\n\nBest QPS among the efs that reach each recall@10 target (the \
          ef in brackets).\n\n| system | query threads | >= 0.95 | >= 0.99 |\n\
          | --- | --- | --- | --- |\n";
    for x in systems.iter().filter(|x| x.runs.iter().any(|r| r.ef > 0)) {
        for t in [1, 2] {
            if !x.runs.iter().any(|r| r.threads == t) {
                continue;
            }
            let c: Vec<String> = TARGETS
                .iter()
                .map(|&r| {
                    x.crossing(t, r)
                        .map_or("-".into(), |(ef, q)| format!("{q:.0} (ef {ef})"))
                })
                .collect();
            s += &format!("| {} | {t} | {} | {} |\n", x.system, c[0], c[1]);
        }
    }
    s += "\n## Build\n\n| system | threads | build s | vectors/s | memory MiB (RSS growth) | \
          on disk MiB | open + first query s |\n| --- | --- | --- | --- | --- | --- | --- |\n";
    for x in systems.iter().filter(|x| x.build_s > 0.0) {
        s += &format!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {} | {} |\n",
            x.system,
            x.build_threads,
            x.build_s,
            x.build_vps,
            x.memory_mib,
            opt(x.disk_mib, 1),
            opt(x.cold_start_s, 2)
        );
    }
    s += "\nBuild time of ours includes durable redb commits of 1,000-row batches (one \
          writer; each batch is applied to the engine, then committed, before the next is \
          sent) and the index snapshots the committer takes on its own (one after every max(1,000, size / 50) \
          writes, so that a crash replays little; their files are written by the snapshot thread); ours with 2 shards applies a batch to both shards in parallel, so its 2-thread \
          build makes a different index (two graphs, each query searching both) from \
          hnswlib's 2-thread build (one graph): what that costs at search time is in the \
          Summary and the Queries table. Memory is the growth of the measuring process's \
          resident set while the index was built (ours: redb's cache and the Wasm linear \
          memory too; hnswlib and faiss: the Python process's). On disk: ours the data \
          directory after a checkpoint, native the snapshot bytes, hnswlib `save_index`'s \
          file. Each build ran once.\n";
    let st = &r["storage"];
    if !st.is_null() {
        s += &format!(
            "\n## Data directory (full dataset)\n\n`vektagraf collection create pkgs --dim 384 \
             --metric dot` and `vektagraf import pkgs --vectors base.f32 --meta base.jsonl \
             --edges edges.tsv` (the CLI binary; it checkpoints when it closes), import {} s. \
             Directory {} bytes ({} MiB) for {} bytes of raw vectors: **{}x**. By entry: {}.\n",
            f(&st["import_s"], 1),
            st["total_bytes"],
            f(&json!(st["total_bytes"].as_f64().unwrap_or(0.0) / MIB), 1),
            st["raw_vector_bytes"],
            f(&st["ratio"], 2),
            st["entries"]
        );
    }
    let w = &r["write_latency"];
    if !w.is_null() {
        s += &format!(
            "\n## Writes during a snapshot\n\nOne writer upserts {} existing objects of the \
             imported one-shard database (their properties, a slightly moved vector), a batch \
             every {} ms (at once when the one before took longer), for {} s without a snapshot \
             (the first second not counted), then while `checkpoint()` runs in another thread (it \
             took {} s; a new snapshot was written: {}). Latency is each batch's `write` call \
             (durable when it returns); the checkpoint's rows count the batches whose call \
             overlapped it. Longest gap: the longest time in the window in which no write \
             returned.\n\n| phase | batches | batches/s | p50 ms | p99 ms | max ms | longest \
             gap ms |\n| --- | --- | --- | --- | --- | --- | --- |\n",
            w["batch"],
            w["every_ms"],
            w["seconds"],
            f(&w["checkpoint_s"], 2),
            w["snapshot_taken"]
        );
        for (label, key) in [
            ("steady", "steady"),
            ("during checkpoint", "during_checkpoint"),
        ] {
            let x = &w[key];
            s += &format!(
                "| {label} | {} | {} | {} | {} | {} | {} |\n",
                x["batches"],
                f(&x["batches_per_s"], 0),
                f(&x["p50_ms"], 1),
                f(&x["p99_ms"], 1),
                f(&x["max_ms"], 1),
                f(&x["longest_gap_ms"], 0)
            );
        }
    }
    let c = &r["cold_start"];
    if !c.is_null() {
        s += &format!(
            "\n## Cold start (full dataset)\n\n`vektagraf --data DIR search pkgs --queries \
             ONE_ROW.f32 --k 10` as a whole process, {} runs: best {} s, median {} s (first \
             {} s); peak RSS {} MiB (`/usr/bin/time -f %M`) against {} MiB of engine memory \
             (`stats`): {}x. In process (`Database::open` + one search): best {} s, median {} \
             s.\n",
            c["runs"],
            f(&c["process_best_s"], 3),
            f(&c["process_median_s"], 3),
            f(&c["process_first_s"], 3),
            f(&c["peak_rss_mib"], 0),
            f(&c["engine_mib"], 0),
            f(&c["rss_over_engine"], 2),
            f(&c["in_process_best_s"], 3),
            f(&c["in_process_median_s"], 3)
        );
    }
    let rc = &r["recovery"];
    if !rc.is_null() {
        s += &format!(
            "\nRecovery: this bench's one-shard collection reopened after the build stopped \
             without a checkpoint (every batch durable, as after a crash; the committer had \
             taken its own snapshots on the way: {} restored, {} objects replayed, {} rebuilt) \
             took {} s to open and answer one query, against {} s for a clean open.\n",
            rc["restored_snapshots"],
            rc["replayed"],
            rc["rebuilt"],
            f(&rc["unclean_open_s"], 2),
            f(&rc["clean_open_s"], 2)
        );
    }
    s += "\n## Queries\n\nQPS: best of the rounds (batched calls, see above). p50/p99: single \
          queries on one thread.\n\n| system | ef | recall@10 | QPS 1 thread | QPS 2 threads | \
          p50 ms | p99 ms |\n| --- | --- | --- | --- | --- | --- | --- |\n";
    for x in systems {
        let mut efs: Vec<u32> = x.runs.iter().map(|r| r.ef).collect();
        efs.dedup();
        for ef in efs {
            let one = x.runs.iter().find(|r| r.ef == ef && r.threads == 1);
            let two = x.runs.iter().find(|r| r.ef == ef && r.threads == 2);
            let Some(any) = one.or(two) else { continue };
            s += &format!(
                "| {} | {} | {:.4} | {} | {} | {} | {} |\n",
                x.system,
                ef,
                any.recall,
                opt(one.map(|r| r.qps), 0),
                opt(two.map(|r| r.qps), 0),
                opt(one.and_then(|r| r.p50_ms), 3),
                opt(one.and_then(|r| r.p99_ms), 3)
            );
        }
    }
    s += "\nExact search runs 200 queries, one at a time. How the systems differ: our HNSW \
          walks its graph on 8-bit codes of the vectors (one relaxed-SIMD integer dot product \
          per 16 dimensions, inside Wasm) and re-ranks the ef candidates it found by exact \
          float distance, so returned scores are exact; hnswlib and faiss compute float \
          distances throughout, natively (hnswlib from PyPI is built with -march=native: \
          AVX-512 where the CPU has it). hora is the hora 0.1.1 crate in the same Wasm engine \
          (`--hora`); it has no byte snapshot, so its cold start is a rebuild.\n";
    s
}
