//! The configuration as written: every key optional, unknown keys rejected.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{ConfigError, DatabaseConfig, NodeConfig, TlsFiles};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    engine: RawEngine,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    node: RawNode,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    data_dir: Option<PathBuf>,
    quic_listen: Option<String>,
    http_listen: Option<String>,
    max_connections: Option<u64>,
    connection_timeout_ms: Option<u64>,
    max_streams_per_connection: Option<u64>,
    max_frame_bytes: Option<u64>,
    max_batch_writes: Option<u64>,
    max_query_rows: Option<u64>,
    max_http_requests: Option<u64>,
    default_timeout_ms: Option<u64>,
    max_timeout_ms: Option<u64>,
    read_timeout_ms: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    admin_token_file: Option<PathBuf>,
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    memory_limit_mib: Option<u64>,
    query_timeout_ms: Option<u64>,
    apply_timeout_ms: Option<u64>,
    read_replicas: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    snapshot_every_ops: Option<u64>,
    group_commit_max: Option<usize>,
    commit_queue: Option<usize>,
}

fn invalid(file: &str, key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_owned(),
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

impl RawConfig {
    pub(crate) fn validate_node(self, file: &str) -> Result<NodeConfig, ConfigError> {
        let RawConfig {
            engine,
            storage,
            node: n,
        } = self;
        let database = RawConfig {
            engine,
            storage,
            node: RawNode::default(),
        }
        .validate(file)?;
        let mut c = NodeConfig {
            database,
            ..NodeConfig::default()
        };
        if let Some(d) = n.data_dir {
            c.data_dir = d;
        }
        for (key, value, slot) in [
            ("node.quic_listen", n.quic_listen, &mut c.quic_listen),
            ("node.http_listen", n.http_listen, &mut c.http_listen),
        ] {
            if let Some(text) = value {
                *slot = text.parse::<SocketAddr>().map_err(|e| {
                    invalid(
                        file,
                        key,
                        &format!("`{text}` is not an address like 127.0.0.1:7400 ({e})"),
                    )
                })?;
            }
        }
        let l = &mut c.limits;
        let counts: [(&str, Option<u64>, &mut u64, u64, u64); 6] = [
            (
                "node.max_connections",
                n.max_connections,
                &mut l.max_connections,
                1,
                1_000_000,
            ),
            (
                "node.max_streams_per_connection",
                n.max_streams_per_connection,
                &mut l.max_streams_per_connection,
                1,
                65_536,
            ),
            (
                "node.max_frame_bytes",
                n.max_frame_bytes,
                &mut l.max_frame_bytes,
                1024,
                1 << 31,
            ),
            (
                "node.max_batch_writes",
                n.max_batch_writes,
                &mut l.max_batch_writes,
                1,
                1_000_000,
            ),
            (
                "node.max_query_rows",
                n.max_query_rows,
                &mut l.max_query_rows,
                1,
                1_000_000,
            ),
            (
                "node.max_http_requests",
                n.max_http_requests,
                &mut l.max_http_requests,
                1,
                1_000_000,
            ),
        ];
        for (key, value, slot, lo, hi) in counts {
            if let Some(v) = value {
                if !(lo..=hi).contains(&v) {
                    return Err(invalid(
                        file,
                        key,
                        &format!("must be between {lo} and {hi}"),
                    ));
                }
                *slot = v;
            }
        }
        let times: [(&str, Option<u64>, &mut Duration); 5] = [
            (
                "node.connection_timeout_ms",
                n.connection_timeout_ms,
                &mut l.connection_timeout,
            ),
            (
                "node.default_timeout_ms",
                n.default_timeout_ms,
                &mut l.default_timeout,
            ),
            ("node.max_timeout_ms", n.max_timeout_ms, &mut l.max_timeout),
            (
                "node.read_timeout_ms",
                n.read_timeout_ms,
                &mut l.read_timeout,
            ),
            (
                "node.shutdown_grace_ms",
                n.shutdown_grace_ms,
                &mut l.shutdown_grace,
            ),
        ];
        for (key, value, slot) in times {
            if let Some(ms) = value {
                if !(10..=86_400_000).contains(&ms) {
                    return Err(invalid(
                        file,
                        key,
                        "must be between 10 and 86400000 (milliseconds)",
                    ));
                }
                *slot = Duration::from_millis(ms);
            }
        }
        if l.default_timeout > l.max_timeout {
            return Err(invalid(
                file,
                "node.default_timeout_ms",
                "must not exceed node.max_timeout_ms",
            ));
        }
        c.admin_token_file = n.admin_token_file;
        c.tls = n.tls.map(|t| TlsFiles {
            cert: t.cert,
            key: t.key,
        });
        Ok(c)
    }

    pub(crate) fn validate(self, file: &str) -> Result<DatabaseConfig, ConfigError> {
        let invalid = |key: &str, reason: &str| invalid(file, key, reason);
        let mut c = DatabaseConfig::default();
        if let Some(mib) = self.engine.memory_limit_mib {
            if !(16..=4096).contains(&mib) {
                return Err(invalid(
                    "engine.memory_limit_mib",
                    "must be between 16 and 4096 (Wasm32 addresses at most 4 GiB)",
                ));
            }
            c.engine.memory_limit_bytes = mib << 20;
        }
        for (key, value, slot) in [
            (
                "engine.query_timeout_ms",
                self.engine.query_timeout_ms,
                &mut c.engine.query_timeout,
            ),
            (
                "engine.apply_timeout_ms",
                self.engine.apply_timeout_ms,
                &mut c.engine.apply_timeout,
            ),
        ] {
            if let Some(ms) = value {
                if ms < 10 {
                    return Err(invalid(key, "must be at least 10 (milliseconds)"));
                }
                *slot = Duration::from_millis(ms);
            }
        }
        if let Some(n) = self.engine.read_replicas {
            if !(1..=16).contains(&n) {
                return Err(invalid("engine.read_replicas", "must be between 1 and 16"));
            }
            c.read_replicas = n;
        }
        if let Some(n) = self.storage.snapshot_every_ops {
            c.snapshot_every_ops = n;
        }
        if let Some(n) = self.storage.commit_queue {
            if !(1..=1_000_000).contains(&n) {
                return Err(invalid(
                    "storage.commit_queue",
                    "must be between 1 and 1000000",
                ));
            }
            c.commit_queue = n;
        }
        if let Some(n) = self.storage.group_commit_max {
            if n == 0 {
                return Err(invalid("storage.group_commit_max", "must be at least 1"));
            }
            c.group_commit_max = n;
        }
        Ok(c)
    }
}
