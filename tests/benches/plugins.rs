//! `just bench-plugins`: what running user code next to the data costs, in one run:
//!
//! 1. the overhead of an empty plugin call (`echo`, empty input: a fresh instance, the call,
//!    the answer), and instantiation alone;
//! 2. a k-NN search through the `knn` plugin against the same search through the built-in
//!    path, on a sample of the shared dataset, one thread, interleaved rounds, best of each;
//! 3. what fuel metering costs: the `knn` plugin in a sandbox that meters fuel against one
//!    that does not (the node always meters; this only prices it);
//! 4. upload-to-ready on a three-node cluster: from the upload on one node until the plugin
//!    answers on all three.
//!
//! Writes the "Plugins" section of docs/BENCHMARKS.md between its markers.
//!
//! cargo bench -p vektagraf-tests --bench plugins -- [--rows 20000] [--queries 500]
//!     [--rounds 3] [--calls 2000] [--uploads 5] [--no-write]

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use vektagraf::model::{Metric, SearchOptions};
use vektagraf::plugins::sandbox::{HandlerCall, Sandbox};
use vektagraf::plugins::Grants;
use vektagraf::{Database, DatabaseConfig};
use vektagraf_tests::bench::{
    command_line, has, loadavg, machine, median, num, put_section, utc_now,
};
use vektagraf_tests::mesh::Mesh;
use vektagraf_tests::plugins::bytes;
use vektagraf_tests::{load_into, load_sample, temp_db, DIM};

const COMMAND: &str = "cargo bench -p vektagraf-tests --bench plugins";
const SECTION: &str = "plugins";
const K: usize = 10;

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Median of `n` timings of `f`, in microseconds.
fn time_each(n: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let mut t = Vec::with_capacity(n);
    for i in 0..n {
        let s = Instant::now();
        f(i)?;
        t.push(micros(s.elapsed()));
    }
    Ok(median(&t))
}

/// Queries per second of `f` over every query row, one thread.
fn qps(queries: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let s = Instant::now();
    for i in 0..queries {
        f(i)?;
    }
    Ok(queries as f64 / s.elapsed().as_secs_f64())
}

struct Knn {
    builtin: f64,
    plugin: f64,
    unmetered: f64,
    agree: f64,
}

fn main() -> Result<()> {
    let rows: usize = num("--rows", 20_000)?;
    let queries: usize = num("--queries", 500)?;
    let rounds: usize = num("--rounds", 3)?;
    let calls: usize = num("--calls", 2000)?;
    let uploads: usize = num("--uploads", 5)?;
    let (cpu, cores) = machine();
    let date = utc_now();
    let load_start = loadavg();
    let began = Instant::now();

    eprintln!("loading {rows} rows of the shared dataset...");
    let sample = load_sample(rows, queries)?;
    let (_dir, db) = temp_db(DatabaseConfig::default())?;
    load_into(&db, "pkgs", &sample, 1)?;
    anyhow::ensure!(db.collection_spec("pkgs")?.metric == Metric::Dot);
    db.plugin_upload("echo", bytes("echo")?, Grants::default())?;
    db.plugin_upload("knn", bytes("knn")?, Grants::default())?;
    let q = |i: usize| &sample.queries[i * DIM..(i + 1) * DIM];
    let inputs: Vec<Vec<u8>> = (0..queries)
        .map(|i| {
            json!({"collection": "pkgs", "vector": q(i), "k": K})
                .to_string()
                .into_bytes()
        })
        .collect();

    eprintln!("1. empty calls...");
    db.plugin_call("echo", b"", None)?;
    let empty_call = time_each(calls, |_| {
        db.plugin_call("echo", b"", None)?;
        Ok(())
    })?;
    let echo = Sandbox::new(DatabaseConfig::default().plugins, None)?;
    let echo_compiled = echo.compile(&bytes("echo")?)?;
    let instantiate = time_each(calls, |_| {
        echo.instantiate_only(&echo_compiled)?;
        Ok(())
    })?;

    eprintln!("2./3. k-NN, built-in against the plugin, metered and not...");
    let unmetered = Sandbox::without_fuel(DatabaseConfig::default().plugins, None)?;
    let knn = unmetered.compile(&bytes("knn")?)?;
    let handle = db.handle().context("the database is open")?;
    let mut best = Knn {
        builtin: 0.0,
        plugin: 0.0,
        unmetered: 0.0,
        agree: 0.0,
    };
    for round in 0..rounds {
        eprintln!("   round {}/{rounds}", round + 1);
        let b = qps(queries, |i| {
            db.search("pkgs", q(i), &SearchOptions::k(K))?;
            Ok(())
        })?;
        let p = qps(queries, |i| {
            db.plugin_call("knn", &inputs[i], None)?;
            Ok(())
        })?;
        let u = qps(queries, |i| {
            let call = HandlerCall {
                name: "knn".into(),
                db: handle.clone(),
                grants: Grants::default(),
                deadline: None,
            };
            unmetered.handle(&knn, &call, &inputs[i])?;
            Ok(())
        })?;
        best.builtin = best.builtin.max(b);
        best.plugin = best.plugin.max(p);
        best.unmetered = best.unmetered.max(u);
    }
    // The plugin's answers are the built-in ones.
    let mut same = 0;
    for (i, input) in inputs.iter().enumerate() {
        let builtin: Vec<String> = db
            .search("pkgs", q(i), &SearchOptions::k(K))?
            .into_iter()
            .map(|h| h.id)
            .collect();
        let out: serde_json::Value = serde_json::from_slice(&db.plugin_call("knn", input, None)?)?;
        let via: Vec<String> = out
            .as_array()
            .context("knn answers a list")?
            .iter()
            .filter_map(|h| h["id"].as_str().map(String::from))
            .collect();
        same += usize::from(via == builtin);
    }
    best.agree = same as f64 / queries as f64;
    drop(handle);
    db.close()?;

    eprintln!("4. upload to ready on three nodes...");
    let ready = upload_to_ready(uploads)?;

    let md = markdown(&Report {
        date,
        cpu,
        cores,
        load_start,
        load_end: loadavg(),
        wall: began.elapsed().as_secs_f64(),
        rows,
        queries,
        rounds,
        calls,
        empty_call,
        instantiate,
        knn: best,
        ready,
    });
    println!("{md}");
    if !has("--no-write") {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/BENCHMARKS.md");
        put_section(&path, SECTION, &md)?;
        eprintln!("wrote the plugins section of docs/BENCHMARKS.md");
    }
    Ok(())
}

