//! Times what a checkpoint costs writers, in-process, on an existing data directory (for
//! example one made by `scripts/full_dataset.sh DIR`: collection `pkgs`). Each round rewrites
//! one object (so the collection is dirty), starts `checkpoint()` in another thread and,
//! 2 ms later, times a one-object write queued behind it. The engine's snapshot pass on the
//! committer is logged per shard (`snapshot streamed ... ms=`).
//!
//! cargo run --release -p vektagraf --example checkpoint_time -- DIR [COLLECTION] [ID] [ROUNDS]
//!
//! `VEKTAGRAF_ENGINE=path.wasm` opens with that engine component instead of the built-in one
//! (to compare two engine builds with one host build).

use std::time::{Duration, Instant};

use vektagraf::model::Batch;
use vektagraf::{Database, DatabaseConfig};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "vektagraf::db::commit=debug",
        ))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .ok_or_else(|| anyhow::anyhow!("usage: checkpoint_time DIR [COLLECTION] [ID] [ROUNDS]"))?;
    let coll = args.get(1).map_or("pkgs", String::as_str);
    let id = args.get(2).map_or("0ad", String::as_str);
    let rounds: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let t = Instant::now();
    let db = match std::env::var_os("VEKTAGRAF_ENGINE") {
        Some(path) => Database::open_with_engine(
            std::path::Path::new(dir),
            DatabaseConfig::default(),
            &std::fs::read(path)?,
        )?,
        None => Database::open(dir, DatabaseConfig::default())?,
    };
    eprintln!("open: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let obj = db
        .get(coll, id)?
        .ok_or_else(|| anyhow::anyhow!("no object {coll}/{id}"))?;
    let mut vector = obj
        .vector
        .ok_or_else(|| anyhow::anyhow!("{coll}/{id} has no vector"))?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for round in 0..rounds {
        let mut bump = |db: &Database| -> anyhow::Result<Duration> {
            vector[0] += 1e-4;
            let mut b = Batch::new();
            b.upsert(coll, id, obj.properties.clone(), Some(vector.clone()));
            let t = Instant::now();
            db.write(b)?;
            Ok(t.elapsed())
        };
        bump(&db)?;
        let (ckpt, probe) = std::thread::scope(|s| -> anyhow::Result<_> {
            let h = s.spawn(|| {
                let t = Instant::now();
                db.checkpoint().map(|()| t.elapsed())
            });
            std::thread::sleep(Duration::from_millis(2));
            let probe = bump(&db)?;
            let ckpt = h
                .join()
                .map_err(|_| anyhow::anyhow!("checkpoint panicked"))??;
            Ok((ckpt, probe))
        })?;
        eprintln!(
            "round {round}: checkpoint {:.1} ms, a write queued 2 ms into it {:.1} ms",
            ms(ckpt),
            ms(probe)
        );
    }
    db.close()?;
    Ok(())
}
