//! Vektagraf configuration: raw TOML ([`raw`]) is parsed with unknown keys rejected, then
//! validated once into the typed, ready-to-use [`DatabaseConfig`]. Every error names the file,
//! the key and the reason.
//!
//! ```toml
//! [engine]
//! memory_limit_mib = 4096     # per engine instance (one per shard)
//! query_timeout_ms = 10000    # epoch deadline of a query call
//! apply_timeout_ms = 120000   # epoch deadline of a write or rebuild call
//! read_replicas = 1           # engine instances per shard: searches run on that many at once;
//!                             # each holds a full copy of the shard's memory, and every write
//!                             # is applied to each
//!
//! [storage]
//! snapshot_every_ops = 50000  # write index snapshots after this many logged mutations
//! group_commit_max = 64       # most write batches folded into one durable commit
//! commit_queue = 1024         # write batches that may wait for the committer; beyond it a
//!                             # node answers `overloaded` (an embedded write waits)
//!
//! [node]                      # `vektagraf serve` (all optional; these are the defaults)
//! data_dir = "vektagraf-data"
//! quic_listen = "127.0.0.1:7400"
//! http_listen = "127.0.0.1:7480"
//! max_connections = 1024            # the seed's maxConnections
//! connection_timeout_ms = 60000     # the seed's connectionTimeout: idle connections close
//! max_streams_per_connection = 256  # requests in flight on one connection
//! max_frame_bytes = 268435456       # largest request or response frame
//! max_batch_writes = 100000         # writes in one batch
//! max_query_rows = 100000           # query rows in one search
//! max_http_requests = 512           # HTTP API requests served at once; beyond it: 429
//! default_timeout_ms = 30000        # a request's deadline when it names none
//! max_timeout_ms = 600000           # the longest deadline a request may ask for
//! read_timeout_ms = 10000           # a request frame must arrive within this
//! shutdown_grace_ms = 10000         # in-flight requests get this long on SIGTERM
//!
//! admin_token_file = "admin.token" # an admin token shared by several nodes (optional)
//!
//! [node.tls]                        # without it: a development CA under data_dir/tls
//! cert = "node.pem"                 # certificate chain (PEM)
//! key = "node.key"                  # private key (PEM)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod raw;

/// What can go wrong reading a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

/// Limits applied to every engine instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineLimits {
    /// Most linear memory one instance may grow to. Wasm32 cannot address more than 4 GiB.
    pub memory_limit_bytes: u64,
    pub query_timeout: Duration,
    pub apply_timeout: Duration,
}

/// The validated configuration of an embedded database (and, later, of a node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub engine: EngineLimits,
    /// Engine instances per shard, all with the same state: a shard serves this many reads at
    /// once, at the cost of one copy of its memory each (and each write applied to each).
    pub read_replicas: usize,
    pub snapshot_every_ops: u64,
    pub group_commit_max: usize,
    /// Write batches that may wait for the committer.
    pub commit_queue: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            engine: EngineLimits {
                memory_limit_bytes: 4096 << 20,
                query_timeout: Duration::from_secs(10),
                apply_timeout: Duration::from_secs(120),
            },
            read_replicas: 1,
            snapshot_every_ops: 50_000,
            group_commit_max: 64,
            commit_queue: 1024,
        }
    }
}

/// Limits a node applies to clients (the seed's `maxConnections`, `connectionTimeout`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLimits {
    pub max_connections: u64,
    /// Idle QUIC connections are closed after this.
    pub connection_timeout: Duration,
    pub max_streams_per_connection: u64,
    pub max_frame_bytes: u64,
    pub max_batch_writes: u64,
    pub max_query_rows: u64,
    /// HTTP API requests served at once; more are answered 429 with `Retry-After`.
    pub max_http_requests: u64,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    /// A client must deliver its whole request frame within this (slow clients are cut off).
    pub read_timeout: Duration,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
}

/// A node's own certificate and key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration of a node (`vektagraf serve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub quic_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub limits: NodeLimits,
    /// `None`: a development CA and certificate are created under `data_dir/tls`.
    pub tls: Option<TlsFiles>,
    /// A file holding an admin token (`vg_<id>_<secret>`) that this node accepts, so several
    /// nodes share one (e.g. from a Kubernetes secret). Without it, the first start of a data
    /// directory creates one and writes it to `data_dir/admin.token`.
    pub admin_token_file: Option<PathBuf>,
    pub database: DatabaseConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("vektagraf-data"),
            quic_listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            limits: NodeLimits {
                max_connections: 1024,
                connection_timeout: Duration::from_secs(60),
                max_streams_per_connection: 256,
                max_frame_bytes: 256 << 20,
                max_batch_writes: 100_000,
                max_query_rows: 100_000,
                max_http_requests: 512,
                default_timeout: Duration::from_secs(30),
                max_timeout: Duration::from_secs(600),
                read_timeout: Duration::from_secs(10),
                shutdown_grace: Duration::from_secs(10),
            },
            tls: None,
            admin_token_file: None,
            database: DatabaseConfig::default(),
        }
    }
}

