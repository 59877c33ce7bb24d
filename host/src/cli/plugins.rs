//! `vektagraf plugin ...` (docs/plugins.md): upload, list, show, call, enable, disable,
//! rollback and delete plugins, in a local directory or on nodes (`--remote`).

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::backend::Backend;
use super::{bytes, Out};
use crate::model::{PluginInfo, PluginVersionInfo};

#[derive(Subcommand)]
pub enum PluginCmd {
    /// Upload a new version of a plugin (a WebAssembly component); it becomes the running one
    /// on every node.
    Upload {
        /// 1 to 64 of a-z, 0-9, `-` and `_`.
        name: String,
        /// The component (`.wasm`).
        file: PathBuf,
        /// What the plugin may do beyond reading: write, clock, random (repeat the flag, or
        /// separate with commas).
        #[arg(long = "grant", value_name = "GRANT", value_delimiter = ',')]
        grants: Vec<String>,
    },
    /// Every plugin: running version, world, enabled, grants, size, SHA-256.
    List,
    /// One plugin with all its versions.
    Show { name: String },
    /// Call a query plugin; its output is written to stdout unchanged.
    ///
    /// The input comes from INPUT, or from stdin (`-`, or no INPUT when stdin is not a
    /// terminal). With --json the output is printed as `{"format": "json"|"text"|"base64",
    /// "output": ...}`.
    Call {
        name: String,
        /// A file, or `-` for stdin.
        input: Option<PathBuf>,
    },
    /// Refuse calls to a plugin (a disabled resolver is not called) until it is enabled.
    Disable { name: String },
    /// Let calls through again (after a disable, or an automatic one after faults).
    Enable { name: String },
    /// Run an uploaded version again (and enable the plugin).
    Rollback { name: String, version: u32 },
    /// Remove a plugin and all its versions, on every node.
    Delete { name: String },
}

pub(super) fn run(db: &dyn Backend, out: &Out, cmd: PluginCmd) -> Result<()> {
    match cmd {
        PluginCmd::Upload { name, file, grants } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let p = db.plugin_upload(&name, wasm, &grants)?;
            out.print(&json!(p), || {
                let v = p.versions.iter().find(|v| v.version == p.active);
                match v {
                    Some(v) => format!(
                        "uploaded plugin `{}` version {} ({}, grants {}, {}, sha256 {}); it runs now",
                        p.name,
                        v.version,
                        v.world,
                        grants_text(v),
                        bytes(v.size),
                        short(&v.sha256)
                    ),
                    None => format!("uploaded plugin `{}`", p.name),
                }
            });
        }
        PluginCmd::List => {
            let plugins = db.plugins()?;
            out.print(&json!(plugins), || list_table(&plugins));
        }
        PluginCmd::Show { name } => {
            let p = db.plugin(&name)?;
            out.print(&json!(p), || show_text(&p));
        }
        PluginCmd::Call { name, input } => {
            let input = read_input(input)?;
            let output = db.plugin_call(&name, input)?;
            if out.json {
                println!("{}", output_json(&output));
            } else {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(&output)
                    .and_then(|()| stdout.flush())
                    .context("writing the output to stdout")?;
            }
        }
        PluginCmd::Disable { name } => {
            let p = db.plugin_enable(&name, false)?;
            out.print(&json!(p), || {
                format!("disabled plugin `{}`: calls are refused", p.name)
            });
        }
        PluginCmd::Enable { name } => {
            let p = db.plugin_enable(&name, true)?;
            out.print(&json!(p), || {
                format!("enabled plugin `{}` (version {} runs)", p.name, p.active)
            });
        }
        PluginCmd::Rollback { name, version } => {
            let p = db.plugin_rollback(&name, version)?;
            out.print(&json!(p), || {
                format!("plugin `{}` runs version {} (enabled)", p.name, p.active)
            });
        }
        PluginCmd::Delete { name } => {
            db.plugin_delete(&name)?;
            out.print(&json!({"deleted": name}), || {
                format!("deleted plugin `{name}` and its versions")
            });
        }
    }
    Ok(())
}

/// The call's input: a file, or stdin for `-` (and for no INPUT unless stdin is a terminal,
/// where the input is empty rather than a wait for typing).
fn read_input(input: Option<PathBuf>) -> Result<Vec<u8>> {
    let from_stdin = match &input {
        Some(p) if p.as_os_str() == "-" => true,
        Some(_) => false,
        None => !std::io::stdin().is_terminal(),
    };
    if from_stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut buf)
            .context("reading the input from stdin")?;
        return Ok(buf);
    }
    match input {
        Some(p) => std::fs::read(&p).with_context(|| format!("reading {}", p.display())),
        None => Ok(Vec::new()),
    }
}

