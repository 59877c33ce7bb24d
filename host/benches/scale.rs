//! `just bench-scale`: our engine at a million vectors (seeded synthetic, clustered, 384-d,
//! unit norm, inner product) with 1, 2 and 4 shards, and hnswlib and faiss (bench/anchors.py)
//! on the same vectors in the same run: build time, memory and disk per million vectors, cold
//! start, and recall / QPS with 2 query threads at the same efs, against exact ground truth
//! computed by numpy (not by the engine's distance code) and shared by every system. Writes the
//! "Scale" section of docs/BENCHMARKS.md and docs/benchmarks-scale.json unless `--no-write`.
//!
//! cargo bench -p vektagraf --bench scale -- [--n 1000000] [--shards 1,2,4] [--efs 16,32,64,128]
//!     [--replicas 2] [--min-secs 1] [--anchor-build-threads 1] [--skip-anchors] [--no-write]

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::anchors::Anchors;
use common::{arg, dir_bytes, has, list, markers, rss_mib};

use anyhow::Result;
use rayon::prelude::*;
use serde_json::{json, Value};
use vektagraf::model::{Batch, CollectionSpec, Metric, SearchOptions};
use vektagraf::{Database, DatabaseConfig};

const DIM: usize = 384;
const K: usize = 10;
const CLUSTERS: usize = 1_000;
const QUERIES: usize = 1_000;
/// Queries with exact ground truth (a brute-force pass over every vector each).
const GT_QUERIES: usize = 200;
const BATCH: usize = 1_000;
const QUERY_THREADS: usize = 2;
/// Query rows per `search_batch` call.
const QUERY_BATCH: usize = 250;
const MIB: f64 = (1 << 20) as f64;

/// splitmix64 and Box-Muller: seeded, so every run and machine sees the same vectors.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

fn normalise(v: &mut [f32]) {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= n);
}

/// The generator's fixed parts: cluster centres in a `LATENT`-dimensional space and the random
/// map from it into `DIM` dimensions.
struct Model {
    centres: Vec<f32>,
    map: Vec<f32>,
}

/// Real embeddings have a low intrinsic dimension; isotropic noise in 384-d would make every
/// point nearly equidistant (no index can do well there, and no real data looks like it).
const LATENT: usize = 64;

fn model() -> Model {
    let mut rng = Rng(42);
    Model {
        centres: (0..CLUSTERS * LATENT).map(|_| 2.0 * rng.normal()).collect(),
        map: (0..DIM * LATENT).map(|_| rng.normal()).collect(),
    }
}

/// `n` unit-norm points: latent = a centre (popularity skewed: a few big clusters, many small)
/// plus unit Gaussian noise, mapped to `DIM` dimensions, plus a little isotropic noise.
fn clustered(n: usize, seed: u64, m: &Model) -> Vec<f32> {
    let mut out = vec![0f32; n * DIM];
    out.par_chunks_mut(DIM * 4096)
        .enumerate()
        .for_each(|(block, rows)| {
            let mut rng = Rng(seed ^ (block as u64).wrapping_mul(0xa076_1d64_78bd_642f));
            let mut z = [0f32; LATENT];
            for row in rows.chunks_exact_mut(DIM) {
                let c = (rng.uniform().powi(2) * CLUSTERS as f64) as usize % CLUSTERS;
                for (j, zj) in z.iter_mut().enumerate() {
                    *zj = m.centres[c * LATENT + j] + rng.normal();
                }
                for (d, x) in row.iter_mut().enumerate() {
                    let w = &m.map[d * LATENT..(d + 1) * LATENT];
                    *x = w.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>() + 6.0 * rng.normal();
                }
                normalise(row);
            }
        });
    out
}