fn read(path: &Path) -> Result<(String, String), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    Ok((file, text))
}

fn parse(file: &str, text: &str) -> Result<raw::RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

impl DatabaseConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let (file, text) = read(path)?;
        Self::from_toml(&file, &text)
    }

    /// Parses and validates TOML text; `file` names it in errors. A `[node]` section is
    /// checked too, and otherwise ignored.
    pub fn from_toml(file: &str, text: &str) -> Result<Self, ConfigError> {
        Ok(parse(file, text)?.validate_node(file)?.database)
    }
}

impl NodeConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let (file, text) = read(path)?;
        Self::from_toml(&file, &text)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml(file: &str, text: &str) -> Result<Self, ConfigError> {
        parse(file, text)?.validate_node(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_keys_override() {
        assert_eq!(
            DatabaseConfig::from_toml("a.toml", "").expect("empty"),
            DatabaseConfig::default()
        );
        let c = DatabaseConfig::from_toml("a.toml", "[engine]\nmemory_limit_mib = 64\n")
            .expect("valid");
        assert_eq!(c.engine.memory_limit_bytes, 64 << 20);
        assert_eq!(
            c.snapshot_every_ops,
            DatabaseConfig::default().snapshot_every_ops
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = DatabaseConfig::from_toml("node.toml", "[engine]\nmemory_limit_mib = 8192\n")
            .expect_err("too big");
        assert_eq!(e.to_string(), "node.toml: `engine.memory_limit_mib`: must be between 16 and 4096 (Wasm32 addresses at most 4 GiB)");
        let e = DatabaseConfig::from_toml("node.toml", "[engine]\nmemory_limt_mib = 1\n")
            .expect_err("typo");
        let msg = e.to_string();
        assert!(
            msg.starts_with("node.toml: ") && msg.contains("unknown field `memory_limt_mib`"),
            "{msg}"
        );
        let e = DatabaseConfig::from_toml("node.toml", "[storage]\ngroup_commit_max = 0\n")
            .expect_err("zero");
        assert_eq!(
            e.to_string(),
            "node.toml: `storage.group_commit_max`: must be at least 1"
        );
    }

    #[test]
    fn node_section_parses_and_names_bad_keys() {
        assert_eq!(
            NodeConfig::from_toml("n.toml", "").expect("empty"),
            NodeConfig::default()
        );
        let c = NodeConfig::from_toml(
            "n.toml",
            "[node]\nquic_listen = \"0.0.0.0:9000\"\nmax_connections = 8\nconnection_timeout_ms = 500\n[node.tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n[engine]\nmemory_limit_mib = 64\n",
        )
        .expect("valid");
        assert_eq!(c.quic_listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        assert_eq!(c.limits.max_connections, 8);
        assert_eq!(c.limits.connection_timeout, Duration::from_millis(500));
        assert_eq!(
            c.tls.as_ref().map(|t| t.key.clone()),
            Some(PathBuf::from("a.key"))
        );
        assert_eq!(c.database.engine.memory_limit_bytes, 64 << 20);
        let e = NodeConfig::from_toml("n.toml", "[node]\nquic_listen = \"localhost\"\n")
            .expect_err("no port");
        assert!(
            e.to_string().starts_with(
                "n.toml: `node.quic_listen`: `localhost` is not an address like 127.0.0.1:7400"
            ),
            "{e}"
        );
        let e = NodeConfig::from_toml("n.toml", "[node]\nmax_connections = 0\n").expect_err("zero");
        assert_eq!(
            e.to_string(),
            "n.toml: `node.max_connections`: must be between 1 and 1000000"
        );
        let e = NodeConfig::from_toml("n.toml", "[node]\ndefault_timeout_ms = 700000\n")
            .expect_err("above max");
        assert_eq!(
            e.to_string(),
            "n.toml: `node.default_timeout_ms`: must not exceed node.max_timeout_ms"
        );
        let e = NodeConfig::from_toml("n.toml", "[node]\nmax_conections = 3\n").expect_err("typo");
        assert!(
            e.to_string().contains("unknown field `max_conections`"),
            "{e}"
        );
    }
}
