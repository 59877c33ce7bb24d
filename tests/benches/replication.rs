//! `just bench-replication`: active-active replication between nodes started in-process on
//! loopback (`vektagraf_tests::mesh`: a cluster CA, a certificate per node, node-to-node QUIC
//! with mutual TLS, optionally through the fault-injecting UDP proxy). In one run:
//!
//! 1. replication lag from a commit on `a` to its apply on the other nodes, under a paced write
//!    load on `a`, with 2 and with 3 nodes (each node's `Database::watch_log`, watched from a
//!    thread of its own);
//! 2. a partition (every proxy cut) with writes on both sides, and the time from the heal to
//!    equal digests;
//! 3. catch-up after a restart: `b` stopped, entries written on `a`, `b` started again;
//! 4. bootstrap of a new, empty node `c` from the shared dataset loaded on `a`, two ways: by
//!    log replay (`c` in every peer list from the start) and from a state snapshot (`a` and `b`
//!    knowing only each other until their logs are trimmed, then restarted with `c`);
//! 5. write throughput of one writer on a non-replicating node against node `a` of a 3-node
//!    cluster, interleaved, medians compared.
//!
//! Writes the "Replication (active-active, loopback)" section of docs/BENCHMARKS.md between
//! its own markers, keeping the rest of the file. `--only bootstrap` (or a comma-separated
//! list of `lag`, `partition`, `catchup`, `bootstrap`, `throughput`) runs just those phases and
//! replaces just their tables in the section, keeping the others and the description of the
//! run they came from (and noting the rerun); without a section to keep, it writes nothing.
//!
//! cargo bench -p vektagraf-tests --bench replication -- [--secs 10] [--rates 50,200]
//!     [--per-batch 10] [--partition-secs 10] [--partition-rate 50] [--catchup 20000]
//!     [--bootstrap-rows N] [--objects 20000] [--rounds 3] [--only PHASES] [--no-write]
//!
//! The dataset is `../shared/data/debian-pkgs` beside the checkout, or `VEKTAGRAF_DATASET`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use vektagraf::model::{Batch, CollectionSpec, Metric};
use vektagraf::replication::state_sync::{self, SnapshotPart};
use vektagraf::server::Node;
use vektagraf::Database;
use vektagraf_tests::bench::{
    arg, command_line, has, loadavg, machine, markers, median, num, put_section, quantile, sorted,
    utc_now,
};
use vektagraf_tests::mesh::{converged, Mesh};
use vektagraf_tests::proxy::Faults;
use vektagraf_tests::{dataset_dir, load_sample, DIM};

const COMMAND: &str = "cargo bench -p vektagraf-tests --bench replication";
/// This bench's section of docs/BENCHMARKS.md.
const SECTION: &str = "replication";
/// How long any wait may take before the bench gives up (and says so).
const GIVE_UP: Duration = Duration::from_secs(300);
/// Objects per batch of the catch-up and throughput workloads.
const BULK_BATCH: usize = 100;
/// Objects per batch of the bootstrap load.
const LOAD_BATCH: usize = 1000;

// ---------------------------------------------------------------------------------------------
// Command line, machine, the file.