/// Each upload (a new plugin each time) on `a`, until it answers on `a`, `b` and `c`.
fn upload_to_ready(uploads: usize) -> Result<Vec<f64>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mesh = Mesh::new(&["a", "b", "c"], None).await?;
        let nodes = [
            mesh.start("a").await?,
            mesh.start("b").await?,
            mesh.start("c").await?,
        ];
        let dbs: Vec<&Database> = nodes.iter().map(|n| n.database().as_ref()).collect();
        let wasm = bytes("knn")?;
        let mut times = Vec::new();
        for u in 0..uploads {
            let name = format!("knn-{u}");
            let started = Instant::now();
            dbs[0].plugin_upload(&name, wasm.clone(), Grants::default())?;
            let mut pending: Vec<&Database> = dbs.clone();
            while !pending.is_empty() {
                // A call that reaches the plugin: it answers its own error for this input.
                pending.retain(|d| {
                    !matches!(
                        d.plugin_call(&name, b"{}", None),
                        Err(vektagraf::plugins::PluginError::Failed { .. }) | Ok(_)
                    )
                });
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(60),
                    "{name} never became ready"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        for n in nodes {
            n.shutdown().await?;
        }
        Ok(times)
    })
}

struct Report {
    date: String,
    cpu: String,
    cores: usize,
    load_start: String,
    load_end: String,
    wall: f64,
    rows: usize,
    queries: usize,
    rounds: usize,
    calls: usize,
    empty_call: f64,
    instantiate: f64,
    knn: Knn,
    ready: Vec<f64>,
}

fn markdown(r: &Report) -> String {
    let (begin, end) = vektagraf_tests::bench::markers(SECTION);
    let k = &r.knn;
    let ready = r
        .ready
        .iter()
        .map(|t| format!("{t:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{begin}\n## Plugins\n\n\
         {date}, {cpu} ({cores} cores), load {ls} at the start and {le} at the end, {wall:.0} s \
         in all. Command: `{cmd}`.\n\n\
         Every plugin call runs in a fresh instance (a new wasmtime store) with fuel, an epoch \
         deadline and a 64 MiB memory cap; the input and output cross as bytes.\n\n\
         | what ({calls} each) | median |\n|---|---:|\n\
         | empty call (`echo`, no input): instantiate, call, answer | {ec:.1} µs |\n\
         | instantiation alone | {inst:.1} µs |\n\n\
         k-NN (k = {K}) on {rows} rows of the shared dataset (384-d, dot product, one shard), \
         {q} queries on one thread, best of {rounds} interleaved rounds; the plugin reads \
         through the same search the built-in path runs ({agree:.0}% of answers identical):\n\n\
         | path | QPS | vs built-in |\n|---|---:|---:|\n\
         | built-in `Database::search` | {b:.0} | 1.00x |\n\
         | `knn` plugin (JSON in and out, fuel metered) | {p:.0} | {pr:.2}x |\n\
         | `knn` plugin, fuel not metered | {u:.0} | {ur:.2}x |\n\n\
         Fuel's cost: metering makes the plugin's calls {fuel:.1}% slower here (the engine's \
         own hot path runs in a wasmtime engine without fuel, so it pays nothing).\n\n\
         Upload to ready on a three-node cluster (loopback, in one process): from the upload on \
         one node until the plugin answers on all three, {n} uploads of the `knn` component \
         under new names: {ready} ms (median {rm:.0} ms). The first includes compiling it on \
         the other nodes; later uploads of the same bytes reuse the compiled artifact, cached \
         by content hash.\n{end}\n",
        date = r.date,
        cpu = r.cpu,
        cores = r.cores,
        ls = r.load_start,
        le = r.load_end,
        wall = r.wall,
        cmd = command_line(COMMAND),
        ec = r.empty_call,
        inst = r.instantiate,
        rows = r.rows,
        q = r.queries,
        rounds = r.rounds,
        agree = k.agree * 100.0,
        b = k.builtin,
        p = k.plugin,
        pr = k.plugin / k.builtin,
        u = k.unmetered,
        ur = k.unmetered / k.builtin,
        fuel = (k.unmetered / k.plugin - 1.0) * 100.0,
        n = r.ready.len(),
        rm = median(&r.ready),
        calls = r.calls,
    )
}
