//! The CLI as a client: `vektagraf serve` in its own process, then the data commands with
//! `--remote`, checked against the same commands on a local directory; SIGTERM stops the node
//! cleanly with exit code 0.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vektagraf"));
    for v in ["VEKTAGRAF_REMOTE", "VEKTAGRAF_TOKEN", "VEKTAGRAF_CA"] {
        c.env_remove(v);
    }
    c
}

/// A `vektagraf serve` process, killed if the test fails before stopping it.
struct Served {
    child: Child,
    remote: String,
    token: String,
    ca: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path) -> Result<Served> {
    let mut child = bin()
        .args([
            "serve",
            "--quic-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut served = Served {
        child,
        remote: String::new(),
        token: String::new(),
        ca: String::new(),
    };
    // The banner ends with the three exports a user runs.
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let line = line.trim();
        if let Some(v) = line.strip_prefix("export VEKTAGRAF_REMOTE=") {
            served.remote = v.to_owned();
        } else if let Some(v) = line.strip_prefix("export VEKTAGRAF_TOKEN=") {
            served.token = v.to_owned();
        } else if let Some(v) = line.strip_prefix("export VEKTAGRAF_CA=") {
            served.ca = v.to_owned();
            break;
        }
    }
    if served.remote.is_empty() || !served.token.starts_with("vg_") || served.ca.is_empty() {
        bail!("the banner lacked the exports");
    }
    Ok(served)
}

fn remote(s: &Served, args: &[&str]) -> Result<Output> {
    Ok(bin()
        .env("VEKTAGRAF_REMOTE", &s.remote)
        .env("VEKTAGRAF_TOKEN", &s.token)
        .env("VEKTAGRAF_CA", &s.ca)
        .args(args)
        .output()?)
}

fn local(data: &Path, args: &[&str]) -> Result<Output> {
    Ok(bin().arg("--data").arg(data).args(args).output()?)
}

