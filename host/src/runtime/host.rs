//! The `host` interface: what the engine may ask of the node.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{host_api, wit};
use crate::model::{Direction, NodeKey};
use crate::store::Store;

/// The data of one engine instance's wasmtime `Store`.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    /// Edges are read from durable storage on demand.
    pub(super) store: Arc<Store>,
    /// Names the instance in logs.
    pub(super) label: String,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for HostState {}

impl host_api::Host for HostState {
    fn edges(
        &mut self,
        node: wit::NodeRef,
        label: Option<String>,
        direction: wit::Direction,
    ) -> Vec<wit::EdgeRef> {
        let _span =
            tracing::debug_span!("host.edges", shard = %self.label, id = %node.id).entered();
        let key = NodeKey::new(node.collection, node.id);
        let dir = match direction {
            wit::Direction::Out => Direction::Out,
            wit::Direction::In => Direction::In,
            wit::Direction::Both => Direction::Both,
        };
        match self.store.edges(&key, label.as_deref(), dir) {
            Ok(edges) => edges
                .into_iter()
                .map(|e| {
                    let other = if e.from == key { e.to } else { e.from };
                    wit::EdgeRef {
                        label: e.label,
                        other: wit::NodeRef {
                            collection: other.collection,
                            id: other.id,
                        },
                    }
                })
                .collect(),
            Err(e) => {
                // The import has no error channel; a traversal over unreadable storage stops here.
                tracing::error!(shard = %self.label, error = %e, "reading edges failed");
                Vec::new()
            }
        }
    }

    fn log(&mut self, level: host_api::Level, message: String) {
        match level {
            host_api::Level::Debug => tracing::debug!(shard = %self.label, "{message}"),
            host_api::Level::Info => tracing::info!(shard = %self.label, "{message}"),
            host_api::Level::Warn => tracing::warn!(shard = %self.label, "{message}"),
            host_api::Level::Error => tracing::error!(shard = %self.label, "{message}"),
        }
    }
}
