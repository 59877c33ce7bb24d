//! The wasmtime side of plugins: a wasmtime engine of its own that meters fuel and checks
//! epochs (the engine runtime's hot path meters nothing), one linker per world, an upload
//! compiled once (cached by content hash like the engine, `runtime::cache`), and a fresh
//! instance in a fresh store for every call, so nothing is kept between calls.
//!
//! Every call is limited in memory (all its memories and tables together, `limiter`), fuel
//! and time (the epoch deadline: the sooner of the configured limit and the caller's
//! deadline). A call that runs into a limit or traps is reported as a [`PluginError`] of that
//! kind; the process and other calls carry on. What WASI a plugin sees is in `wasi`.
//!
//! - `bindings`: `bindgen!` for the `plugin` and `resolver` worlds.
//! - `detect`: which world an upload implements, and whether its imports are offered.
//! - `compile`: the engine, the linkers, an upload's way to a [`Compiled`].
//! - `call`: one call's store and host state; a failure sorted into its kind.
//! - `read_api`, `write_api`, `logging`: the imports of the plugin world.

mod bindings;
mod call;
mod compile;
mod detect;
mod limiter;
mod logging;
mod read_api;
mod wasi;
mod write_api;

#[cfg(test)]
mod test_components;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edge_config::PluginLimits;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use super::{Grants, PluginError, World};
use crate::db::DbHandle;
use bindings::{PluginPre, ResolverPre, Sibling, WitError};
use call::{CallSetup, CallState};

/// The cache's directory inside a data directory (beside the engine's: never the same one, as
/// the engine's keeps a single file).
pub const CACHE_DIR: &str = "plugin-cache";

/// Most bytes of a plugin's own error message passed on.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Runs plugins and resolvers. One per node is enough; calls may run on any number of threads
/// at once. A call blocks its thread (WASI's synchronous bindings wait on tokio's `block_on`),
/// so it must not run on a thread that is driving async tasks: use a plain thread or tokio's
/// blocking pool (`spawn_blocking`).
pub struct Sandbox {
    engine: Engine,
    plugin: Linker<CallState>,
    resolver: Linker<CallState>,
    limits: PluginLimits,
    cache_dir: Option<PathBuf>,
    /// Whether calls get fuel (always, except to measure what metering costs).
    fuel: bool,
}

/// An upload ready to run: its world, the SHA-256 of its bytes and, for plugins and resolvers,
/// the component compiled and its imports resolved. Cheap to clone.
#[derive(Clone)]
pub struct Compiled {
    pub world: World,
    pub hash: [u8; 32],
    pre: Pre,
}

#[derive(Clone)]
enum Pre {
    Plugin(PluginPre<CallState>),
    Resolver(ResolverPre<CallState>),
    /// Engines are compiled by the engine runtime; the sandbox only recognises them.
    Engine,
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hash: String = self.hash.iter().map(|b| format!("{b:02x}")).collect();
        f.debug_struct("Compiled")
            .field("world", &self.world)
            .field("hash", &hash)
            .finish()
    }
}

/// One handler call: who is called, on which database, with which grants, until when.
pub struct HandlerCall {
    /// The plugin's name (for logs and errors).
    pub name: String,
    pub db: DbHandle,
    pub grants: Grants,
    /// The caller's deadline; the call also ends at `plugins.call_timeout`.
    pub deadline: Option<Instant>,
}

/// One version of a key, as a resolver sees it (`resolve.sibling` in wit/plugin.wit).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolveSibling {
    /// The node that wrote it and its sequence number there.
    pub origin: u64,
    pub seq: u64,
    pub hlc: u64,
    /// The writes it had seen: (origin, highest seq) pairs.
    pub context: Vec<(u64, u64)>,
    /// Its properties (JSON object text) and vector; `None`: a delete.
    pub value: Option<(String, Option<Vec<f32>>)>,
}

/// What a resolver answered for a key (a delete is `None` instead).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedObject {
    /// A JSON object (checked).
    pub properties: String,
    pub vector: Option<Vec<f32>>,
}

