//! `vektagraf certs`: the cluster CA and the node certificates for mutual TLS between nodes
//! (the same certificate serves a node's client port). See `replication::tls`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;

use super::Out;
use crate::replication::tls;

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Create a cluster CA in DIR: ca.pem (nodes and clients trust it) and ca.key (signs node
    /// certificates; keep it safe). Refuses to overwrite either.
    Init { dir: PathBuf },
    /// Create the certificate of node ID, signed by the CA given with --ca DIR (the directory of
    /// `certs init`, or its ca.pem): node.pem (the certificate, then the CA's) and node.key.
    ///
    /// The certificate names the node (URI `urn:vektagraf:node:ID`) and is valid for localhost,
    /// ID, ID.node.vektagraf.internal (the name peers dial it by), 127.0.0.1, ::1 and every
    /// --name.
    Node {
        /// The node id: 1 to 63 characters of a-z, 0-9 and `-`, not starting or ending with `-`.
        id: String,
        /// Where to write node.pem and node.key [default: the CA directory's subdirectory ID].
        #[arg(long, value_name = "OUTDIR")]
        out: Option<PathBuf>,
        /// Another host name or IP address the certificate is valid for (repeatable).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
    },
}

/// Runs a `certs` command; `ca` is the global `--ca` (a directory or the `ca.pem` in it).
pub(super) fn run(cmd: CertsCmd, ca: Option<&Path>, out: &Out) -> Result<()> {
    match cmd {
        CertsCmd::Init { dir } => {
            let files = tls::create_ca(&dir)?;
            out.print(
                &json!({"ca": {"cert": files.cert, "key": files.key}}),
                || {
                    format!(
                        "wrote {} (the cluster CA certificate: nodes and clients trust it)\n\
                         wrote {} (the CA's private key, mode 0600: it signs node certificates; \
                         keep it safe)",
                        files.cert.display(),
                        files.key.display()
                    )
                },
            );
        }
        CertsCmd::Node {
            id,
            out: dir,
            names,
        } => {
            let ca = ca.context(
                "certs node needs --ca DIR: the directory of `vektagraf certs init DIR`",
            )?;
            let ca_dir = if ca.is_file() {
                ca.parent().unwrap_or(Path::new(".")).to_owned()
            } else {
                ca.to_owned()
            };
            tls::check_node_id(&id)?;
            let dir = dir.unwrap_or_else(|| ca_dir.join(&id));
            let files = tls::create_node_cert(&ca_dir, &id, &names, &dir)?;
            out.print(
                &json!({"node": id, "cert": files.cert, "key": files.key, "names": files.names}),
                || {
                    format!(
                        "wrote {} (the certificate of node `{id}`, then the CA's; valid for {})\n\
                         wrote {} (its private key, mode 0600)",
                        files.cert.display(),
                        files.names.join(", "),
                        files.key.display()
                    )
                },
            );
        }
    }
    Ok(())
}
