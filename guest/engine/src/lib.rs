//! The default engine component: the WIT `shard` interface over `vektagraf-engine-core`.
//! One instance holds one shard of one collection; the host creates one instance per shard.

use std::cell::RefCell;

use vektagraf_engine_core as core;

use core::shard::{SearchRequest, Shard};
use core::traverse::{self as tr, EdgeSource};
use exports::vektagraf::engine::shard::Guest;
use vektagraf::engine::host;
use vektagraf::engine::types as wit;

wit_bindgen::generate!({
    path: "../../wit",
    world: "engine",
});

struct Engine;

/// Snapshot bytes leave and enter through the host, a chunk at a time.
struct HostSink;
impl core::codec::Sink for HostSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), core::EngineError> {
        host::snapshot_write(bytes);
        Ok(())
    }
}
struct HostSource;
impl core::codec::Source for HostSource {
    fn read(&mut self, max: usize) -> Result<Vec<u8>, core::EngineError> {
        Ok(host::snapshot_read(u32::try_from(max).unwrap_or(u32::MAX)))
    }
}

thread_local! {
    static SHARD: RefCell<Option<Shard>> = const { RefCell::new(None) };
}

fn with_shard<T>(
    f: impl FnOnce(&mut Shard) -> Result<T, core::EngineError>,
) -> Result<T, wit::EngineError> {
    SHARD.with(|cell| match cell.borrow_mut().as_mut() {
        Some(shard) => f(shard).map_err(to_wit_error),
        None => Err(wit::EngineError::State("shard is not initialised".into())),
    })
}

fn to_wit_error(e: core::EngineError) -> wit::EngineError {
    match e {
        core::EngineError::Invalid(m) => wit::EngineError::Invalid(m),
        core::EngineError::Unsupported(m) => wit::EngineError::Unsupported(m),
        other => wit::EngineError::State(other.to_string()),
    }
}

fn object_from_wit(o: wit::Object) -> core::Object {
    core::Object {
        id: o.id,
        properties: o.properties,
        vector: o.vector,
    }
}

fn config_from_wit(c: wit::CollectionConfig) -> core::CollectionConfig {
    core::CollectionConfig {
        name: c.name,
        dimension: c.dimension,
        metric: match c.metric {
            wit::Metric::Cosine => core::Metric::Cosine,
            wit::Metric::Dot => core::Metric::Dot,
            wit::Metric::Euclidean => core::Metric::Euclidean,
        },
        index: match c.index {
            wit::IndexKind::Hnsw => core::IndexKind::Hnsw,
            wit::IndexKind::Hora => core::IndexKind::Hora,
        },
        m: c.m,
        ef_construction: c.ef_construction,
        ef_search: c.ef_search,
        shards: c.shards,
    }
}

fn node_to_wit(n: &tr::NodeRef) -> wit::NodeRef {
    wit::NodeRef {
        collection: n.collection.clone(),
        id: n.id.clone(),
    }
}

fn node_from_wit(n: wit::NodeRef) -> tr::NodeRef {
    tr::NodeRef {
        collection: n.collection,
        id: n.id,
    }
}

/// Edges come from the host's storage through the `host.edges` import.
struct HostEdges;

impl EdgeSource for HostEdges {
    fn edges(
        &mut self,
        node: &tr::NodeRef,
        label: Option<&str>,
        d: tr::Direction,
    ) -> Result<Vec<tr::EdgeRef>, String> {
        let dir = match d {
            tr::Direction::Out => wit::Direction::Out,
            tr::Direction::In => wit::Direction::In,
            tr::Direction::Both => wit::Direction::Both,
        };
        match host::edges(&node_to_wit(node), label, dir) {
            Ok(edges) => Ok(edges
                .into_iter()
                .map(|e| tr::EdgeRef {
                    label: e.label,
                    other: node_from_wit(e.other),
                })
                .collect()),
            Err(
                wit::EngineError::Invalid(m)
                | wit::EngineError::State(m)
                | wit::EngineError::Unsupported(m),
            ) => Err(m),
        }
    }
}

