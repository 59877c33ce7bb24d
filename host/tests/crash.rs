//! `kill -9` during an import loses no acknowledged batch: every batch the CLI reported as
//! committed is there after reopening, and the reopened database answers correctly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde_json::Value;
use vektagraf::model::SearchOptions;
use vektagraf::{Database, DatabaseConfig};

const DIM: usize = 16;
const ROWS: usize = 40_000;

fn row(i: usize) -> Vec<f32> {
    (0..DIM)
        .map(|j| ((i * 131 + j * 17) % 251) as f32 / 251.0 - 0.5 + (j == i % DIM) as u8 as f32)
        .collect()
}

#[test]
fn kill_9_during_import_loses_no_acknowledged_batch() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("db");
    let vectors = dir.path().join("v.f32");
    let bytes: Vec<u8> = (0..ROWS).flat_map(row).flat_map(f32::to_le_bytes).collect();
    std::fs::write(&vectors, bytes)?;
    let bin = env!("CARGO_BIN_EXE_vektagraf");
    let ok = Command::new(bin)
        .args(["--data"])
        .arg(&data)
        .args([
            "collection",
            "create",
            "c",
            "--dim",
            "16",
            "--metric",
            "euclidean",
        ])
        .status()?;
    assert!(ok.success());

    let mut child = Command::new(bin)
        .args(["--json", "--data"])
        .arg(&data)
        .args(["import", "c", "--batch", "200", "--vectors"])
        .arg(&vectors)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut acked = 0u64;
    for line in BufReader::new(stdout).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        if let Some(n) = v["objects"].as_u64() {
            acked = n;
        }
        if acked >= 3000 {
            child.kill()?; // SIGKILL: no destructor, no checkpoint, no clean close
            break;
        }
    }
    child.wait()?;
    assert!(
        acked >= 3000 && acked < ROWS as u64,
        "killed mid-import after {acked}"
    );

    let db = Database::open(&data, DatabaseConfig::default())?;
    let stats = db.stats("c")?;
    assert!(
        stats.objects >= acked,
        "acknowledged {acked}, found {}",
        stats.objects
    );
    assert_eq!(
        stats.objects % 200,
        0,
        "batches are atomic: {}",
        stats.objects
    );
    for i in (0..acked as usize).step_by(97) {
        let o = db
            .get("c", &i.to_string())?
            .with_context(|| format!("acknowledged row {i} is missing"))?;
        assert_eq!(o.vector, Some(row(i)));
        let hits = db.search("c", &row(i), &SearchOptions::k(1))?;
        assert_eq!(hits[0].id, i.to_string(), "row {i} must find itself");
    }
    Ok(())
}
