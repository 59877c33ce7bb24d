//! The configuration as written: every key optional, unknown keys rejected.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{
    check_node_id, ConfigError, DatabaseConfig, NodeConfig, PeerConfig, ReplicationConfig,
    ReplicationTls, TlsFiles,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    engine: RawEngine,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    plugins: RawPlugins,
    #[serde(default)]
    node: RawNode,
    #[serde(default)]
    replication: Option<RawReplication>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    memory_limit_mib: Option<u64>,
    fuel_per_call: Option<u64>,
    call_timeout_ms: Option<u64>,
    resolver_timeout_ms: Option<u64>,
    max_component_mib: Option<u64>,
    disable_after_faults: Option<u32>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    node_id: Option<String>,
    region: Option<String>,
    listen: Option<String>,
    default_conflict: Option<String>,
    max_clock_skew_ms: Option<u64>,
    log_retention_ms: Option<u64>,
    anti_entropy_ms: Option<u64>,
    window: Option<u64>,
    batch: Option<u64>,
    #[serde(default)]
    peers: Vec<RawPeer>,
    tls: Option<RawReplicationTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    id: Option<String>,
    address: Option<String>,
    region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplicationTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// The values of `replication.default_conflict` (the names of `ConflictPolicy`).
const CONFLICT_POLICIES: [&str; 4] = [
    "last-write-wins",
    "first-write-wins",
    "vector-clock",
    "manual",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    memory_limit_mib: Option<u64>,
    query_timeout_ms: Option<u64>,
    apply_timeout_ms: Option<u64>,
    read_replicas: Option<usize>,
    huge_pages: Option<bool>,
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
            plugins,
            node: n,
            replication,
        } = self;
        let database = RawConfig {
            engine,
            storage,
            plugins,
            node: RawNode::default(),
            replication: None,
        }
        .validate(file)?;
        let mut c = NodeConfig {
            database,
            replication: replication.map(|r| r.validate(file)).transpose()?,
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
        if let Some(h) = self.engine.huge_pages {
            c.engine.huge_pages = h;
        }
        if let Some(n) = self.engine.read_replicas {
            if !(1..=16).contains(&n) {
                return Err(invalid("engine.read_replicas", "must be between 1 and 16"));
            }
            c.read_replicas = n;
        }
        let p = &self.plugins;
        if let Some(mib) = p.memory_limit_mib {
            if !(1..=4096).contains(&mib) {
                return Err(invalid(
                    "plugins.memory_limit_mib",
                    "must be between 1 and 4096",
                ));
            }
            c.plugins.memory_limit_bytes = mib << 20;
        }
        if let Some(f) = p.fuel_per_call {
            if f < 10_000 {
                return Err(invalid("plugins.fuel_per_call", "must be at least 10000"));
            }
            c.plugins.fuel_per_call = f;
        }
        for (key, value, slot) in [
            (
                "plugins.call_timeout_ms",
                p.call_timeout_ms,
                &mut c.plugins.call_timeout,
            ),
            (
                "plugins.resolver_timeout_ms",
                p.resolver_timeout_ms,
                &mut c.plugins.resolver_timeout,
            ),
        ] {
            if let Some(ms) = value {
                if !(10..=600_000).contains(&ms) {
                    return Err(invalid(key, "must be between 10 and 600000 (milliseconds)"));
                }
                *slot = Duration::from_millis(ms);
            }
        }
        if let Some(mib) = p.max_component_mib {
            if !(1..=256).contains(&mib) {
                return Err(invalid(
                    "plugins.max_component_mib",
                    "must be between 1 and 256",
                ));
            }
            c.plugins.max_component_bytes = mib << 20;
        }
        if let Some(n) = p.disable_after_faults {
            c.plugins.disable_after_faults = n;
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

impl RawReplication {
    fn validate(self, file: &str) -> Result<ReplicationConfig, ConfigError> {
        let invalid = |key: &str, reason: &str| invalid(file, key, reason);
        let required = |key: &str| invalid(key, "required when [replication] is present");
        let node_id = self
            .node_id
            .ok_or_else(|| required("replication.node_id"))?;
        check_node_id(&node_id).map_err(|reason| {
            invalid(
                "replication.node_id",
                &format!("`{node_id}` is not a valid node id: {reason}"),
            )
        })?;
        let region = check_region(self.region).map_err(|r| invalid("replication.region", r))?;
        let text = self.listen.ok_or_else(|| required("replication.listen"))?;
        let listen = text.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "replication.listen",
                &format!("`{text}` is not an address like 127.0.0.1:7501 ({e})"),
            )
        })?;
        let default_conflict = self
            .default_conflict
            .unwrap_or_else(|| CONFLICT_POLICIES[0].to_owned());
        if !CONFLICT_POLICIES.contains(&default_conflict.as_str()) {
            return Err(invalid(
                "replication.default_conflict",
                &format!(
                    "unknown policy `{default_conflict}` (expected one of: {})",
                    CONFLICT_POLICIES.join(", ")
                ),
            ));
        }
        let in_range =
            |key: &str, value: Option<u64>, lo: u64, hi: u64, default: u64, unit: &str| {
                let v = value.unwrap_or(default);
                if (lo..=hi).contains(&v) {
                    Ok(v)
                } else {
                    Err(invalid(
                        key,
                        &format!("must be between {lo} and {hi}{unit}"),
                    ))
                }
            };
        let max_clock_skew = Duration::from_millis(in_range(
            "replication.max_clock_skew_ms",
            self.max_clock_skew_ms,
            1,
            86_400_000,
            60_000,
            " (milliseconds: at most a day)",
        )?);
        let log_retention = Duration::from_millis(in_range(
            "replication.log_retention_ms",
            self.log_retention_ms,
            0,
            365 * 86_400_000,
            0,
            " (milliseconds: at most 365 days)",
        )?);
        let anti_entropy = Duration::from_millis(in_range(
            "replication.anti_entropy_ms",
            self.anti_entropy_ms,
            0,
            86_400_000,
            30_000,
            " (milliseconds: at most a day)",
        )?);
        let window = in_range("replication.window", self.window, 1, 1_000_000, 4096, "")?;
        let batch = in_range("replication.batch", self.batch, 1, 65_536, 256, "")?;
        if batch > window {
            return Err(invalid(
                "replication.batch",
                "must not exceed replication.window",
            ));
        }
        let mut peers: Vec<PeerConfig> = Vec::with_capacity(self.peers.len());
        for (i, p) in self.peers.into_iter().enumerate() {
            let key = |field: &str| format!("replication.peers[{i}].{field}");
            let id = p.id.ok_or_else(|| invalid(&key("id"), "required"))?;
            check_node_id(&id).map_err(|reason| {
                invalid(
                    &key("id"),
                    &format!("`{id}` is not a valid node id: {reason}"),
                )
            })?;
            if id == node_id {
                return Err(invalid(
                    &key("id"),
                    &format!("`{id}` is this node's own id"),
                ));
            }
            if let Some(j) = peers.iter().position(|q| q.id == id) {
                return Err(invalid(
                    &key("id"),
                    &format!("`{id}` is also the id of replication.peers[{j}]"),
                ));
            }
            let address = p
                .address
                .ok_or_else(|| invalid(&key("address"), "required"))?;
            if let Some(reason) = peer_address_problem(&address) {
                return Err(invalid(
                    &key("address"),
                    &format!("`{address}` is not host:port like 127.0.0.1:7502 ({reason})"),
                ));
            }
            let region = check_region(p.region).map_err(|r| invalid(&key("region"), r))?;
            peers.push(PeerConfig {
                id,
                address,
                region,
            });
        }
        let tls = self.tls.ok_or_else(|| required("replication.tls"))?;
        Ok(ReplicationConfig {
            node_id,
            region,
            listen,
            peers,
            default_conflict,
            max_clock_skew,
            log_retention,
            anti_entropy,
            window,
            batch,
            tls: ReplicationTls {
                ca: tls.ca,
                cert: tls.cert,
                key: tls.key,
            },
        })
    }
}

/// A region label: absent is "", given is 1 to 64 characters, none of them a control character.
fn check_region(region: Option<String>) -> Result<String, &'static str> {
    match region {
        None => Ok(String::new()),
        Some(r) if r.is_empty() || r.chars().count() > 64 => Err("must be 1 to 64 characters"),
        Some(r) if r.chars().any(char::is_control) => Err("must not contain control characters"),
        Some(r) => Ok(r),
    }
}

/// Why `address` is not `host:port` (an IP address, an IPv6 one in brackets, or a host name),
/// if it is not.
fn peer_address_problem(address: &str) -> Option<&'static str> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Some("no port");
    };
    if host.is_empty() {
        return Some("no host");
    }
    match port.parse::<u16>() {
        Err(_) => return Some("the port is not a number from 1 to 65535"),
        Ok(0) => return Some("port 0 cannot be dialled"),
        Ok(_) => {}
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Some("not an IPv6 address in the brackets");
        }
    } else if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Some("the host has a character other than letters, digits, `-`, `.` and `_`");
    } else if host.contains(':') {
        return Some("an IPv6 address must be in brackets");
    }
    None
}
