//! What the node and http benches share: the dataset's collection, an in-process node on
//! loopback, and single-query k-NN searches from many clients at once (embedded on OS threads,
//! over the network on tokio tasks) measured as QPS and latency percentiles.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edge_config::NodeConfig;
use hdrhistogram::Histogram;
use vektagraf::model::SearchOptions;
use vektagraf::server::Node;
use vektagraf::Database;

use super::arg;

/// Dimensions of the dataset's vectors.
pub const DIM: usize = 384;
/// Neighbours asked for per query.
pub const K: usize = 10;
/// The collection the dataset goes into.
pub const COLLECTION: &str = "pkgs";

/// `--dataset`, else the shared debian-pkgs dataset next to the repository at `root`.
pub fn dataset(root: &Path) -> PathBuf {
    let dataset = arg("--dataset")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/data/debian-pkgs"));
    dataset.canonicalize().unwrap_or(dataset)
}

/// `--secs` (default 5) and `--warmup` (default 1): how long each measurement and the warm-up
/// before it run, in seconds.
pub fn seconds() -> Result<(f64, f64)> {
    let secs: f64 = arg("--secs").map_or(Ok(5.0), |s| s.parse())?;
    let warm: f64 = arg("--warmup").map_or(Ok(1.0), |s| s.parse())?;
    Ok((secs, warm))
}

/// Node warnings and errors go to stderr (RUST_LOG overrides).
pub fn log_warnings() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// When a run started, on what machine, and how loaded the machine was then.
pub struct Start {
    date: String,
    cpu: String,
    cores: usize,
    load: String,
}

impl Start {
    pub fn now() -> Self {
        let date = super::utc_now();
        let load = super::loadavg();
        let (cpu, cores) = super::machine();
        Self {
            date,
            cpu,
            cores,
            load: load.trim().to_owned(),
        }
    }

    /// The run is over; it began at `began`.
    pub fn finish(self, began: Instant) -> Frame {
        let wall = began.elapsed().as_secs_f64();
        let load_end = super::loadavg();
        Frame {
            date: self.date,
            cpu: self.cpu,
            cores: self.cores,
            load: self.load,
            wall,
            load_end: load_end.trim().to_owned(),
        }
    }
}

/// When a run started, on what machine, how long it took, and the machine's load averages at
/// its start and end.
pub struct Frame {
    date: String,
    cpu: String,
    pub cores: usize,
    load: String,
    wall: f64,
    load_end: String,
}

impl Frame {
    /// The report's date, machine and command lines.
    pub fn markdown(&self, command: &str) -> String {
        format!(
            "- date: {}\n- machine: {} ({} cores), load average at start: {}\n\
             - command: `{command}`; the run took {:.0} s (build not counted); load average at \
             the end: {}\n",
            self.date, self.cpu, self.cores, self.load, self.wall, self.load_end
        )
    }
}

/// A multi-thread Tokio runtime with 2 workers named `name`.
pub fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// A node in `dir`, listening for QUIC and HTTP on 127.0.0.1 (ports the system picks).
pub fn loopback_node(dir: &Path) -> NodeConfig {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    NodeConfig {
        data_dir: dir.to_owned(),
        quic_listen: loopback,
        http_listen: loopback,
        ..NodeConfig::default()
    }
}

/// The development CA (PEM) of a node started in a fresh directory, and its admin token.
pub fn credentials(node: &Node) -> Result<(Vec<u8>, String)> {
    let ca_pem = std::fs::read(node.ca_file().context("the node has a development CA")?)?;
    let token = node
        .new_admin_token()
        .context("a fresh node directory gets an admin token")?
        .0
        .to_owned();
    Ok((ca_pem, token))
}

/// Latencies in nanoseconds, 3 significant digits, up to a minute.
fn histogram() -> Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).context("making a histogram")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    h.saturating_record(ns.clamp(1, 60_000_000_000));
}

/// One measured search configuration.
pub struct Run {
    pub path: &'static str,
    pub concurrency: usize,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub qps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// The "Errors: ..." line of a report, with the first error of each run that had some (empty
/// when none had).
pub fn errors_markdown(runs: &[Run]) -> String {
    let errors: Vec<String> = runs
        .iter()
        .filter_map(|x| {
            x.first_error.as_ref().map(|e| {
                format!(
                    "{} x{}: {} error(s), first: {e}",
                    x.path, x.concurrency, x.errors
                )
            })
        })
        .collect();
    if errors.is_empty() {
        String::new()
    } else {
        format!("\nErrors: {}.\n", errors.join("; "))
    }
}

/// What the workers of one measurement add up to.
struct Tally {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Result<Self> {
        Ok(Self {
            hist: histogram()?,
            errors: 0,
            first_error: None,
        })
    }