/// Exact top-k by inner product for the first `GT_QUERIES` queries: a plain loop (eight f32
/// accumulators), not the engine's distance code. Used only with `--skip-anchors`; otherwise
/// numpy computes it (bench/anchors.py `gt`).
fn ground_truth(base: &[f32], queries: &[f32]) -> Vec<Vec<usize>> {
    let dot = |a: &[f32], b: &[f32]| {
        let mut acc = [0f32; 8];
        for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        acc.iter().map(|&x| f64::from(x)).sum::<f64>()
    };
    queries
        .par_chunks_exact(DIM)
        .take(GT_QUERIES)
        .map(|q| {
            let mut best: Vec<(f64, usize)> = Vec::with_capacity(K + 1);
            for (i, v) in base.chunks_exact(DIM).enumerate() {
                let s = dot(q, v);
                if best.len() < K || s > best[K - 1].0 {
                    let at = best.partition_point(|b| b.0 >= s);
                    best.insert(at, (s, i));
                    best.truncate(K);
                }
            }
            best.into_iter().map(|b| b.1).collect()
        })
        .collect()
}

fn write_f32(path: &std::path::Path, v: &[f32]) -> Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for x in v {
        w.write_all(&x.to_le_bytes())?;
    }
    w.flush()?;
    Ok(())
}

fn config(replicas: usize) -> DatabaseConfig {
    DatabaseConfig {
        read_replicas: replicas,
        ..DatabaseConfig::default()
    }
}

