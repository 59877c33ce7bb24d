//! The wasmtime side: one compiled engine component, one `Store` per shard, limits on every
//! call. A trap (panic, out of memory, deadline) surfaces as [`CallError::Trap`]; the instance
//! is then unusable and the caller replaces it (see `db::recovery`).

mod bindings;
pub(crate) mod cache;
pub(crate) mod epoch;
mod host;
#[cfg(target_os = "linux")]
mod memory;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edge_config::EngineLimits;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine as WasmEngine, Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtxBuilder;

use crate::error::{Error, Result};
use crate::model::{CollectionSpec, IndexKind, Metric};
use crate::store::Store as DataStore;
pub use bindings::wit;
use bindings::{Engine as EngineWorld, EnginePre};
pub use cache::{EngineLoad, CACHE_DIR};
use epoch::ticks;
pub use host::HostState;

/// The engine component built from `guest/` by build.rs.
pub static DEFAULT_ENGINE: &[u8] = include_bytes!(env!("VEKTAGRAF_ENGINE_WASM"));

/// Why an engine call failed.
#[derive(Debug)]
pub enum CallError {
    /// The engine answered with an error: the request was refused, the instance is fine.
    Engine(wit::EngineError),
    /// The instance trapped (panic, memory cap, deadline). It must be replaced.
    Trap(String),
}

impl CallError {
    pub fn message(&self) -> String {
        match self {
            CallError::Engine(wit::EngineError::Invalid(m))
            | CallError::Engine(wit::EngineError::State(m))
            | CallError::Engine(wit::EngineError::Unsupported(m))
            | CallError::Trap(m) => m.clone(),
        }
    }
}

pub type CallResult<T> = std::result::Result<T, CallError>;

/// The compiled engine and what every instance shares.
pub struct Runtime {
    engine: WasmEngine,
    pre: EnginePre<HostState>,
    limits: EngineLimits,
    load: EngineLoad,
}

impl Runtime {
    /// Compiles `component` (the bytes of an engine component) once, or loads the artifact
    /// compiled by an earlier run from `cache_dir` (see `runtime::cache`; `None`: always compile).
    pub fn new(
        component: &[u8],
        limits: EngineLimits,
        cache_dir: Option<&Path>,
    ) -> Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Engine memories on huge pages where the kernel allows (see `runtime::memory`).
        // (Copy-on-write initialisation from the module image needs wasmtime's own memories;
        // the engine's data segments are a few KiB, copied at instantiation instead.)
        #[cfg(target_os = "linux")]
        if limits.huge_pages {
            config
                .with_host_memory(Arc::new(memory::HugePageCreator))
                .memory_init_cow(false);
        }
        // `VEKTAGRAF_WASM_PROFILE=perfmap` writes /tmp/perf-<pid>.map so `perf` names the
        // engine's compiled functions.
        if std::env::var("VEKTAGRAF_WASM_PROFILE").as_deref() == Ok("perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine =
            WasmEngine::new(&config).map_err(|e| Error::Engine(format!("wasmtime: {e}")))?;
        let (component, load) =
            cache::component(&engine, component, cache_dir, cache::Holds::Engine)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::Engine(format!("linking WASI: {e}")))?;
        EngineWorld::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| Error::Engine(format!("linking the host interface: {e}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            Error::Engine(format!("the engine component does not fit the host: {e}"))
        })?;
        let pre = EnginePre::new(pre).map_err(|e| Error::Engine(format!("engine world: {e}")))?;
        epoch::register(&engine)?;
        Ok(Runtime {
            engine,
            pre,
            limits,
            load,
        })
    }

    /// How the engine component was made ready: from the cache or compiled.
    pub fn load(&self) -> &EngineLoad {
        &self.load
    }

    /// A fresh instance initialised as shard `shard` of `spec`.
    pub fn instantiate(
        &self,
        spec: &CollectionSpec,
        shard: u32,
        store: Arc<DataStore>,
    ) -> Result<ShardInstance> {
        let label = format!("{}/{}", spec.name, shard);
        let state = HostState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_limit_bytes as usize)
                .trap_on_grow_failure(true)
                .build(),
            store,
            label: label.clone(),
            snapshot_out: host::SnapshotOut::default(),
            snapshot_in: None,
            view: None,
        };
        let mut s = Store::new(&self.engine, state);
        s.limiter(|st| &mut st.limits);
        s.set_epoch_deadline(ticks(self.limits.apply_timeout));
        let bindings = self
            .pre
            .instantiate(&mut s)
            .map_err(|e| Error::Engine(format!("instantiating {label}: {e}")))?;
        let mut inst = ShardInstance {
            store: s,
            bindings,
            limits: self.limits.clone(),
            label,
        };
        inst.init(spec, shard)
            .map_err(|e| Error::Engine(format!("initialising shard: {}", e.message())))?;
        Ok(inst)
    }
}

fn to_wit_spec(spec: &CollectionSpec) -> wit::CollectionConfig {
    wit::CollectionConfig {
        name: spec.name.clone(),
        dimension: spec.dimension,
        metric: match spec.metric {
            Metric::Cosine => wit::Metric::Cosine,
            Metric::Dot => wit::Metric::Dot,
            Metric::Euclidean => wit::Metric::Euclidean,
        },
        index: match spec.index {
            IndexKind::Hnsw => wit::IndexKind::Hnsw,
            IndexKind::Hora => wit::IndexKind::Hora,
        },
        m: spec.m,
        ef_construction: spec.ef_construction,
        ef_search: spec.ef_search,
        shards: spec.shards,
    }
}