    fn fail(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }

    fn add(&mut self, other: Tally) -> Result<()> {
        self.hist.add(&other.hist).context("merging histograms")?;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    fn run(self, path: &'static str, concurrency: usize, seconds: f64) -> Run {
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1e6;
        Run {
            path,
            concurrency,
            requests: self.hist.len(),
            errors: self.errors,
            qps: self.hist.len() as f64 / seconds,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            first_error: self.first_error,
        }
    }
}

/// One way to ask a node for the `K` nearest neighbours of a query (each client has a clone).
pub trait Ask: Clone + Send + Sync + 'static {
    /// Asks for `q`'s neighbours: `Ok` for a full answer, else why not. The latency is the
    /// time the returned future takes; what `ask` does before returning it is not timed.
    fn ask(&self, q: &[f32]) -> impl Future<Output = Result<(), String>> + Send;
}

/// `workers` clients (tokio tasks, each with a clone of `asker`) each issue one single-query
/// k-NN after the other, walking the query rows from their own offset, for `run_for`.
async fn net_round<A: Ask>(
    asker: &A,
    queries: &Arc<Vec<f32>>,
    workers: usize,
    run_for: Duration,
) -> Result<(Tally, f64)> {
    let rows = queries.len() / DIM;
    let started = Instant::now();
    let stop = started + run_for;
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let (asker, queries) = (asker.clone(), queries.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            let mut row = w * rows / workers;
            while Instant::now() < stop {
                let asked = asker.ask(&queries[row * DIM..(row + 1) * DIM]);
                row = (row + 1) % rows;
                let t = Instant::now();
                match asked.await {
                    Ok(()) => record(&mut tally.hist, t.elapsed()),
                    Err(why) => tally.fail(why),
                }
            }
            anyhow::Ok(tally)
        }));
    }
    let mut total = Tally::new()?;
    for t in tasks {
        total.add(t.await.context("a bench client task failed")??)?;
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// A warm-up round, then the measured one, of `workers` clients asking through `asker` on `rt`.
pub fn net_search<A: Ask>(
    rt: &tokio::runtime::Runtime,
    label: &'static str,
    asker: &A,
    queries: &Arc<Vec<f32>>,
    workers: usize,
    warmup: Duration,
    run_for: Duration,
) -> Result<Run> {
    rt.block_on(async {
        net_round(asker, queries, workers, warmup).await?;
        let (tally, secs) = net_round(asker, queries, workers, run_for).await?;
        Ok(tally.run(label, workers, secs))
    })
}

/// The same loop through the embedded API, on `threads` OS threads.
fn embedded_round(
    db: &Database,
    queries: &[f32],
    threads: usize,
    run_for: Duration,
) -> Result<(Tally, f64)> {
    let rows = queries.len() / DIM;
    let started = Instant::now();
    let stop = started + run_for;
    let opts = SearchOptions::k(K);
    let tallies: Vec<Result<Tally>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let opts = &opts;
                s.spawn(move || {
                    let mut tally = Tally::new()?;
                    let mut row = w * rows / threads;
                    while Instant::now() < stop {
                        let q = &queries[row * DIM..(row + 1) * DIM];
                        row = (row + 1) % rows;
                        let t = Instant::now();
                        match db.search(COLLECTION, q, opts) {
                            Ok(hits) if hits.len() == K => record(&mut tally.hist, t.elapsed()),
                            Ok(hits) => tally.fail(format!("short answer: {} hit(s)", hits.len())),
                            Err(e) => tally.fail(e.to_string()),
                        }
                    }
                    Ok(tally)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a search thread panicked")))
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut total = Tally::new()?;
    for t in tallies {
        total.add(t?)?;
    }
    Ok((total, secs))
}

/// A warm-up round, then the measured one, of `threads` threads calling `db.search`.
pub fn embedded_search(
    db: &Database,
    label: &'static str,
    queries: &[f32],
    threads: usize,
    warmup: Duration,
    run_for: Duration,
) -> Result<Run> {
    embedded_round(db, queries, threads, warmup)?;
    let (tally, secs) = embedded_round(db, queries, threads, run_for)?;
    Ok(tally.run(label, threads, secs))
}