/// Recall@10 and QPS of every query row at `ef`: `QUERY_THREADS` threads, each searching its
/// share of the rows in calls of `QUERY_BATCH` rows, round after round until every row was
/// answered once and `min_secs` have passed.
fn measure(
    db: &Database,
    queries: &[f32],
    gt: &[Vec<usize>],
    ef: u32,
    min_secs: f64,
) -> Result<(f64, f64)> {
    let opts = SearchOptions {
        k: K,
        ef: Some(ef),
        ..Default::default()
    };
    let nq = queries.len() / DIM;
    let started = Instant::now();
    let deadline = started + std::time::Duration::from_secs_f64(min_secs);
    type Part = (usize, Vec<(usize, Vec<usize>)>);
    let parts: Vec<Result<Part>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..QUERY_THREADS)
            .map(|w| {
                let opts = &opts;
                s.spawn(move || -> Result<Part> {
                    let (lo, hi) = (w * nq / QUERY_THREADS, (w + 1) * nq / QUERY_THREADS);
                    let (mut at, mut rows, mut covered) = (lo, 0, false);
                    let mut first = Vec::new();
                    loop {
                        let end = (at + QUERY_BATCH).min(hi);
                        let hits = db.search_batch("scale", &queries[at * DIM..end * DIM], opts)?;
                        if !covered {
                            for (j, row) in hits.into_iter().enumerate() {
                                let ids = row.iter().filter_map(|h| h.id.parse().ok()).collect();
                                first.push((at + j, ids));
                            }
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
    let wall = started.elapsed().as_secs_f64();
    let (mut rows, mut hits) = (0, 0);
    for p in parts {
        let (r, answers) = p?;
        rows += r;
        for (i, ids) in answers {
            if let Some(want) = gt.get(i) {
                hits += ids.iter().filter(|x: &&usize| want.contains(x)).count();
            }
        }
    }
    Ok((hits as f64 / (gt.len() * K) as f64, rows as f64 / wall))
}

struct Knobs {
    efs: Vec<u32>,
    replicas: usize,
    min_secs: f64,
}

fn run_shards(
    shards: u32,
    base: &[f32],
    queries: &[f32],
    gt: &[Vec<usize>],
    k: &Knobs,
) -> Result<Value> {
    let n = base.len() / DIM;
    let dir = tempfile::tempdir()?;
    let before = rss_mib();
    let db = Database::open(dir.path(), config(1))?;
    let mut spec = CollectionSpec::new("scale", DIM as u32);
    spec.metric = Metric::Dot;
    spec.shards = shards;
    db.create_collection(spec)?;
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("{shards} shard(s): build"));
    let t0 = Instant::now();
    for (b, rows) in base.chunks(BATCH * DIM).enumerate() {
        let mut batch = Batch::new();
        for (i, v) in rows.chunks_exact(DIM).enumerate() {
            let id = (b * BATCH + i).to_string();
            batch.upsert("scale", &id, Value::Null, Some(v.to_vec()));
        }
        db.write(batch)?;
        bar.inc((rows.len() / DIM) as u64);
    }
    let build_s = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let stats = db.stats("scale")?;
    let rss_growth = rss_mib() - before;
    // Stopped without a checkpoint (every batch durable, as after a crash): the next open
    // restores the committer's last automatic snapshot and replays what came after it.
    drop(db);
    let t1 = Instant::now();
    let db = Database::open(dir.path(), config(1))?;
    db.search("scale", &queries[..DIM], &SearchOptions::k(K))?;
    let recovery_s = t1.elapsed().as_secs_f64();
    let replayed: u64 = db.startup()[0].1.iter().map(|r| r.replayed).sum();
    let rebuilt: u64 = db.startup()[0].1.iter().map(|r| r.rebuilt).sum();
    eprintln!("  {shards} shard(s): open after a stop without checkpoint {recovery_s:.1} s ({replayed} replayed, {rebuilt} rebuilt)");
    let t1 = Instant::now();
    db.close()?;
    let final_snapshot_s = t1.elapsed().as_secs_f64();
    let disk = dir_bytes(dir.path()) as f64 / MIB;

    let t2 = Instant::now();
    let db = Database::open(dir.path(), config(1))?;
    db.search("scale", &queries[..DIM], &SearchOptions::k(K))?;
    let cold_start_s = t2.elapsed().as_secs_f64();
    let db = if k.replicas > 1 {
        drop(db);
        Database::open(dir.path(), config(k.replicas))?
    } else {
        db
    };

    let mut runs = Vec::new();
    for &ef in &k.efs {
        let (recall, qps) = measure(&db, queries, gt, ef, k.min_secs)?;
        eprintln!("  {shards} shard(s), ef {ef}: recall@10 {recall:.4}, {qps:.0} QPS");
        runs.push(json!({"ef": ef, "recall": recall, "qps": qps}));
    }
    drop(db);
    let per_million = |mib: f64| mib * 1e6 / n as f64;
    let engine = stats.engine_memory_bytes as f64 / MIB;
    eprintln!("  {shards} shard(s): build {build_s:.0} s, engine {engine:.0} MiB");
    Ok(json!({
        "system": "vektagraf-hnsw via Wasm",
        "shards": shards,
        "build_threads": shards,
        "n": n,
        "build_s": build_s,
        "build_vps": n as f64 / build_s,
        "final_snapshot_s": final_snapshot_s,
        "engine_mib_per_million": per_million(engine),
        "rss_growth_mib_per_million": per_million(rss_growth),
        "rss_over_engine": rss_growth / engine,
        "disk_mib_per_million": per_million(disk),
        "cold_start_s": cold_start_s,
        "recovery_s": recovery_s,
        "recovery_replayed": replayed,
        "recovery_rebuilt": rebuilt,
        "query_threads": QUERY_THREADS,
        "runs": runs,
    }))
}

/// hnswlib or faiss in bench/anchors.py: build with `threads` threads, then the same efs with
/// `QUERY_THREADS` query threads (every row in one call, repeated for `min_secs`).
fn run_anchor(a: &mut Anchors, system: &str, threads: u32, n: usize, k: &Knobs) -> Result<Value> {
    eprintln!("{system}: build with {threads} thread(s)...");
    let b = a.call(&format!("build {system} {threads}"))?;
    let per_million = |mib: f64| mib * 1e6 / n as f64;
    let (mut disk, mut cold) = (Value::Null, Value::Null);
    if system == "hnswlib" {
        let s = a.call("save hnswlib")?;
        disk = json!(s["disk_mib"].as_f64().map(per_million));
        cold = s["cold_start_s"].clone();
    }
    let mut runs = Vec::new();
    for &ef in &k.efs {
        let v = a.call(&format!(
            "query {system} {ef} {QUERY_THREADS} {}",
            k.min_secs
        ))?;
        eprintln!(
            "  {system}, ef {ef}: recall@10 {:.4}, {:.0} QPS",
            v["recall"].as_f64().unwrap_or(0.0),
            v["qps"].as_f64().unwrap_or(0.0)
        );
        runs.push(json!({"ef": ef, "recall": v["recall"], "qps": v["qps"]}));
    }
    a.call(&format!("free {system}"))?;
    Ok(json!({
        "system": if system == "faiss" { "faiss-hnsw" } else { system },
        "build_threads": threads,
        "n": n,
        "build_s": b["build_s"],
        "build_vps": b["build_vps"],
        "rss_growth_mib_per_million": b["memory_mib"].as_f64().map(per_million),
        "disk_mib_per_million": disk,
        "cold_start_s": cold,
        "query_threads": QUERY_THREADS,
        "runs": runs,
    }))
}

fn markdown(report: &Value) -> String {
    let (begin, end) = markers("scale");
    let mut s = format!(
        "{}\n## Scale: {} x {DIM} synthetic vectors\n\nWritten by `just bench-scale` \
         (`cargo bench -p vektagraf --bench scale`) on {} ({} cores, {}; load average at \
         start: {}, at the end: {}). Seeded clustered data ({CLUSTERS} centres of uneven \
         popularity in a {LATENT}-d latent space with Gaussian spread, mapped to {DIM}-d by a \
         random matrix, plus isotropic noise; unit norm, inner product); recall@10 against \
         exact top-10 of the first {GT_QUERIES} of {QUERIES} queries ({}), shared by every \
         system; M = 16, ef_construction = 200 for every HNSW. Ours: inserts in durable \
         batches of {BATCH} from one writer (the shards applied in parallel); dropped \
         without a checkpoint and reopened (open after a crash: the committer's last automatic \
         snapshot restored, the objects written after it replayed), closed (checkpoint), \
         reopened (open + first query), then reopened \
         with {} engine instance(s) per shard (`read_replicas`) for the queries. Queries: \
         {QUERY_THREADS} threads, every row answered in batched calls (ours: each thread its \
         share of the rows, {QUERY_BATCH} rows per `search_batch`; hnswlib one `knn_query` \
         over all rows with `num_threads={QUERY_THREADS}`; faiss one `search` with \
         {QUERY_THREADS} OpenMP threads), repeated for at least {} s; QPS = rows / wall \
         time. hnswlib and faiss (bench/anchors.py) build the same vectors in the same run; \
         their memory is the growth of the Python process's resident set, their disk \
         hnswlib's `save_index` file. Engine memory is what `stats` reports.\n\n",
        begin,
        report["n"],
        report["date"].as_str().unwrap_or(""),
        report["cores"],
        report["cpu"].as_str().unwrap_or(""),
        report["loadavg"].as_str().unwrap_or(""),
        report["loadavg_end"].as_str().unwrap_or(""),
        report["ground_truth"].as_str().unwrap_or(""),
        report["replicas"],
        report["min_secs"],
    );
    s += "| system | shards | build threads | build s | vectors/s | engine MiB per 1M | RSS \
          growth MiB per 1M | disk MiB per 1M | open + first query s | open after a crash s \
          (objects replayed) |\n\
          | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    let f = |v: &Value, d: usize| v.as_f64().map_or("-".into(), |x| format!("{x:.d$}"));
    let shards = |c: &Value| c["shards"].as_u64().map_or("-".into(), |x| x.to_string());
    let empty = Vec::new();
    let configs = report["configs"].as_array().unwrap_or(&empty);
    for c in configs {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c["system"].as_str().unwrap_or(""),
            shards(c),
            c["build_threads"],
            f(&c["build_s"], 0),
            f(&c["build_vps"], 0),
            f(&c["engine_mib_per_million"], 0),
            f(&c["rss_growth_mib_per_million"], 0),
            f(&c["disk_mib_per_million"], 0),
            f(&c["cold_start_s"], 2),
            match c["recovery_s"].as_f64() {
                Some(r) => format!("{r:.2} ({})", c["recovery_replayed"]),
                None => "-".into(),
            }
        );
    }
    s += &format!(
        "\n| system | shards | ef | recall@10 | QPS ({QUERY_THREADS} threads) |\n\
         | --- | --- | --- | --- | --- |\n"
    );
    for c in configs {
        for r in c["runs"].as_array().unwrap_or(&empty) {
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                c["system"].as_str().unwrap_or(""),
                shards(c),
                r["ef"],
                f(&r["recall"], 4),
                f(&r["qps"], 0)
            );
        }
    }
    s += "\n";
    s += &end;
    s += "\n";
    s
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let n: usize = arg("--n").map_or(Ok(1_000_000), |s| s.parse())?;
    let shard_counts: Vec<u32> = list("--shards", "1,2,4")?;
    let knobs = Knobs {
        efs: list("--efs", "16,32,64,128")?,
        replicas: arg("--replicas").map_or(Ok(QUERY_THREADS), |s| s.parse())?,
        min_secs: arg("--min-secs").map_or(Ok(1.0), |s| s.parse())?,
    };
    let anchor_threads: Vec<u32> = list("--anchor-build-threads", "1")?;
    let load = common::loadavg();
    let date = common::utc_now();
    let (cpu, cores) = common::machine();
    eprintln!("generating {n} x {DIM} clustered vectors and {QUERIES} queries...");
    let m = model();
    let base = clustered(n, 1, &m);
    let queries = clustered(QUERIES, 2, &m);
    let files = tempfile::tempdir()?;
    let mut anchors = None;
    let (gt, how) = if has("--skip-anchors") {
        eprintln!("exact ground truth for {GT_QUERIES} queries (plain Rust loop)...");
        (
            ground_truth(&base, &queries),
            "a plain Rust loop, not the engine's distance code",
        )
    } else {
        let (b, q) = (
            files.path().join("base.f32"),
            files.path().join("queries.f32"),
        );
        write_f32(&b, &base)?;
        write_f32(&q, &queries)?;
        let mut a = Anchors::start(
            &root,
            &[
                "--base".into(),
                b.display().to_string(),
                "--queries".into(),
                q.display().to_string(),
                "--dim".into(),
                DIM.to_string(),
            ],
        )?;
        eprintln!("exact ground truth for {GT_QUERIES} queries (numpy)...");
        let v = a.call(&format!("gt {GT_QUERIES}"))?;
        let gt: Vec<Vec<usize>> = serde_json::from_value(v["ids"].clone())?;
        anchors = Some(a);
        (gt, "numpy brute force in float64")
    };
    let mut configs = Vec::new();
    for &s in &shard_counts {
        configs.push(run_shards(s, &base, &queries, &gt, &knobs)?);
    }
    let mut versions = Value::Null;
    if let Some(mut a) = anchors {
        for &t in &anchor_threads {
            configs.push(run_anchor(&mut a, "hnswlib", t, n, &knobs)?);
        }
        let t = anchor_threads.first().copied().unwrap_or(1);
        configs.push(run_anchor(&mut a, "faiss", t, n, &knobs)?);
        versions = a.hello["versions"].clone();
    }
    let report = json!({
        "date": date,
        "cpu": cpu,
        "cores": cores,
        "loadavg": load.trim(),
        "loadavg_end": common::loadavg().trim(),
        "command": "cargo bench -p vektagraf --bench scale",
        "n": n, "dim": DIM, "clusters": CLUSTERS,
        "ground_truth": how,
        "replicas": knobs.replicas,
        "min_secs": knobs.min_secs,
        "anchor_versions": versions,
        "configs": configs,
    });
    let md = markdown(&report);
    println!("{md}");
    if has("--no-write") {
        return Ok(());
    }
    std::fs::write(
        root.join("docs/benchmarks-scale.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    // Replace the scale section of BENCHMARKS.md, keeping the rest (`just bench` writes it).
    common::put_section(&root.join("docs/BENCHMARKS.md"), "scale", &md)?;
    Ok(())
}
