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

#[test]
fn certs_make_a_cluster_ca_and_node_certificates_peers_accept() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    let certs = |args: &[&str]| -> Result<Output> {
        Ok(Command::new(env!("CARGO_BIN_EXE_vektagraf"))
            .env_remove("VEKTAGRAF_CA")
            .args(args)
            .output()?)
    };
    let ca_arg = ca.to_str().unwrap_or_default();
    let out = certs(&["certs", "init", ca_arg])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ca.key (the CA's private key"));
    let out = certs(&["certs", "init", ca_arg])?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let out = certs(&["certs", "node", "a", "--ca", ca_arg])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = certs(&[
        "--json",
        "certs",
        "node",
        "b",
        "--ca",
        ca_arg,
        "--out",
        dir.path().join("b").to_str().unwrap_or_default(),
        "--name",
        "db.example.com",
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["node"], "b");
    assert!(
        v["names"]
            .as_array()
            .is_some_and(|n| n.contains(&"db.example.com".into())),
        "{v}"
    );
    let out = certs(&["certs", "node", "Bad", "--ca", ca_arg])?;
    assert!(
        stderr(&out).contains("invalid node id \"Bad\""),
        "{}",
        stderr(&out)
    );
    let out = certs(&["certs", "node", "c"])?;
    assert!(stderr(&out).contains("needs --ca DIR"), "{}", stderr(&out));

    use vektagraf::replication::tls::PeerTls;
    let a = PeerTls::load(
        &ca.join("ca.pem"),
        &ca.join("a/node.pem"),
        &ca.join("a/node.key"),
    )?;
    assert_eq!(a.node_id, "a");
    let b = dir.path().join("b");
    let b = PeerTls::load(&ca.join("ca.pem"), &b.join("node.pem"), &b.join("node.key"))?;
    assert_eq!(b.node_id, "b");
    Ok(())
}

/// Copies a closed data directory (files and subdirectories).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[test]
fn stats_show_the_conflict_policy_and_a_digest_of_the_state() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let load = |data: &Path| -> Result<()> {
        let out = vektagraf(
            data,
            &[
                "collection",
                "create",
                "c",
                "--dim",
                "4",
                "--conflict",
                "first-write-wins",
            ],
        )?;
        assert!(out.status.success(), "{}", stderr(&out));
        let vectors = dir.path().join("v.f32");
        write_vectors(&vectors, 5)?;
        let out = vektagraf(
            data,
            &[
                "import",
                "c",
                "--vectors",
                vectors.to_str().unwrap_or_default(),
            ],
        )?;
        assert!(out.status.success(), "{}", stderr(&out));
        Ok(())
    };
    let digest = |data: &Path| -> Result<String> {
        let out = vektagraf(data, &["--json", "stats", "c"])?;
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(v[0]["spec"]["conflict"], "first-write-wins", "{v}");
        let d = v[0]["digest"].as_str().unwrap_or_default().to_owned();
        assert!(
            d.len() == 32 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{v}"
        );
        Ok(d)
    };
    let a = dir.path().join("a");
    load(&a)?;
    let first = digest(&a)?;
    let out = vektagraf(&a, &["stats", "c"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("first-write-wins"), "{text}");
    assert!(
        text.contains(&format!(
            "\n  digest {first} (5 objects, 0 edges, 0 other versions)"
        )),
        "{text}"
    );

    // The same state in another directory has the same digest; a write changes it.
    let b = dir.path().join("b");
    copy_dir(&a, &b)?;
    assert_eq!(digest(&b)?, first);
    let out = vektagraf(&b, &["delete", "c", "0"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(digest(&b)?, first);

    // Versions are state: the same import into a fresh directory is stamped by that
    // directory's own node id and clock, so its digest differs (replication copies versions,
    // which is what makes converged nodes' digests equal).
    let c = dir.path().join("c");
    load(&c)?;
    assert_ne!(digest(&c)?, first);

    // Cluster status is a node's: without --remote it says so, and creates no directory.
    let none = dir.path().join("none");
    let out = vektagraf(&none, &["cluster", "status"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cluster status needs --remote"),
        "{}",
        stderr(&out)
    );
    assert!(!none.exists());
    Ok(())
}

#[test]
fn versions_shows_an_objects_versions_and_resolve_replaces_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("db");
    let ok = |args: &[&str]| -> Result<Value> {
        let out = vektagraf(&data, args)?;
        anyhow::ensure!(out.status.success(), "{args:?}: {}", stderr(&out));
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    };
    ok(&[
        "collection",
        "create",
        "c",
        "--dim",
        "2",
        "--conflict",
        "manual",
    ])?;
    let none = ok(&["--json", "versions", "c", "x"])?;
    assert_eq!(none["versions"].as_array().map(Vec::len), Some(0));
    assert_eq!(none["context"], "");
    ok(&[
        "--json",
        "resolve",
        "c",
        "x",
        "--context",
        "",
        "--properties",
        r#"{"v": 1}"#,
        "--vector",
        "[1, 0]",
    ])?;
    let one = ok(&["--json", "versions", "c", "x"])?;
    assert_eq!(one["versions"][0]["properties"]["v"], 1);
    assert_eq!(one["versions"][0]["visible"], true);
    let context = one["context"].as_str().unwrap_or_default().to_owned();
    assert!(context.contains(':'), "{context}");
    ok(&["resolve", "c", "x", "--context", &context, "--delete"])?;
    let gone = vektagraf(&data, &["get", "c", "x"])?;
    assert!(!gone.status.success());
    let bad = vektagraf(
        &data,
        &["resolve", "c", "x", "--context", "nope", "--delete"],
    )?;
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("is not origin:seq"),
        "{}",
        stderr(&bad)
    );
    Ok(())
}
