//! `just bench-http`: the node's HTTP API (Qdrant's REST dialect) against QUIC and the embedded
//! API, in one process on loopback. A node is started in-process (its own Tokio runtime, own
//! temp directory), the dataset is uploaded through the real `qdrant-client` (Python,
//! host/benches/qdrant_upload.py, `upload_collection`), then the same single-query k-NN searches
//! run three ways against that one collection: `Database::search` on the node's own database,
//! `vektagraf_client::Client` over QUIC, and `POST /collections/{c}/points/query` over HTTP/1.1
//! keep-alive connections, with 1 and 8 concurrent clients. Before timing, every query is
//! answered once by each path: recall@10 of each, and the top-10 ids of a handful of queries
//! must agree across the three (the bench fails otherwise). Writes the "HTTP API (Qdrant
//! dialect)" section of docs/BENCHMARKS.md (between its own markers, keeping the rest).
//!
//! cargo bench -p vektagraf --bench http -- [--dataset DIR] [--rows N] [--secs 5] [--warmup 1]
//!     [--clients 1,8] [--batch 256] [--pool 4] [--python PATH] [--no-write]

// Not every helper the other benches share is used here.
#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::{self, embedded_search, net_search, Ask, Run, COLLECTION, DIM, K};
use common::{arg, list, read_f32};

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use vektagraf::model::SearchOptions;
use vektagraf::server::Node;
use vektagraf_client::{Client, ClientConfig, Endpoint};

/// Queries whose top-10 ids must be the same on all three paths.
const HANDFUL: usize = 20;

type Http = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// The REST request body: Qdrant's `QueryRequest` with a plain vector.
#[derive(Serialize)]
struct QueryBody<'a> {
    query: &'a [f32],
    limit: usize,
}

/// The part of Qdrant's `{"result": {"points": [ScoredPoint]}, ...}` read here.
#[derive(Deserialize)]
struct QueryAnswer {
    result: QueryResult,
}

#[derive(Deserialize)]
struct QueryResult {
    points: Vec<ScoredPoint>,
}

#[derive(Deserialize)]
struct ScoredPoint {
    id: u64,
}

/// Everything a REST search needs.
struct Rest {
    http: Http,
    uri: Uri,
    key: String,
}

impl Rest {
    /// One `points/query` request: the ids of the answer (row numbers), and the body sizes.
    async fn query(&self, q: &[f32]) -> Result<(Vec<u64>, usize, usize)> {
        let body = serde_json::to_vec(&QueryBody { query: q, limit: K })?;
        let sent = body.len();
        let req = Request::post(self.uri.clone())
            .header("content-type", "application/json")
            .header("api-key", &self.key)
            .body(Full::new(Bytes::from(body)))?;
        let resp = self.http.request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
        let answer: QueryAnswer = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "an unexpected answer: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )
        })?;
        Ok((
            answer.result.points.into_iter().map(|p| p.id).collect(),
            sent,
            bytes.len(),
        ))
    }
}

/// A network path for the timed searches; a full answer has `K` hits.
#[derive(Clone)]
enum Via {
    Quic(Client),
    Rest(Arc<Rest>),
}

