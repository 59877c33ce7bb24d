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
    /// What `shard.snapshot` has streamed out so far.
    pub(super) snapshot_out: SnapshotOut,
    /// What `shard.restore` reads from.
    pub(super) snapshot_in: Option<SnapshotIn>,
    /// During a traversal, the one storage view every hop reads edges from.
    pub(super) view: Option<crate::store::ReadView>,
}

/// Snapshot bytes coming out of the engine, streamed into a file and capped so a misbehaving
/// engine cannot fill the disk.
#[derive(Default)]
pub struct SnapshotOut {
    pub file: Option<crate::store::SnapshotWriter>,
    pub bytes: u64,
    pub cap: u64,
    pub overflowed: bool,
}

/// Snapshot bytes going into the engine: chunks pulled lazily from storage.
pub struct SnapshotIn {
    chunks: Box<dyn Iterator<Item = crate::error::Result<Vec<u8>>> + Send>,
    current: Vec<u8>,
    pos: usize,
    /// A storage error met while feeding the engine; it then sees a truncated snapshot.
    pub failed: Option<crate::error::Error>,
}

impl SnapshotIn {
    pub fn new(
        chunks: impl Iterator<Item = crate::error::Result<Vec<u8>>> + Send + 'static,
    ) -> Self {
        Self {
            chunks: Box::new(chunks),
            current: Vec::new(),
            pos: 0,
            failed: None,
        }
    }

    fn read(&mut self, max: usize) -> Vec<u8> {
        while self.pos == self.current.len() && self.failed.is_none() {
            match self.chunks.next() {
                Some(Ok(c)) => {
                    self.current = c;
                    self.pos = 0;
                }
                Some(Err(e)) => self.failed = Some(e),
                None => break,
            }
        }
        let end = (self.pos + max).min(self.current.len());
        let out = self.current[self.pos..end].to_vec();
        self.pos = end;
        out
    }
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
    ) -> Result<Vec<wit::EdgeRef>, wit::EngineError> {
        let _span =
            tracing::debug_span!("host.edges", shard = %self.label, id = %node.id).entered();
        let key = NodeKey::new(node.collection, node.id);
        let dir = match direction {
            wit::Direction::Out => Direction::Out,
            wit::Direction::In => Direction::In,
            wit::Direction::Both => Direction::Both,
        };
        let edges = match &self.view {
            Some(view) => self.store.edges_at(view, &key, label.as_deref(), dir),
            None => self.store.edges(&key, label.as_deref(), dir),
        };
        match edges {
            Ok(edges) => Ok(edges
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
                .collect()),
            Err(e) => {
                tracing::error!(shard = %self.label, error = %e, "reading edges failed");
                Err(wit::EngineError::State(format!(
                    "reading the edges of {}/{}: {e}",
                    key.collection, key.id
                )))
            }
        }
    }

    fn snapshot_write(&mut self, bytes: Vec<u8>) {
        let out = &mut self.snapshot_out;
        out.bytes += bytes.len() as u64;
        if out.bytes > out.cap {
            out.overflowed = true;
        } else if let Some(file) = &mut out.file {
            file.write(&bytes);
        }
    }

    fn snapshot_read(&mut self, max: u32) -> Vec<u8> {
        match &mut self.snapshot_in {
            Some(feed) => feed.read(max as usize),
            None => Vec::new(),
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
