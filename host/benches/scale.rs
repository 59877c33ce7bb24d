//! `just bench-scale`: our engine at a million vectors (seeded synthetic, clustered, 384-d,
//! unit norm, inner product) with 1, 2 and 4 shards: build time, memory per million vectors,
//! snapshot size and cold start, and recall / QPS with 2 query threads. Writes the "Scale"
//! section of docs/BENCHMARKS.md and docs/benchmarks-scale.json.
//!
//! cargo bench -p vektagraf --bench scale -- [--n 1000000] [--shards 1,2,4] [--efs 32,64,128]
//!     [--no-write]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::{arg, has, markers, rss_mib};

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

/// Exact top-k by inner product for the first `GT_QUERIES` queries.
fn ground_truth(base: &[f32], queries: &[f32]) -> Vec<Vec<usize>> {
    use vektagraf_engine_core::distance::dot;
    queries
        .par_chunks_exact(DIM)
        .take(GT_QUERIES)
        .map(|q| {
            let mut best: Vec<(f32, usize)> = Vec::with_capacity(K + 1);
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

fn dir_mib(p: &std::path::Path) -> f64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0) as f64
        / (1 << 20) as f64
}

fn run_shards(
    shards: u32,
    base: &[f32],
    queries: &[f32],
    gt: &[Vec<usize>],
    efs: &[u32],
) -> Result<Value> {
    let n = base.len() / DIM;
    let dir = tempfile::tempdir()?;
    let before = rss_mib();
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
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
    let t1 = Instant::now();
    db.close()?;
    let final_snapshot_s = t1.elapsed().as_secs_f64();
    let disk = dir_mib(dir.path());

    let t2 = Instant::now();
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    db.search("scale", &queries[..DIM], &SearchOptions::k(K))?;
    let cold_start_s = t2.elapsed().as_secs_f64();

    let mut runs = Vec::new();
    for &ef in efs {
        let opts = SearchOptions {
            k: K,
            ef: Some(ef),
            filter: None,
            ..Default::default()
        };
        let next = AtomicUsize::new(0);
        let nq = queries.len() / DIM;
        let t = Instant::now();
        let answers: Vec<Vec<(usize, Vec<usize>)>> = (0..QUERY_THREADS)
            .into_par_iter()
            .map(|_| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= nq {
                        return Ok(mine);
                    }
                    let hits = db.search("scale", &queries[i * DIM..(i + 1) * DIM], &opts)?;
                    let ids = hits.iter().filter_map(|h| h.id.parse().ok()).collect();
                    mine.push((i, ids));
                }
            })
            .collect::<Result<_>>()?;
        let qps = nq as f64 / t.elapsed().as_secs_f64();
        let mut hits = 0;
        for (i, ids) in answers.iter().flatten() {
            if let Some(want) = gt.get(*i) {
                hits += ids.iter().filter(|x| want.contains(x)).count();
            }
        }
        let recall = hits as f64 / (gt.len() * K) as f64;
        eprintln!("  {shards} shard(s), ef {ef}: recall@10 {recall:.4}, {qps:.0} QPS");
        runs.push(json!({"ef": ef, "recall": recall, "qps": qps}));
    }
    db.close()?;
    let per_million = |mib: f64| mib * 1e6 / n as f64;
    eprintln!(
        "  {shards} shard(s): build {build_s:.0} s, engine {:.0} MiB",
        stats.engine_memory_bytes as f64 / (1 << 20) as f64
    );
    Ok(json!({
        "shards": shards,
        "n": n,
        "build_s": build_s,
        "build_vps": n as f64 / build_s,
        "final_snapshot_s": final_snapshot_s,
        "engine_mib_per_million": per_million(stats.engine_memory_bytes as f64 / (1 << 20) as f64),
        "rss_growth_mib_per_million": per_million(rss_growth),
        "disk_mib_per_million": per_million(disk),
        "cold_start_s": cold_start_s,
        "query_threads": QUERY_THREADS,
        "runs": runs,
    }))
}

fn markdown(report: &Value) -> String {
    let (begin, end) = markers("scale");
    let mut s =
        format!(
        "{}\n## Scale: {} x {DIM} synthetic vectors\n\nWritten by `just bench-scale` \
         (`cargo bench -p vektagraf --bench scale`) on {} ({} cores, load average at start: \
         {}). Seeded clustered data ({CLUSTERS} centres of uneven popularity in a \
         {LATENT}-d latent space with Gaussian spread, mapped to {DIM}-d by a random matrix, \
         plus isotropic noise; unit norm, inner product); recall@10 against brute force over the first \
         {GT_QUERIES} of {QUERIES} queries; queries from {QUERY_THREADS} threads at once; \
         M = 16, ef_construction = 200; inserts in durable batches of {BATCH} from one \
         writer.\n\n",
        begin, report["n"], report["date"].as_str().unwrap_or(""), report["cores"],
        report["loadavg"].as_str().unwrap_or("")
    );
    s += "| shards | build s | vectors/s | engine MiB per 1M | RSS growth MiB per 1M | disk MiB \
          per 1M | cold start s |\n| --- | --- | --- | --- | --- | --- | --- |\n";
    let f = |v: &Value, d: usize| v.as_f64().map_or("-".into(), |x| format!("{x:.d$}"));
    let empty = Vec::new();
    let configs = report["configs"].as_array().unwrap_or(&empty);
    for c in configs {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            c["shards"],
            f(&c["build_s"], 0),
            f(&c["build_vps"], 0),
            f(&c["engine_mib_per_million"], 0),
            f(&c["rss_growth_mib_per_million"], 0),
            f(&c["disk_mib_per_million"], 0),
            f(&c["cold_start_s"], 2)
        );
    }
    s += "\n| shards | ef | recall@10 | QPS (2 threads) |\n| --- | --- | --- | --- |\n";
    for c in configs {
        for r in c["runs"].as_array().unwrap_or(&empty) {
            s += &format!(
                "| {} | {} | {} | {} |\n",
                c["shards"],
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
    let list = |name: &str, default: &str| -> Result<Vec<u32>> {
        Ok(arg(name)
            .unwrap_or_else(|| default.into())
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?)
    };
    let n: usize = arg("--n").map_or(Ok(1_000_000), |s| s.parse())?;
    let shard_counts = list("--shards", "1,2,4")?;
    let efs = list("--efs", "32,64,128")?;
    let load = common::loadavg();
    eprintln!("generating {n} x {DIM} clustered vectors and {QUERIES} queries...");
    let m = model();
    let base = clustered(n, 1, &m);
    let queries = clustered(QUERIES, 2, &m);
    eprintln!("exact ground truth for {GT_QUERIES} queries...");
    let gt = ground_truth(&base, &queries);
    let mut configs = Vec::new();
    for &s in &shard_counts {
        configs.push(run_shards(s, &base, &queries, &gt, &efs)?);
    }
    let date = common::utc_now();
    let report = json!({
        "date": date,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg": load.trim(),
        "command": "cargo bench -p vektagraf --bench scale",
        "n": n, "dim": DIM, "clusters": CLUSTERS,
        "configs": configs,
    });
    let md = markdown(&report);
    println!("{md}");
    if has("--no-write") {
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::write(
        root.join("docs/benchmarks-scale.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    // Replace the scale section of BENCHMARKS.md, keeping the rest (`just bench` writes it).
    common::put_section(&root.join("docs/BENCHMARKS.md"), "scale", &md)?;
    Ok(())
}
