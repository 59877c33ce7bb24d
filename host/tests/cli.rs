//! The command line as a person or a script uses it: malformed input files are refused with the
//! file and line named and nothing written; `--json` output is machine-readable.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;
use serde_json::Value;

fn vektagraf(data: &Path, args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_vektagraf"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()?)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_vectors(path: &Path, rows: usize) -> Result<()> {
    let bytes: Vec<u8> = (0..rows * 4)
        .flat_map(|i| ((i % 7) as f32 + 1.0).to_le_bytes())
        .collect();
    Ok(std::fs::write(path, bytes)?)
}

fn object_count(data: &Path) -> Result<u64> {
    let out = vektagraf(data, &["--json", "stats", "c"])?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0]["objects"].as_u64().unwrap_or(u64::MAX))
}

#[test]
fn malformed_import_files_are_named_and_write_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("db");
    assert!(
        vektagraf(&data, &["collection", "create", "c", "--dim", "4"])?
            .status
            .success()
    );
    let vectors = dir.path().join("v.f32");
    write_vectors(&vectors, 3)?;
    let v = vectors.to_str().unwrap_or_default();

    let meta = dir.path().join("meta.jsonl");
    std::fs::write(
        &meta,
        "{\"id\": \"a\"}\n{\"id\": \"b\"}\n{\"id\": \"c\", oops}\n",
    )?;
    let out = vektagraf(
        &data,
        &[
            "import",
            "c",
            "--vectors",
            v,
            "--meta",
            meta.to_str().unwrap_or_default(),
        ],
    )?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("meta.jsonl:3: malformed JSON"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&meta, "{\"id\": \"a\"}\n{\"id\": \"b\"}\n{\"id\": \"c\"}\n")?;
    let edges = dir.path().join("edges.tsv");
    std::fs::write(&edges, "a\tb\tdepends\nb\tghost\tdepends\n")?;
    let args = [
        "import",
        "c",
        "--vectors",
        v,
        "--meta",
        meta.to_str().unwrap_or_default(),
        "--edges",
        edges.to_str().unwrap_or_default(),
    ];
    let out = vektagraf(&data, &args)?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("edges.tsv:2: edge end `ghost`"),
        "{}",
        stderr(&out)
    );

    let truncated = dir.path().join("t.f32");
    std::fs::write(&truncated, &std::fs::read(&vectors)?[..30])?;
    let out = vektagraf(
        &data,
        &[
            "import",
            "c",
            "--vectors",
            truncated.to_str().unwrap_or_default(),
        ],
    )?;
    assert!(
        stderr(&out).contains("not a whole number of rows"),
        "{}",
        stderr(&out)
    );
    let out = vektagraf(&data, &["import", "c", "--vectors", "/nonexistent/v.f32"])?;
    assert!(
        stderr(&out).contains("cannot open vectors file /nonexistent/v.f32"),
        "{}",
        stderr(&out)
    );
    assert_eq!(object_count(&data)?, 0, "refused imports wrote nothing");

    // The same import once the dangling edge is gone, asking for JSON.
    std::fs::write(&edges, "a\tb\tdepends\n")?;
    let out = vektagraf(&data, &[&["--json"][..], &args].concat())?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(object_count(&data)?, 3);
    let out = vektagraf(
        &data,
        &[
            "--json",
            "search",
            "c",
            "--vector",
            "[1, 2, 3, 4]",
            "--k",
            "2",
        ],
    )?;
    let line: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(line["ids"].as_array().map(Vec::len), Some(2), "{line}");
    assert_eq!(line["scores"].as_array().map(Vec::len), Some(2));
    let out = vektagraf(&data, &["--json", "traverse", "c", "a"])?;
    let steps: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(steps[1]["node"]["id"], "b");
    let out = vektagraf(&data, &["search", "nope", "--vector", "[1]"])?;
    assert!(
        stderr(&out).contains("collection `nope` does not exist"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn the_demo_runs_and_reports_its_queries() -> Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_vektagraf"))
        .args(["--json", "demo"])
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["objects"], 2500);
    let queries = v["queries"].as_array().cloned().unwrap_or_default();
    assert_eq!(queries.len(), 6);
    // The nearest package to `vim` is another vim build, and the filtered search only returns
    // games.
    let vim = queries[0]["rows"][0][0].as_str().unwrap_or_default();
    assert!(vim.contains("vim"), "{vim}");
    assert!(queries[3]["rows"].as_array().is_some_and(|r| r.len() == 5));
    Ok(())
}

#[test]
fn collection_drop_removes_it_and_a_second_drop_finds_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("db");
    assert!(
        vektagraf(&data, &["collection", "create", "c", "--dim", "4"])?
            .status
            .success()
    );
    let out = vektagraf(&data, &["--json", "collection", "drop", "c"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v, serde_json::json!({"dropped": true, "collection": "c"}));
    let out = vektagraf(&data, &["collection", "drop", "c"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no collection `c`"
    );
    let out = vektagraf(&data, &["--json", "collection", "list"])?;
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout)?,
        serde_json::json!([])
    );
    Ok(())
}