fn host_error(name: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Host {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// The text of a plugin's own error.
fn failure(name: &str, e: WitError) -> PluginError {
    let message = match e {
        WitError::Invalid(m) => format!("invalid: {m}"),
        WitError::Denied(m) => format!("denied: {m}"),
        WitError::Unavailable(m) => format!("unavailable: {m}"),
        WitError::Failed(m) => m,
    };
    PluginError::Failed {
        name: name.to_owned(),
        message: logging::truncate(&message, MAX_MESSAGE_BYTES).to_owned(),
    }
}

impl Sandbox {
    /// A sandbox with `limits`; compiled components are cached in `cache_dir` (`None`: always
    /// compile), normally `DATA/`[`CACHE_DIR`].
    pub fn new(limits: PluginLimits, cache_dir: Option<&Path>) -> Result<Sandbox, PluginError> {
        Self::build(limits, cache_dir, true)
    }

    fn build(
        limits: PluginLimits,
        cache_dir: Option<&Path>,
        fuel: bool,
    ) -> Result<Sandbox, PluginError> {
        let engine = compile::engine(fuel)?;
        let (plugin, resolver) = compile::linkers(&engine)?;
        crate::runtime::epoch::register(&engine)
            .map_err(|e| host_error("sandbox", e.to_string()))?;
        Ok(Sandbox {
            engine,
            plugin,
            resolver,
            limits,
            cache_dir: cache_dir.map(Path::to_path_buf),
            fuel,
        })
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Validates an upload: at most `max_component_bytes`, a component, of a world this node
    /// runs (detected from its exports: `handler` a plugin, `resolve` a resolver, `shard` an
    /// engine, all `@0.1.0`), importing only what this node offers that world. Plugins and
    /// resolvers are compiled (or loaded from the cache) and linked; an engine is only
    /// recognised and validated (the engine runtime compiles it). Any refusal is
    /// [`PluginError::Rejected`] saying what is wrong.
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled, PluginError> {
        let c = compile::compile(
            &compile::Compiler {
                engine: &self.engine,
                plugin: &self.plugin,
                resolver: &self.resolver,
                cache_dir: self.cache_dir.as_deref(),
                max_bytes: self.limits.max_component_bytes,
            },
            wasm,
        )?;
        self.try_instance(&c)?;
        Ok(c)
    }

    /// A sandbox that meters no fuel (deadlines and the memory cap still apply), only to
    /// price metering in benchmarks: a node never runs one.
    pub fn without_fuel(
        limits: PluginLimits,
        cache_dir: Option<&Path>,
    ) -> Result<Sandbox, PluginError> {
        Self::build(limits, cache_dir, false)
    }

    /// What every call pays before it runs: a fresh store and instance of `c`, dropped again
    /// (for benchmarks).
    pub fn instantiate_only(&self, c: &Compiled) -> Result<(), PluginError> {
        self.try_instance(c)
    }

    /// Instantiates `c` once, without calling it: the exports' types are checked against the
    /// world only here (linking checks the imports), and a component that cannot even start
    /// within the limits is refused now rather than at every call.
    fn try_instance(&self, c: &Compiled) -> Result<(), PluginError> {
        let name = "(upload)";
        let setup = self.setup(
            name,
            None,
            Grants::default(),
            self.limits.call_timeout,
            None,
        )?;
        let tried = match &c.pre {
            Pre::Plugin(pre) => self.run(setup, |s| pre.instantiate(s).map(drop)),
            Pre::Resolver(pre) => self.run(setup, |s| pre.instantiate(s).map(drop)),
            Pre::Engine => Ok(()),
        };
        tried.map_err(|e| {
            let detail = match e {
                PluginError::Trap { reason, .. } => reason,
                other => other.to_string(),
            };
            PluginError::Rejected(format!(
                "it does not fit the {} world (or cannot start): {detail}",
                c.world
            ))
        })
    }

    /// Removes cached artifacts of components other than those whose SHA-256 is in `live`;
    /// returns how many files it removed.
    pub fn retain_cached(&self, live: &[[u8; 32]]) -> usize {
        match &self.cache_dir {
            Some(dir) => crate::runtime::cache::retain(&self.engine, dir, live),
            None => 0,
        }
    }

    /// One handler call on a fresh instance: `input` in, the plugin's output out.
    pub fn handle(
        &self,
        c: &Compiled,
        call: &HandlerCall,
        input: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        let Pre::Plugin(pre) = &c.pre else {
            return Err(host_error(
                &call.name,
                format!("it is a {}, not a plugin", c.world),
            ));
        };
        let setup = self.setup(
            &call.name,
            Some(call.db.clone()),
            call.grants,
            self.limits.call_timeout,
            call.deadline,
        )?;
        let answer = self.run(setup, |store| {
            let plugin = pre.instantiate(&mut *store)?;
            plugin
                .vektagraf_engine_handler()
                .call_handle(&mut *store, input)
        })?;
        answer.map_err(|e| failure(&call.name, e))
    }

    /// One resolver call on a fresh instance, within `resolver_timeout`: the value readers of
    /// `collection`/`id` should see given its `siblings`. No grants, whatever the resolver was
    /// uploaded with: clocks frozen, random numbers from a fixed seed.
    pub fn resolve(
        &self,
        c: &Compiled,
        name: &str,
        collection: &str,
        id: &str,
        siblings: Vec<ResolveSibling>,
    ) -> Result<Option<ResolvedObject>, PluginError> {
        let Pre::Resolver(pre) = &c.pre else {
            return Err(host_error(
                name,
                format!("it is a {}, not a resolver", c.world),
            ));
        };
        let siblings: Vec<Sibling> = siblings
            .into_iter()
            .map(|s| Sibling {
                origin: s.origin,
                seq: s.seq,
                hlc: s.hlc,
                context: s.context,
                value: s
                    .value
                    .map(|(properties, vector)| crate::runtime::wit::Object {
                        id: id.to_owned(),
                        properties,
                        vector,
                    }),
            })
            .collect();
        let setup = self.setup(
            name,
            None,
            Grants::default(),
            self.limits.resolver_timeout,
            None,
        )?;
        let answer = self.run(setup, |store| {
            let resolver = pre.instantiate(&mut *store)?;
            resolver
                .vektagraf_engine_resolve()
                .call_resolve(&mut *store, collection, id, &siblings)
        })?;
        let Some(o) = answer.map_err(|e| failure(name, e))? else {
            return Ok(None);
        };
        let failed = |message: String| PluginError::Failed {
            name: name.to_owned(),
            message,
        };
        if o.id != id {
            return Err(failed(format!(
                "it resolved `{id}` to an object with another id, `{}`",
                logging::truncate(&o.id, 256)
            )));
        }
        match serde_json::from_str::<serde_json::Value>(&o.properties) {
            Ok(serde_json::Value::Object(_)) => Ok(Some(ResolvedObject {
                properties: o.properties,
                vector: o.vector,
            })),
            Ok(_) => Err(failed(format!(
                "the properties it resolved `{id}` to are not a JSON object"
            ))),
            Err(e) => Err(failed(format!(
                "the properties it resolved `{id}` to are not JSON: {e}"
            ))),
        }
    }

    /// The setup of one call that must end within `limit` and by `caller` (its deadline).
    fn setup(
        &self,
        name: &str,
        db: Option<DbHandle>,
        grants: Grants,
        limit: Duration,
        caller: Option<Instant>,
    ) -> Result<CallSetup, PluginError> {
        let now = Instant::now();
        // A limit too large for an `Instant` (a configuration error) counts as a day.
        let own = now
            .checked_add(limit)
            .unwrap_or(now + Duration::from_secs(24 * 3600));
        let deadline = caller.map_or(own, |c| c.min(own));
        if deadline <= now {
            return Err(host_error(
                name,
                "the call's deadline had passed before it started",
            ));
        }
        Ok(CallSetup {
            name: name.to_owned(),
            db,
            grants,
            deadline,
            memory_bytes: self.limits.memory_limit_bytes,
            fuel: self.fuel.then_some(self.limits.fuel_per_call),
        })
    }

    /// Runs `f` (instantiate and call) in a fresh store for `setup`; a trap or a limit reached
    /// becomes the matching [`PluginError`].
    fn run<R>(
        &self,
        setup: CallSetup,
        f: impl FnOnce(&mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let memory = setup.memory_bytes;
        let mut store = call::store(&self.engine, setup)?;
        let result = f(&mut store);
        call::log_output(store.data());
        result.map_err(|e| call::classify(store.data(), memory, e))
    }
}