/// One engine instance: one shard of one collection. Single-threaded; callers hold a lock.
pub struct ShardInstance {
    store: Store<HostState>,
    bindings: EngineWorld,
    limits: EngineLimits,
    label: String,
}

/// Runs one export with a deadline and sorts its failure into refusal or trap.
macro_rules! call {
    ($self:ident, $timeout:expr, $method:ident $(, $arg:expr)*) => {{
        $self.store.set_epoch_deadline(ticks($timeout));
        let api = $self.bindings.vektagraf_engine_shard();
        match api.$method(&mut $self.store $(, $arg)*) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Engine(e)),
            Err(trap) => Err(CallError::Trap(format!("{trap:#}"))),
        }
    }};
}

impl ShardInstance {
    pub fn label(&self) -> &str {
        &self.label
    }

    fn init(&mut self, spec: &CollectionSpec, shard: u32) -> CallResult<()> {
        let cfg = to_wit_spec(spec);
        call!(self, self.limits.apply_timeout, call_init, &cfg, shard)
    }

    pub fn apply(&mut self, batch: &[wit::Mutation]) -> CallResult<u32> {
        call!(self, self.limits.apply_timeout, call_apply, batch)
    }

    /// The longest a query call may run: the configured limit, or less.
    pub fn query_timeout(&self) -> Duration {
        self.limits.query_timeout
    }

    pub fn search(
        &mut self,
        req: &wit::SearchRequest,
        timeout: Duration,
    ) -> CallResult<Vec<Vec<wit::Hit>>> {
        call!(self, timeout, call_search, req)
    }

    pub fn filter(
        &mut self,
        expression: &str,
        limit: u32,
        timeout: Duration,
    ) -> CallResult<Vec<String>> {
        call!(self, timeout, call_filter, expression, limit)
    }

    pub fn traverse(
        &mut self,
        req: &wit::TraverseRequest,
        timeout: Duration,
    ) -> CallResult<Vec<wit::Step>> {
        // Every hop reads the same storage view, not a new transaction each.
        let view = self.store.data().store.read_view().map_err(|e| {
            CallError::Engine(wit::EngineError::State(format!("opening a read view: {e}")))
        })?;
        self.store.data_mut().view = Some(view);
        let result = call!(self, timeout, call_traverse, req);
        self.store.data_mut().view = None;
        result
    }

    /// Streams the shard's snapshot into `file`, and gives the file back with every byte
    /// written (not yet finished). On failure the file is discarded.
    pub fn snapshot_into(
        &mut self,
        file: crate::store::SnapshotWriter,
    ) -> CallResult<crate::store::SnapshotWriter> {
        // An engine's state lives in its memory, so a larger snapshot is a misbehaving engine.
        self.store.data_mut().snapshot_out = host::SnapshotOut {
            file: Some(file),
            cap: self.limits.memory_limit_bytes.saturating_mul(2),
            ..Default::default()
        };
        let result = call!(self, self.limits.apply_timeout, call_snapshot);
        let out = std::mem::take(&mut self.store.data_mut().snapshot_out);
        let Some(file) = out.file else {
            return Err(CallError::Engine(wit::EngineError::State(
                "the snapshot stream lost its file".into(),
            )));
        };
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                file.discard();
                return Err(e);
            }
        };
        if out.overflowed || out.bytes != size {
            file.discard();
            return Err(CallError::Engine(wit::EngineError::State(format!(
                "snapshot stream of {} bytes does not match the {size} bytes announced (or \
                 exceeds {} bytes)",
                out.bytes, out.cap
            ))));
        }
        Ok(file)
    }

    /// Replaces the shard's state with a snapshot of `size` bytes read from `chunks`.
    pub fn restore(
        &mut self,
        size: u64,
        chunks: impl Iterator<Item = Result<Vec<u8>>> + Send + 'static,
    ) -> CallResult<()> {
        self.store.data_mut().snapshot_in = Some(host::SnapshotIn::new(chunks));
        let result = call!(self, self.limits.apply_timeout, call_restore, size);
        let feed = self.store.data_mut().snapshot_in.take();
        if let Some(e) = feed.and_then(|f| f.failed) {
            return Err(CallError::Engine(wit::EngineError::State(format!(
                "reading the snapshot from storage: {e}"
            ))));
        }
        result
    }

    /// Fills a restore in with stored objects; returns how many the snapshot knew.
    pub fn restore_fill(&mut self, objects: &[wit::Object]) -> CallResult<u32> {
        call!(self, self.limits.apply_timeout, call_restore_fill, objects)
    }

    /// Ends a restore; returns the ids whose stored object is not what the snapshot had.
    pub fn restore_finish(&mut self) -> CallResult<Vec<String>> {
        call!(self, self.limits.apply_timeout, call_restore_finish)
    }

    pub fn stats(&mut self, timeout: Duration) -> CallResult<wit::ShardStats> {
        self.store.set_epoch_deadline(ticks(timeout));
        self.bindings
            .vektagraf_engine_shard()
            .call_stats(&mut self.store)
            .map_err(|trap| CallError::Trap(format!("{trap:#}")))
    }
}
