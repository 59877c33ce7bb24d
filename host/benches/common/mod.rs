//! What the benchmarks share: flags, the dataset's vector files, the machine, the process's
//! resident memory and the sections of docs/BENCHMARKS.md; `load` has what the node and http
//! benches share.

// Only the ann and scale benches use it.
#[allow(dead_code)]
pub mod anchors;
// Only the node and http benches use it.
#[allow(dead_code)]
pub mod load;

use anyhow::{Context, Result};

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Whether `--name` is on the command line.
pub fn has(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// The comma-separated values after `--name`, else those of `default`.
#[allow(dead_code)]
pub fn list<T: std::str::FromStr>(name: &str, default: &str) -> Result<Vec<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    arg(name)
        .unwrap_or_else(|| default.into())
        .split(',')
        .map(|s| s.trim().parse::<T>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{name}: expected a comma-separated list"))
}

/// A file of little-endian f32s (the dataset's base.f32 and queries.f32).
#[allow(dead_code)]
pub fn read_f32(p: &std::path::Path) -> Result<Vec<f32>> {
    let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The date and time now, UTC, to the minute.
#[allow(dead_code)]
pub fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The machine's load averages as `/proc/loadavg` gives them (empty where there is none).
#[allow(dead_code)]
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

/// The processor's model name and how many cores this process may use.
#[allow(dead_code)]
pub fn machine() -> (String, usize) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|x| x.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    (cpu, cores)
}

/// Bytes of every file under `p` (a file: its own size), walking subdirectories.
#[allow(dead_code)]
pub fn dir_bytes(p: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(p)
        .map(|d| d.flatten().map(|e| dir_bytes(&e.path())).sum())
        .unwrap_or(0)
}

/// Resident set size of this process, MiB.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / (1 << 20) as f64)
}

/// The markers around a section of docs/BENCHMARKS.md that one benchmark owns (`scale`: `just
/// bench-scale`, `node`: `just bench-node`, `http`: `just bench-http`); `just bench` writes the
/// rest and keeps these.
pub fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    )
}

/// The sections other benchmarks own, in the order they appear in the file.
#[allow(dead_code)]
pub const SECTIONS: [&str; 5] = ["scale", "node", "http", "replication", "plugins"];

/// Prints a benchmark's section of docs/BENCHMARKS.md (`md`, which carries its markers) and,
/// unless `--no-write`, puts it into the file under `root`.
#[allow(dead_code)]
pub fn publish(root: &std::path::Path, name: &str, md: &str) -> Result<()> {
    println!("{md}");
    if has("--no-write") {
        return Ok(());
    }
    put_section(&root.join("docs/BENCHMARKS.md"), name, md)?;
    Ok(())
}

/// Byte range of section `name` (markers included) in `text`, if it has one.
pub fn section(text: &str, name: &str) -> Option<std::ops::Range<usize>> {
    let (begin, end) = markers(name);
    match (text.find(&begin), text.find(&end)) {
        (Some(a), Some(b)) if b > a => Some(a..b + end.len()),
        _ => None,
    }
}

/// Replaces section `name` of the file at `path` with `md` (which carries its markers), or
/// appends it, keeping everything else.
#[allow(dead_code)]
pub fn put_section(path: &std::path::Path, name: &str, md: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match section(&old, name) {
        Some(r) => format!("{}{}{}", &old[..r.start], md.trim_end(), &old[r.end..]),
        None => format!("{}\n\n{}\n", old.trim_end(), md.trim_end()),
    };
    std::fs::write(path, new)
}