impl Guest for Engine {
    fn init(config: wit::CollectionConfig, shard: u32) -> Result<(), wit::EngineError> {
        let s = Shard::new(config_from_wit(config), shard).map_err(to_wit_error)?;
        SHARD.with(|cell| *cell.borrow_mut() = Some(s));
        Ok(())
    }

    fn apply(batch: Vec<wit::Mutation>) -> Result<u32, wit::EngineError> {
        let batch = batch
            .into_iter()
            .map(|m| match m {
                wit::Mutation::Upsert(o) => core::Mutation::Upsert(object_from_wit(o)),
                wit::Mutation::Delete(id) => core::Mutation::Delete(id),
            })
            .collect();
        with_shard(|s| s.apply(batch))
    }

    fn search(r: wit::SearchRequest) -> Result<Vec<Vec<wit::Hit>>, wit::EngineError> {
        let req = SearchRequest {
            vectors: &r.vectors,
            k: r.k as usize,
            ef: r.ef as usize,
            filter: r.filter.as_deref(),
            exact: r.exact,
        };
        let rows = with_shard(|s| s.search(&req))?;
        Ok(rows
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|h| wit::Hit {
                        id: h.id,
                        score: h.score,
                    })
                    .collect()
            })
            .collect())
    }

    fn filter(expression: String, limit: u32) -> Result<Vec<String>, wit::EngineError> {
        with_shard(|s| s.filter(&expression, limit as usize))
    }

    fn traverse(r: wit::TraverseRequest) -> Result<Vec<wit::Step>, wit::EngineError> {
        let req = tr::TraverseRequest {
            start: node_from_wit(r.start),
            label: r.label,
            direction: match r.direction {
                wit::Direction::Out => tr::Direction::Out,
                wit::Direction::In => tr::Direction::In,
                wit::Direction::Both => tr::Direction::Both,
            },
            depth: r.depth,
            limit: r.limit,
        };
        let steps = with_shard(|s| s.traverse(&mut HostEdges, &req))?;
        Ok(steps
            .into_iter()
            .map(|st| wit::Step {
                node: node_to_wit(&st.node),
                depth: st.depth,
                via: st.via.map(|e| wit::EdgeRef {
                    label: e.label,
                    other: node_to_wit(&e.other),
                }),
            })
            .collect())
    }

    fn stats() -> wit::ShardStats {
        SHARD.with(|cell| match cell.borrow().as_ref() {
            Some(s) => {
                let st = s.stats();
                wit::ShardStats {
                    objects: st.objects,
                    vectors: st.vectors,
                    deleted_slots: st.deleted_slots,
                    memory_bytes: st.memory_bytes,
                    index: match st.index {
                        core::IndexKind::Hnsw => wit::IndexKind::Hnsw,
                        core::IndexKind::Hora => wit::IndexKind::Hora,
                    },
                }
            }
            None => wit::ShardStats {
                objects: 0,
                vectors: 0,
                deleted_slots: 0,
                memory_bytes: 0,
                index: wit::IndexKind::Hnsw,
            },
        })
    }

    fn snapshot() -> Result<u64, wit::EngineError> {
        with_shard(|s| s.snapshot_to(&mut HostSink))
    }

    fn restore(size: u64) -> Result<(), wit::EngineError> {
        with_shard(|s| s.restore_from(&mut HostSource, size))
    }

    fn restore_fill(objects: Vec<wit::Object>) -> Result<u32, wit::EngineError> {
        let objects = objects.into_iter().map(object_from_wit).collect();
        with_shard(|s| s.restore_fill(objects))
    }

    fn restore_finish() -> Result<Vec<String>, wit::EngineError> {
        with_shard(|s| s.restore_finish())
    }
}

export!(Engine);
