//! Engine upgrades: an engine component uploaded as the plugin named `engine` (world
//! `engine`) replaces the built-in one on every node. The committer loads every shard on the
//! new engine beside the old one (restoring the snapshots it has just written, or rebuilding
//! from storage), then swaps both at once, between commits; reads already running finish on
//! the old instances. A component that fails to load, or a shard that fails to come up on it,
//! leaves the old engine serving. Rolling the `engine` plugin back, disabling or deleting it
//! switches again (to the built-in engine for the last two).

use std::path::Path;
use std::sync::Arc;

use edge_config::DatabaseConfig;

use crate::error::{Error, Result};
use crate::plugins::{PluginRecord, World};
use crate::runtime::Runtime;
use crate::store::Store;

use super::collection::Slot;
use super::commit::Committer;
use super::Inner;

/// The plugin name an engine component is uploaded under.
pub const ENGINE_PLUGIN: &str = "engine";

fn sha256(bytes: &[u8]) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(bytes).into()
}

/// The engine component the `engine` record names: its hash, if it is enabled and has one.
fn wanted(record: Option<&PluginRecord>) -> Option<[u8; 32]> {
    let r = record.filter(|r| r.enabled && !r.deleted)?;
    let v = r.active_version().filter(|v| v.world == World::Engine)?;
    Some(v.hash)
}

/// The engine a database opens with: the uploaded one if there is one that loads, else
/// `builtin`.
pub(super) fn at_open(
    store: &Store,
    builtin: &[u8],
    config: &DatabaseConfig,
    cache_dir: &Path,
) -> Result<(Runtime, [u8; 32])> {
    let record = store
        .plugins()?
        .into_iter()
        .find(|r| r.name == ENGINE_PLUGIN);
    if let Some(hash) = wanted(record.as_ref()) {
        let loaded = store.plugin_blob(&hash).and_then(|b| {
            let bytes =
                b.ok_or_else(|| Error::Storage("the engine component is missing".into()))?;
            Runtime::new(&bytes, config.engine.clone(), Some(cache_dir))
        });
        match loaded {
            Ok(rt) => return Ok((rt, hash)),
            Err(e) => {
                tracing::error!(error = %e, "the uploaded engine does not load; opening with the built-in one")
            }
        }
    }
    let rt = Runtime::new(builtin, config.engine.clone(), Some(cache_dir))?;
    Ok((rt, sha256(builtin)))
}

/// Checks that `wasm` loads as an engine here (compiling it once, into the cache the switch
/// then reads).
pub(super) fn check_upload(inner: &Inner, wasm: &[u8]) -> Result<()> {
    Runtime::new(wasm, inner.config.engine.clone(), Some(&inner.cache_dir))
        .map(drop)
        .map_err(|e| Error::invalid(format!("the engine component does not load: {e}")))
}

impl Committer {
    /// Runs the engine the `engine` plugin now names, if that is not the one running.
    /// Errors leave the old engine serving (and are logged by the caller).
    pub(super) fn switch_engine(&mut self) -> Result<bool> {
        let builtin = self.inner.builtin_engine.clone();
        let record = self.inner.plugins.record(ENGINE_PLUGIN);
        let (bytes, hash) = match wanted(record.as_ref()) {
            Some(hash) => {
                let bytes = self.inner.store.plugin_blob(&hash)?.ok_or_else(|| {
                    Error::Storage("the uploaded engine component is missing".into())
                })?;
                (bytes, hash)
            }
            None => (builtin.to_vec(), sha256(&builtin)),
        };
        let running = self
            .inner
            .runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1;
        if running == hash {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let runtime = Arc::new(Runtime::new(
            &bytes,
            self.inner.config.engine.clone(),
            Some(&self.inner.cache_dir),
        )?);
        // The new engine restores what the old one holds now.
        self.checkpoint(false)?;
        self.publisher.flush();
        let specs = self.inner.specs();
        let mut loaded = Vec::with_capacity(specs.len());
        for spec in specs {
            let name = spec.name.clone();
            let (collection, _) = self.inner.build_collection(&runtime, spec);
            for shard in 0..collection.shard_count() {
                for replica in 0..collection.replica_count(shard) {
                    if let Slot::Broken(why) = &*collection.lock(shard, replica)? {
                        return Err(Error::Engine(format!(
                            "collection `{name}` shard {shard} does not load on the new engine: {why}"
                        )));
                    }
                }
            }
            loaded.push(Arc::new(collection));
        }
        {
            let mut map = self
                .inner
                .collections
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for c in loaded {
                map.insert(c.spec.name.clone(), c);
            }
        }
        *self
            .inner
            .runtime
            .write()
            .unwrap_or_else(|p| p.into_inner()) = (runtime, hash);
        tracing::info!(took = ?started.elapsed(), "switched to another engine");
        Ok(true)
    }

    /// After the `engine` plugin changed: switch, or log why the old engine keeps serving.
    pub(super) fn engine_changed(&mut self) {
        if let Err(e) = self.switch_engine() {
            self.inner.counters.engine_switch_failed();
            tracing::error!(error = %e, "the engine was not switched; the old one keeps serving");
        }
    }
}