fn ok(o: Output) -> Result<String> {
    if !o.status.success() {
        bail!("failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8(o.stdout)?)
}

#[test]
fn data_commands_run_against_a_node_as_they_do_locally() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = serve(&dir.path().join("node"))?;
    let here = dir.path().join("local");

    // The same import on both sides: 40 rows of 4 dims, ids and properties, edges.
    let rows = 40;
    let vectors: Vec<u8> = (0..rows * 4)
        .flat_map(|i| (((i * 37) % 11) as f32 + 1.0 + (i / 4) as f32 * 0.01).to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("v.f32"), vectors)?;
    let meta: String = (0..rows)
        .map(|i| format!("{{\"id\": \"o{i}\", \"n\": {i}}}\n"))
        .collect();
    std::fs::write(dir.path().join("m.jsonl"), meta)?;
    let edges: String = (1..rows)
        .map(|i| format!("o{}\to{i}\tnext\n", i - 1))
        .collect();
    std::fs::write(dir.path().join("e.tsv"), edges)?;
    let v = dir.path().join("v.f32").display().to_string();
    let m = dir.path().join("m.jsonl").display().to_string();
    let e = dir.path().join("e.tsv").display().to_string();
    let create = ["collection", "create", "c", "--dim", "4"];
    let import = [
        "--json",
        "import",
        "c",
        "--vectors",
        &v,
        "--meta",
        &m,
        "--edges",
        &e,
        "--batch",
        "7",
    ];
    ok(remote(&node, &create)?)?;
    ok(local(&here, &create)?)?;
    let imported = ok(remote(&node, &import)?)?;
    assert!(imported.contains("\"objects\":40"), "{imported}");
    ok(local(&here, &import)?)?;

    // Reads print the same thing either way.
    for args in [
        vec!["--json", "search", "c", "--queries", &v, "--k", "3"],
        vec![
            "--json",
            "search",
            "c",
            "--vector",
            "[1,2,3,4]",
            "--filter",
            "{\"n\": {\"$lt\": 20}}",
            "--ef",
            "50",
        ],
        vec!["--json", "traverse", "c", "o3", "--depth", "3"],
        vec!["collection", "list"],
    ] {
        assert_eq!(
            ok(remote(&node, &args)?)?,
            ok(local(&here, &args)?)?,
            "{args:?}"
        );
    }
    // Query rows on several threads print the same answers in the same order.
    let single = ok(local(
        &here,
        &["--json", "search", "c", "--queries", &v, "--k", "3"],
    )?)?;
    for threads in ["2", "5"] {
        let args = [
            "--json",
            "search",
            "c",
            "--queries",
            &v,
            "--k",
            "3",
            "--threads",
            threads,
        ];
        assert_eq!(ok(local(&here, &args)?)?, single);
        assert_eq!(ok(remote(&node, &args)?)?, single);
    }
    let got: Value = serde_json::from_str(&ok(remote(&node, &["--json", "get", "c", "o5"])?)?)?;
    assert_eq!(got["properties"]["n"], 5);
    assert_eq!(got["vector"].as_array().map(Vec::len), Some(4));
    ok(remote(&node, &["delete", "c", "o5"])?)?;
    let missing = remote(&node, &["get", "c", "o5"])?;
    assert!(!missing.status.success());
    let stats: Value = serde_json::from_str(&ok(remote(&node, &["--json", "stats", "c"])?)?)?;
    assert_eq!(stats[0]["objects"], 39);
    let digest = stats[0]["digest"].as_str().context("digest")?;
    assert_eq!(digest.len(), 32, "{stats}");
    let text = ok(remote(&node, &["stats", "c"])?)?;
    assert!(text.contains("last-write-wins"), "{text}");
    assert!(
        text.contains(&format!("\n  digest {digest} (39 objects")),
        "{text}"
    );

    // This node does not replicate: its cluster status says so.
    assert_eq!(
        ok(remote(&node, &["--json", "cluster", "status"])?)?.trim(),
        "null"
    );
    let text = ok(remote(&node, &["cluster", "status"])?)?;
    assert!(text.contains("does not replicate"), "{text}");

    // A read-only token reads but may not write; the refusal names the role.
    let t: Value = serde_json::from_str(&ok(remote(
        &node,
        &["--json", "token", "create", "--role", "read"],
    )?)?)?;
    let reader = t["token"].as_str().context("token")?;
    let out = bin()
        .env("VEKTAGRAF_REMOTE", &node.remote)
        .env("VEKTAGRAF_CA", &node.ca)
        .args(["--token", reader, "delete", "c", "o6"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the token's role `read` may not write"),
        "{err}"
    );
    assert!(ok(remote(&node, &["token", "list"])?)?.contains("\tread\t"));

    // The load tool: two clients, a mix of searches, gets and writes, for half a second.
    let report: Value = serde_json::from_str(&ok(remote(
        &node,
        &[
            "--json",
            "bench-remote",
            "c",
            "--queries",
            &v,
            "--clients",
            "2",
            "--duration",
            "0.5",
            "--mix",
            "80,10,10",
        ],
    )?)?)?;
    let ops = report.as_array().context("a list per operation")?;
    assert_eq!(ops.len(), 3, "{report}");
    for op in ops {
        assert_eq!(op["errors"], 0, "{op}");
        assert!(op["p99_ms"].as_f64() >= op["p50_ms"].as_f64(), "{op}");
    }
    assert!(ops[0]["requests"].as_u64() > Some(0), "{report}");

    // A missing CA is a clear error, not a hang.
    let out = bin()
        .env("VEKTAGRAF_REMOTE", &node.remote)
        .args(["stats"])
        .output()?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("--remote needs --ca FILE"));
    let stats: Value = serde_json::from_str(&ok(remote(&node, &["--json", "stats", "c"])?)?)?;
    let digest = stats[0]["digest"].as_str().context("digest")?.to_owned();

    // SIGTERM: the node finishes, closes its database, and exits 0.
    let mut node = node;
    let pid = node.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()?
        .success());
    let status = node.child.wait()?;
    assert!(status.success(), "exit status {status}");
    // The data is all there when the directory is opened locally: the 39 objects, and what
    // the load tool wrote.
    let stats: Value = serde_json::from_str(&ok(local(
        &dir.path().join("node"),
        &["--json", "stats", "c"],
    )?)?)?;
    let writes = ops[2]["requests"].as_u64().context("writes")?;
    assert_eq!(stats[0]["objects"].as_u64(), Some(39 + writes));
    // The same state, read by the node then from its directory: the same digest.
    assert_eq!(stats[0]["digest"], digest.as_str());
    Ok(())
}
