//! The plugins of one database in memory: their records (as stored), the compiled components
//! by content hash (compiled on first use, or warmed after a change arrives), faults in a
//! row per plugin, and the call metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use edge_config::PluginLimits;

use super::metrics::PluginMetrics;
use super::sandbox::{Compiled, HandlerCall, ResolveSibling, ResolvedObject, Sandbox};
use super::{PluginError, PluginRecord, World};
use crate::error::{Error, Result};
use crate::store::Store;

/// What a call's failure means for the plugin.
pub enum Verdict {
    /// Nothing to do.
    Fine,
    /// The plugin reached its fault threshold: disable it everywhere, with this note.
    Disable(String),
}

pub struct Registry {
    sandbox: Sandbox,
    store: Arc<Store>,
    limits: PluginLimits,
    records: RwLock<BTreeMap<String, PluginRecord>>,
    compiled: Mutex<HashMap<[u8; 32], Compiled>>,
    faults: Mutex<HashMap<String, u32>>,
    /// Resolvers that reached their fault threshold inside a commit, for the committer to
    /// disable once the commit is done.
    to_disable: Mutex<Vec<(String, String)>>,
    metrics: PluginMetrics,
}

/// Why a plugin could not be run, as a call's error.
fn not_runnable(name: String, e: Error) -> PluginError {
    match e {
        Error::UnknownPlugin(_) => PluginError::Unknown(name),
        Error::Invalid(reason) => PluginError::NotRunnable { name, reason },
        e => PluginError::Host {
            name,
            reason: e.to_string(),
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// The plugins stored in `store`; components are compiled when first used.
    pub fn load(
        store: Arc<Store>,
        limits: PluginLimits,
        cache_dir: Option<&std::path::Path>,
    ) -> Result<Registry> {
        let sandbox = Sandbox::new(limits.clone(), cache_dir)
            .map_err(|e| Error::Engine(format!("starting the plugin sandbox: {e}")))?;
        let records = store
            .plugins()?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        Ok(Registry {
            sandbox,
            store,
            limits,
            records: RwLock::new(records),
            compiled: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            to_disable: Mutex::new(Vec::new()),
            metrics: PluginMetrics::default(),
        })
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
    }

    /// Checks and compiles an upload (the size limit first, then the component and its
    /// world), keeping the compiled form for calls.
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled> {
        if wasm.len() as u64 > self.limits.max_component_bytes {
            return Err(Error::TooLarge(format!(
                "the component is {} bytes; this node accepts at most {} (plugins.max_component_mib)",
                wasm.len(),
                self.limits.max_component_bytes
            )));
        }
        let c = self
            .sandbox
            .compile(wasm)
            .map_err(|e| Error::invalid(format!("the component was refused: {e}")))?;
        lock(&self.compiled).insert(c.hash, c.clone());
        Ok(c)
    }

    /// The stored record of `name` (deleted ones too), as the committer merges into.
    pub fn record(&self, name: &str) -> Option<PluginRecord> {
        self.read().get(name).cloned()
    }

    /// A live plugin, or an error naming it.
    pub fn get(&self, name: &str) -> Result<PluginRecord> {
        match self.read().get(name) {
            Some(r) if !r.deleted => Ok(r.clone()),
            _ => Err(Error::UnknownPlugin(name.to_owned())),
        }
    }

    /// Every live plugin, by name.
    pub fn list(&self) -> Vec<PluginRecord> {
        self.read()
            .values()
            .filter(|r| !r.deleted)
            .cloned()
            .collect()
    }

    /// Every record, tombstones included (for a state export).
    pub fn all(&self) -> Vec<PluginRecord> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, PluginRecord>> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a committed record. A change of the running version starts its fault count
    /// afresh.
    pub fn installed(&self, record: PluginRecord) {
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        let changed = records
            .get(&record.name)
            .is_none_or(|old| old.active != record.active || old.enabled != record.enabled);
        if changed {
            lock(&self.faults).remove(&record.name);
        }
        records.insert(record.name.clone(), record);
    }

    /// Compiles the running version of `name` ahead of its first call (after a change arrived
    /// from another node). Failures are logged; the call reports them again.
    pub fn warm(&self, name: &str) {
        if let Ok(r) = self.get(name) {
            if let Some(v) = r.active_version() {
                if let Err(e) = self.compiled_for(&r.name, &v.hash) {
                    tracing::warn!(plugin = %name, error = %e, "compiling a replicated plugin failed");
                }
            }
        }
    }

    fn compiled_for(&self, name: &str, hash: &[u8; 32]) -> Result<Compiled> {
        if let Some(c) = lock(&self.compiled).get(hash) {
            return Ok(c.clone());
        }
        let bytes = self.store.plugin_blob(hash)?.ok_or_else(|| {
            Error::Storage(format!(
                "the component of plugin `{name}` is missing from storage"
            ))
        })?;
        let c = self
            .sandbox
            .compile(&bytes)
            .map_err(|e| Error::Engine(format!("compiling plugin `{name}` from storage: {e}")))?;
        lock(&self.compiled).insert(*hash, c.clone());
        Ok(c)
    }

    /// The running version of an enabled plugin of `world`.
    fn runnable(&self, name: &str, world: World) -> Result<(PluginRecord, Compiled)> {
        let r = self.get(name)?;
        if !r.enabled {
            let why = r
                .note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            return Err(Error::invalid(format!("plugin `{name}` is disabled{why}")));
        }
        let v = r.active_version().ok_or_else(|| {
            Error::Storage(format!("plugin `{name}` names a version it does not have"))
        })?;
        if v.world != world {
            return Err(Error::invalid(format!(
                "plugin `{name}` is a {} component, not a {world}",
                v.world
            )));
        }
        let hash = v.hash;
        let c = self.compiled_for(name, &hash)?;
        Ok((r, c))
    }

    /// Calls a query plugin. `call.grants` is replaced by the plugin's own.
    pub fn call(
        &self,
        mut call: HandlerCall,
        input: &[u8],
    ) -> (std::result::Result<Vec<u8>, PluginError>, Verdict) {
        let name = call.name.clone();
        let (record, compiled) = match self.runnable(&name, World::Plugin) {
            Ok(x) => x,
            Err(e) => return (Err(not_runnable(name, e)), Verdict::Fine),
        };
        if let Some(v) = record.active_version() {
            call.grants = v.grants;
        }
        let started = Instant::now();
        let result = self.sandbox.handle(&compiled, &call, input);
        let verdict = self.count(&name, started, result.as_ref().err());
        (result, verdict)
    }

    /// Calls resolver `name` on the siblings of one object. A collection may name a
    /// resolver that is not (yet) here, or disabled: that is an error too, and the caller
    /// shows the last-write-wins winner. One that reaches its fault threshold is queued for
    /// [`Registry::take_to_disable`].
    pub fn resolve(
        &self,
        name: &str,
        collection: &str,
        id: &str,
        siblings: Vec<ResolveSibling>,
    ) -> std::result::Result<Option<ResolvedObject>, PluginError> {
        let compiled = match self.runnable(name, World::Resolver) {
            Ok((_, c)) => c,
            Err(e) => {
                let err = not_runnable(name.to_owned(), e);
                self.metrics.error(name, err.kind());
                return Err(err);
            }
        };
        let started = Instant::now();
        let result = self
            .sandbox
            .resolve(&compiled, name, collection, id, siblings);
        if let Verdict::Disable(note) = self.count(name, started, result.as_ref().err()) {
            lock(&self.to_disable).push((name.to_owned(), note));
        }
        result
    }

    /// Resolvers to disable (name, why), queued by calls inside commits.
    pub fn take_to_disable(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *lock(&self.to_disable))
    }

    /// Counts a call; on a fault, its count in a row, and whether that reached the threshold.
    fn count(&self, name: &str, started: Instant, error: Option<&PluginError>) -> Verdict {
        self.metrics.call(name, started.elapsed());
        let mut faults = lock(&self.faults);
        let Some(e) = error else {
            faults.remove(name);
            return Verdict::Fine;
        };
        self.metrics.error(name, e.kind());
        if !e.is_fault() {
            return Verdict::Fine;
        }
        let n = faults.entry(name.to_owned()).or_default();
        *n += 1;
        let limit = self.limits.disable_after_faults;
        if limit > 0 && *n == limit {
            return Verdict::Disable(format!(
                "disabled automatically after {limit} faults in a row; the last: {e}"
            ));
        }
        Verdict::Fine
    }
}
