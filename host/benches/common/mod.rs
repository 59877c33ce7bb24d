//! What both benchmarks need: flags and the process's resident memory.

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

/// Resident set size of this process, MiB.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / (1 << 20) as f64)
}

/// The markers around the section of docs/BENCHMARKS.md that `just bench-scale` writes.
pub const SCALE_BEGIN: &str = "<!-- scale:begin -->";
pub const SCALE_END: &str = "<!-- scale:end -->";

/// Byte range of the scale section (markers included) in `text`, if it has one.
pub fn scale_section(text: &str) -> Option<std::ops::Range<usize>> {
    match (text.find(SCALE_BEGIN), text.find(SCALE_END)) {
        (Some(a), Some(b)) if b > a => Some(a..b + SCALE_END.len()),
        _ => None,
    }
}
