//! Cold start of an imported database, in this process: `cargo run --release -p vektagraf
//! --example cold_open -- DIR COLLECTION QUERIES.f32 [RUNS]` opens DIR, answers the first query
//! of QUERIES.f32 (little-endian f32 rows of the collection's dimension), closes, RUNS times
//! (default 5); prints each open + first query time, min and median, the engine's memory and
//! this process's peak RSS (VmHWM).

use std::time::Instant;

use vektagraf::model::SearchOptions;
use vektagraf::{Database, DatabaseConfig};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|x| x.parse().ok()))
        })
        .unwrap_or(0)
}

/// The mappings of this process holding more than 4 MiB, with what they hold (`--maps`).
fn big_mappings() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut head = String::new();
    for line in smaps.lines() {
        if line.contains('-') && !line.starts_with(|c: char| c.is_ascii_uppercase()) {
            head = line.to_string();
        } else if let Some(kib) = line.strip_prefix("Rss:") {
            let kib: u64 = kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            if kib > 4096 {
                eprintln!("{:8.1} MiB  {head}", kib as f64 / 1024.0);
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: cold_open DIR COLLECTION QUERIES.f32 [RUNS]".into());
    }
    let (dir, coll) = (&args[1], &args[2]);
    let runs: usize = args
        .get(4)
        .filter(|a| !a.starts_with("--"))
        .map_or(Ok(5), |s| s.parse())?;
    let bytes = std::fs::read(&args[3])?;
    let all: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut times = Vec::new();
    let mut engine = 0;
    for _ in 0..runs {
        let t0 = Instant::now();
        let db = Database::open(dir, DatabaseConfig::default())?;
        let dim = db
            .collections()
            .iter()
            .find(|c| &c.name == coll)
            .ok_or("no such collection")?
            .dimension as usize;
        db.search(coll, &all[..dim], &SearchOptions::k(10))?;
        let s = t0.elapsed().as_secs_f64();
        engine = db.stats(coll)?.engine_memory_bytes;
        if args.iter().any(|a| a == "--maps") {
            big_mappings();
        }
        drop(db);
        eprintln!("open + first query: {s:.3} s");
        times.push(s);
    }
    times.sort_by(f64::total_cmp);
    let mib = 1024.0 * 1024.0;
    println!(
        "runs {runs}: min {:.3} s, median {:.3} s; engine {:.1} MiB; peak RSS {:.1} MiB",
        times[0],
        times[times.len() / 2],
        engine as f64 / mib,
        vm_hwm_kib() as f64 / 1024.0
    );
    Ok(())
}
