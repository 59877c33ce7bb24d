//! The `vektagraf` command line. `main.rs` only calls [`run`].

pub mod backend;
mod bench_remote;
mod certs;
mod demo;
pub mod import;
mod plugins;
mod serve;
pub mod vectors;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::model::{
    CollectionSpec, ConflictPolicy, Direction, IndexKind, Metric, NodeKey, Role, SearchOptions,
    TraverseOptions,
};
use crate::{Database, DatabaseConfig};
use backend::{Backend, Remote};
use import::{ImportFiles, Progress};
use vectors::VectorFile;

#[derive(Parser)]
#[command(
    name = "vektagraf",
    version,
    about = "Vektagraf Edge: a vector + graph database with a WebAssembly engine"
)]
pub struct Cli {
    /// Database directory (created if missing) [default: vektagraf-data, or the config's
    /// node.data_dir for `serve`].
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    /// Configuration file (TOML); defaults apply without one.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Run data commands against nodes instead of a local directory.
#[derive(Args, Clone)]
pub struct RemoteArgs {
    /// Nodes to talk to: `quic://HOST:PORT`, comma-separated, each optionally `=WEIGHT`.
    #[arg(long, global = true, env = "VEKTAGRAF_REMOTE")]
    pub remote: Option<String>,
    /// API token (`vektagraf token create`, or the admin token a node prints on first start).
    #[arg(long, global = true, env = "VEKTAGRAF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) the nodes' certificates are signed with.
    #[arg(long, global = true, env = "VEKTAGRAF_CA")]
    pub ca: Option<PathBuf>,
    /// How requests are spread over several nodes: round-robin, least-connections, weighted,
    /// consistent-hash or nearest.
    #[arg(long, global = true, default_value = "round-robin")]
    pub strategy: vektagraf_client::Strategy,
    /// Request timeout in milliseconds.
    #[arg(long, global = true, default_value_t = 60_000)]
    pub timeout_ms: u64,
}

impl RemoteArgs {
    /// A client configuration, if `--remote` was given.
    pub fn client_config(&self) -> Result<Option<vektagraf_client::ClientConfig>> {
        let Some(list) = &self.remote else {
            return Ok(None);
        };
        let ca = self.ca.as_ref().context(
            "--remote needs --ca FILE (or VEKTAGRAF_CA): the CA certificate of the nodes, e.g. vektagraf-data/tls/ca.pem",
        )?;
        Ok(Some(vektagraf_client::ClientConfig {
            endpoints: vektagraf_client::parse_endpoints(list)?,
            ca_pem: vektagraf_client::read_ca_file(ca)?,
            token: self.token.clone().unwrap_or_default(),
            strategy: self.strategy,
            request_timeout: std::time::Duration::from_millis(self.timeout_ms.max(1)),
            ..vektagraf_client::ClientConfig::default()
        }))
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Create or list collections.
    #[command(subcommand)]
    Collection(CollectionCmd),
    /// Import vectors (.f32 raw, .npy, .fvecs), optional JSONL properties and TSV edges.
    Import {
        collection: String,
        #[arg(long)]
        vectors: PathBuf,
        #[arg(long)]
        meta: Option<PathBuf>,
        #[arg(long)]
        edges: Option<PathBuf>,
        /// Rows per durable batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// k-NN search: a file of query rows, or one `--vector`.
    Search(SearchArgs),
    /// Print one object.
    Get { collection: String, id: String },
    /// Every version of one object (siblings from concurrent writes in different regions, a
    /// tombstone) and the causal context that resolves them (`Batch::resolve`).
    Versions { collection: String, id: String },
    /// Replace the versions a `versions` read returned (pass its context) with one value, or
    /// with a delete: how siblings of a `manual` collection are resolved.
    Resolve {
        collection: String,
        id: String,
        /// The context printed by `vektagraf versions`.
        #[arg(long)]
        context: String,
        /// The resolved properties (a JSON object).
        #[arg(long, conflicts_with = "delete", required_unless_present = "delete")]
        properties: Option<String>,
        /// The resolved vector (a JSON array of numbers).
        #[arg(long, conflicts_with = "delete")]
        vector: Option<String>,
        /// Resolve to a delete.
        #[arg(long)]
        delete: bool,
    },
    /// Delete one object and its edges.
    Delete { collection: String, id: String },
    /// Breadth-first traversal from an object.
    Traverse {
        collection: String,
        id: String,
        #[arg(long)]
        label: Option<String>,
        #[arg(long, default_value = "out")]
        direction: Direction,
        #[arg(long, default_value_t = 1)]
        depth: u32,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Counts and sizes of one or every collection, its conflict policy and its state digest
    /// (equal on two nodes exactly when they hold the same objects, edges and versions).
    Stats { collection: Option<String> },
    /// Replication: a node's peers, their connection and lag (needs --remote).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Load a small sample of Debian packages into a temporary database and query it.
    Demo,
    /// Load the demo's 2,500 Debian packages into collection `packages` (of a node with
    /// --remote, or of --data).
    LoadDemo,
    /// Run a node: QUIC client protocol and HTTP (Qdrant-compatible API, health, metrics).
    Serve(serve::ServeArgs),
    /// Print the OpenAPI document of the node's HTTP API (docs/openapi.json is a copy).
    Openapi,
    /// Create, list or revoke API tokens (on a node with --remote, or in --data).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Upload, list, call and manage plugins (docs/plugins.md).
    #[command(subcommand)]
    Plugin(plugins::PluginCmd),
    /// Load test: concurrent clients searching, reading and writing against nodes.
    BenchRemote(bench_remote::BenchArgs),
    /// Cluster CA and node certificates for mutual TLS between nodes.
    #[command(subcommand)]
    Certs(certs::CertsCmd),
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// The replication state of the node --remote reaches: each peer's region, connection,
    /// lag and traffic, and the entries refused for their clock.
    Status,
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token; its secret is printed once.
    Create {
        #[arg(long)]
        role: Role,
        /// A name to recognise it by in `token list`.
        #[arg(long, default_value = "token")]
        name: String,
    },
    List,
    /// Revoke a token by its id (or the whole token).
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum CollectionCmd {
    Create {
        name: String,
        #[arg(long)]
        dim: u32,
        #[arg(long, default_value = "cosine")]
        metric: Metric,
        #[arg(long, default_value = "hnsw")]
        index: IndexKind,
        #[arg(long, default_value_t = 1)]
        shards: u32,
        #[arg(long, default_value_t = 16)]
        m: u32,
        #[arg(long, default_value_t = 200)]
        ef_construction: u32,
        #[arg(long, default_value_t = 64)]
        ef_search: u32,
        /// How concurrent writes from different regions are decided: last-write-wins,
        /// first-write-wins, vector-clock or manual.
        #[arg(long, default_value = "last-write-wins")]
        conflict: ConflictPolicy,
        /// Under `--conflict vector-clock`: the resolver plugin that merges concurrent
        /// versions (docs/plugins.md).
        #[arg(long)]
        resolver: Option<String>,
    },
    List,
    /// Drop a collection with its objects, edges and snapshots (local directory only).
    Drop {
        name: String,
    },
}

#[derive(Args)]
pub struct SearchArgs {
    collection: String,
    /// Query rows (same formats as import).
    #[arg(long, conflicts_with = "vector")]
    queries: Option<PathBuf>,
    /// One query as a JSON array.
    #[arg(long)]
    vector: Option<String>,
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[arg(long)]
    ef: Option<u32>,
    /// Run the query rows on this many threads (answers still print in row order).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Filter expression (JSON, docs/query.md).
    #[arg(long)]
    filter: Option<String>,
    /// Exact search: brute force over every vector instead of the graph (slower).
    #[arg(long)]
    exact: bool,
}

const DEFAULT_DATA: &str = "vektagraf-data";

/// Runs the command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo => return demo::run(cli.json),
        Command::Serve(args) => return serve::run(cli.data, cli.config, args),
        Command::Openapi => {
            println!("{}", crate::server::qdrant::openapi::document());
            return Ok(());
        }
        Command::BenchRemote(args) => {
            let config = cli
                .remote
                .client_config()?
                .context("bench-remote needs --remote (or VEKTAGRAF_REMOTE)")?;
            return bench_remote::run(config, args, cli.json);
        }
        Command::Certs(cmd) => {
            return certs::run(cmd, cli.remote.ca.as_deref(), &Out { json: cli.json })
        }
        Command::Cluster(_) if cli.remote.remote.is_none() => {
            // Before opening (and perhaps creating) a local directory that has nothing to say.
            bail!("cluster status needs --remote quic://HOST:PORT (or VEKTAGRAF_REMOTE) pointing at a running node: replication runs in `vektagraf serve`, and a data directory opened by the CLI has no peers");
        }
        _ => {}
    }
    let db: Box<dyn Backend> = match cli.remote.client_config()? {
        Some(config) => Box::new(Remote::connect(config)?),
        None => {
            let config = match &cli.config {
                Some(p) => DatabaseConfig::from_file(p)?,
                None => DatabaseConfig::default(),
            };
            let dir = cli.data.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
            Box::new(
                Database::open(&dir, config)
                    .with_context(|| format!("opening {}", dir.display()))?,
            )
        }
    };
    let out = Out { json: cli.json };
    commands(&*db, &out, cli.command)?;
    db.close()
}

fn commands(db: &dyn Backend, out: &Out, command: Command) -> Result<()> {
    let cli_json = out.json;
    match command {
        Command::Collection(CollectionCmd::Create {
            name,
            dim,
            metric,
            index,
            shards,
            m,
            ef_construction,
            ef_search,
            conflict,
            resolver,
        }) => {
            let spec = CollectionSpec {
                name,
                dimension: dim,
                metric,
                index,
                m,
                ef_construction,
                ef_search,
                shards,
                conflict,
                resolver,
            };
            let created = db.create_collection(spec.clone())?;
            out.print(&json!({"created": created, "collection": spec}), || {
                format!(
                    "{} collection `{}` ({} dims, {}, {} index, {} shard(s))",
                    if created { "created" } else { "already have" },
                    spec.name,
                    spec.dimension,
                    spec.metric,
                    spec.index,
                    spec.shards
                )
            });
        }
        Command::Collection(CollectionCmd::Drop { name }) => {
            let dropped = db.drop_collection(&name)?;
            out.print(&json!({"dropped": dropped, "collection": name}), || {
                if dropped {
                    format!("dropped collection `{name}`")
                } else {
                    format!("no collection `{name}`")
                }
            });
        }
        Command::Collection(CollectionCmd::List) => {
            let specs = db.collections()?;
            out.print(&json!(specs), || {
                specs
                    .iter()
                    .map(|s| {
                        format!(
                            "{}\t{} dims\t{}\t{}\t{} shard(s)",
                            s.name, s.dimension, s.metric, s.index, s.shards
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Import {
            collection,
            vectors,
            meta,
            edges,
            batch,
        } => {
            let progress = if cli_json {
                Progress::JsonLines
            } else {
                Progress::Bars
            };
            let report = import::import(
                db,
                &collection,
                &ImportFiles {
                    vectors,
                    meta,
                    edges,
                },
                batch,
                progress,
            )?;
            db.checkpoint()?;
            out.print(&json!(report), || {
                format!(
                    "imported {} objects and {} edges into `{}` in {:.1} s ({:.0} objects/s)",
                    report.objects,
                    report.edges,
                    report.collection,
                    report.seconds,
                    report.objects_per_second
                )
            });
        }
        Command::Search(args) => search(db, out, args)?,
        Command::Get { collection, id } => match db.get(&collection, &id)? {
            Some(o) => out.print(&json!(o), || {
                let v = o.vector.as_ref().map_or("no vector".into(), |v| {
                    format!("vector of {} dims", v.len())
                });
                format!("{}\t{}\t{v}", o.id, o.properties)
            }),
            None => bail!("object `{id}` does not exist in collection `{collection}`"),
        },
        Command::Versions { collection, id } => {
            let v = db.versions(&collection, &id)?;
            out.print(&json!(v), || {
                let mut lines = vec![format!("context {}", v.context)];
                for x in &v.versions {
                    lines.push(format!(
                        "{} hlc {} origin {:016x} seq {}\t{}",
                        if x.visible { "visible" } else { "sibling" },
                        x.hlc,
                        x.origin,
                        x.seq,
                        x.properties
                            .as_ref()
                            .map_or("deleted".to_owned(), |p| p.to_string())
                    ));
                }
                lines.join("\n")
            })
        }
        Command::Resolve {
            collection,
            id,
            context,
            properties,
            vector,
            delete: _,
        } => {
            let properties = properties
                .map(|p| serde_json::from_str::<Value>(&p))
                .transpose()
                .context("--properties must be a JSON object")?;
            let vector = vector
                .map(|v| serde_json::from_str::<Vec<f32>>(&v))
                .transpose()
                .context("--vector must be a JSON array of numbers")?;
            let mut b = crate::model::Batch::new();
            b.resolve(&collection, &id, &context, properties, vector);
            let receipt = db.write(b)?;
            out.print(&json!({"resolved": id, "receipt": receipt}), || {
                format!("resolved `{id}` (seq {})", receipt.seq)
            })
        }
        Command::Delete { collection, id } => {
            if db.get(&collection, &id)?.is_none() {
                bail!("object `{id}` does not exist in collection `{collection}`");
            }
            let mut b = crate::model::Batch::new();
            b.delete(&collection, &id);
            let receipt = db.write(b)?;
            out.print(&json!({"deleted": id, "receipt": receipt}), || {
                format!("deleted `{id}`")
            });
        }
        Command::Traverse {
            collection,
            id,
            label,
            direction,
            depth,
            limit,
        } => {
            let steps = db.traverse(
                &NodeKey::new(&collection, &id),
                &TraverseOptions {
                    label,
                    direction,
                    depth,
                    limit,
                },
            )?;
            out.print(&json!(steps), || {
                steps
                    .iter()
                    .map(|s| match &s.via {
                        Some((label, from)) => format!(
                            "{}{} (via {label} from {})",
                            "  ".repeat(s.depth as usize),
                            s.node.id,
                            from.id
                        ),
                        None => s.node.id.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Stats { collection } => {
            let stats = db.stats(collection)?;
            let digests = stats
                .iter()
                .map(|s| db.digest(&s.spec.name))
                .collect::<Result<Vec<_>>>()?;
            let value: Vec<Value> = stats
                .iter()
                .zip(&digests)
                .map(|(s, d)| {
                    let mut v = json!(s);
                    v["digest"] = json!(d.hex());
                    v
                })
                .collect();
            out.print(&json!(value), || stats.iter().zip(&digests).map(|(s, d)| format!(
                "{}: {} objects, {} vectors ({} deleted slots), {} dims {}, {} index, {} shard(s), {}, engine memory {:.1} MiB, snapshot at seq {}\n  digest {} ({} objects, {} edges, {} other versions)",
                s.spec.name, s.objects, s.vectors, s.deleted_slots, s.spec.dimension, s.spec.metric, s.spec.index, s.spec.shards,
                s.spec.conflict, s.engine_memory_bytes as f64 / (1 << 20) as f64, s.snapshot_seq,
                d.hex(), d.objects, d.edges, d.versions)).collect::<Vec<_>>().join("\n"));
        }
        Command::Cluster(ClusterCmd::Status) => {
            let c = db.cluster_status()?;
            let value = c.status.clone().unwrap_or(Value::Null);
            out.print(&value, || match &c.status {
                Some(status) => cluster_table(status),
                None => format!(
                    "the node at {} does not replicate (no [replication] in its configuration)",
                    c.endpoint
                ),
            });
        }
        Command::LoadDemo => {
            let tmp = tempfile::tempdir().context("creating a temporary directory")?;
            let progress = if cli_json {
                Progress::Quiet
            } else {
                Progress::Bars
            };
            demo::load_sample(db, tmp.path(), progress)?;
            db.checkpoint()?;
            let stats = db.stats(Some(demo::COLLECTION.to_owned()))?;
            out.print(&json!(stats), || {
                stats
                    .iter()
                    .map(|s| {
                        format!(
                            "collection `{}` now holds {} objects",
                            s.spec.name, s.objects
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Token(TokenCmd::Create { role, name }) => {
            let t = db.token_create(&name, role)?;
            out.print(&json!(t), || {
                format!(
                    "created {} token `{}` (id {}); it is shown only now:\n{}",
                    t.info.role, t.info.name, t.info.id, t.token
                )
            });
        }
        Command::Token(TokenCmd::List) => {
            let tokens = db.token_list()?;
            out.print(&json!(tokens), || {
                tokens
                    .iter()
                    .map(|t| format!("{}\t{}\t{}", t.id, t.role, t.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Token(TokenCmd::Revoke { id }) => {
            let revoked = db.token_revoke(&id)?;
            if !revoked {
                bail!("no token with id `{id}`");
            }
            out.print(&json!({"revoked": id}), || format!("revoked token `{id}`"));
        }
        Command::Plugin(cmd) => plugins::run(db, out, cmd)?,
        Command::Demo
        | Command::Serve(_)
        | Command::Openapi
        | Command::BenchRemote(_)
        | Command::Certs(_) => {
            unreachable!("handled in run")
        }
    }
    Ok(())
}

/// `cluster status` for people: the node, a row per peer, the counters.
fn cluster_table(status: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let mut lines = vec![format!(
        "node {} (region {}, origin {})",
        text(&status["node"]),
        text(&status["region"]),
        text(&status["origin"])
    )];
    let mut rows = vec![[
        "PEER",
        "REGION",
        "CONNECTED",
        "LAG OPS",
        "LAG S",
        "LAST CONTACT",
        "SENT",
        "RECEIVED",
    ]
    .map(str::to_owned)];
    for p in status["peers"].as_array().into_iter().flatten() {
        rows.push([
            text(&p["id"]),
            text(&p["region"]),
            if p["connected"].as_bool() == Some(true) {
                "yes".into()
            } else {
                "no".into()
            },
            num(&p["lag_ops"]).to_string(),
            format!("{:.1}", num(&p["lag_ms"]) as f64 / 1000.0),
            match p["last_contact_ms"].as_u64() {
                Some(ms) => format!("{:.1} s ago", ms as f64 / 1000.0),
                None => "never".into(),
            },
            format!(
                "{} entries, {}",
                num(&p["entries_sent"]),
                bytes(num(&p["bytes_sent"]))
            ),
            format!(
                "{} entries, {}",
                num(&p["entries_received"]),
                bytes(num(&p["bytes_received"]))
            ),
        ]);
    }
    if rows.len() == 1 {
        lines.push("no peers configured".into());
    } else {
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            lines.push(cells.join("  ").trim_end().to_owned());
        }
    }
    lines.push(format!(
        "rejected clocks {}, duplicates {}, gaps {}, refused peers {}",
        num(&status["rejected_clocks"]),
        num(&status["duplicates"]),
        num(&status["gaps"]),
        num(&status["refused_peers"])
    ));
    lines.push(format!(
        "log: {} entries trimmed, tombstones collected {}; snapshots sent {}, received {}; \
         anti-entropy comparisons {}, versions repaired {}",
        num(&status["log_trimmed"]),
        num(&status["tombstones_collected"]),
        num(&status["snapshots_sent"]),
        num(&status["snapshots_received"]),
        num(&status["comparisons"]),
        num(&status["repaired_versions"])
    ));
    lines.join("\n")
}

/// A byte count for people (B, KiB, MiB, GiB).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

struct Out {
    json: bool,
}

impl Out {
    fn print(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", text());
        }
    }
}

fn search(db: &dyn Backend, out: &Out, a: SearchArgs) -> Result<()> {
    let spec = db.collection_spec(&a.collection)?;
    let filter = a
        .filter
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
        .context("--filter is not valid JSON")?;
    let opts = SearchOptions {
        k: a.k,
        ef: a.ef,
        filter,
        exact: a.exact,
    };
    let rows = match (&a.queries, &a.vector) {
        (Some(path), _) => VectorFile::open(path, spec.dimension as usize)?.read_all()?,
        (None, Some(v)) => serde_json::from_str::<Vec<f32>>(v)
            .context("--vector must be a JSON array of numbers")?,
        (None, None) => bail!("give --queries FILE or --vector '[...]'"),
    };
    let dim = spec.dimension as usize;
    let threads = a.threads.max(1);
    let chunks: Vec<&[f32]> = rows
        .chunks(dim * if threads > 1 { 32 } else { 256 })
        .collect();
    // Threads take chunks in turn; answers are kept by chunk and printed in row order.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut answers: Vec<Option<Vec<Vec<crate::model::Hit>>>> = vec![None; chunks.len()];
    let done = std::thread::scope(|s| -> Result<Vec<(usize, Vec<Vec<crate::model::Hit>>)>> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<(usize, Vec<Vec<crate::model::Hit>>)>> {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else {
                            return Ok(mine);
                        };
                        mine.push((i, db.search_batch(&a.collection, chunk, &opts)?));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(
                w.join()
                    .map_err(|_| anyhow::anyhow!("a search thread panicked"))??,
            );
        }
        Ok(all)
    })?;
    for (i, hits) in done {
        answers[i] = Some(hits);
    }
    for rows_hits in answers.into_iter().flatten() {
        for hits in rows_hits {
            let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
            let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
            out.print(&json!({"ids": ids, "scores": scores}), || {
                hits.iter()
                    .map(|h| format!("{:.4}  {}", h.score, h.id))
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n"
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::driver::{PeerStatus, Status};

    #[test]
    fn cluster_status_table_has_a_row_per_peer_and_the_counters() {
        let status = Status {
            node: "a".into(),
            region: "eu".into(),
            origin: "00000000000000aa".into(),
            rejected_clocks: 3,
            log_trimmed: 70,
            snapshots_sent: 1,
            repaired_versions: 4,
            peers: vec![
                PeerStatus {
                    id: "b".into(),
                    region: "us".into(),
                    connected: true,
                    lag_ops: 12,
                    lag_ms: 2500,
                    last_contact_ms: Some(100),
                    entries_sent: 40,
                    bytes_sent: 3 << 20,
                    entries_received: 5,
                    bytes_received: 900,
                    ..PeerStatus::default()
                },
                PeerStatus {
                    id: "c".into(),
                    region: "ap".into(),
                    ..PeerStatus::default()
                },
            ],
            ..Status::default()
        };
        let text = cluster_table(&json!(status));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "node a (region eu, origin 00000000000000aa)");
        assert!(lines[1].starts_with("PEER  REGION  CONNECTED"), "{text}");
        let b: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            b,
            [
                "b", "us", "yes", "12", "2.5", "0.1", "s", "ago", "40", "entries,", "3.0", "MiB",
                "5", "entries,", "900", "B"
            ],
            "{text}"
        );
        assert!(lines[3].starts_with("c     ap      no"), "{text}");
        assert!(lines[3].contains("never"), "{text}");
        assert_eq!(
            lines[4],
            "rejected clocks 3, duplicates 0, gaps 0, refused peers 0"
        );
        assert_eq!(
            lines[5],
            "log: 70 entries trimmed, tombstones collected 0; snapshots sent 1, received 0; \
             anti-entropy comparisons 0, versions repaired 4"
        );
        let none = cluster_table(&json!(Status::default()));
        assert!(none.contains("no peers configured"), "{none}");
    }
}
