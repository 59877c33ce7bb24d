//! `just bench-node`: the node over QUIC against the embedded API, in one process on loopback.
//! A node is started in-process (its own Tokio runtime, own temp directory); the same dataset
//! is imported into a local database directory through the embedded API and into the node
//! through the CLI's remote backend; then single-query k-NN throughput and latency over QUIC
//! with 1, 8 and 64 concurrent clients against the same searches through `Database::search`
//! from 1 and 2 threads; then connection setup, full against resumed TLS handshakes. Writes the
//! "Node over QUIC" section of docs/BENCHMARKS.md (between its own markers, keeping the rest).
//!
//! cargo bench -p vektagraf --bench node -- [--dataset DIR] [--secs 5] [--warmup 1]
//!     [--clients 1,8,64] [--threads 1,2] [--pool 4] [--handshakes 200] [--no-write]

// Not every helper the other benches share is used here.
#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::{self, embedded_search, net_search, Ask, Run, COLLECTION, DIM, K};
use common::{arg, list, read_f32};

use anyhow::{bail, Context, Result};
use vektagraf::cli::backend::{Backend, Remote};
use vektagraf::cli::import::{self, ImportFiles, ImportReport, Progress};
use vektagraf::model::{CollectionSpec, Metric, SearchOptions};
use vektagraf::server::Node;
use vektagraf::{Database, DatabaseConfig};
use vektagraf_client::{Client, ClientConfig, Endpoint};

const BATCH: usize = 1000;

