//! `vektagraf bench-remote`: N concurrent clients issue a mix of searches (real query vectors
//! from a file), gets and writes against one or more nodes for a while, then the throughput
//! and latency percentiles (hdrhistogram) are printed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use vektagraf_client::{Client, ClientConfig};

use super::vectors::VectorFile;
use crate::model::{Batch, SearchOptions};

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Collection to query.
    pub collection: String,
    /// Query rows (raw f32, .npy or .fvecs) of the collection's dimension.
    #[arg(long)]
    pub queries: PathBuf,
    /// Concurrent clients (requests in flight).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Share of searches, gets and writes, e.g. `90,5,5`.
    #[arg(long, default_value = "100,0,0")]
    pub mix: String,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    #[arg(long)]
    pub ef: Option<u32>,
    /// QUIC connections per node.
    #[arg(long, default_value_t = 2)]
    pub pool: usize,
}

#[derive(Serialize)]
pub struct OpReport {
    pub operation: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

const OPS: [&str; 3] = ["search", "get", "write"];

fn parse_mix(mix: &str) -> Result<[u32; 3]> {
    let parts: Vec<u32> = mix
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--mix `{mix}`: expected three whole numbers like 90,5,5"))?;
    let [s, g, w] = parts[..] else {
        bail!("--mix `{mix}`: expected three numbers (searches, gets, writes)");
    };
    if s + g + w == 0 {
        bail!("--mix `{mix}`: the shares add up to zero");
    }
    Ok([s, g, w])
}

/// One client's tallies: a latency histogram (µs) and an error count per operation.
struct Tally {
    hist: [Histogram<u64>; 3],
    errors: [u64; 3],
}

impl Tally {
    fn new() -> Result<Self> {
        let h = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram");
        Ok(Self {
            hist: [h()?, h()?, h()?],
            errors: [0; 3],
        })
    }
}

pub fn run(mut config: ClientConfig, args: BenchArgs, json_out: bool) -> Result<()> {
    let mix = parse_mix(&args.mix)?;
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    config.pool_size = args.pool.max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let reports = rt.block_on(async move {
        let client = Client::connect(config).await?;
        let spec = client
            .list_collections()
            .await?
            .into_iter()
            .find(|s| s.name == args.collection)
            .with_context(|| format!("collection `{}` does not exist", args.collection))?;
        let dim = spec.dimension as usize;
        let queries = Arc::new(VectorFile::open(&args.queries, dim)?.read_all()?);
        if queries.is_empty() {
            bail!("{} holds no query rows", args.queries.display());
        }
        // Ids to get: what the first queries find.
        let opts = SearchOptions {
            k: args.k,
            ef: args.ef,
            filter: None,
            ..Default::default()
        };
        let seed_rows = queries.len().min(dim * 16);
        let ids: Arc<Vec<String>> = Arc::new(
            client
                .search(
                    &args.collection,
                    queries[..seed_rows].to_vec(),
                    opts.clone(),
                )
                .await?
                .into_iter()
                .flatten()
                .map(|h| h.id)
                .collect(),
        );
        let stop = Instant::now() + Duration::from_secs_f64(args.duration.max(0.1));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..args.clients {
            let (client, queries, ids, opts) =
                (client.clone(), queries.clone(), ids.clone(), opts.clone());
            let collection = args.collection.clone();
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::new()?;
                let rows = queries.len() / dim;
                let mut state =
                    0x9e37_79b9_7f4a_7c15u64 ^ (c as u64).wrapping_mul(0x1000_0000_01b3);
                let mut n = 0u64;
                while Instant::now() < stop {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let r = (state >> 33) as u32;
                    let pick = r % (mix[0] + mix[1] + mix[2]);
                    let op = if pick < mix[0] {
                        0
                    } else if pick < mix[0] + mix[1] {
                        1
                    } else {
                        2
                    };
                    let row = (r as usize / 7) % rows;
                    let q = queries[row * dim..(row + 1) * dim].to_vec();
                    let t = Instant::now();
                    let ok = match op {
                        0 => client.search(&collection, q, opts.clone()).await.is_ok(),
                        1 if !ids.is_empty() => client
                            .get(&collection, vec![ids[row % ids.len()].clone()])
                            .await
                            .is_ok(),
                        1 => false,
                        _ => {
                            let mut b = Batch::new();
                            b.upsert(
                                &collection,
                                &format!("bench-{c}-{n}"),
                                json!({"bench": true}),
                                Some(q),
                            );
                            n += 1;
                            client.write(b, None).await.is_ok()
                        }
                    };
                    let us = t.elapsed().as_micros().max(1) as u64;
                    if ok {
                        let _ = tally.hist[op].record(us.min(60_000_000));
                    } else {
                        tally.errors[op] += 1;
                    }
                }
                anyhow::Ok(tally)
            }));
        }
        let mut total = Tally::new()?;
        for t in tasks {
            let tally = t.await.context("a bench client failed")??;
            for i in 0..3 {
                total.hist[i]
                    .add(&tally.hist[i])
                    .context("merging histograms")?;
                total.errors[i] += tally.errors[i];
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let reports: Vec<OpReport> = (0..3)
            .filter(|&i| mix[i] > 0)
            .map(|i| {
                let h = &total.hist[i];
                OpReport {
                    operation: OPS[i],
                    requests: h.len(),
                    errors: total.errors[i],
                    per_second: h.len() as f64 / secs,
                    p50_ms: ms(h, 0.5),
                    p90_ms: ms(h, 0.9),
                    p99_ms: ms(h, 0.99),
                }
            })
            .collect();
        anyhow::Ok(reports)
    })?;
    if json_out {
        println!("{}", json!(reports));
    } else {
        println!("operation   requests   errors   per second   p50 ms   p90 ms   p99 ms");
        for r in &reports {
            println!(
                "{:<10} {:>9} {:>8} {:>12.1} {:>8.2} {:>8.2} {:>8.2}",
                r.operation, r.requests, r.errors, r.per_second, r.p50_ms, r.p90_ms, r.p99_ms
            );
        }
    }
    Ok(())
}
