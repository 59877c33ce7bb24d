//! bench/anchors.py (hnswlib, faiss, numpy) as a subprocess that stays up: it loads the vectors
//! and builds once, then answers one command per line with one JSON line, so a bench can
//! interleave it with our engine per ef.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The Python with numpy, hnswlib and faiss: target/bench-venv, made when missing.
pub fn python(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/bench-venv");
    let py = venv.join("bin/python");
    let ready = py.exists()
        && Command::new(&py)
            .args(["-c", "import numpy, hnswlib, faiss"])
            .status()?
            .success();
    if !ready {
        eprintln!(
            "setting up {} (numpy, hnswlib, faiss-cpu)...",
            venv.display()
        );
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()?
            .success()
            && Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "numpy",
                    "hnswlib",
                    "faiss-cpu",
                ])
                .status()?
                .success();
        if !ok {
            bail!("could not set up the Python anchors in {}", venv.display());
        }
    }
    Ok(py)
}

/// A running bench/anchors.py.
pub struct Anchors {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What it said when ready (`n`, `queries`, package `versions`).
    pub hello: Value,
}

impl Anchors {
    /// Starts bench/anchors.py under `root` with `args` (`--base`, `--queries`, ...) and waits
    /// until it has loaded the vectors.
    pub fn start(root: &Path, args: &[String]) -> Result<Self> {
        let py = python(root)?;
        let mut child = Command::new(py)
            .arg(root.join("bench/anchors.py"))
            .args(args)
            // OpenMP threads (faiss) sleep between calls instead of spinning on the cores
            // our engine is measured on next.
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting bench/anchors.py")?;
        let stdin = child.stdin.take().context("anchors.py stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("anchors.py stdout")?);
        let mut a = Anchors {
            child,
            stdin,
            stdout,
            hello: Value::Null,
        };
        a.hello = a.read()?;
        Ok(a)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("bench/anchors.py exited (see its stderr above)");
        }
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("anchors.py answered `{}`", line.trim()))?;
        if let Some(e) = v.get("error") {
            bail!("anchors.py: {e}");
        }
        Ok(v)
    }

    /// Sends one command line and returns its JSON answer.
    pub fn call(&mut self, command: &str) -> Result<Value> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        self.read()
            .with_context(|| format!("anchors.py `{command}`"))
    }
}

impl Drop for Anchors {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}
