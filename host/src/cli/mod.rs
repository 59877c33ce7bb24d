//! The `vektagraf` command line. `main.rs` only calls [`run`].

mod demo;
pub mod import;
pub mod vectors;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::model::{
    CollectionSpec, Direction, IndexKind, Metric, NodeKey, SearchOptions, TraverseOptions,
};
use crate::{Database, DatabaseConfig};
use import::{ImportFiles, Progress};
use vectors::VectorFile;

#[derive(Parser)]
#[command(
    name = "vektagraf",
    version,
    about = "Vektagraf Edge: a vector + graph database with a WebAssembly engine"
)]
pub struct Cli {
    /// Database directory (created if missing).
    #[arg(long, global = true, default_value = "vektagraf-data")]
    pub data: PathBuf,
    /// Configuration file (TOML); defaults apply without one.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
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
    /// Counts and sizes of one or every collection.
    Stats { collection: Option<String> },
    /// Load a small sample of Debian packages into a temporary database and query it.
    Demo,
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
    },
    List,
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
    /// Filter expression (JSON, docs/query.md).
    #[arg(long)]
    filter: Option<String>,
}

/// Runs the command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Command::Demo = cli.command {
        return demo::run(cli.json);
    }
    let config = match &cli.config {
        Some(p) => DatabaseConfig::from_file(p)?,
        None => DatabaseConfig::default(),
    };
    let db = Database::open(&cli.data, config)
        .with_context(|| format!("opening {}", cli.data.display()))?;
    let out = Out { json: cli.json };
    match cli.command {
        Command::Collection(CollectionCmd::Create {
            name,
            dim,
            metric,
            index,
            shards,
            m,
            ef_construction,
            ef_search,
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
        Command::Collection(CollectionCmd::List) => {
            let specs = db.collections();
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
            let progress = if cli.json {
                Progress::JsonLines
            } else {
                Progress::Bars
            };
            let report = import::import(
                &db,
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
        Command::Search(args) => search(&db, &out, args)?,
        Command::Get { collection, id } => match db.get(&collection, &id)? {
            Some(o) => out.print(&json!(o), || {
                let v = o.vector.as_ref().map_or("no vector".into(), |v| {
                    format!("vector of {} dims", v.len())
                });
                format!("{}\t{}\t{v}", o.id, o.properties)
            }),
            None => bail!("object `{id}` does not exist in collection `{collection}`"),
        },
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
            let names = match collection {
                Some(c) => vec![c],
                None => db.collections().into_iter().map(|s| s.name).collect(),
            };
            let stats = names
                .iter()
                .map(|n| db.stats(n))
                .collect::<crate::Result<Vec<_>>>()?;
            out.print(&json!(stats), || stats.iter().map(|s| format!(
                "{}: {} objects, {} vectors ({} deleted slots), {} dims {}, {} index, {} shard(s), engine memory {:.1} MiB, snapshot at seq {}",
                s.spec.name, s.objects, s.vectors, s.deleted_slots, s.spec.dimension, s.spec.metric, s.spec.index, s.spec.shards,
                s.engine_memory_bytes as f64 / (1 << 20) as f64, s.snapshot_seq)).collect::<Vec<_>>().join("\n"));
        }
        Command::Demo => unreachable!("handled above"),
    }
    db.close()?;
    Ok(())
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

fn search(db: &Database, out: &Out, a: SearchArgs) -> Result<()> {
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
    };
    let rows = match (&a.queries, &a.vector) {
        (Some(path), _) => VectorFile::open(path, spec.dimension as usize)?.read_all()?,
        (None, Some(v)) => serde_json::from_str::<Vec<f32>>(v)
            .context("--vector must be a JSON array of numbers")?,
        (None, None) => bail!("give --queries FILE or --vector '[...]'"),
    };
    let dim = spec.dimension as usize;
    for chunk in rows.chunks(dim * 256) {
        for hits in db.search_batch(&a.collection, chunk, &opts)? {
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