fn list(name: &str, default: &str) -> Result<Vec<f64>> {
    arg(name)
        .unwrap_or_else(|| default.into())
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{name}: expected a comma-separated list of numbers"))
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat (100 ticks/s).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime
    // are fields 14 and 15, the 12th and 13th after it.
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

// ---------------------------------------------------------------------------------------------
// Numbers.

/// One decimal, or "-" for no value.
fn f1(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.1}")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// The dataset and the workloads.

struct Data {
    base: Vec<f32>,
    meta: Vec<(String, Value)>,
}

impl Data {
    fn load() -> Result<Data> {
        let dir = dataset_dir();
        let bytes = std::fs::metadata(dir.join("base.f32"))
            .with_context(|| format!("the dataset at {}", dir.display()))?
            .len() as usize;
        let rows = bytes / (DIM * 4);
        let s = load_sample(rows, 0)?;
        if s.meta.len() != rows || s.base.len() != rows * DIM {
            bail!(
                "base.f32 has {rows} rows but base.jsonl {} lines",
                s.meta.len()
            );
        }
        Ok(Data {
            base: s.base,
            meta: s.meta,
        })
    }

    fn rows(&self) -> usize {
        self.meta.len()
    }

    /// Adds row `n` (wrapping around the dataset; ids stay unique) to `b` under `prefix`.
    fn add(&self, b: &mut Batch, collection: &str, prefix: &str, n: usize) {
        let (row, lap) = (n % self.rows(), n / self.rows());
        let (id, props) = &self.meta[row];
        let id = if lap == 0 {
            format!("{prefix}{id}")
        } else {
            format!("{prefix}{id}#{lap}")
        };
        b.upsert(
            collection,
            &id,
            props.clone(),
            Some(self.base[row * DIM..(row + 1) * DIM].to_vec()),
        );
    }

    /// Rows `first..first + n` as one batch.
    fn batch(&self, collection: &str, prefix: &str, first: usize, n: usize) -> Batch {
        let mut b = Batch::new();
        for i in first..first + n {
            self.add(&mut b, collection, prefix, i);
        }
        b
    }
}

/// The dataset's collection form: inner product, 384-d, default HNSW, one shard.
fn spec(name: &str) -> CollectionSpec {
    let mut s = CollectionSpec::new(name, DIM as u32);
    s.metric = Metric::Dot;
    s
}

/// What a paced writer did.
struct Paced {
    /// Per batch: its log position on the writing node and when `write` returned.
    commits: Vec<(u64, Instant)>,
    /// How long each `write` call took, ms.
    write_ms: Vec<f64>,
    objects: usize,
    elapsed: Duration,
    /// The furthest a batch started behind its schedule, ms.
    max_late_ms: f64,
}

impl Paced {
    fn last_seq(&self) -> u64 {
        self.commits.last().map_or(0, |c| c.0)
    }
    fn achieved(&self) -> f64 {
        self.commits.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `rate` batches a second of `per_batch` objects for `secs`, on a fixed schedule (a batch due
/// while the previous one is still being written starts when it returns). With `contested`,
/// each batch's last object is one of 100 keys both sides of a partition write.
#[allow(clippy::too_many_arguments)]
fn paced_write(
    db: &Database,
    data: &Data,
    collection: &str,
    prefix: &str,
    first_row: usize,
    rate: f64,
    per_batch: usize,
    secs: f64,
    contested: Option<&str>,
) -> Result<Paced> {
    let n = (rate * secs).round() as usize;
    let mut out = Paced {
        commits: Vec::with_capacity(n),
        write_ms: Vec::with_capacity(n),
        objects: 0,
        elapsed: Duration::ZERO,
        max_late_ms: 0.0,
    };
    let start = Instant::now();
    for i in 0..n {
        let own = if contested.is_some() {
            per_batch - 1
        } else {
            per_batch
        };
        let mut b = data.batch(collection, prefix, first_row + i * own, own);
        if let Some(side) = contested {
            b.upsert(
                collection,
                &format!("contested-{}", i % 100),
                json!({"by": side, "batch": i}),
                Some(data.base[(i % 100) * DIM..(i % 100 + 1) * DIM].to_vec()),
            );
        }
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            out.max_late_ms = out.max_late_ms.max(ms(now - due));
        }
        let objects = b.len();
        let t = Instant::now();
        let r = db.write(b)?;
        let done = Instant::now();
        out.commits.push((r.seq, done));
        out.write_ms.push(ms(done - t));
        out.objects += objects;
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

/// `objects` objects in batches of `BULK_BATCH`, one after the other; returns the time taken
/// and the last log position.
fn bulk_write(
    db: &Database,
    data: &Data,
    collection: &str,
    prefix: &str,
    objects: usize,
    batch: usize,
) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let mut last = 0;
    for first in (0..objects).step_by(batch) {
        let n = batch.min(objects - first);
        last = db.write(data.batch(collection, prefix, first, n))?.seq;
    }
    Ok((start.elapsed(), last))
}

// ---------------------------------------------------------------------------------------------
// Nodes.

struct Rig {
    rt: tokio::runtime::Runtime,
}

impl Rig {
    fn start(&self, mesh: &Mesh, name: &str) -> Result<Node> {
        self.rt
            .block_on(mesh.start(name))
            .with_context(|| format!("starting node {name}"))
    }

    fn start_config(&self, mesh: &Mesh, config: edge_config::NodeConfig) -> Result<Node> {
        let name = config
            .replication
            .as_ref()
            .map_or_else(String::new, |r| r.node_id.clone());
        self.rt
            .block_on(mesh.start_config(config))
            .with_context(|| format!("starting node {name}"))
    }

    fn stop(&self, node: Node) -> Result<()> {
        self.rt.block_on(node.shutdown())?;
        Ok(())
    }

    /// Shuts every node down (all of them, even after a failure), then reports the first error.
    fn stop_all(&self, nodes: Vec<Node>) -> Result<()> {
        let mut first = Ok(());
        for n in nodes {
            let r = self.stop(n);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// Waits until `node` reports every one of `peers` connected; returns when.
fn wait_connected(node: &Node, peers: &[&str], within: Duration) -> Result<Instant> {
    let until = Instant::now() + within;
    loop {
        let status = node.replication_status().context("the node replicates")?;
        let up = peers
            .iter()
            .all(|p| status.peers.iter().any(|s| s.id == *p && s.connected));
        if up {
            return Ok(Instant::now());
        }
        if Instant::now() > until {
            bail!(
                "{} not connected to {peers:?} within {within:?}: {status:?}",
                status.node
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `clock` has applied everything in `target`.
fn covers(clock: &BTreeMap<u64, u64>, target: &BTreeMap<u64, u64>) -> bool {
    target
        .iter()
        .all(|(o, s)| clock.get(o).copied().unwrap_or(0) >= *s)
}

/// Waits until `db` has applied everything in `target`; returns when.
fn wait_covers(db: &Database, target: &BTreeMap<u64, u64>, within: Duration) -> Result<Instant> {
    let until = Instant::now() + within;
    loop {
        if covers(&db.applied_clock(), target) {
            return Ok(Instant::now());
        }
        if Instant::now() > until {
            bail!(
                "not caught up within {within:?}: applied {:?}, wanted {target:?}",
                db.applied_clock()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until `db` has applied everything in `target`, printing progress every 5 s; returns
/// when it first applied an entry of `origin` past `from`, and when it had everything.
fn follow(
    db: &Database,
    who: &str,
    origin: u64,
    from: u64,
    target: &BTreeMap<u64, u64>,
    t0: Instant,
) -> Result<(Instant, Instant)> {
    let until = t0 + GIVE_UP;
    let last = target.get(&origin).copied().unwrap_or(0);
    let mut first = None;
    let mut next_report = Instant::now() + Duration::from_secs(5);
    loop {
        let have = db.applied_clock();
        let now = Instant::now();
        let at = have.get(&origin).copied().unwrap_or(0);
        if first.is_none() && at > from {
            first = Some(now);
        }
        if covers(&have, target) {
            return Ok((first.unwrap_or(now), now));
        }
        if now > until {
            bail!("{who} did not catch up within {GIVE_UP:?}: {have:?} of {target:?}");
        }
        if now > next_report {
            eprintln!(
                "    {who}: entry {at} of {last} after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            next_report += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until `name` exists on `db`.
fn wait_collection(db: &Database, name: &str) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    while db.collection_spec(name).is_err() {
        if Instant::now() > until {
            bail!("collection `{name}` never arrived");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Watches `db`'s applied clock for `origin` from a thread of its own (a current-thread Tokio
/// runtime, so it wakes at once on each commit): each time it advances, the new position and
/// the time. Stops once it reaches `target` (set when the writer is done) or after `give_up`.
fn watch(
    db: Arc<Database>,
    origin: u64,
    target: Arc<AtomicU64>,
    give_up: Duration,
) -> std::thread::JoinHandle<Result<Vec<(u64, Instant)>>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let until = Instant::now() + give_up;
        let mut rx = db.watch_log();
        let steps = rt.block_on(async move {
            let mut steps: Vec<(u64, Instant)> = Vec::new();
            let mut last = 0;
            loop {
                let reached = rx.borrow_and_update().0.get(&origin).copied().unwrap_or(0);
                let now = Instant::now();
                if reached > last {
                    steps.push((reached, now));
                    last = reached;
                }
                if last >= target.load(Ordering::SeqCst) || now > until {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
            }
            steps
        });
        Ok(steps)
    })
}

/// Lag of one follower over a run.
#[derive(Clone, Copy)]
struct Lag {
    p50: f64,
    p99: f64,
    max: f64,
    /// Median over the first and the last tenth of the batches: a steady load has them alike;
    /// a load the cluster cannot keep up with has the second grow.
    first_p50: f64,
    last_p50: f64,
    /// Batches applied before `write` had returned on the writer (scheduling noise; lag 0).
    early: usize,
    /// Batches never applied within the wait.
    missing: usize,
}

/// Per commit, when the follower applied it (None: it never did).
fn apply_times(commits: &[(u64, Instant)], steps: &[(u64, Instant)]) -> Vec<Option<Instant>> {
    commits
        .iter()
        .map(|(seq, _)| {
            let i = steps.partition_point(|(reached, _)| reached < seq);
            steps.get(i).map(|s| s.1)
        })
        .collect()
}

fn lag(commits: &[(u64, Instant)], applied: &[Option<Instant>]) -> Lag {
    let mut early = 0;
    let mut missing = 0;
    let per: Vec<f64> = commits
        .iter()
        .zip(applied)
        .filter_map(|((_, c), a)| match a {
            Some(a) if a < c => {
                early += 1;
                Some(0.0)
            }
            Some(a) => Some(ms(*a - *c)),
            None => {
                missing += 1;
                None
            }
        })
        .collect();
    let tenth = (per.len() / 10).max(1).min(per.len());
    let all = sorted(per.clone());
    Lag {
        p50: quantile(&all, 0.5),
        p99: quantile(&all, 0.99),
        max: all.last().copied().unwrap_or(f64::NAN),
        first_p50: median(&per[..tenth]),
        last_p50: median(&per[per.len() - tenth..]),
        early,
        missing,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Lag.

struct LagRun {
    nodes: usize,
    rate: f64,
    per_batch: usize,
    secs: f64,
    batches: usize,
    achieved: f64,
    max_late_ms: f64,
    write_p50: f64,
    write_p99: f64,
    followers: Vec<(String, Lag)>,
    /// Per batch, the last follower's apply.
    all: Lag,
    /// Process CPU over the run / wall time: cores busy (all nodes share the process).
    cores_busy: f64,
}

/// The same paced load on a node without replication: what the writer's own node sustains.
fn baseline_phase(
    rig: &Rig,
    data: &Data,
    rates: &[f64],
    per_batch: usize,
    secs: f64,
) -> Result<Vec<LagRun>> {
    let cluster = rig.rt.block_on(vektagraf_tests::node::Cluster::new())?;
    let node = rig.rt.block_on(cluster.start(cluster.config("single")))?;
    let runs = (|| -> Result<Vec<LagRun>> {
        let db = node.database().clone();
        let mut runs = Vec::new();
        for (k, &rate) in rates.iter().enumerate() {
            let name = format!("lag1_{k}");
            db.create_collection(spec(&name))?;
            eprintln!(
                "  1 node, no replication: {rate} batches/s of {per_batch} objects for {secs} s..."
            );
            let cpu = cpu_seconds();
            let paced = paced_write(&db, data, &name, "", 0, rate, per_batch, secs, None)?;
            let write = sorted(paced.write_ms.clone());
            let none = Lag {
                p50: f64::NAN,
                p99: f64::NAN,
                max: f64::NAN,
                first_p50: f64::NAN,
                last_p50: f64::NAN,
                early: 0,
                missing: 0,
            };
            eprintln!(
                "    {} batches at {:.1}/s, write p50 {:.1} ms",
                paced.commits.len(),
                paced.achieved(),
                quantile(&write, 0.5)
            );
            runs.push(LagRun {
                nodes: 1,
                rate,
                per_batch,
                secs,
                batches: paced.commits.len(),
                achieved: paced.achieved(),
                max_late_ms: paced.max_late_ms,
                write_p50: quantile(&write, 0.5),
                write_p99: quantile(&write, 0.99),
                followers: Vec::new(),
                all: none,
                cores_busy: (cpu_seconds() - cpu) / paced.elapsed.as_secs_f64(),
            });
        }
        Ok(runs)
    })();
    let stopped = rig.stop(node);
    let runs = runs?;
    stopped?;
    Ok(runs)
}

fn lag_phase(
    rig: &Rig,
    data: &Data,
    names: &[&str],
    rates: &[f64],
    per_batch: usize,
    secs: f64,
) -> Result<Vec<LagRun>> {
    let mesh = rig.rt.block_on(Mesh::new(names, None))?;
    let mut nodes = Vec::new();
    let runs = (|| -> Result<Vec<LagRun>> {
        for n in names {
            nodes.push(rig.start(&mesh, n)?);
        }
        for (i, node) in nodes.iter().enumerate() {
            let others: Vec<&str> = names
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| *n)
                .collect();
            wait_connected(node, &others, Duration::from_secs(60))?;
        }
        let mut runs = Vec::new();
        for (k, &rate) in rates.iter().enumerate() {
            let name = format!("lag{}_{k}", names.len());
            let a = nodes[0].database().clone();
            a.create_collection(spec(&name))?;
            for n in &nodes[1..] {
                wait_collection(n.database(), &name)?;
            }
            let origin = a.node_id();
            // The followers have applied everything so far (the collection's creation).
            let before = a.applied_clock();
            for n in &nodes[1..] {
                wait_covers(n.database(), &before, Duration::from_secs(60))?;
            }
            eprintln!(
                "  {} nodes: {rate} batches/s of {per_batch} objects on a for {secs} s...",
                names.len()
            );
            let target = Arc::new(AtomicU64::new(u64::MAX));
            let watchers: Vec<_> = nodes[1..]
                .iter()
                .map(|n| {
                    watch(
                        n.database().clone(),
                        origin,
                        target.clone(),
                        Duration::from_secs_f64(secs) + GIVE_UP,
                    )
                })
                .collect();
            let cpu = cpu_seconds();
            let t = Instant::now();
            let paced = paced_write(&a, data, &name, "", 0, rate, per_batch, secs, None);
            target.store(paced.as_ref().map_or(0, |p| p.last_seq()), Ordering::SeqCst);
            let mut steps = Vec::new();
            for w in watchers {
                steps.push(
                    w.join()
                        .map_err(|_| anyhow::anyhow!("a watch thread panicked"))??,
                );
            }
            let paced = paced?;
            let applied_all = steps
                .iter()
                .map(|s| s.last().map_or(t, |x| x.1))
                .max()
                .unwrap_or(t);
            let cores_busy = (cpu_seconds() - cpu) / (applied_all - t).as_secs_f64();
            let per: Vec<Vec<Option<Instant>>> = steps
                .iter()
                .map(|s| apply_times(&paced.commits, s))
                .collect();
            let last: Vec<Option<Instant>> = (0..paced.commits.len())
                .map(|i| {
                    let mut m: Option<Instant> = None;
                    for p in &per {
                        let x = p[i]?;
                        m = Some(m.map_or(x, |m| m.max(x)));
                    }
                    m
                })
                .collect();
            let followers: Vec<(String, Lag)> = names[1..]
                .iter()
                .zip(&per)
                .map(|(n, p)| (n.to_string(), lag(&paced.commits, p)))
                .collect();
            let write = sorted(paced.write_ms.clone());
            let run = LagRun {
                nodes: names.len(),
                rate,
                per_batch,
                secs,
                batches: paced.commits.len(),
                achieved: paced.achieved(),
                max_late_ms: paced.max_late_ms,
                write_p50: quantile(&write, 0.5),
                write_p99: quantile(&write, 0.99),
                all: lag(&paced.commits, &last),
                followers,
                cores_busy,
            };
            for (f, l) in &run.followers {
                eprintln!(
                    "    lag to {f}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (first tenth p50 {:.1}, last tenth {:.1}); {} batches at {:.1}/s",
                    l.p50, l.p99, l.max, l.first_p50, l.last_p50, run.batches, run.achieved
                );
            }
            runs.push(run);
        }
        Ok(runs)
    })();
    let stopped = rig.stop_all(nodes);
    let runs = runs?;
    stopped?;
    Ok(runs)
}

// ---------------------------------------------------------------------------------------------
// 2. Partition.

struct PartitionRun {
    cut_s: f64,
    rate: f64,
    per_batch: usize,
    /// Per side (a, b): batches, objects, achieved batches/s.
    sides: [(usize, usize, f64); 2],
    /// Whether a reported b disconnected during the cut, and when (s after the cut).
    dropped_at: Option<f64>,
    /// From the heal: both report the other connected again (status refreshes every 100 ms).
    reconnected_s: Option<f64>,
    /// When a node first reported the other disconnected after the heal (s after it), if the
    /// connection had not dropped during the cut.
    dropped_after: Option<f64>,
    /// From the heal: each has applied all of the other's entries.
    clocks_s: f64,
    /// From the heal: digests equal (the first check after the clocks met).
    digest_s: f64,
    digest_ms: f64,
}

fn partition_phase(
    rig: &Rig,
    data: &Data,
    secs: f64,
    rate: f64,
    per_batch: usize,
) -> Result<PartitionRun> {
    let mesh = rig
        .rt
        .block_on(Mesh::new(&["a", "b"], Some(Faults::none())))?;
    let mut nodes = Vec::new();
    let run = (|| -> Result<PartitionRun> {
        nodes.push(rig.start(&mesh, "a")?);
        nodes.push(rig.start(&mesh, "b")?);
        wait_connected(&nodes[0], &["b"], Duration::from_secs(60))?;
        wait_connected(&nodes[1], &["a"], Duration::from_secs(60))?;
        let (a, b) = (nodes[0].database().clone(), nodes[1].database().clone());
        a.create_collection(spec("part"))?;
        wait_collection(&b, "part")?;
        wait_covers(&b, &a.applied_clock(), Duration::from_secs(60))?;

        eprintln!(
            "  cut; a and b each write {rate} batches/s of {per_batch} objects for {secs} s..."
        );
        for p in mesh.proxies.values() {
            p.cut(true);
        }
        let cut = Instant::now();
        let mut dropped_at = None;
        let (pa, pb) = std::thread::scope(|s| {
            let wa = s
                .spawn(|| paced_write(&a, data, "part", "a:", 0, rate, per_batch, secs, Some("a")));
            let wb = s.spawn(|| {
                paced_write(
                    &b,
                    data,
                    "part",
                    "b:",
                    30_000,
                    rate,
                    per_batch,
                    secs,
                    Some("b"),
                )
            });
            while !(wa.is_finished() && wb.is_finished()) {
                if dropped_at.is_none() {
                    let down = nodes[0]
                        .replication_status()
                        .is_some_and(|st| st.peers.iter().any(|p| !p.connected));
                    if down {
                        dropped_at = Some(cut.elapsed().as_secs_f64());
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (wa.join(), wb.join())
        });
        let pa = pa.map_err(|_| anyhow::anyhow!("writer a panicked"))??;
        let pb = pb.map_err(|_| anyhow::anyhow!("writer b panicked"))??;
        for p in mesh.proxies.values() {
            p.cut(false);
        }
        let healed = Instant::now();
        let cut_s = (healed - cut).as_secs_f64();
        eprintln!(
            "  healed after {cut_s:.1} s ({} + {} batches); waiting for convergence...",
            pa.commits.len(),
            pb.commits.len()
        );
        let (ta, tb) = (a.applied_clock(), b.applied_clock());
        let until = healed + GIVE_UP;
        // A drop during the cut, or one after the heal (the idle timeout may fire about when
        // the cut ends), then the first moment both report the other connected again.
        let mut reconnected = None;
        let mut dropped_after = None;
        let up = |n: &Node| {
            n.replication_status()
                .is_some_and(|st| st.peers.iter().all(|p| p.connected))
        };
        let clocks = loop {
            if reconnected.is_none() {
                let both = up(&nodes[0]) && up(&nodes[1]);
                if !both && dropped_at.is_none() && dropped_after.is_none() {
                    dropped_after = Some(healed.elapsed().as_secs_f64());
                }
                if both && (dropped_at.is_some() || dropped_after.is_some()) {
                    reconnected = Some(healed.elapsed().as_secs_f64());
                }
            }
            if covers(&b.applied_clock(), &ta) && covers(&a.applied_clock(), &tb) {
                break Instant::now();
            }
            if Instant::now() > until {
                bail!("no convergence within {GIVE_UP:?} after the heal");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let t = Instant::now();
        let (da, db) = (a.digest("part")?.hex(), b.digest("part")?.hex());
        let digest_ms = ms(t.elapsed());
        let digest = if da == db {
            Instant::now()
        } else {
            eprintln!("  digests differ once the clocks met: {da} / {db}; polling");
            rig.rt.block_on(converged(&[&a, &b], "part", GIVE_UP))?;
            Instant::now()
        };
        if reconnected.is_none() && (dropped_at.is_some() || dropped_after.is_some()) {
            wait_connected(&nodes[0], &["b"], Duration::from_secs(30))?;
            wait_connected(&nodes[1], &["a"], Duration::from_secs(30))?;
            reconnected = Some(healed.elapsed().as_secs_f64());
        }
        let side = |p: &Paced| (p.commits.len(), p.objects, p.achieved());
        let run = PartitionRun {
            cut_s,
            rate,
            per_batch,
            sides: [side(&pa), side(&pb)],
            dropped_at,
            reconnected_s: reconnected,
            dropped_after,
            clocks_s: (clocks - healed).as_secs_f64(),
            digest_s: (digest - healed).as_secs_f64(),
            digest_ms,
        };
        eprintln!(
            "  clocks met {:.2} s after the heal, digests equal at {:.2} s",
            run.clocks_s, run.digest_s
        );
        Ok(run)
    })();
    let stopped = rig.stop_all(nodes);
    let run = run?;
    stopped?;
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// 3. Catch-up after a restart.

struct CatchUp {
    objects: usize,
    entries: u64,
    /// Writing them on a while b was down.
    write_s: f64,
    /// b's `Node::start` (opening its directory, loading its collection).
    start_s: f64,
    /// From the start call until b has applied all of a's entries.
    caught_s: f64,
    /// When b's applied clock first moved past what it had before it stopped.
    first_s: f64,
    digest_equal: bool,
}

fn catchup_phase(rig: &Rig, data: &Data, objects: usize) -> Result<CatchUp> {
    let mesh = rig.rt.block_on(Mesh::new(&["a", "b"], None))?;
    let mut a_node = None;
    let mut b_node = None;
    let run = (|| -> Result<CatchUp> {
        let a = rig.start(&mesh, "a")?;
        let a_db = a.database().clone();
        a_node = Some(a);
        let b = rig.start(&mesh, "b")?;
        wait_connected(&b, &["a"], Duration::from_secs(60))?;
        a_db.create_collection(spec("catchup"))?;
        wait_collection(b.database(), "catchup")?;
        wait_covers(b.database(), &a_db.applied_clock(), Duration::from_secs(60))?;
        rig.stop(b)?;
        let before = a_db
            .applied_clock()
            .get(&a_db.node_id())
            .copied()
            .unwrap_or(0);
        eprintln!("  b stopped; writing {objects} objects in batches of {BULK_BATCH} on a...");
        let (took, last) = bulk_write(&a_db, data, "catchup", "", objects, BULK_BATCH)?;
        let target = a_db.applied_clock();
        eprintln!(
            "  {:.1} s ({:.0} objects/s); starting b...",
            took.as_secs_f64(),
            objects as f64 / took.as_secs_f64()
        );
        let t0 = Instant::now();
        let b = rig.start(&mesh, "b")?;
        let start_s = t0.elapsed().as_secs_f64();
        let b_db = b.database().clone();
        b_node = Some(b);
        let (first, caught) = follow(&b_db, "b", a_db.node_id(), before, &target, t0)?;
        let caught_s = (caught - t0).as_secs_f64();
        let first_s = (first - t0).as_secs_f64();
        let digest_equal = a_db.digest("catchup")?.hex() == b_db.digest("catchup")?.hex();
        eprintln!(
            "  b caught up {caught_s:.2} s after its start call (start {start_s:.2} s); digests equal: {digest_equal}"
        );
        Ok(CatchUp {
            objects,
            entries: last - before,
            write_s: took.as_secs_f64(),
            start_s,
            caught_s,
            first_s,
            digest_equal,
        })
    })();
    let stopped = rig.stop_all(b_node.into_iter().chain(a_node).collect());
    let run = run?;
    stopped?;
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// 4. Bootstrap of a new node.

/// Both ways of bootstrapping `c`, each from the same rows loaded on `a` of a fresh mesh.
struct Bootstrap {
    log: LogBoot,
    snapshot: SnapshotBoot,
}

/// `c` in every peer list from the start: it replays `a`'s whole log.
struct LogBoot {
    rows: usize,
    of_rows: usize,
    entries: u64,
    /// Loading on a (b replicating meanwhile).
    load_s: f64,
    /// Until b had applied the load, from the start of the load.
    b_caught_s: f64,
    c_start_s: f64,
    c_connected_s: f64,
    c_caught_s: f64,
    /// When c's applied clock first moved past the collection's creation.
    c_first_s: f64,
    /// When the digests of all three had been compared (after c caught up).
    c_equal_s: f64,
    digests_equal: bool,
    /// Process CPU from c's start call until it caught up / that time: cores busy.
    cores_busy: f64,
    /// Entries c received from each peer.
    received: Vec<(String, u64)>,
}

/// `a` and `b` knowing only each other, their logs trimmed, then restarted with `c` in their
/// peer lists: `c` merges a state snapshot.
struct SnapshotBoot {
    entries: u64,
    load_s: f64,
    b_caught_s: f64,
    /// `Database::checkpoint` on a, then on b.
    checkpoint_s: f64,
    /// From the checkpoints until both logs were empty (housekeeping trims every 10 s).
    trim_s: f64,
    /// Entries each of a and b trimmed (`log_trimmed`).
    trimmed: [u64; 2],
    /// Stopping a and b and starting them again with c in their peer lists, until they were
    /// connected to each other again.
    restart_s: f64,
    c_start_s: f64,
    c_connected_s: f64,
    /// When the collection existed on c (the snapshot's header merged).
    c_header_s: Option<f64>,
    /// Per peer that sent c more than 1 MiB: when it had (the snapshot's rows arrived whole:
    /// a frame is counted once read and decoded), and the bytes c received from it in all.
    c_rows_s: Vec<(String, f64, u64)>,
    c_caught_s: f64,
    c_equal_s: f64,
    digests_equal: bool,
    /// When c's status first reported the snapshot merged (after the merge's own checkpoint
    /// of c's indexes; the status is refreshed every 100 ms).
    c_installed_s: f64,
    cores_busy: f64,
    snapshots_received: u64,
    /// Snapshots a and b sent.
    snapshots_sent: [u64; 2],
    /// Entries c received from each peer.
    received: Vec<(String, u64)>,
    /// Afterwards, on a alone: a whole export read and encoded as the driver does (one read
    /// transaction, chunks of `budget` bytes), s; its rows, chunks and encoded bytes.
    export_s: f64,
    export_rows: usize,
    export_chunks: usize,
    export_bytes: u64,
    export_budget: usize,
}

/// Loads `rows` of the dataset on `a` (collection `pkgs`, batches of `LOAD_BATCH`); returns
/// the entries written, the load's duration and when `b` had applied all of it (s after the
/// load began).
fn load_pkgs(a: &Database, b: &Database, data: &Data, rows: usize) -> Result<(u64, f64, f64)> {
    a.create_collection(spec("pkgs"))?;
    let before = a.applied_clock().get(&a.node_id()).copied().unwrap_or(0);
    eprintln!("  loading {rows} rows on a in batches of {LOAD_BATCH} (b replicating)...");
    let t = Instant::now();
    let mut last = 0;
    for first in (0..rows).step_by(LOAD_BATCH) {
        let n = LOAD_BATCH.min(rows - first);
        last = a.write(data.batch("pkgs", "", first, n))?.seq;
        if (first / LOAD_BATCH) % 10 == 9 {
            eprintln!("    {} rows, {:.0} s", first + n, t.elapsed().as_secs_f64());
        }
    }
    let load_s = t.elapsed().as_secs_f64();
    let b_caught_s = (wait_covers(b, &a.applied_clock(), GIVE_UP)? - t).as_secs_f64();
    eprintln!(
        "  loaded in {load_s:.1} s ({:.0} objects/s), b had it all at {b_caught_s:.1} s",
        rows as f64 / load_s
    );
    Ok((last - before, load_s, b_caught_s))
}

/// Per peer, the entries `node` received from it (the status is refreshed every 100 ms).
fn entries_received(node: &Node) -> Vec<(String, u64)> {
    node.replication_status()
        .map(|s| {
            s.peers
                .iter()
                .map(|p| (p.id.clone(), p.entries_received))
                .collect()
        })
        .unwrap_or_default()
}

/// Compares the digests of `pkgs` on `dbs`; if they differ, polls until they are equal.
/// Returns whether they were equal at the first comparison, and when they were.
fn digests_equal(rig: &Rig, dbs: &[&Database]) -> Result<(bool, Instant)> {
    let first = dbs[0].digest("pkgs")?.hex();
    for d in &dbs[1..] {
        if d.digest("pkgs")?.hex() != first {
            eprintln!("  digests differ once c had a's clock; polling");
            rig.rt.block_on(converged(dbs, "pkgs", GIVE_UP))?;
            return Ok((false, Instant::now()));
        }
    }
    Ok((true, Instant::now()))
}

fn bootstrap_phase(rig: &Rig, data: &Data, rows: usize) -> Result<Bootstrap> {
    eprintln!("  (from the log: c configured everywhere from the start)");
    let log = log_bootstrap(rig, data, rows)?;
    eprintln!("  (from a state snapshot: a and b trimmed their logs before c was added)");
    let snapshot = snapshot_bootstrap(rig, data, rows)?;
    eprintln!(
        "  snapshot / log replay, objects/s: {:.2}",
        log.c_caught_s / snapshot.c_caught_s
    );
    Ok(Bootstrap { log, snapshot })
}

fn log_bootstrap(rig: &Rig, data: &Data, rows: usize) -> Result<LogBoot> {
    let mesh = rig.rt.block_on(Mesh::new(&["a", "b", "c"], None))?;
    let mut nodes = Vec::new();
    let run = (|| -> Result<LogBoot> {
        nodes.push(rig.start(&mesh, "a")?);
        nodes.push(rig.start(&mesh, "b")?);
        wait_connected(&nodes[0], &["b"], Duration::from_secs(60))?;
        let (a, b) = (nodes[0].database().clone(), nodes[1].database().clone());
        // (The collection's creation is the entry before the load.)
        let (entries, load_s, b_caught_s) = load_pkgs(&a, &b, data, rows)?;
        let before = a.applied_clock().get(&a.node_id()).copied().unwrap_or(0) - entries;
        let target = a.applied_clock();
        eprintln!("  starting c (empty)...");
        let cpu = cpu_seconds();
        let t0 = Instant::now();
        nodes.push(rig.start(&mesh, "c")?);
        let c_start_s = t0.elapsed().as_secs_f64();
        let c = nodes[2].database().clone();
        let c_connected_s = (wait_connected(&nodes[2], &["a"], GIVE_UP)? - t0).as_secs_f64();
        let (first, caught) = follow(&c, "c", a.node_id(), before, &target, t0)?;
        let cores_busy = (cpu_seconds() - cpu) / (caught - t0).as_secs_f64();
        let c_first_s = (first - t0).as_secs_f64();
        let c_caught_s = (caught - t0).as_secs_f64();
        let (digests_equal, equal) = digests_equal(rig, &[&a, &b, &c])?;
        let c_equal_s = (equal - t0).as_secs_f64();
        // Let the status refresh (every 100 ms) before reading what c received from whom.
        std::thread::sleep(Duration::from_millis(300));
        let received = entries_received(&nodes[2]);
        eprintln!(
            "  c bootstrapped from the log in {c_caught_s:.1} s ({:.0} objects/s); digests equal: {digests_equal} (at {c_equal_s:.1} s); received {received:?}",
            rows as f64 / c_caught_s
        );
        Ok(LogBoot {
            rows,
            of_rows: data.rows(),
            entries,
            load_s,
            b_caught_s,
            c_start_s,
            c_connected_s,
            c_caught_s,
            c_first_s,
            c_equal_s,
            digests_equal,
            cores_busy,
            received,
        })
    })();
    let stopped = rig.stop_all(nodes);
    let run = run?;
    stopped?;
    Ok(run)
}

fn snapshot_bootstrap(rig: &Rig, data: &Data, rows: usize) -> Result<SnapshotBoot> {
    const LWW: &str = "last-write-wins";
    let mesh = rig.rt.block_on(Mesh::new(&["a", "b", "c"], None))?;
    let mut nodes = Vec::new();
    let run = (|| -> Result<SnapshotBoot> {
        // a and b do not know c yet.
        for n in ["a", "b"] {
            nodes.push(rig.start_config(&mesh, mesh.config_with_peers(n, LWW, &["a", "b"])?)?);
        }
        wait_connected(&nodes[0], &["b"], Duration::from_secs(60))?;
        let (a, b) = (nodes[0].database().clone(), nodes[1].database().clone());
        let (entries, load_s, b_caught_s) = load_pkgs(&a, &b, data, rows)?;

        let t = Instant::now();
        a.checkpoint()?;
        b.checkpoint()?;
        let checkpoint_s = t.elapsed().as_secs_f64();
        eprintln!("  index snapshots of a and b in {checkpoint_s:.1} s; waiting for both logs to be trimmed...");
        let t = Instant::now();
        loop {
            if a.log_len()? == 0 && b.log_len()? == 0 {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the logs were not trimmed within 120 s: a holds {}, b {} entries",
                    a.log_len()?,
                    b.log_len()?
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let trim_s = t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(300));
        let trimmed_by = |n: &Node| n.replication_status().map_or(0, |s| s.log_trimmed);
        let trimmed = [trimmed_by(&nodes[0]), trimmed_by(&nodes[1])];
        eprintln!("  both logs empty after {trim_s:.1} s (trimmed: a {}, b {}); restarting a and b with c in their peer lists...", trimmed[0], trimmed[1]);

        // The operator adds c: a and b restart knowing it.
        // (Their databases close, releasing their files, once the last handle goes.)
        drop((a, b));
        let t = Instant::now();
        rig.stop_all(std::mem::take(&mut nodes))?;
        for n in ["a", "b"] {
            nodes.push(rig.start_config(&mesh, mesh.config(n, LWW)?)?);
        }
        wait_connected(&nodes[0], &["b"], Duration::from_secs(60))?;
        wait_connected(&nodes[1], &["a"], Duration::from_secs(60))?;
        let restart_s = t.elapsed().as_secs_f64();
        let (a, b) = (nodes[0].database().clone(), nodes[1].database().clone());
        let target = a.applied_clock();
        eprintln!("  a and b up again in {restart_s:.1} s; starting c (empty)...");

        let cpu = cpu_seconds();
        let t0 = Instant::now();
        nodes.push(rig.start_config(&mesh, mesh.config("c", LWW)?)?);
        let c_start_s = t0.elapsed().as_secs_f64();
        let c = nodes[2].database().clone();
        let mut connected = None;
        let mut header = None;
        let mut rows_at: BTreeMap<String, Instant> = BTreeMap::new();
        let mut installed = None;
        let mut next_report = t0 + Duration::from_secs(5);
        let look = |now: Instant,
                    connected: &mut Option<Instant>,
                    header: &mut Option<Instant>,
                    rows_at: &mut BTreeMap<String, Instant>,
                    installed: &mut Option<Instant>| {
            if let Some(st) = nodes[2].replication_status() {
                if connected.is_none() && st.peers.iter().any(|p| p.connected) {
                    *connected = Some(now);
                }
                for p in st.peers.iter().filter(|p| p.bytes_received > 1 << 20) {
                    rows_at.entry(p.id.clone()).or_insert(now);
                }
                if installed.is_none() && st.snapshots_received > 0 {
                    *installed = Some(now);
                }
            }
            if header.is_none() && c.collection_spec("pkgs").is_ok() {
                *header = Some(now);
            }
        };
        let caught = loop {
            let now = Instant::now();
            look(
                now,
                &mut connected,
                &mut header,
                &mut rows_at,
                &mut installed,
            );
            if covers(&c.applied_clock(), &target) {
                break now;
            }
            if now > t0 + GIVE_UP {
                bail!(
                    "c did not catch up within {GIVE_UP:?}: {:?} of {target:?}",
                    c.applied_clock()
                );
            }
            if now > next_report {
                eprintln!(
                    "    c after {:.0} s: connected {}, collection {}, rows from {:?}",
                    t0.elapsed().as_secs_f64(),
                    connected.is_some(),
                    header.is_some(),
                    rows_at.keys().collect::<Vec<_>>()
                );
                next_report += Duration::from_secs(5);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let cores_busy = (cpu_seconds() - cpu) / (caught - t0).as_secs_f64();
        let c_caught_s = (caught - t0).as_secs_f64();
        let (digests_equal, equal) = digests_equal(rig, &[&a, &b, &c])?;
        let c_equal_s = (equal - t0).as_secs_f64();
        // The snapshot's merge ends with a checkpoint of c's indexes, then reports itself.
        let until = Instant::now() + Duration::from_secs(60);
        while installed.is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
            look(
                Instant::now(),
                &mut connected,
                &mut header,
                &mut rows_at,
                &mut installed,
            );
        }
        let status = nodes[2].replication_status().context("c replicates")?;
        let Some(installed) = installed else {
            bail!(
                "c caught up without merging a state snapshot (snapshots_received {}; \
                 entries received {:?}): it took the log",
                status.snapshots_received,
                entries_received(&nodes[2])
            );
        };
        std::thread::sleep(Duration::from_millis(300));
        let status = nodes[2].replication_status().context("c replicates")?;
        let sent = |n: &Node| n.replication_status().map_or(0, |s| s.snapshots_sent);
        let snapshots_sent = [sent(&nodes[0]), sent(&nodes[1])];
        let c_rows_s: Vec<(String, f64, u64)> = rows_at
            .iter()
            .map(|(p, at)| {
                let bytes = status
                    .peers
                    .iter()
                    .find(|s| s.id == *p)
                    .map_or(0, |s| s.bytes_received);
                (p.clone(), (*at - t0).as_secs_f64(), bytes)
            })
            .collect();
        let received = entries_received(&nodes[2]);
        let since = |x: Option<Instant>| x.map(|x| (x - t0).as_secs_f64());
        eprintln!(
            "  c bootstrapped from a snapshot in {c_caught_s:.1} s ({:.0} objects/s); digests equal: {digests_equal} (at {c_equal_s:.1} s); \
             snapshots received {} (sent: a {}, b {}); connected {:.2} s, collection {:?} s, rows {c_rows_s:?}, merged and checkpointed {:.1} s; entries received {received:?}",
            rows as f64 / c_caught_s,
            status.snapshots_received,
            snapshots_sent[0],
            snapshots_sent[1],
            since(connected).unwrap_or(f64::NAN),
            since(header),
            (installed - t0).as_secs_f64(),
        );

        // What the sender's side costs alone: a's whole export, read and encoded the way the
        // driver streams it (chunks of half its frame limit, as in `server::replication`).
        let limit = mesh.cluster.config("a").limits.max_frame_bytes;
        // As the driver cuts snapshot parts (`state_chunk`): half the peer frame limit, at
        // most 4 MiB.
        let budget = ((limit * 2).max(64 << 20) / 2).min(4 << 20) as usize;
        let t = Instant::now();
        let mut export = a.export_state(None)?;
        let mut export_bytes = state_sync::encode(&SnapshotPart::Header(export.header.clone()))
            .map_err(anyhow::Error::msg)?
            .len() as u64;
        let (mut export_rows, mut export_chunks) = (0, 0);
        while let Some(chunk) = export.next_chunk(budget)? {
            export_rows += chunk.len();
            export_chunks += 1;
            export_bytes += state_sync::encode(&SnapshotPart::Rows(chunk))
                .map_err(anyhow::Error::msg)?
                .len() as u64;
        }
        drop(export);
        let export_s = t.elapsed().as_secs_f64();
        eprintln!(
            "  a's export alone: {export_rows} rows in {export_chunks} chunk(s), {:.1} MB encoded, {export_s:.2} s",
            export_bytes as f64 / 1e6
        );

        Ok(SnapshotBoot {
            entries,
            load_s,
            b_caught_s,
            checkpoint_s,
            trim_s,
            trimmed,
            restart_s,
            c_start_s,
            c_connected_s: since(connected).unwrap_or(f64::NAN),
            c_header_s: since(header),
            c_rows_s,
            c_caught_s,
            c_equal_s,
            digests_equal,
            c_installed_s: (installed - t0).as_secs_f64(),
            cores_busy,
            snapshots_received: status.snapshots_received,
            snapshots_sent,
            received,
            export_s,
            export_rows,
            export_chunks,
            export_bytes,
            export_budget: budget,
        })
    })();
    let stopped = rig.stop_all(nodes);
    let run = run?;
    stopped?;
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// 5. Write throughput with and without replication.

struct Throughput {
    objects: usize,
    /// objects/s per round.
    single: Vec<f64>,
    cluster: Vec<f64>,
    /// Per cluster round: from the first write until b and c had applied everything, s.
    replicated_s: Vec<f64>,
}

fn throughput_phase(rig: &Rig, data: &Data, objects: usize, rounds: usize) -> Result<Throughput> {
    let mesh = rig.rt.block_on(Mesh::new(&["a", "b", "c"], None))?;
    let mut nodes = Vec::new();
    let run = (|| -> Result<Throughput> {
        for n in ["a", "b", "c"] {
            nodes.push(rig.start(&mesh, n)?);
        }
        wait_connected(&nodes[0], &["b", "c"], Duration::from_secs(60))?;
        wait_connected(&nodes[1], &["c"], Duration::from_secs(60))?;
        // The same node, without replication, in a directory of its own.
        let single = rig
            .rt
            .block_on(mesh.cluster.start(mesh.cluster.config("single")))?;
        nodes.push(single);
        let (s, a) = (nodes[3].database().clone(), nodes[0].database().clone());
        let mut out = Throughput {
            objects,
            single: Vec::new(),
            cluster: Vec::new(),
            replicated_s: Vec::new(),
        };
        for r in 0..rounds {
            let name = format!("w{r}");
            s.create_collection(spec(&name))?;
            let (took, _) = bulk_write(&s, data, &name, "", objects, BULK_BATCH)?;
            out.single.push(objects as f64 / took.as_secs_f64());
            eprintln!(
                "  round {}: single node {:.0} objects/s",
                r + 1,
                objects as f64 / took.as_secs_f64()
            );

            a.create_collection(spec(&name))?;
            let created = a.applied_clock();
            for n in &nodes[1..3] {
                wait_covers(n.database(), &created, Duration::from_secs(60))?;
            }
            let t = Instant::now();
            let (took, _) = bulk_write(&a, data, &name, "", objects, BULK_BATCH)?;
            out.cluster.push(objects as f64 / took.as_secs_f64());
            let target = a.applied_clock();
            for n in &nodes[1..3] {
                wait_covers(n.database(), &target, GIVE_UP)?;
            }
            out.replicated_s.push(t.elapsed().as_secs_f64());
            eprintln!(
                "  round {}: node a of 3 {:.0} objects/s (on b and c after {:.1} s)",
                r + 1,
                objects as f64 / took.as_secs_f64(),
                t.elapsed().as_secs_f64()
            );
        }
        Ok(out)
    })();
    let stopped = rig.stop_all(nodes);
    let run = run?;
    stopped?;
    Ok(run)
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let began = Instant::now();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let secs: f64 = num("--secs", 10.0)?;
    let rates = list("--rates", "50,200")?;
    let per_batch: usize = num("--per-batch", 10)?;
    let partition_secs: f64 = num("--partition-secs", 10.0)?;
    let partition_rate: f64 = num("--partition-rate", 50.0)?;
    let catchup: usize = num("--catchup", 20_000)?;
    let objects: usize = num("--objects", 20_000)?;
    let rounds: usize = num("--rounds", 3)?;
    let only: Option<Vec<String>> =
        arg("--only").map(|o| o.split(',').map(|p| p.trim().to_owned()).collect());
    if let Some(p) = only
        .iter()
        .flatten()
        .find(|p| !PHASES.iter().any(|(name, _)| name == p))
    {
        bail!(
            "--only: no phase `{p}` (phases: {})",
            PHASES.map(|(name, _)| name).join(", ")
        );
    }
    if per_batch < 2 || rates.iter().any(|r| *r <= 0.0) || partition_rate <= 0.0 || rounds == 0 {
        bail!("--per-batch must be at least 2, rates positive, --rounds at least 1");
    }

    let date = utc_now();
    let load_start = loadavg();
    let (cpu, cores) = machine();
    eprintln!("machine: {cpu} ({cores} cores), load average {load_start}");
    eprintln!("reading the dataset from {}...", dataset_dir().display());
    let data = Data::load()?;
    let bootstrap_rows: usize = num("--bootstrap-rows", data.rows())?.min(data.rows());
    // Nodes on one runtime of 2 workers (their blocking work runs on its blocking pool and on
    // each database's commit thread); writers and watchers on threads of their own.
    let rig = Rig {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nodes")
            .enable_all()
            .build()?,
    };

    let run = |phase: &str| only.as_ref().is_none_or(|o| o.iter().any(|p| p == phase));
    let mut lag = None;
    if run("lag") {
        eprintln!("1. the paced write load on a node without replication...");
        let mut runs = baseline_phase(&rig, &data, &rates, per_batch, secs)?;
        eprintln!("1. replication lag, 2 nodes...");
        runs.extend(lag_phase(
            &rig,
            &data,
            &["a", "b"],
            &rates,
            per_batch,
            secs,
        )?);
        eprintln!("1. replication lag, 3 nodes...");
        runs.extend(lag_phase(
            &rig,
            &data,
            &["a", "b", "c"],
            &rates,
            per_batch,
            secs,
        )?);
        lag = Some(runs);
    }
    let partition = if run("partition") {
        eprintln!("2. partition...");
        Some(partition_phase(
            &rig,
            &data,
            partition_secs,
            partition_rate,
            per_batch,
        )?)
    } else {
        None
    };
    let catch = if run("catchup") {
        eprintln!("3. catch-up after a restart...");
        Some(catchup_phase(&rig, &data, catchup)?)
    } else {
        None
    };
    let boot = if run("bootstrap") {
        eprintln!("4. bootstrap of a new node (from the log, then from a state snapshot)...");
        Some(bootstrap_phase(&rig, &data, bootstrap_rows)?)
    } else {
        None
    };
    let tp = if run("throughput") {
        eprintln!("5. write throughput, single node against a 3-node cluster...");
        Some(throughput_phase(&rig, &data, objects, rounds)?)
    } else {
        None
    };
    drop(rig);

    let report = Report {
        date,
        cpu,
        cores,
        load_start,
        load_end: loadavg(),
        wall: began.elapsed().as_secs_f64(),
        dataset: dataset_dir()
            .canonicalize()
            .unwrap_or_else(|_| dataset_dir())
            .display()
            .to_string(),
        command: command_line(COMMAND),
        lag,
        partition,
        catch,
        boot,
        tp,
    };
    let path = root.join("docs/BENCHMARKS.md");
    let md = match &only {
        None => markdown(&report),
        Some(only) => {
            let old = std::fs::read_to_string(&path).unwrap_or_default();
            match spliced(&old, &report, only) {
                Ok(md) => md,
                Err(why) => {
                    // The tables of this run alone, not written: the section would lose the
                    // others.
                    println!("{}", markdown(&report));
                    bail!("not writing docs/BENCHMARKS.md: {why}");
                }
            }
        }
    };
    println!("{md}");
    if !has("--no-write") {
        put_section(&path, SECTION, &md)?;
        eprintln!("wrote the replication section of docs/BENCHMARKS.md");
    }
    Ok(())
}

struct Report {
    date: String,
    cpu: String,
    cores: usize,
    load_start: String,
    load_end: String,
    wall: f64,
    dataset: String,
    /// The bench's arguments, as run.
    command: String,
    /// The phases run (all of them unless `--only`).
    lag: Option<Vec<LagRun>>,
    partition: Option<PartitionRun>,
    catch: Option<CatchUp>,
    boot: Option<Bootstrap>,
    tp: Option<Throughput>,
}

/// The phases, by their `--only` name and their table's heading.
const PHASES: [(&str, &str); 5] = [
    ("lag", "### Replication lag"),
    ("partition", "### Partition and heal"),
    ("catchup", "### Catch-up after a restart"),
    ("bootstrap", "### Bootstrap of a new node"),
    (
        "throughput",
        "### Write throughput with and without replication",
    ),
];

/// How the bench was run (its arguments, without the `--bench` cargo adds).
/// The tables of the phases `r` ran (each from its heading, trimmed).
fn phase_md(r: &Report, phase: &str) -> Option<String> {
    let md = match phase {
        "lag" => lag_md(r.lag.as_deref()?),
        "partition" => partition_md(r.partition.as_ref()?),
        "catchup" => catchup_md(r.catch.as_ref()?),
        "bootstrap" => bootstrap_md(r.boot.as_ref()?),
        "throughput" => throughput_md(r.tp.as_ref()?),
        _ => return None,
    };
    Some(md.trim().to_owned())
}

fn assemble(header: &str, phases: &[String]) -> String {
    let (_, end) = markers(SECTION);
    format!("{}\n\n{}\n{end}\n", header.trim_end(), phases.join("\n\n"))
}

/// The section of a whole run.
fn markdown(r: &Report) -> String {
    let phases: Vec<String> = PHASES
        .iter()
        .filter_map(|(name, _)| phase_md(r, name))
        .collect();
    assemble(&header_md(r), &phases)
}

/// The section with the tables of phases run alone (`--only`) replacing theirs in the section
/// now in the file (`old`), which keeps its heading, its description of the whole run it came
/// from and the other phases' tables; a line under the heading and one in each rerun table
/// say when and how those were rerun. Fails when `old` has no section to keep.
fn spliced(old: &str, r: &Report, only: &[String]) -> Result<String> {
    let (begin, end) = markers(SECTION);
    let (Some(a), Some(b)) = (old.find(&begin), old.find(&end)) else {
        bail!("the file has no replication section whose other tables could be kept");
    };
    if b < a {
        bail!("the replication section's markers are out of order");
    }
    let section = &old[a..b];
    let starts: Vec<usize> = section
        .match_indices("\n### ")
        .map(|(i, _)| i + 1)
        .collect();
    let Some(&first) = starts.first() else {
        bail!("the replication section has no tables to keep");
    };
    let mut header = section[..first].trim_end().to_owned();
    let mut kept: BTreeMap<&str, String> = BTreeMap::new();
    for (k, &at) in starts.iter().enumerate() {
        let to = starts.get(k + 1).copied().unwrap_or(section.len());
        let sub = section[at..to].trim();
        let title = sub.lines().next().unwrap_or_default();
        kept.insert(title, sub.to_owned());
    }
    let when = format!(
        "{}: {} ({} cores), load average at start: {}, at the end: {}; the rerun took {:.0} s \
         (build not counted); dataset: {}",
        r.date, r.cpu, r.cores, r.load_start, r.load_end, r.wall, r.dataset
    );
    let mut phases = Vec::new();
    for (name, title) in PHASES {
        if !only.iter().any(|o| o == name) {
            if let Some(sub) = kept.get(title) {
                phases.push(sub.clone());
            }
            continue;
        }
        let md = phase_md(r, name).context("a phase that ran has its table")?;
        let (heading, rest) = md.split_once('\n').unwrap_or((&md, ""));
        phases.push(format!(
            "{heading}\n\n_Rerun alone_ (`{}`) on {when}. The other tables are from the run \
             described at the top of this section.\n{rest}",
            r.command
        ));
        // One line per rerun table in the section's heading (the latest).
        let note = format!("- rerun alone since: the tables under \"{}\"", &title[4..]);
        header = header
            .lines()
            .filter(|l| !l.starts_with(&note))
            .collect::<Vec<_>>()
            .join("\n");
        header += &format!(
            "\n{note}, on {} (`{}`; machine and load there)",
            r.date, r.command
        );
    }
    Ok(assemble(&header, &phases))
}

/// The section's heading and what the whole run was (machine, command, load).
fn header_md(r: &Report) -> String {
    let (begin, _) = markers(SECTION);
    format!(
        "{begin}\n## Replication (active-active, loopback)\n\n\
         Written by `just bench-replication` (`{COMMAND}`); every figure below comes from one \
         run in one process: replicating nodes started in-process on 127.0.0.1 \
         (`vektagraf_tests::mesh`: a cluster CA, a certificate per node, node-to-node QUIC with \
         mutual TLS, window 4096 entries, 256 entries per message), all on one Tokio runtime \
         with 2 workers, each with its own data directory and commit thread; the writers and \
         the watchers of each node's applied clock (`Database::watch_log`) run on threads of \
         their own. All nodes share the machine's cores, so a follower's apply competes with \
         the leader's writes for CPU: this measures the protocol and the apply path on one \
         machine, not a network.\n\n\
         - date: {}\n- machine: {} ({} cores), load average at start: {}\n\
         - command: `{COMMAND}`; the run took {:.0} s (build not counted); load average at \
         the end: {}\n\
         - dataset: {} (base.f32 vectors, 384-d, with their base.jsonl properties); every \
         collection: dot, HNSW M = 16, ef_construction = 200, 1 shard, last-write-wins\n\n",
        r.date, r.cpu, r.cores, r.load_start, r.wall, r.load_end, r.dataset
    )
}

fn lag_md(lag: &[LagRun]) -> String {
    let mut s = String::new();
    s += "### Replication lag\n\n\
          A writer thread on node `a` commits batches on a fixed schedule (`Database::write`, \
          each batch durable when it returns); a thread per other node wakes on every change of \
          that node's applied clock. Lag of a batch = the first time the follower's applied \
          clock covers its log position minus the time `write` returned on `a`. The first and \
          last tenth show whether the lag held steady or grew during the run. The rows with 1 \
          node are the same load on a node without replication (what the writer's own node \
          sustains). Cores busy: the process's CPU time (user + system, every node) over the \
          run, from the first write until the last follower had everything.\n\n\
          | nodes | load on a (target) | batches | achieved batches/s | write p50 / p99 ms | \
          follower | lag p50 ms | lag p99 ms | lag max ms | p50 first / last tenth ms | \
          process CPU, cores busy |\n\
          | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for x in lag {
        let mut rows: Vec<(String, Lag)> = x.followers.clone();
        if x.followers.len() > 1 || x.followers.is_empty() {
            let label = if x.followers.is_empty() {
                "- (no replication)"
            } else {
                "all (the last of them)"
            };
            rows.push((label.into(), x.all));
        }
        for (f, l) in rows {
            s += &format!(
                "| {} | {} batches/s x {} objects, {} s | {} | {:.1} | {:.1} / {:.1} | {f} | \
                 {} | {} | {} | {} / {} | {:.2} |\n",
                x.nodes,
                x.rate,
                x.per_batch,
                x.secs,
                x.batches,
                x.achieved,
                x.write_p50,
                x.write_p99,
                f1(l.p50),
                f1(l.p99),
                f1(l.max),
                f1(l.first_p50),
                f1(l.last_p50),
                x.cores_busy
            );
        }
    }
    let notes: Vec<String> = lag
        .iter()
        .flat_map(|x| {
            let mut v = Vec::new();
            if x.achieved < 0.95 * x.rate {
                let setup = if x.nodes == 1 {
                    "on the node without replication".to_owned()
                } else {
                    format!("with {} nodes", x.nodes)
                };
                v.push(format!(
                    "at {} batches/s {setup} the writer reached only {:.1} (up to {:.0} ms \
                     behind its schedule, so the run took {:.0} s)",
                    x.rate,
                    x.achieved,
                    x.max_late_ms,
                    x.batches as f64 / x.achieved
                ));
            }
            for (f, l) in &x.followers {
                if l.missing > 0 {
                    v.push(format!(
                        "{} of the batches never reached {f} ({} nodes)",
                        l.missing, x.nodes
                    ));
                }
                if l.early > 0 {
                    v.push(format!(
                        "{} batch(es) showed on {f} before `write` had returned on a (counted as 0)",
                        l.early
                    ));
                }
            }
            v
        })
        .collect();
    if !notes.is_empty() {
        s += &format!("\nNotes: {}.\n", notes.join("; "));
    }
    for two in lag.iter().filter(|x| x.nodes == 2) {
        let Some(three) = lag.iter().find(|x| x.nodes == 3 && x.rate == two.rate) else {
            continue;
        };
        s += &format!(
            "\nAt {} batches/s, 3 nodes / 2 nodes: lag p50 **{:.2}x** ({:.1} against {:.1} ms), \
             p99 {:.2}x ({:.1} against {:.1} ms; 3 nodes: to the last of b and c).\n",
            two.rate,
            three.all.p50 / two.all.p50,
            three.all.p50,
            two.all.p50,
            three.all.p99 / two.all.p99,
            three.all.p99,
            two.all.p99
        );
    }
    s
}

fn partition_md(p: &PartitionRun) -> String {
    format!(
        "\n### Partition and heal\n\n\
         Two nodes, each dialling the other through the UDP proxy; every proxy cut \
         (`cut(true)`: all datagrams dropped, both ways). During the cut both `a` and `b` write \
         {} batches/s of {} objects (own keys, plus in each batch one of 100 keys both sides \
         write, so the heal also resolves last-write-wins conflicts); then the proxies heal. \
         The QUIC idle timeout between peers is 10 s.\n\n\
         | cut s | written on a: batches / objects (batches/s) | written on b | connection dropped | \
         reconnected after heal s | clocks met after heal s | digests equal after heal s |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n\
         | {:.1} | {} / {} ({:.1}) | {} / {} ({:.1}) | {} | {} | {:.2} | **{:.2}** |\n\n\
         \"Clocks met\": each node's applied clock covers the other's log; \"digests equal\": the \
         two `Database::digest`s of the collection compared right after (computing both took \
         {:.0} ms). Connection state is read from `Node::replication_status` (refreshed every \
         100 ms).\n",
        p.rate,
        p.per_batch,
        p.cut_s,
        p.sides[0].0,
        p.sides[0].1,
        p.sides[0].2,
        p.sides[1].0,
        p.sides[1].1,
        p.sides[1].2,
        match (p.dropped_at, p.dropped_after) {
            (Some(t), _) => format!("{t:.1} s into the cut"),
            (None, Some(t)) => format!("{t:.2} s after the heal"),
            (None, None) => "no".into(),
        },
        match (p.dropped_at.or(p.dropped_after), p.reconnected_s) {
            (None, _) => "- (never dropped)".into(),
            (Some(_), None) => "-".into(),
            (Some(_), Some(t)) => format!("{t:.2}"),
        },
        p.clocks_s,
        p.digest_s,
        p.digest_ms
    )
}

fn catchup_md(c: &CatchUp) -> String {
    format!(
        "\n### Catch-up after a restart\n\n\
         Two nodes; `b` shut down (`Node::shutdown`), {} objects written on `a` in batches of \
         {BULK_BATCH} ({} log entries; {:.1} s, {:.0} objects/s on `a` alone), then `b` started \
         again on its directory. Time from the start call until `b`'s applied clock covers \
         `a`'s (`b`'s start itself took {:.2} s; its applied clock first moved at {:.2} s); \
         digests equal afterwards: {}.\n\n\
         | entries | objects | catch-up s (from the start call) | entries/s | objects/s | \
         catch-up s after `b`'s start returned |\n\
         | --- | --- | --- | --- | --- | --- |\n\
         | {} | {} | {:.2} | **{:.0}** | **{:.0}** | {:.2} |\n",
        c.objects,
        c.entries,
        c.write_s,
        c.objects as f64 / c.write_s,
        c.start_s,
        c.first_s,
        c.digest_equal,
        c.entries,
        c.objects,
        c.caught_s,
        c.entries as f64 / c.caught_s,
        c.objects as f64 / c.caught_s,
        c.caught_s - c.start_s,
    )
}

fn bootstrap_md(x: &Bootstrap) -> String {
    let (l, n) = (&x.log, &x.snapshot);
    let rows = if l.rows < l.of_rows {
        format!("the first {} of the dataset's {} rows", l.rows, l.of_rows)
    } else {
        format!("all {} rows of the dataset", l.rows)
    };
    let per_peer = |v: &[(String, u64)]| {
        v.iter()
            .map(|(p, n)| format!("{p}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let s_opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} s"));
    let snap_bytes: u64 = n.c_rows_s.iter().map(|r| r.2).sum();
    let mb = |b: u64| b as f64 / 1e6;
    let rows_at = n.c_rows_s.iter().map(|r| r.1).reduce(f64::min);
    let arrived = if n.c_rows_s.is_empty() {
        "-".to_owned()
    } else {
        n.c_rows_s
            .iter()
            .map(|(p, at, b)| format!("{at:.2} s from {p} ({:.1} MB)", mb(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let log_entries: u64 = l.received.iter().map(|r| r.1).sum();
    let snap_entries: u64 = n.received.iter().map(|r| r.1).sum();
    let mut s = format!(
        "\n### Bootstrap of a new node\n\n\
         A node `c` with an empty directory joins two running nodes, `a` and `b`, holding \
         {rows} (loaded on `a` in batches of {LOAD_BATCH}: {} log entries), in two ways, each \
         on a mesh of its own, one after the other in the same run. Bootstrap time: from \
         `c`'s start call until its applied clock covers `a`'s; then the digests of all three \
         are compared.\n\n\
         - **From the log**: `c` is in `a`'s and `b`'s peer lists from the start, so their \
         logs are kept whole and `c` replays every entry. The load took {:.1} s ({:.0} \
         objects/s; `b` replicating meanwhile and done {:.1} s after the load began). `c`'s \
         start call took {:.2} s; first peer connection at {:.2} s; its applied clock first \
         moved past the collection's creation at {:.1} s. Entries `c` received, per peer: {}.\n\
         - **From a state snapshot**: `a` and `b` start knowing only each other; the same \
         load ({} log entries, {:.1} s; `b` done at {:.1} s); `Database::checkpoint` on both ({:.1} s); both \
         logs empty {:.1} s later (trimmed by the replicator's housekeeping, every 10 s: `a` \
         {} entries, `b` {}); `a` and `b` restarted with `c` in their peer lists ({:.1} s \
         until connected again), then `c` started. `c`'s start call took {:.2} s; first peer \
         connection at {:.2} s; the snapshot's header merged (the collection exists on `c`) \
         at {}; its rows arrived whole (a frame counts once read and decoded) at {arrived}; \
         `c`'s applied clock covered `a`'s at {:.1} s; the merge ended with a checkpoint of \
         `c`'s indexes and was reported at {:.1} s. Snapshots `c` received: **{}** (sent: \
         `a` {}, `b` {}); log entries it received, per peer: {}.\n\n\
         | bootstrap from | objects | what `c` received | bootstrap s | objects/s | \
         of which after the first connection s | digests equal | digests compared at s | \
         process CPU, cores busy |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n\
         | log replay | {} | {log_entries} log entries | **{:.1}** | **{:.0}** | {:.1} | {} | \
         {:.1} | {:.2} |\n\
         | state snapshot | {} | {} snapshot(s), {:.1} MB; {snap_entries} log entries | \
         **{:.1}** | **{:.0}** | {:.1} | {} | {:.1} | {:.2} |\n\n\
         Snapshot / log replay, objects/s: **{:.2}x** ({:.1} against {:.1} s; after the first \
         connection: {:.2}x, {:.1} against {:.1} s).\n",
        l.entries,
        l.load_s,
        l.rows as f64 / l.load_s,
        l.b_caught_s,
        l.c_start_s,
        l.c_connected_s,
        l.c_first_s,
        per_peer(&l.received),
        n.entries,
        n.load_s,
        n.b_caught_s,
        n.checkpoint_s,
        n.trim_s,
        n.trimmed[0],
        n.trimmed[1],
        n.restart_s,
        n.c_start_s,
        n.c_connected_s,
        s_opt(n.c_header_s),
        n.c_caught_s,
        n.c_installed_s,
        n.snapshots_received,
        n.snapshots_sent[0],
        n.snapshots_sent[1],
        per_peer(&n.received),
        l.rows,
        l.c_caught_s,
        l.rows as f64 / l.c_caught_s,
        l.c_caught_s - l.c_connected_s,
        l.digests_equal,
        l.c_equal_s,
        l.cores_busy,
        l.rows,
        n.snapshots_received,
        mb(snap_bytes),
        n.c_caught_s,
        l.rows as f64 / n.c_caught_s,
        n.c_caught_s - n.c_connected_s,
        n.digests_equal,
        n.c_equal_s,
        n.cores_busy,
        l.c_caught_s / n.c_caught_s,
        n.c_caught_s,
        l.c_caught_s,
        (l.c_caught_s - l.c_connected_s) / (n.c_caught_s - n.c_connected_s),
        n.c_caught_s - n.c_connected_s,
        l.c_caught_s - l.c_connected_s,
    );
    // Where the snapshot's time went, from c's start call.
    if let (Some(h), Some(r)) = (n.c_header_s, rows_at) {
        s += &format!(
            "\nWhere the snapshot bootstrap's {:.1} s went: start and first connection {:.2} s; \
             until the header was merged {:.2} s (handshakes, the sender's decision, opening \
             the export; the status is refreshed every 100 ms); until the rows arrived {:.2} \
             s: reading the rows, encoding, sending and decoding (reading and encoding the same export on `a` alone, afterwards, took \
             {:.2} s: {} rows in {} chunk(s) of at most {:.0} MB each, {:.1} MB); merging \
             them (every version through `materialise` as the remote write that made it, \
             HNSW inserts included) until the clock covered `a`'s {:.2} s; then the merge's \
             checkpoint of `c`'s indexes (not counted in the bootstrap time) {:.2} s.\n",
            n.c_caught_s,
            n.c_connected_s,
            (h - n.c_connected_s).max(0.0),
            r - h,
            n.export_s,
            n.export_rows,
            n.export_chunks,
            n.export_budget as f64 / 1e6,
            mb(n.export_bytes),
            n.c_caught_s - r,
            n.c_installed_s - n.c_caught_s,
        );
        if n.export_chunks == 1 {
            s.pop();
            s += " The whole state fit in one chunk: one frame, merged as one job (one storage \
                  transaction, one engine batch of every object), so nothing of the merge \
                  overlapped the transfer.\n";
        }
    }
    s
}

fn throughput_md(t: &Throughput) -> String {
    let (ms_, mc) = (median(&t.single), median(&t.cluster));
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "\n### Write throughput with and without replication\n\n\
         One writer, {} objects in batches of {BULK_BATCH} (each `write` durable before the \
         next), into a fresh collection per round: on a node without replication and on node \
         `a` of a running 3-node cluster (whose `b` and `c` apply the entries meanwhile, on the \
         same cores), interleaved single, cluster, single, cluster, ...; after each cluster \
         round the bench waits for `b` and `c` to have everything before going on.\n\n\
         | setup | rounds | objects/s per round | median objects/s |\n\
         | --- | --- | --- | --- |\n\
         | single node, no replication | {} | {} | {:.0} |\n\
         | node a of 3 (replicating to b and c) | {} | {} | {:.0} |\n\n\
         Cluster / single median: **{:.2}**. From a cluster round's first write until `b` and \
         `c` had applied all of it: {} s (median {:.1} s, i.e. {:.0} objects/s replicated to \
         both).\n",
        t.objects,
        t.single.len(),
        list(&t.single),
        ms_,
        t.cluster.len(),
        list(&t.cluster),
        mc,
        mc / ms_,
        t.replicated_s
            .iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        median(&t.replicated_s),
        t.objects as f64 / median(&t.replicated_s),
    )
}
