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
//! huge_pages = true           # ask Linux for transparent huge pages for engine memory (fewer
//!                             # page faults and TLB misses; false: 4 KiB pages only)
//!
//! [storage]
//! snapshot_every_ops = 1000   # write index snapshots after this many logged mutations (or 2% of the collection, if more)
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
//!
//! [replication]                     # absent: a single node, nothing replicated
//! node_id = "a"                     # this node's id: 1-63 characters of a-z, 0-9 and `-`, not
//!                                   # starting or ending with `-` (must match the id in its
//!                                   # certificate)
//! region = "eu-west"                # free text label, 1-64 characters (optional, default "")
//! listen = "127.0.0.1:7501"         # node-to-node QUIC address (required)
//! default_conflict = "last-write-wins" # for collections created without a policy (HTTP API):
//!                                   # last-write-wins | first-write-wins | vector-clock | manual
//! max_clock_skew_ms = 60000         # a remote timestamp further ahead of local time is
//!                                   # refused (1 to 86400000: at most a day)
//! log_retention_ms = 0              # keep log entries at least this long after every peer has
//!                                   # them (0: trim as soon as every peer has them and a
//!                                   # snapshot covers them); at most 365 days
//! anti_entropy_ms = 30000           # compare state digests with each peer in step this often
//!                                   # and repair what differs (0: never; at most 1 day)
//! window = 4096                     # unacknowledged log entries in flight to one peer
//!                                   # (1 to 1000000)
//! batch = 256                       # log entries per message (1 to 65536, at most `window`)
//!
//! [[replication.peers]]             # one per other node (optional: none by default)
//! id = "b"                          # its node id (same rule as node_id; not this node's own;
//!                                   # unique)
//! address = "127.0.0.1:7502"        # host:port of its replication listener; a host name is
//!                                   # resolved when dialling
//! region = "us-east"                # optional, default ""
//!
//! [replication.tls]                 # required with [replication]
//! ca = "ca.pem"                     # the cluster CA (PEM): peers must present certificates it
//!                                   # signed
//! cert = "node.pem"                 # this node's certificate (PEM)
//! key = "node.key"                  # its private key (PEM)
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
    /// Ask the kernel for transparent huge pages for engine memory (Linux; elsewhere ignored).
    pub huge_pages: bool,
}

/// Limits applied to every plugin call (docs/plugins.md). A call also ends at its caller's
/// deadline, if that comes first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Most linear memory one plugin instance may grow to.
    pub memory_limit_bytes: u64,
    /// Fuel (about one unit per Wasm instruction) one call may use.
    pub fuel_per_call: u64,
    /// The longest one handler call may run.
    pub call_timeout: Duration,
    /// The longest one resolver call may run (it runs inside a commit).
    pub resolver_timeout: Duration,
    /// The largest component accepted for upload (plugins, resolvers and engines).
    pub max_component_bytes: u64,
    /// Faults in a row (traps, timeouts, fuel, memory) after which a plugin is disabled
    /// everywhere; 0 never disables.
    pub disable_after_faults: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 64 << 20,
            fuel_per_call: 2_000_000_000,
            call_timeout: Duration::from_secs(5),
            resolver_timeout: Duration::from_millis(200),
            max_component_bytes: 16 << 20,
            disable_after_faults: 5,
        }
    }
}

/// The validated configuration of an embedded database (and, later, of a node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub engine: EngineLimits,
    pub plugins: PluginLimits,
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
                huge_pages: true,
            },
            plugins: PluginLimits::default(),
            read_replicas: 1,
            snapshot_every_ops: 1_000,
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
    /// `None` (no `[replication]` section): a single node, nothing replicated.
    pub replication: Option<ReplicationConfig>,
}

