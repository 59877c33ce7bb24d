//! Starting the node's replicator from its `[replication]` configuration.

use std::path::Path;
use std::sync::Arc;

use edge_config::{NodeConfig, ReplicationConfig};

use super::ServeError;
use crate::model::ConflictPolicy;
use crate::replication::core::Config;
use crate::replication::driver::{Options, Replicator};
use crate::replication::tls::PeerTls;
use crate::Database;

/// The file in a data directory naming the node it belongs to.
const NODE_ID_FILE: &str = "node-id";

/// The conflict policy for collections created without one (the HTTP API).
pub fn default_conflict(config: &NodeConfig) -> Result<ConflictPolicy, ServeError> {
    match &config.replication {
        Some(r) => r
            .default_conflict
            .parse()
            .map_err(|e: crate::model::InvalidInput| {
                ServeError::Config(format!("replication.default_conflict: {e}"))
            }),
        None => Ok(ConflictPolicy::LastWriteWins),
    }
}

/// A data directory belongs to one node id for life: its log entries carry that node's
/// origin, and a peer trusts the id in the certificate.
fn claim_data_dir(dir: &Path, id: &str) -> Result<(), ServeError> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing.trim() == id => Ok(()),
        Ok(existing) => Err(ServeError::Config(format!(
            "{} belongs to node `{}`, not `{id}` (replication.node_id): give this node its own data directory",
            dir.display(),
            existing.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::write(&path, format!("{id}\n"))
            .map_err(|e| ServeError::io(format!("writing {}", path.display()), e)),
        Err(e) => Err(ServeError::io(format!("reading {}", path.display()), e)),
    }
}

pub async fn start(
    db: &Arc<Database>,
    config: &NodeConfig,
) -> Result<Option<Replicator>, ServeError> {
    let Some(r) = &config.replication else {
        return Ok(None);
    };
    let ReplicationConfig {
        node_id,
        region,
        listen,
        peers,
        max_clock_skew,
        log_retention,
        anti_entropy,
        window,
        batch,
        tls,
        ..
    } = r;
    let peer_tls =
        PeerTls::load(&tls.ca, &tls.cert, &tls.key).map_err(|e| ServeError::Tls(e.to_string()))?;
    if peer_tls.node_id != *node_id {
        return Err(ServeError::Config(format!(
            "replication.node_id is `{node_id}` but {} is the certificate of node `{}`",
            tls.cert.display(),
            peer_tls.node_id
        )));
    }
    claim_data_dir(&config.data_dir, node_id)?;
    let mut core = Config::new(db.node_id(), node_id.clone());
    core.max_skew_ms = max_clock_skew.as_millis() as u64;
    core.window = *window;
    core.batch = *batch;
    core.anti_entropy_ms = anti_entropy.as_millis() as u64;
    let options = Options {
        listen: *listen,
        peers: peers
            .iter()
            .map(|p| (p.id.clone(), p.address.clone(), p.region.clone()))
            .collect(),
        region: region.clone(),
        tls: peer_tls,
        core,
        max_frame_bytes: (config.limits.max_frame_bytes * 2).max(64 << 20),
        idle_timeout: std::time::Duration::from_secs(10),
        log_retention: *log_retention,
    };
    let replicator = Replicator::start(db.clone(), options)
        .await
        .map_err(|e| ServeError::Config(e.to_string()))?;
    tracing::info!(node = %node_id, listen = ?replicator.local_addr(), peers = peers.len(), "replication started");
    Ok(Some(replicator))
}
