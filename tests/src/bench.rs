//! What the benches of this crate share: the command line, the machine, and writing a section
//! of docs/BENCHMARKS.md between its markers.

use std::path::Path;

use anyhow::{Context, Result};

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub fn has(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// `--name N`, or `default`.
pub fn num<T: std::str::FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match arg(name) {
        Some(s) => s
            .parse()
            .with_context(|| format!("{name}: not a number: {s}")),
        None => Ok(default),
    }
}

/// `command`, with the arguments this run was given.
pub fn command_line(command: &str) -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        command.to_owned()
    } else {
        format!("{command} -- {}", args.join(" "))
    }
}

pub fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The processor's model name and how many cores this process may use.
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

/// The markers around the section `name` of docs/BENCHMARKS.md.
pub fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    )
}

/// Replaces section `name` of the file at `path` with `md` (which carries the markers), or
/// appends it, keeping everything else.
pub fn put_section(path: &Path, name: &str, md: &str) -> std::io::Result<()> {
    let (begin, end) = markers(name);
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &old[..a], md.trim_end(), &old[b + end.len()..])
        }
        _ => format!("{}\n\n{}\n", old.trim_end(), md.trim_end()),
    };
    std::fs::write(path, new)
}

/// Nearest-rank quantile of sorted values (NaN when empty).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

pub fn median(v: &[f64]) -> f64 {
    quantile(&sorted(v.to_vec()), 0.5)
}