/// How a node replicates to and from its peers (`[replication]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// This node's id (see [`check_node_id`]); it must match the id in its certificate.
    pub node_id: String,
    /// A free text label (1 to 64 characters), or empty.
    pub region: String,
    /// The node-to-node QUIC address.
    pub listen: SocketAddr,
    /// The other nodes: ids unique and none equal to [`node_id`](Self::node_id).
    pub peers: Vec<PeerConfig>,
    /// The conflict policy of collections created without one (HTTP API): `last-write-wins`,
    /// `first-write-wins`, `vector-clock` or `manual`.
    pub default_conflict: String,
    /// A remote timestamp further ahead of local time than this is refused.
    pub max_clock_skew: Duration,
    /// Log entries are kept at least this long after every peer has them; zero: trimmed as soon
    /// as every peer has them and a snapshot covers them.
    pub log_retention: Duration,
    /// How often state digests are compared with a peer holding the same clock (what differs
    /// is repaired); zero: never.
    pub anti_entropy: Duration,
    /// Unacknowledged log entries in flight to one peer.
    pub window: u64,
    /// Log entries per message (at most [`window`](Self::window)).
    pub batch: u64,
    pub tls: ReplicationTls,
}

/// Another node of the cluster (`[[replication.peers]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its node id (see [`check_node_id`]).
    pub id: String,
    /// `host:port` of its replication listener: an IP address (IPv6 in brackets) or a host
    /// name, resolved when dialling.
    pub address: String,
    /// A free text label (1 to 64 characters), or empty.
    pub region: String,
}

/// The files of node-to-node TLS (`[replication.tls]`), all PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationTls {
    /// The cluster CA: peers must present certificates it signed.
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// The longest node id: a node id is a DNS label (it names the node in its certificate).
pub const MAX_NODE_ID_LEN: usize = 63;

