//! Prometheus metrics (prometheus-client, text exposition on `/metrics`). Names and buckets of
//! the seed (`vektagraf_active_connections`, `vektagraf_query_duration_seconds`,
//! `vektagraf_vector_search_duration_seconds`) plus errors by kind, per-collection sizes,
//! storage bytes and engine failures. Database figures are read at scrape time.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

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

    /// The text exposition, with the database's figures read now.
    pub fn render(&self, db: &Database) -> String {
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
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
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
