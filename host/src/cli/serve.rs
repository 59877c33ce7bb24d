//! `vektagraf serve`: a node on the embedded defaults (or `--config`), until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use edge_config::NodeConfig;

use crate::server::Node;

#[derive(Args)]
pub struct ServeArgs {
    /// QUIC address for clients (overrides node.quic_listen; default 127.0.0.1:7400).
    #[arg(long)]
    pub quic_listen: Option<SocketAddr>,
    /// HTTP address for /health, /ready and /metrics (overrides node.http_listen; default
    /// 127.0.0.1:7480).
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

/// Waits for Ctrl-C or SIGTERM.
async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub fn run(data: Option<PathBuf>, config: Option<PathBuf>, args: ServeArgs) -> Result<()> {
    let mut cfg = match &config {
        Some(p) => NodeConfig::from_file(p)?,
        None => NodeConfig::default(),
    };
    if let Some(d) = data {
        cfg.data_dir = d;
    }
    if let Some(a) = args.quic_listen {
        cfg.quic_listen = a;
    }
    if let Some(a) = args.http_listen {
        cfg.http_listen = a;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let node = Node::start(cfg.clone()).await?;
        print_banner(&node, &cfg);
        signalled().await;
        eprintln!("stopping: finishing requests in flight, then closing the database");
        node.shutdown().await?;
        eprintln!("stopped cleanly");
        Ok(())
    })
}

fn print_banner(node: &Node, cfg: &NodeConfig) {
    let quic = node.quic_addr();
    let http = node.http_addr();
    println!(
        "vektagraf node {:016x} serving {}",
        node.database().node_id(),
        absolute(&cfg.data_dir).display()
    );
    println!("  QUIC  quic://{quic}   (ALPN vektagraf/1)");
    println!("  HTTP  http://{http}   (Qdrant-compatible API; /health /ready /metrics)");
    let token_line = match node.new_admin_token() {
        Some((token, path)) => {
            println!(
                "Created an admin token (shown only now; also saved to {}, mode 0600).",
                absolute(path).display()
            );
            format!("export VEKTAGRAF_TOKEN={token}")
        }
        None => {
            let path = crate::server::admin_token_path(&cfg.data_dir);
            if path.exists() {
                format!(
                    "export VEKTAGRAF_TOKEN=$(cat {})",
                    absolute(&path).display()
                )
            } else {
                "export VEKTAGRAF_TOKEN=<a token from `vektagraf token create`>".to_owned()
            }
        }
    };
    println!("To use it from the CLI (e.g. `vektagraf load-demo`, `vektagraf stats`):");
    println!("  export VEKTAGRAF_REMOTE=quic://{quic}");
    println!("  {token_line}");
    match node.ca_file() {
        Some(ca) => println!("  export VEKTAGRAF_CA={}", absolute(ca).display()),
        None => {
            println!("  export VEKTAGRAF_CA=<the CA file that signed the configured certificate>")
        }
    }
}