/// A call's output for `--json`: parsed when it is JSON, a string when it is UTF-8 text,
/// else base64 (standard alphabet, padded).
fn output_json(output: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(output) {
        return json!({"format": "json", "output": v});
    }
    match std::str::from_utf8(output) {
        Ok(text) => json!({"format": "text", "output": text}),
        Err(_) => json!({"format": "base64", "output": base64(output)}),
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The first 12 hex digits of a SHA-256.
fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

fn grants_text(v: &PluginVersionInfo) -> String {
    if v.grants.is_empty() {
        "none".to_owned()
    } else {
        v.grants.join(",")
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ms} ms"),
    }
}

/// Rows of cells, left-aligned in columns two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn list_table(plugins: &[PluginInfo]) -> String {
    if plugins.is_empty() {
        return "no plugins".to_owned();
    }
    let mut rows = vec![[
        "NAME", "VERSION", "WORLD", "ENABLED", "GRANTS", "SIZE", "SHA256",
    ]
    .map(str::to_owned)
    .to_vec()];
    for p in plugins {
        let v = p.versions.iter().find(|v| v.version == p.active);
        rows.push(vec![
            p.name.clone(),
            p.active.to_string(),
            v.map_or("-".to_owned(), |v| v.world.clone()),
            if p.enabled { "yes" } else { "no" }.to_owned(),
            v.map_or("-".to_owned(), grants_text),
            v.map_or("-".to_owned(), |v| bytes(v.size)),
            v.map_or("-".to_owned(), |v| short(&v.sha256).to_owned()),
        ]);
    }
    table(&rows)
}

fn show_text(p: &PluginInfo) -> String {
    let mut lines = vec![format!(
        "plugin `{}`: runs version {}, {}",
        p.name,
        p.active,
        if p.enabled { "enabled" } else { "disabled" }
    )];
    if let Some(note) = &p.note {
        lines.push(format!("note: {note}"));
    }
    let mut rows = vec![[
        "", "VERSION", "WORLD", "GRANTS", "SIZE", "UPLOADED", "ORIGIN", "SHA256",
    ]
    .map(str::to_owned)
    .to_vec()];
    for v in &p.versions {
        rows.push(vec![
            if v.version == p.active { "*" } else { "" }.to_owned(),
            v.version.to_string(),
            v.world.clone(),
            grants_text(v),
            bytes(v.size),
            utc(v.uploaded_ms),
            format!("{:016x}", v.origin),
            v.sha256.clone(),
        ]);
    }
    lines.push(table(&rows));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PluginInfo {
        let version = |version: u32, grants: &[&str]| PluginVersionInfo {
            version,
            world: "plugin".into(),
            grants: grants.iter().map(|g| (*g).to_owned()).collect(),
            sha256: format!("{version:02}").repeat(32),
            size: 3 << 20,
            uploaded_ms: 1_700_000_000_123,
            origin: 0xab,
        };
        PluginInfo {
            name: "rerank".into(),
            active: 2,
            enabled: false,
            note: Some("disabled automatically after 5 faults in a row".into()),
            versions: vec![version(1, &[]), version(2, &["write", "clock"])],
        }
    }

    #[test]
    fn list_and_show_are_tables() {
        assert_eq!(list_table(&[]), "no plugins");
        let text = list_table(&[info()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "VERSION", "WORLD", "ENABLED", "GRANTS", "SIZE", "SHA256"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "rerank",
                "2",
                "plugin",
                "no",
                "write,clock",
                "3.0",
                "MiB",
                "020202020202"
            ]
        );
        let text = show_text(&info());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "plugin `rerank`: runs version 2, disabled");
        assert_eq!(
            lines[1],
            "note: disabled automatically after 5 faults in a row"
        );
        assert!(lines[3].starts_with("   1 "), "{text}");
        assert!(lines[3].contains("none"), "{text}");
        assert!(lines[4].starts_with("*  2 "), "{text}");
        assert!(lines[4].contains("2023-11-14 22:13:20 UTC"), "{text}");
        assert!(lines[4].contains("00000000000000ab"), "{text}");
    }

    #[test]
    fn json_output_says_how_it_is_encoded() {
        assert_eq!(
            output_json(br#"{"a": [1, 2]}"#),
            json!({"format": "json", "output": {"a": [1, 2]}})
        );
        assert_eq!(
            output_json(b"hello"),
            json!({"format": "text", "output": "hello"})
        );
        assert_eq!(output_json(b""), json!({"format": "text", "output": ""}));
        assert_eq!(
            output_json(&[0xff, 0x00, 0x10]),
            json!({"format": "base64", "output": "/wAQ"})
        );
        for (raw, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw), encoded);
        }
    }
}