/// Over QUIC: a full answer is one row of `K` hits.
impl Ask for Client {
    fn ask(&self, q: &[f32]) -> impl Future<Output = Result<(), String>> + Send {
        let q = q.to_vec();
        async move {
            match self.search(COLLECTION, q, SearchOptions::k(K)).await {
                Ok(hits) if hits.len() == 1 && hits[0].len() == K => Ok(()),
                Ok(hits) => Err(format!(
                    "short answer: {} row(s), first with {} hit(s)",
                    hits.len(),
                    hits.first().map_or(0, Vec::len)
                )),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// Median and p90 (nearest rank) of durations, in ms.
fn median_p90(d: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = d.iter().map(|x| x.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| {
        ms.get(((ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.9))
}

struct Handshakes {
    count: usize,
    full: (f64, f64),
    full_resumed: usize,
    resumed: (f64, f64),
    resumed_resumed: usize,
    full_ping: (f64, f64),
    resumed_ping: (f64, f64),
}

/// `n` full and `n` resumed handshakes, alternating, after one priming (resumable) handshake,
/// on a client of their own without health checks (so no other connection opens meanwhile).
fn handshakes(
    rt: &tokio::runtime::Runtime,
    config: ClientConfig,
    addr: &str,
    n: usize,
) -> Result<Handshakes> {
    rt.block_on(async {
        let client = Client::connect(ClientConfig {
            pool_size: 1,
            health_interval: Duration::ZERO,
            ..config
        })
        .await?;
        client
            .handshake(addr, true)
            .await
            .context("priming handshake")?;
        let (mut full, mut resumed) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            full.push(
                client
                    .handshake(addr, false)
                    .await
                    .context("full handshake")?,
            );
            resumed.push(
                client
                    .handshake(addr, true)
                    .await
                    .context("resumed handshake")?,
            );
        }
        client.close().await;
        for (what, v) in [("full", &full), ("resumed", &resumed)] {
            let mut ms: Vec<f64> = v.iter().map(|h| h.elapsed.as_secs_f64() * 1e3).collect();
            ms.sort_by(f64::total_cmp);
            if ms.is_empty() {
                continue;
            }
            let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
            eprintln!(
                "  {what} handshakes, ms: min {:.3} p25 {:.3} p50 {:.3} p75 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
                at(0.0), at(0.25), at(0.5), at(0.75), at(0.9), at(0.99), at(1.0)
            );
        }
        let elapsed = |v: &[vektagraf_client::Handshake]| {
            median_p90(&v.iter().map(|h| h.elapsed).collect::<Vec<_>>())
        };
        let ping = |v: &[vektagraf_client::Handshake]| {
            median_p90(&v.iter().map(|h| h.ping).collect::<Vec<_>>())
        };
        anyhow::Ok(Handshakes {
            count: n,
            full: elapsed(&full),
            full_resumed: full.iter().filter(|h| h.resumed).count(),
            resumed: elapsed(&resumed),
            resumed_resumed: resumed.iter().filter(|h| h.resumed).count(),
            full_ping: ping(&full),
            resumed_ping: ping(&resumed),
        })
    })
}

/// recall@10 of `rows` (hits per query) against the first 10 of gt.i32's 100 per query.
fn recall(rows: &[Vec<vektagraf::model::Hit>], gt: &[i32], row_of: &HashMap<String, usize>) -> f64 {
    let mut hits = 0usize;
    for (i, r) in rows.iter().enumerate() {
        let truth = &gt[i * 100..i * 100 + K];
        hits += r
            .iter()
            .take(K)
            .filter_map(|h| row_of.get(&h.id))
            .filter(|&&x| i32::try_from(x).is_ok_and(|x| truth.contains(&x)))
            .count();
    }
    hits as f64 / (rows.len() * K) as f64
}

fn spec() -> CollectionSpec {
    let mut spec = CollectionSpec::new(COLLECTION, DIM as u32);
    spec.metric = Metric::Dot;
    spec
}

struct Imported {
    report: ImportReport,
    checkpoint_s: f64,
}

fn import_into(db: &dyn Backend, files: &ImportFiles) -> Result<Imported> {
    db.create_collection(spec())?;
    let report = import::import(db, COLLECTION, files, BATCH, Progress::Quiet)?;
    let t = Instant::now();
    db.checkpoint()?;
    Ok(Imported {
        report,
        checkpoint_s: t.elapsed().as_secs_f64(),
    })
}

fn main() -> Result<()> {
    let total = Instant::now();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dataset = load::dataset(&root);
    let (secs, warm) = load::seconds()?;
    let clients: Vec<usize> = list("--clients", "1,8,64")?;
    let threads: Vec<usize> = list("--threads", "1,2")?;
    let pool: usize = arg("--pool").map_or(Ok(4), |s| s.parse())?;
    let replicas: usize = arg("--replicas").map_or(Ok(2), |s| s.parse())?;
    let n_handshakes: usize = arg("--handshakes").map_or(Ok(200), |s| s.parse())?;
    let (run_for, warmup) = (Duration::from_secs_f64(secs), Duration::from_secs_f64(warm));
    if clients.contains(&0) || threads.contains(&0) || pool == 0 {
        bail!("--clients, --threads and --pool must be at least 1");
    }
    load::log_warnings();

    let start = load::Start::now();

    let files = ImportFiles {
        vectors: dataset.join("base.f32"),
        meta: Some(dataset.join("base.jsonl")),
        edges: Some(dataset.join("edges.tsv")),
    };
    let queries = Arc::new(read_f32(&dataset.join("queries.f32"))?);
    let gt: Vec<i32> = std::fs::read(dataset.join("gt.i32"))?
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let row_of: HashMap<String, usize> = std::fs::read_to_string(dataset.join("base.jsonl"))?
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            let id = v["id"].as_str().context("an id in base.jsonl")?.to_owned();
            Ok((id, i))
        })
        .collect::<Result<_>>()?;

    // The node: its own runtime (2 workers; requests run on its blocking pool) and directory.
    let node_dir = tempfile::tempdir()?;
    let local_dir = tempfile::tempdir()?;
    let node_rt = load::runtime("node")?;
    let mut node_config = load::loopback_node(node_dir.path());
    // One engine instance per shard first (like for like with the embedded import); the node
    // is restarted with `replicas` for a second round of searches.
    let node = node_rt.block_on(Node::start(node_config.clone()))?;
    let addr = node.quic_addr().to_string();
    let (ca_pem, token) = load::credentials(&node)?;
    let config = ClientConfig {
        endpoints: vec![Endpoint::new(addr.clone())],
        ca_pem,
        token,
        pool_size: pool,
        ..ClientConfig::default()
    };
    // The CLI's remote backend: its own client runtime (2 workers), 4 batches in flight.
    let remote = Remote::connect(config.clone())?;

    // 1. Import, back to back: embedded, then over QUIC.
    eprintln!("import into a local directory (embedded API)...");
    let db = Database::open(local_dir.path(), DatabaseConfig::default())?;
    let local = import_into(&db, &files)?;
    eprintln!(
        "  {:.1} s, {:.0} objects/s",
        local.report.seconds, local.report.objects_per_second
    );
    eprintln!("import into the node over QUIC (remote backend)...");
    let far = import_into(&remote, &files)?;
    eprintln!(
        "  {:.1} s, {:.0} objects/s",
        far.report.seconds, far.report.objects_per_second
    );
    let local_stats = db.stats(COLLECTION)?;
    let node_stats = remote
        .stats(Some(COLLECTION.into()))?
        .pop()
        .context("the node's stats")?;
    if local_stats.objects != local.report.objects || node_stats.objects != far.report.objects {
        bail!(
            "object counts differ: local {} (imported {}), node {} (imported {})",
            local_stats.objects,
            local.report.objects,
            node_stats.objects,
            far.report.objects
        );
    }
    // Both answer alike: recall@10 of all queries (one batch request each).
    let opts = SearchOptions::k(K);
    let local_recall = recall(&db.search_batch(COLLECTION, &queries, &opts)?, &gt, &row_of);
    let node_recall = recall(
        &remote.search_batch(COLLECTION, &queries, &opts)?,
        &gt,
        &row_of,
    );

    // 2. Search: embedded, then over QUIC.
    let client = remote.client().clone();
    let mut runs = Vec::new();
    for &t in &threads {
        eprintln!("embedded search, {t} thread(s)...");
        runs.push(embedded_search(
            &db, "embedded", &queries, t, warmup, run_for,
        )?);
    }
    // The same directory reopened with `replicas` engine instances per shard.
    let one_replica_mib = db.stats(COLLECTION)?.engine_memory_bytes as f64 / (1 << 20) as f64;
    db.close()?;
    let reopened = Instant::now();
    let db = Database::open(
        local_dir.path(),
        DatabaseConfig {
            read_replicas: replicas,
            ..DatabaseConfig::default()
        },
    )?;
    let replicas_open_s = reopened.elapsed().as_secs_f64();
    for &t in &threads {
        eprintln!("embedded search with {replicas} replicas, {t} thread(s)...");
        runs.push(embedded_search(
            &db,
            "embedded, replicas",
            &queries,
            t,
            warmup,
            run_for,
        )?);
    }
    for &c in &clients {
        eprintln!("QUIC search, {c} client(s)...");
        runs.push(net_search(
            remote.runtime(),
            "QUIC",
            &client,
            &queries,
            c,
            warmup,
            run_for,
        )?);
    }
    // The node again, on the same address and directory, with read replicas.
    node_rt.block_on(node.shutdown())?;
    node_config.quic_listen = addr.parse()?;
    node_config.database.read_replicas = replicas;
    let node = node_rt.block_on(Node::start(node_config))?;
    remote.runtime().block_on(client.ping())?;
    for &c in &clients {
        eprintln!("QUIC search with {replicas} replicas, {c} client(s)...");
        runs.push(net_search(
            remote.runtime(),
            "QUIC, replicas",
            &client,
            &queries,
            c,
            warmup,
            run_for,
        )?);
    }
    for r in &runs {
        eprintln!(
            "  {} x{}: {} requests, {} errors, {:.0} QPS, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
            r.path, r.concurrency, r.requests, r.errors, r.qps, r.p50_ms, r.p90_ms, r.p99_ms
        );
    }

    // 3. Connection setup.
    eprintln!("handshakes...");
    let hs = handshakes(remote.runtime(), config, &addr, n_handshakes)?;

    // Stop everything.
    remote.runtime().block_on(client.close());
    drop(client);
    Box::new(remote).close()?;
    node_rt.block_on(node.shutdown())?;
    db.close()?;
    let frame = start.finish(total);

    let md = markdown(&Report {
        frame,
        dataset: dataset.display().to_string(),
        local,
        far,
        local_recall,
        node_recall,
        runs,
        replicas,
        one_replica_mib,
        replicas_open_s,
        hs,
        secs,
        warm,
        pool,
    });
    common::publish(&root, "node", &md)
}

struct Report {
    frame: load::Frame,
    dataset: String,
    local: Imported,
    far: Imported,
    local_recall: f64,
    node_recall: f64,
    runs: Vec<Run>,
    /// Engine instances per shard in the node and in the second embedded round.
    replicas: usize,
    /// Engine memory of the collection with one instance per shard.
    one_replica_mib: f64,
    /// Opening the embedded directory with `replicas` instances per shard.
    replicas_open_s: f64,
    hs: Handshakes,
    secs: f64,
    warm: f64,
    pool: usize,
}

fn markdown(r: &Report) -> String {
    let (begin, end) = common::markers("node");
    let mut s = format!(
        "{begin}\n## Node over QUIC (loopback)\n\nWritten by `just bench-node` \
         (`cargo bench -p vektagraf --bench node`); every figure below comes from one run in one \
         process: a node started in-process on 127.0.0.1 (its own Tokio runtime with 2 workers, \
         its own data directory, development TLS certificate, admin token), the client in the \
         same process (the CLI's remote backend: another 2-worker runtime), and an embedded \
         `Database` in a second directory for comparison. Client, node and engine share the \
         machine's cores, so this measures the protocol's cost, not a network.\n\n\
         {}- dataset: {} ({} x {DIM} vectors with base.jsonl properties, {} edges); collection \
         `{COLLECTION}`: dot, HNSW M = 16, ef_construction = 200, ef_search = 64, 1 shard\n\n",
        r.frame.markdown("cargo bench -p vektagraf --bench node"),
        r.dataset,
        r.local.report.objects,
        r.local.report.edges
    );
    let (l, f) = (&r.local, &r.far);
    s += &format!(
        "### Import (vectors + properties + edges, batches of {BATCH})\n\n\
         `import::import` (what `vektagraf import` runs) once with the `Database` and once with \
         the `Remote` backend (QUIC, 4 batches in flight, each with an idempotency key), back to \
         back, embedded first. Time from the start of validation to the last edge batch being \
         durable; the checkpoint after it is shown apart.\n\n\
         | path | objects | edges | seconds | objects/s | checkpoint s |\n\
         | --- | --- | --- | --- | --- | --- |\n\
         | embedded (`Database`) | {} | {} | {:.1} | {:.0} | {:.2} |\n\
         | node over QUIC (`Remote`) | {} | {} | {:.1} | {:.0} | {:.2} |\n\n\
         Remote / local import time: **{:.2}** (objects/s ratio remote / local: {:.2}).\n\n",
        l.report.objects,
        l.report.edges,
        l.report.seconds,
        l.report.objects_per_second,
        l.checkpoint_s,
        f.report.objects,
        f.report.edges,
        f.report.seconds,
        f.report.objects_per_second,
        f.checkpoint_s,
        f.report.seconds / l.report.seconds,
        f.report.objects_per_second / l.report.objects_per_second,
    );
    s += &format!(
        "### Search (k = 10, one query per request)\n\n\
         Each client issues single-query k-NN searches (rows of queries.f32 in turn) one after \
         the other for {} s, after a {} s warm-up. QUIC: tokio tasks sharing one `Client` \
         (pool of {} connections); embedded: `Database::search` on OS threads. Latency \
         percentiles from an HDR histogram (ns, 3 significant digits); QPS = answered requests / \
         wall time. Sanity: recall@10 of the 1,000 queries (one batch request) is {:.4} \
         embedded and {:.4} on the node.\n\n\
         | path | concurrent clients | requests | errors | QPS | p50 ms | p90 ms | p99 ms |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        r.secs, r.warm, r.pool, r.local_recall, r.node_recall
    );
    for x in &r.runs {
        s += &format!(
            "| {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} |\n",
            x.path, x.concurrency, x.requests, x.errors, x.qps, x.p50_ms, x.p90_ms, x.p99_ms
        );
    }
    let find = |path: &str, c: usize| r.runs.iter().find(|x| x.path == path && x.concurrency == c);
    if let (Some(q1), Some(e1)) = (find("QUIC", 1), find("embedded", 1)) {
        s += &format!(
            "\nAt 1 client: QUIC QPS / embedded QPS = **{:.2}**; the median request costs {:.3} ms \
             more over QUIC ({:.3} against {:.3} ms; p99 {:.3} against {:.3} ms).\n",
            q1.qps / e1.qps,
            q1.p50_ms - e1.p50_ms,
            q1.p50_ms,
            e1.p50_ms,
            q1.p99_ms,
            e1.p99_ms
        );
    }
    let quic: Vec<&Run> = r.runs.iter().filter(|x| x.path == "QUIC").collect();
    if !quic.is_empty() {
        for (label, what) in [
            ("QUIC", "one engine instance per shard".to_owned()),
            (
                "QUIC, replicas",
                format!("{} replicas per shard", r.replicas),
            ),
        ] {
            let runs: Vec<&Run> = r.runs.iter().filter(|x| x.path == label).collect();
            let Some(first) = runs.first() else { continue };
            let mut steps = vec![format!(
                "{} client(s) {:.0} QPS",
                first.concurrency, first.qps
            )];
            for w in runs.windows(2) {
                steps.push(format!(
                    "{} clients {:.0} QPS ({:+.0}% over {}, median latency {:.1}x)",
                    w[1].concurrency,
                    w[1].qps,
                    (w[1].qps / w[0].qps - 1.0) * 100.0,
                    w[0].concurrency,
                    w[1].p50_ms / w[0].p50_ms
                ));
            }
            s += &format!(
                "\nHow QUIC throughput grew with clients on this {}-core machine, node with {what} \
                 (measured): {}.",
                r.frame.cores,
                steps.join("; ")
            );
        }
        for (label, what) in [
            ("embedded", "one engine instance per shard".to_owned()),
            (
                "embedded, replicas",
                format!("{} replicas per shard", r.replicas),
            ),
        ] {
            let emb: Vec<&Run> = r.runs.iter().filter(|x| x.path == label).collect();
            if let [e1, .., e2] = emb[..] {
                s += &format!(
                    " Embedded with {what}, {} threads gave {:.0} QPS against {:.0} with {} \
                     ({:.2}x).",
                    e2.concurrency,
                    e2.qps,
                    e1.qps,
                    e1.concurrency,
                    e2.qps / e1.qps
                );
            }
        }
        s += &format!(
            " The collection has one shard; an engine instance runs one call at a time, so \
             concurrent searches of one shard run in parallel only on its read replicas \
             (`engine.read_replicas`; the node's second round ran with {}). Each replica holds a full \
             copy of the shard: {:.0} MiB of engine memory for one, {:.0} MiB for {}; reopening \
             the directory with {} replicas took {:.2} s. The client, the node's runtime and \
             the engine share the same cores.\n",
            r.replicas,
            r.one_replica_mib,
            r.one_replica_mib * r.replicas as f64,
            r.replicas,
            r.replicas,
            r.replicas_open_s
        );
    }
    s += &load::errors_markdown(&r.runs);
    let h = &r.hs;
    s += &format!(
        "\n### Connection setup\n\n`Client::handshake` on a client of its own (no health \
         checks): one priming resumable handshake, then {} full (`resume = false`) and {} \
         resumed (`resume = true`) handshakes, alternating. Time from the first packet to the \
         handshake's completion (QUIC + TLS 1.3); the ping after it on the new connection is \
         shown apart.\n\n\
         | handshake | count | median ms | p90 ms | resumed by TLS | ping median ms | ping p90 ms |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n\
         | full | {} | {:.3} | {:.3} | {} | {:.3} | {:.3} |\n\
         | resumed | {} | {:.3} | {:.3} | {} | {:.3} | {:.3} |\n\n\
         Resumed / full median: {:.2}.\n",
        h.count,
        h.count,
        h.count,
        h.full.0,
        h.full.1,
        h.full_resumed,
        h.full_ping.0,
        h.full_ping.1,
        h.count,
        h.resumed.0,
        h.resumed.1,
        h.resumed_resumed,
        h.resumed_ping.0,
        h.resumed_ping.1,
        h.resumed.0 / h.full.0,
    );
    s += &end;
    s += "\n";
    s
}