impl Ask for Via {
    async fn ask(&self, q: &[f32]) -> Result<(), String> {
        let got = match self {
            Via::Quic(quic) => quic
                .search(COLLECTION, q.to_vec(), SearchOptions::k(K))
                .await
                .map_err(anyhow::Error::from)
                .map(|hits| hits.first().map_or(0, Vec::len)),
            Via::Rest(rest) => rest.query(q).await.map(|(ids, _, _)| ids.len()),
        };
        match got {
            Ok(n) if n == K => Ok(()),
            Ok(n) => Err(format!("short answer: {n} hit(s)")),
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

/// Exact top-10 rows (inner product; the vectors are normalised) of each query among the first
/// `rows` base rows: the ground truth when only part of the dataset is uploaded.
fn exact_top10(base: &[f32], rows: usize, queries: &[f32]) -> Vec<Vec<u64>> {
    queries
        .chunks_exact(DIM)
        .map(|q| {
            let mut best: Vec<(f32, u64)> = Vec::with_capacity(K + 1);
            for (r, v) in base[..rows * DIM].chunks_exact(DIM).enumerate() {
                let s: f32 = q.iter().zip(v).map(|(a, b)| a * b).sum();
                if best.len() < K || s > best[best.len() - 1].0 {
                    let at = best.partition_point(|&(b, _)| b >= s);
                    best.insert(at, (s, r as u64));
                    best.truncate(K);
                }
            }
            best.into_iter().map(|(_, r)| r).collect()
        })
        .collect()
}

/// recall@10 of `answers` (row numbers per query) against `truth`.
fn recall(answers: &[Vec<u64>], truth: &[Vec<u64>]) -> f64 {
    let hits: usize = answers
        .iter()
        .zip(truth)
        .map(|(a, t)| a.iter().take(K).filter(|x| t.contains(x)).count())
        .sum();
    hits as f64 / (answers.len() * K) as f64
}

fn row_ids(hits: &[vektagraf::model::Hit]) -> Result<Vec<u64>> {
    hits.iter()
        .map(|h| {
            h.id.parse::<u64>()
                .with_context(|| format!("id {:?} is not a row number", h.id))
        })
        .collect()
}

/// The venv interpreter, made when missing (tests/python/requirements.txt, else qdrant-client
/// alone).
fn python(root: &Path) -> Result<PathBuf> {
    if let Some(p) = arg("--python") {
        return Ok(PathBuf::from(p));
    }
    let venv = root.join("target/py/venv");
    let py = venv.join("bin/python");
    let has_client = |py: &Path| {
        Command::new(py)
            .args(["-c", "import qdrant_client, numpy"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if py.exists() && has_client(&py) {
        return Ok(py);
    }
    if !py.exists() {
        eprintln!("creating {}...", venv.display());
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()?
            .success();
        if !ok {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    let pip = venv.join("bin/pip");
    let req = root.join("tests/python/requirements.txt");
    let from_req = req.exists()
        && Command::new(&pip)
            .args(["install", "-q", "-r"])
            .arg(&req)
            .status()?
            .success();
    if !from_req {
        let ok = Command::new(&pip)
            .args(["install", "-q", "qdrant-client==1.20.0"])
            .status()?
            .success();
        if !ok {
            bail!("pip install qdrant-client==1.20.0 failed");
        }
    }
    if !has_client(&py) {
        bail!("{} cannot import qdrant_client", py.display());
    }
    Ok(py)
}

/// What the upload script printed.
#[derive(Deserialize)]
struct Upload {
    points: u64,
    secs: f64,
    batch: usize,
}

/// Runs host/benches/qdrant_upload.py; its stderr goes through, and is kept for the report.
fn upload(
    py: &Path,
    root: &Path,
    url: &str,
    key: &str,
    dataset: &Path,
    rows: usize,
    batch: usize,
) -> Result<(Upload, String)> {
    let out = Command::new(py)
        .arg(root.join("host/benches/qdrant_upload.py"))
        .args(["--url", url, "--api-key", key, "--collection", COLLECTION])
        .arg("--dataset")
        .arg(dataset)
        .args(["--rows", &rows.to_string(), "--batch", &batch.to_string()])
        .output()
        .context("running qdrant_upload.py")?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if !stderr.is_empty() {
        eprintln!("qdrant_upload.py stderr:\n{stderr}");
    }
    if !out.status.success() {
        bail!("qdrant_upload.py failed ({}): {stderr}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("qdrant_upload.py printed no JSON line")?;
    Ok((serde_json::from_str(line)?, stderr))
}

/// Client-side encoding and server-side parsing of the request bodies, as a measure of JSON's
/// share: mean µs to serialise one body, and to parse it back into numbers the way the server
/// does (a `serde_json::Value`, then each element as f64 to f32).
fn json_cost(queries: &[f32]) -> Result<(f64, f64)> {
    let bodies: Vec<Vec<u8>> = queries
        .chunks_exact(DIM)
        .map(|q| serde_json::to_vec(&QueryBody { query: q, limit: K }))
        .collect::<Result<_, _>>()?;
    let n = bodies.len() as f64;
    let t = Instant::now();
    for _ in 0..3 {
        for q in queries.chunks_exact(DIM) {
            std::hint::black_box(serde_json::to_vec(&QueryBody { query: q, limit: K })?);
        }
    }
    let encode_us = t.elapsed().as_secs_f64() * 1e6 / (3.0 * n);
    let t = Instant::now();
    for _ in 0..3 {
        for b in &bodies {
            let v: serde_json::Value = serde_json::from_slice(b)?;
            let q: Vec<f32> = v["query"]
                .as_array()
                .context("a query array")?
                .iter()
                .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                .collect();
            std::hint::black_box(q);
        }
    }
    let decode_us = t.elapsed().as_secs_f64() * 1e6 / (3.0 * n);
    Ok((encode_us, decode_us))
}

fn main() -> Result<()> {
    let total = Instant::now();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    let dataset = load::dataset(&root);
    let (secs, warm) = load::seconds()?;
    let clients: Vec<usize> = list("--clients", "1,8")?;
    let batch: usize = arg("--batch").map_or(Ok(256), |s| s.parse())?;
    let pool: usize = arg("--pool").map_or(Ok(4), |s| s.parse())?;
    let want_rows: usize = arg("--rows").map_or(Ok(0), |s| s.parse())?;
    let (run_for, warmup) = (Duration::from_secs_f64(secs), Duration::from_secs_f64(warm));
    if clients.contains(&0) || pool == 0 || batch == 0 {
        bail!("--clients, --pool and --batch must be at least 1");
    }
    load::log_warnings();

    let start = load::Start::now();
    let py = python(&root)?;

    let base = read_f32(&dataset.join("base.f32"))?;
    let all_rows = base.len() / DIM;
    let rows = if want_rows == 0 {
        all_rows
    } else {
        want_rows.min(all_rows)
    };
    let queries = Arc::new(read_f32(&dataset.join("queries.f32"))?);
    let n_queries = queries.len() / DIM;
    let truth: Vec<Vec<u64>> = if rows == all_rows {
        std::fs::read(dataset.join("gt.i32"))?
            .chunks_exact(4 * 100)
            .map(|r| {
                r.chunks_exact(4)
                    .take(K)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64)
                    .collect()
            })
            .collect()
    } else {
        eprintln!("exact top-10 of the queries among the first {rows} rows...");
        exact_top10(&base, rows, &queries)
    };
    drop(base);
    if truth.len() != n_queries {
        bail!("{} ground-truth rows for {n_queries} queries", truth.len());
    }

    // The node: its own runtime (2 workers; requests run on its blocking pool) and directory.
    let node_dir = tempfile::tempdir()?;
    let node_rt = load::runtime("node")?;
    let node = node_rt.block_on(Node::start(load::loopback_node(node_dir.path())))?;
    let quic_addr = node.quic_addr().to_string();
    let http_url = format!("http://{}", node.http_addr());
    let (ca_pem, token) = load::credentials(&node)?;

    // 1. Upload through qdrant-client.
    eprintln!("upload of {rows} points through qdrant-client (batches of {batch})...");
    let (up, upload_stderr) = upload(&py, &root, &http_url, &token, &dataset, rows, batch)?;
    let db = node.database().clone();
    let stats = db.stats(COLLECTION)?;
    if stats.objects != rows as u64 || up.points != rows as u64 {
        bail!(
            "uploaded {} of {rows} points, the collection holds {}",
            up.points,
            stats.objects
        );
    }
    eprintln!(
        "  {:.1} s, {:.0} points/s",
        up.secs,
        up.points as f64 / up.secs
    );

    // The clients: their own runtime (2 workers), QUIC with a pool of `pool` connections, and
    // hyper's pooled HTTP/1.1 client (keep-alive, TCP_NODELAY as reqwest and Go set it).
    let client_rt = load::runtime("client")?;
    let quic = client_rt.block_on(Client::connect(ClientConfig {
        endpoints: vec![Endpoint::new(quic_addr)],
        ca_pem,
        token: token.clone(),
        pool_size: pool,
        ..ClientConfig::default()
    }))?;
    let rest = {
        let _guard = client_rt.enter();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Arc::new(Rest {
            http: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build(connector),
            uri: format!("{http_url}/collections/{COLLECTION}/points/query").parse()?,
            key: token,
        })
    };

    // 2. Every query once on each path: recall, and the same answers.
    eprintln!("each of the {n_queries} queries once per path...");
    let opts = SearchOptions::k(K);
    let mut embedded_ids = Vec::with_capacity(n_queries);
    let mut quic_ids = Vec::with_capacity(n_queries);
    let mut rest_ids = Vec::with_capacity(n_queries);
    let (mut sent, mut received) = (0usize, 0usize);
    for q in queries.chunks_exact(DIM) {
        embedded_ids.push(row_ids(&db.search(COLLECTION, q, &opts)?)?);
        let hits = client_rt.block_on(quic.search(COLLECTION, q.to_vec(), opts.clone()))?;
        quic_ids.push(row_ids(hits.first().map_or(&[], Vec::as_slice))?);
        let (ids, s, r) = client_rt.block_on(rest.query(q))?;
        rest_ids.push(ids);
        sent += s;
        received += r;
    }
    let same = |a: &[Vec<u64>], b: &[Vec<u64>]| a.iter().zip(b).filter(|(x, y)| x == y).count();
    let same_quic = same(&rest_ids, &quic_ids);
    let same_embedded = same(&rest_ids, &embedded_ids);
    for i in 0..HANDFUL.min(n_queries) {
        if rest_ids[i] != quic_ids[i] || rest_ids[i] != embedded_ids[i] {
            bail!(
                "query {i}: top-10 ids differ: REST {:?}, QUIC {:?}, embedded {:?}",
                rest_ids[i],
                quic_ids[i],
                embedded_ids[i]
            );
        }
    }
    let recalls = [
        recall(&embedded_ids, &truth),
        recall(&quic_ids, &truth),
        recall(&rest_ids, &truth),
    ];
    eprintln!(
        "  recall@10 embedded {:.4}, QUIC {:.4}, REST {:.4}; identical top-10: REST = QUIC {same_quic}, REST = embedded {same_embedded} of {n_queries}",
        recalls[0], recalls[1], recalls[2]
    );
    let (encode_us, decode_us) = json_cost(&queries)?;

    // 3. Timed searches: embedded, QUIC, REST for each number of clients.
    let mut runs = Vec::new();
    for &c in &clients {
        eprintln!("{c} client(s): embedded...");
        runs.push(embedded_search(
            &db, "embedded", &queries, c, warmup, run_for,
        )?);
        for (label, via) in [
            ("QUIC", Via::Quic(quic.clone())),
            ("REST", Via::Rest(rest.clone())),
        ] {
            eprintln!("{c} client(s): {label}...");
            runs.push(net_search(
                &client_rt, label, &via, &queries, c, warmup, run_for,
            )?);
        }
    }
    for r in &runs {
        eprintln!(
            "  {} x{}: {} requests, {} errors, {:.0} QPS, p50 {:.3} ms, p99 {:.3} ms",
            r.path, r.concurrency, r.requests, r.errors, r.qps, r.p50_ms, r.p99_ms
        );
        if let Some(e) = &r.first_error {
            eprintln!("    first error: {e}");
        }
    }

    // Stop everything.
    client_rt.block_on(quic.close());
    drop(quic);
    drop(rest);
    drop(client_rt);
    drop(db);
    node_rt.block_on(node.shutdown())?;
    let frame = start.finish(total);

    let spec = stats.spec;
    let md = markdown(&Report {
        frame,
        dataset: dataset.display().to_string(),
        rows,
        all_rows,
        n_queries,
        hnsw: format!(
            "{:?}, HNSW m = {}, ef_construct = {}, search ef = {} (the collection's default), {} shard(s)",
            spec.metric, spec.m, spec.ef_construction, spec.ef_search, spec.shards
        ),
        command: std::env::args().skip(1).filter(|a| a != "--bench").collect::<Vec<_>>().join(" "),
        up,
        upload_stderr,
        recalls,
        same_quic,
        same_embedded,
        body_bytes: sent as f64 / n_queries as f64,
        answer_bytes: received as f64 / n_queries as f64,
        encode_us,
        decode_us,
        runs,
        secs,
        warm,
        pool,
    });
    common::publish(&root, "http", &md)
}

struct Report {
    frame: load::Frame,
    dataset: String,
    rows: usize,
    all_rows: usize,
    n_queries: usize,
    hnsw: String,
    command: String,
    up: Upload,
    upload_stderr: String,
    recalls: [f64; 3],
    same_quic: usize,
    same_embedded: usize,
    body_bytes: f64,
    answer_bytes: f64,
    encode_us: f64,
    decode_us: f64,
    runs: Vec<Run>,
    secs: f64,
    warm: f64,
    pool: usize,
}

fn markdown(r: &Report) -> String {
    let (begin, end) = common::markers("http");
    let command = if r.command.is_empty() {
        "cargo bench -p vektagraf --bench http".to_owned()
    } else {
        format!("cargo bench -p vektagraf --bench http -- {}", r.command)
    };
    let part = if r.rows == r.all_rows {
        String::new()
    } else {
        format!(
            "; only the first {} of {} rows, so recall is against the exact top-10 among those",
            r.rows, r.all_rows
        )
    };
    let mut s = format!(
        "{begin}\n## HTTP API (Qdrant dialect)\n\nWritten by `just bench-http` \
         (`cargo bench -p vektagraf --bench http`); every figure below comes from one run: a \
         node started in-process on 127.0.0.1 (its own Tokio runtime with 2 workers, its own data \
         directory, admin token), the dataset uploaded into it through the real `qdrant-client` \
         1.20.0 (Python, `host/benches/qdrant_upload.py`), then the same single-query k-NN \
         searches against that one collection three ways: `Database::search` on the node's own \
         database (embedded), `vektagraf_client::Client` over QUIC, and \
         `POST /collections/{COLLECTION}/points/query` over HTTP/1.1 (REST). The clients share a \
         second 2-worker runtime in the same process; client, node and engine share the \
         machine's cores, so this measures the protocols' cost, not a network.\n\n\
         {}- dataset: {} ({} x {DIM} vectors with their base.jsonl objects as payload{part}); \
         collection `{COLLECTION}` created by qdrant-client with `VectorParams(size=384, \
         distance=COSINE)` and Qdrant's default HNSW: {}\n\n",
        r.frame.markdown(&command),
        r.dataset,
        r.rows,
        r.hnsw
    );
    s += &format!(
        "### Upload through qdrant-client\n\n\
         `QdrantClient(url, api_key).upload_collection(vectors=<numpy array>, payload=<dicts>, \
         ids=range(n), batch_size={}, parallel=1, max_retries=0, wait=True)`: the bulk path \
         qdrant-client documents, in one process; each batch is one `PUT \
         /collections/{COLLECTION}/points` with a JSON body, answered once durable. Only the \
         upload is timed (not reading the files or creating the collection).\n\n\
         | points | batch | seconds | points/s |\n| --- | --- | --- | --- |\n\
         | {} | {} | {:.1} | {:.0} |\n\n",
        r.up.batch,
        r.up.points,
        r.up.batch,
        r.up.secs,
        r.up.points as f64 / r.up.secs
    );
    if !r.upload_stderr.is_empty() {
        let first: Vec<&str> = r.upload_stderr.lines().take(3).collect();
        s += &format!(
            "The upload script wrote to stderr: `{}`\n\n",
            first.join(" / ")
        );
    }
    s += &format!(
        "### Search (k = 10, one query per request)\n\n\
         Each client issues single-query k-NN searches (rows of queries.f32 in turn) one after \
         the other for {} s, after a {} s warm-up. Embedded: OS threads calling \
         `Database::search`; QUIC: tokio tasks sharing one `Client` (pool of {} connections); \
         REST: tokio tasks sharing one hyper-util legacy `Client` (pooled HTTP/1.1 keep-alive \
         connections, one per concurrent client, `TCP_NODELAY`), body `{{\"query\": [384 \
         floats], \"limit\": 10}}` with the `api-key` header, the answer parsed for its ids. \
         Latency percentiles from an HDR histogram (ns, 3 significant digits); QPS = answered \
         requests / wall time.\n\n\
         Same work on all three: each of the {} queries answered once per path beforehand gives \
         recall@10 **{:.4}** embedded, **{:.4}** QUIC, **{:.4}** REST; the top-10 ids of REST \
         equal QUIC's for {} and the embedded ones for {} of the {} queries (the first {HANDFUL} \
         must match on all three, or the bench fails).\n\n\
         | clients | path | requests | errors | QPS | p50 ms | p99 ms |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        r.secs,
        r.warm,
        r.pool,
        r.n_queries,
        r.recalls[0],
        r.recalls[1],
        r.recalls[2],
        r.same_quic,
        r.same_embedded,
        r.n_queries
    );
    for x in &r.runs {
        s += &format!(
            "| {} | {} | {} | {} | {:.0} | {:.3} | {:.3} |\n",
            x.concurrency, x.path, x.requests, x.errors, x.qps, x.p50_ms, x.p99_ms
        );
    }
    let find = |path: &str, c: usize| r.runs.iter().find(|x| x.path == path && x.concurrency == c);
    let mut concurrencies: Vec<usize> = r.runs.iter().map(|x| x.concurrency).collect();
    concurrencies.dedup();
    s += "\n| clients | REST / QUIC QPS | REST / QUIC p50 | REST / QUIC p99 | REST / embedded QPS |\n\
          | --- | --- | --- | --- | --- |\n";
    for &c in &concurrencies {
        if let (Some(rest), Some(quic), Some(emb)) =
            (find("REST", c), find("QUIC", c), find("embedded", c))
        {
            s += &format!(
                "| {c} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                rest.qps / quic.qps,
                rest.p50_ms / quic.p50_ms,
                rest.p99_ms / quic.p99_ms,
                rest.qps / emb.qps
            );
        }
    }
    s += &load::errors_markdown(&r.runs);
    // What the figures say, from this run's numbers.
    if let (Some(rest), Some(quic), Some(emb)) =
        (find("REST", 1), find("QUIC", 1), find("embedded", 1))
    {
        let gap = rest.p50_ms - quic.p50_ms;
        let versus = if gap.abs() <= 0.1 * quic.p50_ms {
            format!(
                "REST and QUIC are within {:.0}% of each other ({gap:+.3} ms)",
                gap.abs() / quic.p50_ms * 100.0
            )
        } else if gap > 0.0 {
            format!("REST costs {gap:.3} ms more than QUIC")
        } else {
            format!("REST is {:.3} ms faster than QUIC", -gap)
        };
        let json_ms = (r.encode_us + r.decode_us) / 1e3;
        s += &format!(
            "\nWhat it means: with one client the median REST query took {:.3} ms, QUIC {:.3} ms \
             and the embedded call {:.3} ms: {versus}, and both network paths cost about {:.2} ms \
             more than the engine's own search, the round trip that both share (client runtime, \
             loopback socket, the node's runtime, its blocking pool where the search runs, and \
             back). The two protocols differ in encoding and transport. A REST request body \
             is {:.0} bytes of JSON (384 floats as decimal text) where QUIC sends 1,536 bytes of \
             binary f32, and the answer is {:.0} bytes; serialising one body took {:.1} µs and \
             parsing it back into numbers {:.1} µs here ({:.3} ms together, {:.0}% of the REST \
             median), so on loopback JSON is a small share of a request. QUIC, on the other \
             hand, encrypts every packet (TLS 1.3) and runs its transport in user space, while \
             the HTTP port is plain TCP without TLS.",
            rest.p50_ms,
            quic.p50_ms,
            emb.p50_ms,
            (rest.p50_ms + quic.p50_ms) / 2.0 - emb.p50_ms,
            r.body_bytes,
            r.answer_bytes,
            r.encode_us,
            r.decode_us,
            json_ms,
            json_ms / rest.p50_ms * 100.0
        );
        let many = concurrencies.iter().copied().filter(|&c| c > 1).max();
        if let Some(c) = many {
            if let (Some(rest), Some(quic), Some(emb)) =
                (find("REST", c), find("QUIC", c), find("embedded", c))
            {
                s += &format!(
                    " With {c} clients on {} cores, REST served {:.0} QPS and QUIC {:.0} \
                     ({:.0}% and {:.0}% of the {:.0} QPS of {c} embedded threads): one engine \
                     instance answers one search at a time, and the clients, the node's runtime \
                     and the engine share the same cores, so the protocols' CPU cost comes out \
                     of search throughput.",
                    r.frame.cores,
                    rest.qps,
                    quic.qps,
                    rest.qps / emb.qps * 100.0,
                    quic.qps / emb.qps * 100.0,
                    emb.qps
                );
            }
        }
        s += "\n";
    }
    s += &end;
    s += "\n";
    s
}
