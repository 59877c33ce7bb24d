//! Prometheus metrics (prometheus-client, text exposition on `/metrics`). Names and buckets of
//! the seed (`vektagraf_active_connections`, `vektagraf_query_duration_seconds`,
//! `vektagraf_vector_search_duration_seconds`) plus errors by kind, per-collection sizes,
//! storage bytes and engine failures. Database figures are read at scrape time.
//!
//! Plugins: calls, errors by kind and call durations, by plugin (`vektagraf_plugin_*`, kept by
//! the database: [`Database::plugin_metrics`]).
//!
//! Replication: conflicts by policy, remote writes discarded and the operation log's size are
//! database figures (shown on every node); per-peer connection, lag and traffic, rejected
//! clocks and refused peers come from the replicator's [`Status`] and are shown only when the
//! node replicates (a second registry, encoded only then).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::replication::driver::Status;
use crate::Database;

const QUERY_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
const SEARCH_BUCKETS: [f64; 7] = [0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub operation: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectionLabel {
    pub collection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type Seconds = Gauge<f64, AtomicU64>;

/// The replicator's figures, in their own registry: encoded only when the node replicates.
struct ReplicationMetrics {
    registry: Registry,
    connected: Family<PeerLabel, Gauge>,
    lag_operations: Family<PeerLabel, Gauge>,
    lag_seconds: Family<PeerLabel, Seconds>,
    last_contact_seconds: Family<PeerLabel, Seconds>,
    sent_bytes: Family<PeerLabel, Counter>,
    received_bytes: Family<PeerLabel, Counter>,
    sent_entries: Family<PeerLabel, Counter>,
    received_entries: Family<PeerLabel, Counter>,
    /// Node-wide counters, each with the status field it follows.
    totals: Vec<(Counter, StatusField)>,
}

/// Reads one counter off the replicator's status.
type StatusField = fn(&Status) -> u64;

/// The node-wide replication counters: name, help, and the status field each follows.
const TOTALS: [(&str, &str, StatusField); 8] = [
    (
        "rejected_clocks",
        "Remote entries refused because their clock was too far ahead of this node's",
        |s| s.rejected_clocks,
    ),
    (
        "refused_peers",
        "Peers refused at the handshake (unknown id, or an id not matching the certificate)",
        |s| s.refused_peers,
    ),
    (
        "tombstones_collected",
        "Tombstones forgotten once every peer had seen them",
        |s| s.tombstones_collected,
    ),
    (
        "log_trimmed_entries",
        "Operation log entries trimmed (every peer had them and the index snapshots covered them)",
        |s| s.log_trimmed,
    ),
    (
        "snapshots_sent",
        "State snapshots sent to peers lacking entries the log no longer holds",
        |s| s.snapshots_sent,
    ),
    (
        "snapshots_received",
        "State snapshots from peers merged here",
        |s| s.snapshots_received,
    ),
    (
        "anti_entropy_comparisons",
        "State digest comparisons started with peers holding the same clock",
        |s| s.comparisons,
    ),
    (
        "repaired_versions",
        "Versions merged from peers' rows where anti-entropy found the state differed",
        |s| s.repaired_versions,
    ),
];

impl ReplicationMetrics {
    fn new() -> Self {
        let mut m = ReplicationMetrics {
            registry: Registry::with_prefix("vektagraf_replication"),
            connected: Family::default(),
            lag_operations: Family::default(),
            lag_seconds: Family::default(),
            last_contact_seconds: Family::default(),
            sent_bytes: Family::default(),
            received_bytes: Family::default(),
            sent_entries: Family::default(),
            received_entries: Family::default(),
            totals: Vec::new(),
        };
        let r = &mut m.registry;
        r.register(
            "peer_connected",
            "Whether the replication connection to the peer is up (1) or not (0)",
            m.connected.clone(),
        );
        r.register(
            "lag_operations",
            "This node's log entries the peer has not acknowledged",
            m.lag_operations.clone(),
        );
        r.register(
            "lag_seconds",
            "How long the peer has been behind this node's log (0 when caught up)",
            m.lag_seconds.clone(),
        );
        r.register(
            "last_contact_seconds",
            "Time since this node last heard from the peer (no sample: never)",
            m.last_contact_seconds.clone(),
        );
        r.register("sent_bytes", "Bytes sent to the peer", m.sent_bytes.clone());
        r.register(
            "received_bytes",
            "Bytes received from the peer",
            m.received_bytes.clone(),
        );
        r.register(
            "sent_entries",
            "Log entries sent to the peer",
            m.sent_entries.clone(),
        );
        r.register(
            "received_entries",
            "Log entries received from the peer and accepted for applying",
            m.received_entries.clone(),
        );
        for (name, help, field) in TOTALS {
            let c = Counter::default();
            r.register(name, help, c.clone());
            m.totals.push((c, field));
        }
        m
    }

    fn update(&self, status: &Status) {
        for p in &status.peers {
            let label = PeerLabel { peer: p.id.clone() };
            self.connected
                .get_or_create(&label)
                .set(i64::from(p.connected));
            self.lag_operations
                .get_or_create(&label)
                .set(i64::try_from(p.lag_ops).unwrap_or(i64::MAX));
            self.lag_seconds
                .get_or_create(&label)
                .set(p.lag_ms as f64 / 1000.0);
            match p.last_contact_ms {
                Some(ms) => {
                    self.last_contact_seconds
                        .get_or_create(&label)
                        .set(ms as f64 / 1000.0);
                }
                None => {
                    self.last_contact_seconds.remove(&label);
                }
            }
            catch_up(&self.sent_bytes.get_or_create(&label), p.bytes_sent);
            catch_up(&self.received_bytes.get_or_create(&label), p.bytes_received);
            catch_up(&self.sent_entries.get_or_create(&label), p.entries_sent);
            catch_up(
                &self.received_entries.get_or_create(&label),
                p.entries_received,
            );
        }
        for (c, field) in &self.totals {
            catch_up(c, field(status));
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub active_connections: Gauge,
    pub connections_refused: Counter,
    query_duration: HistogramFamily<OpLabel>,
    vector_search_duration: Histogram,
    request_errors: Family<ErrorLabel, Counter>,
    objects: Family<CollectionLabel, Gauge>,
    vectors: Family<CollectionLabel, Gauge>,
    storage_bytes: Gauge,
    engine_traps: Counter,
    shard_rebuilds: Counter,
    conflicts: Family<PolicyLabel, Counter>,
    discarded_writes: Counter,
    unindexed_vectors: Counter,
    oplog_entries: Gauge,
    replication: ReplicationMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            active_connections: Gauge::default(),
            connections_refused: Counter::default(),
            query_duration: Family::new_with_constructor(|| Histogram::new(QUERY_BUCKETS)),
            vector_search_duration: Histogram::new(SEARCH_BUCKETS),
            request_errors: Family::default(),
            objects: Family::default(),
            vectors: Family::default(),
            storage_bytes: Gauge::default(),
            engine_traps: Counter::default(),
            shard_rebuilds: Counter::default(),
            conflicts: Family::default(),
            discarded_writes: Counter::default(),
            unindexed_vectors: Counter::default(),
            oplog_entries: Gauge::default(),
            replication: ReplicationMetrics::new(),
            registry: Registry::with_prefix("vektagraf"),
        };
        m.registry.register(
            "active_connections",
            "Client QUIC connections open now",
            m.active_connections.clone(),
        );
        m.registry.register(
            "connections_refused",
            "Connections closed at once because the node was at max_connections",
            m.connections_refused.clone(),
        );
        m.registry.register(
            "query_duration_seconds",
            "Time to answer a request, by operation",
            m.query_duration.clone(),
        );
        m.registry.register(
            "vector_search_duration_seconds",
            "Time to answer a k-NN search (search and hybrid requests)",
            m.vector_search_duration.clone(),
        );
        m.registry.register(
            "request_errors",
            "Requests answered with an error, by operation and kind",
            m.request_errors.clone(),
        );
        m.registry.register(
            "collection_objects",
            "Objects per collection",
            m.objects.clone(),
        );
        m.registry.register(
            "collection_vectors",
            "Vectors per collection",
            m.vectors.clone(),
        );
        m.registry.register(
            "storage_bytes",
            "Size of the database file",
            m.storage_bytes.clone(),
        );
        m.registry.register(
            "engine_traps",
            "Engine calls that trapped (panic, memory cap, deadline)",
            m.engine_traps.clone(),
        );
        m.registry.register(
            "shard_rebuilds",
            "Engine shards rebuilt from storage after a failure",
            m.shard_rebuilds.clone(),
        );
        m.registry.register(
            "replication_conflicts",
            "Writes (local or replicated) that met a concurrent version, by the collection's conflict policy",
            m.conflicts.clone(),
        );
        m.registry.register(
            "replication_discarded_writes",
            "Replicated writes discarded because their collection was dropped here",
            m.discarded_writes.clone(),
        );
        m.registry.register(
            "unindexed_vectors",
            "Vectors kept in storage but out of the index because the collection here cannot take them (a replicated write into a collection another region created with another dimension, or a resolver's output)",
            m.unindexed_vectors.clone(),
        );
        m.registry.register(
            "oplog_entries",
            "Entries in the operation log",
            m.oplog_entries.clone(),
        );
        m
    }

    /// Records one answered request.
    pub fn observe(&self, operation: &'static str, took: Duration, error: Option<&'static str>) {
        let secs = took.as_secs_f64();
        self.query_duration
            .get_or_create(&OpLabel {
                operation: operation.to_owned(),
            })
            .observe(secs);
        if matches!(
            operation,
            "search"
                | "hybrid"
                | "http_query"
                | "http_query_batch"
                | "http_search"
                | "http_search_batch"
                | "http_hybrid"
        ) {
            self.vector_search_duration.observe(secs);
        }
        if let Some(kind) = error {
            self.error(operation, kind);
        }
    }

    /// Counts a request that failed (also one that never got far enough to be timed).
    pub fn error(&self, operation: &str, kind: &str) {
        self.request_errors
            .get_or_create(&ErrorLabel {
                operation: operation.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the database's figures read now, and the replicator's when
    /// the node replicates (`replication`: its status, read by the caller).
    pub fn render(&self, db: &Database, replication: Option<&Status>) -> String {
        for spec in db.collections() {
            if let Ok(s) = db.stats(&spec.name) {
                let label = CollectionLabel {
                    collection: spec.name.clone(),
                };
                self.objects.get_or_create(&label).set(s.objects as i64);
                self.vectors.get_or_create(&label).set(s.vectors as i64);
            }
        }
        self.storage_bytes.set(db.storage_bytes() as i64);
        let c = db.engine_counters();
        catch_up(&self.engine_traps, c.traps);
        catch_up(&self.shard_rebuilds, c.rebuilds);
        let (conflicts, discarded) = db.conflict_counts();
        for (policy, n) in conflicts {
            let label = PolicyLabel {
                policy: policy.to_string(),
            };
            catch_up(&self.conflicts.get_or_create(&label), n);
        }
        catch_up(&self.discarded_writes, discarded);
        catch_up(&self.unindexed_vectors, db.unindexed_vectors());
        if let Ok(n) = db.log_len() {
            self.oplog_entries.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(status) = replication {
            self.replication.update(status);
        }
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        if replication.is_some() {
            let _ = encode_registry(&mut out, &self.replication.registry);
        }
        // The database keeps the plugin call figures (calls run embedded too); its families
        // carry their full names, so they go in a registry without our prefix.
        let mut plugins = Registry::default();
        db.plugin_metrics().register(&mut plugins);
        let _ = encode_registry(&mut out, &plugins);
        let _ = encode_eof(&mut out);
        out
    }
}

/// Moves a counter up to a total kept elsewhere.
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Batch, CollectionSpec};
    use crate::replication::driver::PeerStatus;

    /// The value of the one sample `name{labels}` in a text exposition.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn conflicts_and_the_log_are_shown_on_every_node_peers_only_when_replicating(
    ) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Database::open(dir.path(), crate::DatabaseConfig::default())?;
        db.create_collection(CollectionSpec::new("c", 2))?;
        let m = Metrics::new();
        let before = sample(&m.render(&db, None), "vektagraf_oplog_entries")
            .ok_or_else(|| anyhow::anyhow!("no vektagraf_oplog_entries"))?;
        let mut b = Batch::new();
        b.upsert("c", "a", serde_json::json!({}), Some(vec![1.0, 0.0]));
        db.write(b)?;

        let text = m.render(&db, None);
        assert_eq!(
            sample(&text, "vektagraf_oplog_entries"),
            Some(before + 1.0),
            "{text}"
        );
        for policy in [
            "last-write-wins",
            "first-write-wins",
            "vector-clock",
            "manual",
        ] {
            let series = format!("vektagraf_replication_conflicts_total{{policy=\"{policy}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}: {text}");
        }
        assert_eq!(
            sample(&text, "vektagraf_replication_discarded_writes_total"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "vektagraf_unindexed_vectors_total"),
            Some(0.0),
            "{text}"
        );
        assert!(
            !text.contains("vektagraf_replication_peer_connected"),
            "{text}"
        );
        assert!(
            !text.contains("vektagraf_replication_rejected_clocks"),
            "{text}"
        );
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        // Plugin figures come from the database, once there are any.
        db.plugin_metrics()
            .call("echo", std::time::Duration::from_millis(1));
        let text = m.render(&db, None);
        assert_eq!(
            sample(&text, "vektagraf_plugin_calls_total{plugin=\"echo\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");

        let mut status = Status {
            node: "a".into(),
            rejected_clocks: 2,
            refused_peers: 1,
            peers: vec![
                PeerStatus {
                    id: "b".into(),
                    connected: true,
                    lag_ops: 7,
                    lag_ms: 1500,
                    last_contact_ms: Some(250),
                    entries_sent: 10,
                    entries_received: 4,
                    bytes_sent: 1000,
                    bytes_received: 400,
                    ..PeerStatus::default()
                },
                PeerStatus {
                    id: "c".into(),
                    ..PeerStatus::default()
                },
            ],
            ..Status::default()
        };
        let text = m.render(&db, Some(&status));
        for (series, value) in [
            ("vektagraf_replication_peer_connected{peer=\"b\"}", 1.0),
            ("vektagraf_replication_peer_connected{peer=\"c\"}", 0.0),
            ("vektagraf_replication_lag_operations{peer=\"b\"}", 7.0),
            ("vektagraf_replication_lag_seconds{peer=\"b\"}", 1.5),
            (
                "vektagraf_replication_last_contact_seconds{peer=\"b\"}",
                0.25,
            ),
            ("vektagraf_replication_sent_bytes_total{peer=\"b\"}", 1000.0),
            (
                "vektagraf_replication_received_bytes_total{peer=\"b\"}",
                400.0,
            ),
            ("vektagraf_replication_sent_entries_total{peer=\"b\"}", 10.0),
            (
                "vektagraf_replication_received_entries_total{peer=\"b\"}",
                4.0,
            ),
            ("vektagraf_replication_rejected_clocks_total", 2.0),
            ("vektagraf_replication_refused_peers_total", 1.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series}: {text}");
        }
        // Never heard from: no sample rather than a made-up time.
        assert!(!text.contains("last_contact_seconds{peer=\"c\"}"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");

        // Counters follow the status's totals up.
        status.peers[0].bytes_sent = 1500;
        let text = m.render(&db, Some(&status));
        assert_eq!(
            sample(&text, "vektagraf_replication_sent_bytes_total{peer=\"b\"}"),
            Some(1500.0),
            "{text}"
        );
        Ok(())
    }
}