/// Checks a node id: 1 to [`MAX_NODE_ID_LEN`] characters of `a-z`, `0-9` and `-`, not starting
/// or ending with `-` (a DNS label: `eu-west-1`, `a`, `7`). The error is the reason, e.g. `it
/// starts or ends with `-``.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let reason = if id.is_empty() {
        "it is empty"
    } else if id.len() > MAX_NODE_ID_LEN {
        "it is longer than 63 characters"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "it has a character other than a-z, 0-9 and `-`"
    } else if id.starts_with('-') || id.ends_with('-') {
        "it starts or ends with `-`"
    } else {
        return Ok(());
    };
    Err(reason.to_owned())
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
            replication: None,
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

    /// Parses and validates TOML text; `file` names it in errors. `[node]` and `[replication]`
    /// sections are checked too, and otherwise ignored.
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
        assert!(c.engine.huge_pages, "on unless turned off");
        let c =
            DatabaseConfig::from_toml("a.toml", "[engine]\nhuge_pages = false\n").expect("valid");
        assert!(!c.engine.huge_pages);
        assert!(DatabaseConfig::from_toml("a.toml", "[engine]\nhuge_pages = 1\n").is_err());
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

    /// A `[replication]` section with every key set, `extra` appended (more keys, tables...).
    fn replication(extra: &str) -> String {
        format!(
            "[replication]\n\
             node_id = \"a\"\n\
             region = \"eu-west\"\n\
             listen = \"127.0.0.1:7501\"\n\
             default_conflict = \"vector-clock\"\n\
             max_clock_skew_ms = 5000\n\
             log_retention_ms = 3600000\n\
             window = 1024\n\
             batch = 64\n\
             [replication.tls]\n\
             ca = \"ca.pem\"\n\
             cert = \"node.pem\"\n\
             key = \"node.key\"\n\
             [[replication.peers]]\n\
             id = \"b\"\n\
             address = \"127.0.0.1:7502\"\n\
             region = \"us-east\"\n\
             [[replication.peers]]\n\
             id = \"c-2\"\n\
             address = \"node-c.example:7503\"\n\
             {extra}"
        )
    }

    /// `text` with the line setting `key` setting it to `value` instead.
    fn set(text: &str, key: &str, value: u64) -> String {
        let prefix = format!("{key} = ");
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    format!("{prefix}{value}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        lines.join("\n") + "\n"
    }

    /// The error of `text` as `n.toml`.
    fn node_error(text: &str) -> String {
        NodeConfig::from_toml("n.toml", text)
            .expect_err(text)
            .to_string()
    }

    #[test]
    fn replication_section_parses() {
        assert_eq!(
            NodeConfig::from_toml("n.toml", "")
                .expect("empty")
                .replication,
            None
        );
        let c = NodeConfig::from_toml("n.toml", &replication("")).expect("valid");
        assert_eq!(
            c.replication,
            Some(ReplicationConfig {
                node_id: "a".to_owned(),
                region: "eu-west".to_owned(),
                listen: SocketAddr::from(([127, 0, 0, 1], 7501)),
                peers: vec![
                    PeerConfig {
                        id: "b".to_owned(),
                        address: "127.0.0.1:7502".to_owned(),
                        region: "us-east".to_owned(),
                    },
                    PeerConfig {
                        id: "c-2".to_owned(),
                        address: "node-c.example:7503".to_owned(),
                        region: String::new(),
                    },
                ],
                default_conflict: "vector-clock".to_owned(),
                max_clock_skew: Duration::from_secs(5),
                log_retention: Duration::from_secs(3600),
                anti_entropy: Duration::from_secs(30),
                window: 1024,
                batch: 64,
                tls: ReplicationTls {
                    ca: PathBuf::from("ca.pem"),
                    cert: PathBuf::from("node.pem"),
                    key: PathBuf::from("node.key"),
                },
            })
        );
        // The rest of the node is untouched, and a database reads the same file.
        assert_eq!(
            NodeConfig {
                replication: None,
                ..c
            },
            NodeConfig::default()
        );
        assert_eq!(
            DatabaseConfig::from_toml("n.toml", &replication("")).expect("valid"),
            DatabaseConfig::default()
        );

        // Only the required keys: the defaults.
        let c = NodeConfig::from_toml(
            "n.toml",
            "[replication]\nnode_id = \"a\"\nlisten = \"[::1]:7501\"\n\
             [replication.tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\n",
        )
        .expect("minimal");
        let r = c.replication.expect("present");
        assert_eq!(r.region, "");
        assert_eq!(r.listen, "[::1]:7501".parse::<SocketAddr>().expect("v6"));
        assert!(r.peers.is_empty());
        assert_eq!(r.default_conflict, "last-write-wins");
        assert_eq!(r.max_clock_skew, Duration::from_secs(60));
        assert_eq!(r.log_retention, Duration::ZERO);
        assert_eq!((r.window, r.batch), (4096, 256));

        // Every policy name, and the bounds themselves.
        for policy in [
            "last-write-wins",
            "first-write-wins",
            "vector-clock",
            "manual",
        ] {
            let text = replication("").replace("vector-clock", policy);
            let c = NodeConfig::from_toml("n.toml", &text).expect(policy);
            assert_eq!(c.replication.expect("present").default_conflict, policy);
        }
        for (key, value) in [
            ("max_clock_skew_ms", 1),
            ("max_clock_skew_ms", 86_400_000),
            ("log_retention_ms", 0),
            ("log_retention_ms", 31_536_000_000),
            ("window", 1_000_000),
            ("batch", 1),
        ] {
            NodeConfig::from_toml("n.toml", &set(&replication(""), key, value)).expect(key);
        }
        let text = set(&set(&replication(""), "window", 65_536), "batch", 65_536);
        NodeConfig::from_toml("n.toml", &text).expect("batch = window = 65536");

        // Addresses a peer may have.
        for address in [
            "[::1]:7502",
            "10.0.0.2:1",
            "b:65535",
            "node_b.internal:7502",
        ] {
            let text = replication("").replace("127.0.0.1:7502", address);
            let c = NodeConfig::from_toml("n.toml", &text).expect(address);
            assert_eq!(c.replication.expect("present").peers[0].address, address);
        }
    }

    #[test]
    fn replication_errors_name_file_key_and_reason() {
        // The messages in full.
        assert_eq!(
            node_error(&replication(
                "[[replication.peers]]\nid = \"a\"\naddress = \"x:1\"\n"
            )),
            "n.toml: `replication.peers[2].id`: `a` is this node's own id"
        );
        assert_eq!(
            node_error(&replication(
                "[[replication.peers]]\nid = \"b\"\naddress = \"x:1\"\n"
            )),
            "n.toml: `replication.peers[2].id`: `b` is also the id of replication.peers[0]"
        );
        assert_eq!(
            node_error("[replication]\nnode_id = \"a\"\nlisten = \"127.0.0.1:7501\"\n"),
            "n.toml: `replication.tls`: required when [replication] is present"
        );
        assert_eq!(
            node_error(&replication("").replace("vector-clock", "lww")),
            "n.toml: `replication.default_conflict`: unknown policy `lww` (expected one of: \
             last-write-wins, first-write-wins, vector-clock, manual)"
        );
        assert_eq!(
            node_error(&replication("").replace("node_id = \"a\"", "node_id = \"Node_A\"")),
            "n.toml: `replication.node_id`: `Node_A` is not a valid node id: it has a character \
             other than a-z, 0-9 and `-`"
        );
        assert_eq!(
            node_error(&replication("").replace("127.0.0.1:7502", "127.0.0.1")),
            "n.toml: `replication.peers[0].address`: `127.0.0.1` is not host:port like \
             127.0.0.1:7502 (no port)"
        );
        assert_eq!(
            node_error(&replication("").replace("batch = 64", "batch = 2048")),
            "n.toml: `replication.batch`: must not exceed replication.window"
        );
        assert_eq!(
            node_error(
                &replication("").replace("max_clock_skew_ms = 5000", "max_clock_skew_ms = 0")
            ),
            "n.toml: `replication.max_clock_skew_ms`: must be between 1 and 86400000 \
             (milliseconds: at most a day)"
        );

        // Then file, key and the gist of the reason.
        let cases: [(&str, String, &str, &str); 24] = [
            (
                "no node id",
                replication("").replace("node_id = \"a\"\n", ""),
                "replication.node_id",
                "required when [replication] is present",
            ),
            (
                "empty node id",
                replication("").replace("node_id = \"a\"", "node_id = \"\""),
                "replication.node_id",
                "`` is not a valid node id: it is empty",
            ),
            (
                "long node id",
                replication("").replace(
                    "node_id = \"a\"",
                    &format!("node_id = \"{}\"", "a".repeat(64)),
                ),
                "replication.node_id",
                "it is longer than 63 characters",
            ),
            (
                "node id ending in -",
                replication("").replace("node_id = \"a\"", "node_id = \"a-\""),
                "replication.node_id",
                "`a-` is not a valid node id: it starts or ends with `-`",
            ),
            (
                "no listen",
                replication("").replace("listen = \"127.0.0.1:7501\"\n", ""),
                "replication.listen",
                "required when [replication] is present",
            ),
            (
                "host name listen",
                replication("").replace("\"127.0.0.1:7501\"", "\"localhost:7501\""),
                "replication.listen",
                "`localhost:7501` is not an address like 127.0.0.1:7501",
            ),
            (
                "empty region",
                replication("").replace("\"eu-west\"", "\"\""),
                "replication.region",
                "must be 1 to 64 characters",
            ),
            (
                "long region",
                replication("").replace("\"eu-west\"", &format!("\"{}\"", "é".repeat(65))),
                "replication.region",
                "must be 1 to 64 characters",
            ),
            (
                "control character in a region",
                replication("").replace("\"us-east\"", "\"us\\neast\""),
                "replication.peers[0].region",
                "must not contain control characters",
            ),
            (
                "huge skew",
                set(&replication(""), "max_clock_skew_ms", 86_400_001),
                "replication.max_clock_skew_ms",
                "must be between 1 and 86400000",
            ),
            (
                "retention over a year",
                set(&replication(""), "log_retention_ms", 31_536_000_001),
                "replication.log_retention_ms",
                "must be between 0 and 31536000000 (milliseconds: at most 365 days)",
            ),
            (
                "zero window",
                replication("").replace("window = 1024", "window = 0"),
                "replication.window",
                "must be between 1 and 1000000",
            ),
            (
                "huge batch",
                replication("")
                    .replace("window = 1024", "window = 100000")
                    .replace("batch = 64", "batch = 65537"),
                "replication.batch",
                "must be between 1 and 65536",
            ),
            (
                "peer without id",
                replication("[[replication.peers]]\naddress = \"x:1\"\n"),
                "replication.peers[2].id",
                "required",
            ),
            (
                "bad peer id",
                replication("").replace("id = \"c-2\"", "id = \"c.2\""),
                "replication.peers[1].id",
                "`c.2` is not a valid node id: it has a character other than a-z, 0-9 and `-`",
            ),
            (
                "peer without address",
                replication("[[replication.peers]]\nid = \"d\"\n"),
                "replication.peers[2].address",
                "required",
            ),
            (
                "no host",
                replication("").replace("127.0.0.1:7502", ":7502"),
                "replication.peers[0].address",
                "(no host)",
            ),
            (
                "port too big",
                replication("").replace("127.0.0.1:7502", "b:70000"),
                "replication.peers[0].address",
                "(the port is not a number from 1 to 65535)",
            ),
            (
                "port not a number",
                replication("").replace("127.0.0.1:7502", "b:http"),
                "replication.peers[0].address",
                "(the port is not a number from 1 to 65535)",
            ),
            (
                "port zero",
                replication("").replace("127.0.0.1:7502", "b:0"),
                "replication.peers[0].address",
                "(port 0 cannot be dialled)",
            ),
            (
                "bare IPv6",
                replication("").replace("127.0.0.1:7502", "::1:7502"),
                "replication.peers[0].address",
                "(an IPv6 address must be in brackets)",
            ),
            (
                "a URL",
                replication("").replace("127.0.0.1:7502", "https://b:7502"),
                "replication.peers[0].address",
                "(the host has a character other than letters, digits, `-`, `.` and `_`)",
            ),
            (
                "not IPv6 in brackets",
                replication("").replace("127.0.0.1:7502", "[b]:7502"),
                "replication.peers[0].address",
                "(not an IPv6 address in the brackets)",
            ),
            (
                "checked for a database too",
                replication("").replace("window = 1024", "window = 0"),
                "replication.window",
                "must be between 1 and 1000000",
            ),
        ];
        for (what, text, key, reason) in cases {
            let msg = if what == "checked for a database too" {
                DatabaseConfig::from_toml("n.toml", &text)
                    .expect_err(what)
                    .to_string()
            } else {
                node_error(&text)
            };
            let prefix = format!("n.toml: `{key}`: ");
            assert!(
                msg.starts_with(&prefix) && msg.contains(reason),
                "{what}: {msg}"
            );
        }

        // Unknown keys are rejected, in every table of the section.
        for (table, typo) in [
            ("[replication]", "windw = 1"),
            ("[replication.tls]", "crt = \"x\""),
            ("[[replication.peers]]", "adress = \"x:1\""),
        ] {
            let text = replication("").replacen(table, &format!("{table}\n{typo}"), 1);
            let msg = node_error(&text);
            let field = typo.split(' ').next().unwrap_or_default();
            assert!(
                msg.starts_with("n.toml: ") && msg.contains(&format!("unknown field `{field}`")),
                "{msg}"
            );
        }
        // So is a [replication.tls] missing a file.
        let msg = node_error(&replication("").replace("ca = \"ca.pem\"\n", ""));
        assert!(
            msg.starts_with("n.toml: ") && msg.contains("missing field `ca`"),
            "{msg}"
        );
    }

    #[test]
    fn the_documented_example_is_valid() {
        let example: String = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .skip_while(|l| l.trim() != "```toml")
            .skip(1)
            .take_while(|l| l.trim() != "```")
            .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
            .collect();
        let c = NodeConfig::from_toml("lib.rs", &example).expect("the example");
        assert_eq!(c.limits, NodeConfig::default().limits);
        assert_eq!(c.database, DatabaseConfig::default());
        let r = c.replication.expect("the example has [replication]");
        assert_eq!((r.node_id.as_str(), r.peers.len()), ("a", 1));
        assert_eq!(r.default_conflict, "last-write-wins");
    }

    #[test]
    fn node_ids_are_dns_labels() {
        for good in ["a", "eu-west-1", "7", "0x1", &"a".repeat(63)] {
            assert_eq!(check_node_id(good), Ok(()), "{good}");
        }
        for (bad, reason) in [
            ("", "it is empty"),
            (&"a".repeat(64), "it is longer than 63 characters"),
            ("A", "it has a character other than a-z, 0-9 and `-`"),
            ("a_b", "it has a character other than a-z, 0-9 and `-`"),
            ("a.b", "it has a character other than a-z, 0-9 and `-`"),
            ("é", "it has a character other than a-z, 0-9 and `-`"),
            ("-a", "it starts or ends with `-`"),
            ("a-", "it starts or ends with `-`"),
        ] {
            assert_eq!(check_node_id(bad), Err(reason.to_owned()), "{bad}");
        }
    }
}
