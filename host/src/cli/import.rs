//! `vektagraf import`: vectors (+ JSONL properties, + TSV edges) into a collection. All input is
//! checked before the first write, so a malformed file writes nothing; then rows are written in
//! durable batches.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::backend::Backend;
use super::vectors::VectorFile;
use crate::model::{Batch, NodeKey};

pub struct ImportFiles {
    pub vectors: PathBuf,
    pub meta: Option<PathBuf>,
    pub edges: Option<PathBuf>,
}

/// How progress is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Bars,
    /// One JSON line on stdout per committed batch (for scripts and the crash test).
    JsonLines,
    Quiet,
}

#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub collection: String,
    pub objects: u64,
    pub edges: u64,
    pub seconds: f64,
    pub objects_per_second: f64,
}

fn read_meta(path: &Path, rows: u64) -> Result<Vec<(String, Value)>> {
    let name = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
    let mut out = Vec::with_capacity(rows as usize);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{name}:{}: malformed JSON", i + 1))?;
        let Value::Object(mut props) = v else {
            bail!("{name}:{}: each line must be a JSON object", i + 1);
        };
        let id = match props.remove("id") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::Number(n)) => n.to_string(),
            None => out.len().to_string(),
            Some(other) => bail!(
                "{name}:{}: `id` must be a non-empty string or a number, found `{other}`",
                i + 1
            ),
        };
        out.push((id, Value::Object(props)));
    }
    if out.len() as u64 != rows {
        bail!("{name} has {} objects but the vectors file has {rows} rows; they must pair up line for row", out.len());
    }
    let mut seen = HashSet::with_capacity(out.len());
    for (i, (id, _)) in out.iter().enumerate() {
        if !seen.insert(id.as_str()) {
            bail!("{name}:{}: id `{id}` appears twice", i + 1);
        }
    }
    Ok(out)
}

fn read_edges(path: &Path) -> Result<Vec<(String, String, String)>> {
    let name = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let [from, to, label] = f[..] else {
            bail!(
                "{name}:{}: expected `from<TAB>to<TAB>label`, found {} field(s)",
                i + 1,
                f.len()
            );
        };
        if from.is_empty() || to.is_empty() || label.is_empty() {
            bail!("{name}:{}: empty field", i + 1);
        }
        out.push((from.to_owned(), to.to_owned(), label.to_owned()));
    }
    Ok(out)
}

fn bar(progress: Progress, len: u64, what: &str) -> indicatif::ProgressBar {
    if progress != Progress::Bars {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{what:>8} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

/// Validates every input, then imports it in batches of `batch` rows.
pub fn import(
    db: &dyn Backend,
    collection: &str,
    files: &ImportFiles,
    batch: usize,
    progress: Progress,
) -> Result<ImportReport> {
    let spec = db.collection_spec(collection)?;
    let dim = spec.dimension as usize;
    let batch = batch.max(1);
    let started = Instant::now();

    // Pass 1: check everything, write nothing.
    let mut check = VectorFile::open(&files.vectors, dim)?;
    let rows = check.rows();
    let meta = match &files.meta {
        Some(p) => read_meta(p, rows)?,
        None => (0..rows)
            .map(|i| (i.to_string(), Value::Object(Default::default())))
            .collect(),
    };
    let mut buf = Vec::with_capacity(batch * dim);
    let mut row = 0usize;
    loop {
        buf.clear();
        let n = check.read_rows(batch, &mut buf)?;
        if n == 0 {
            break;
        }
        for (i, v) in buf.chunks_exact(dim).enumerate() {
            crate::db::check_vector(&spec, &meta[row + i].0, v)
                .with_context(|| format!("{}: row {}", files.vectors.display(), row + i))?;
        }
        row += n;
    }
    let edges = match &files.edges {
        Some(p) => {
            let edges = read_edges(p)?;
            let ids: HashSet<&str> = meta.iter().map(|(id, _)| id.as_str()).collect();
            for (i, (from, to, _)) in edges.iter().enumerate() {
                for end in [from, to] {
                    if !ids.contains(end.as_str()) && db.get(collection, end)?.is_none() {
                        bail!("{}:{}: edge end `{end}` is neither in this import nor in collection `{collection}`", p.display(), i + 1);
                    }
                }
            }
            edges
        }
        None => Vec::new(),
    };

    // Pass 2: write (a remote backend keeps several batches in flight).
    let mut vectors = VectorFile::open(&files.vectors, dim)?;
    let pb = bar(progress, rows, "objects");
    let mut read = 0usize;
    let mut rows_iter = std::iter::from_fn(|| {
        let mut buf = Vec::with_capacity(batch * dim);
        match vectors.read_rows(batch, &mut buf) {
            Ok(0) => None,
            Ok(n) => {
                let mut b = Batch::new();
                for (i, v) in buf.chunks_exact(dim).enumerate() {
                    let (id, props) = &meta[read + i];
                    b.upsert(collection, id, props.clone(), Some(v.to_vec()));
                }
                read += n;
                Some(Ok((b, n)))
            }
            Err(e) => Some(Err(e)),
        }
    });
    let mut done = 0usize;
    let written = db.write_all(&mut rows_iter, &mut |n| {
        done += n;
        pb.inc(n as u64);
        if progress == Progress::JsonLines {
            println!(
                "{}",
                serde_json::json!({"event": "committed", "objects": done})
            );
        }
    });
    written.with_context(|| format!("writing objects after the first {done}"))?;
    pb.finish_and_clear();
    let pb = bar(progress, edges.len() as u64, "edges");
    let mut edge_batches = edges.chunks(batch * 4).map(|chunk| {
        let mut b = Batch::new();
        for (from, to, label) in chunk {
            b.link(
                NodeKey::new(collection, from),
                label,
                NodeKey::new(collection, to),
                Value::Null,
            );
        }
        Ok((b, chunk.len()))
    });
    let mut linked = 0usize;
    let written = db.write_all(&mut edge_batches, &mut |n| {
        linked += n;
        pb.inc(n as u64);
    });
    written.with_context(|| format!("writing edges after the first {linked}"))?;
    pb.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    Ok(ImportReport {
        collection: collection.to_owned(),
        objects: done as u64,
        edges: edges.len() as u64,
        seconds,
        objects_per_second: done as f64 / seconds.max(1e-9),
    })
}
