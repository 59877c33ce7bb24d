//! The sandbox's wasmtime engine (fuel and epochs), one linker per world, and an upload's
//! way to a [`Compiled`]: size, world, imports, then compile (or load the cached artifact)
//! and instantiate-pre against its world's linker.

use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{Plugin, PluginPre, Resolver, ResolverPre};
use super::call::CallState;
use super::{detect, wasi, Compiled, Pre};
use crate::plugins::{PluginError, World};
use crate::runtime::cache::{self, Holds};

fn host(reason: String) -> PluginError {
    PluginError::Host {
        name: "sandbox".into(),
        reason,
    }
}

/// A wasmtime engine that meters fuel (when `fuel`) and checks epochs.
pub(super) fn engine(fuel: bool) -> Result<Engine, PluginError> {
    let mut config = Config::new();
    config.consume_fuel(fuel).epoch_interruption(true);
    Engine::new(&config).map_err(|e| host(format!("creating the wasmtime engine: {e}")))
}

/// The linkers of the two worlds: WASI (restricted: see `wasi`) and the world's imports.
pub(super) fn linkers(
    engine: &Engine,
) -> Result<(Linker<CallState>, Linker<CallState>), PluginError> {
    let link = |e: wasmtime::Error| host(format!("linking the plugin imports: {e}"));
    let mut plugin = Linker::new(engine);
    wasi::add_to_linker(&mut plugin).map_err(link)?;
    Plugin::add_to_linker::<_, HasSelf<_>>(&mut plugin, |s| s).map_err(link)?;
    let mut resolver = Linker::new(engine);
    wasi::add_to_linker(&mut resolver).map_err(link)?;
    Resolver::add_to_linker::<_, HasSelf<_>>(&mut resolver, |s| s).map_err(link)?;
    Ok((plugin, resolver))
}

/// What [`compile`] needs of the sandbox.
pub(super) struct Compiler<'a> {
    pub engine: &'a Engine,
    pub plugin: &'a Linker<CallState>,
    pub resolver: &'a Linker<CallState>,
    pub cache_dir: Option<&'a Path>,
    pub max_bytes: u64,
}

/// Validates an upload and prepares it to run (see [`super::Sandbox::compile`]).
pub(super) fn compile(c: &Compiler<'_>, wasm: &[u8]) -> Result<Compiled, PluginError> {
    if wasm.len() as u64 > c.max_bytes {
        return Err(PluginError::Rejected(format!(
            "the component is {} bytes; this node accepts at most {} (plugins.max_component_bytes)",
            wasm.len(),
            c.max_bytes
        )));
    }
    let hash: [u8; 32] = Sha256::digest(wasm).into();
    // An engine is compiled by the engine runtime, not here: check it whole now.
    let world = detect::world(wasm)?;
    if world == World::Engine {
        detect::validate(wasm)?;
        return Ok(Compiled {
            world,
            hash,
            pre: Pre::Engine,
        });
    }
    let (component, _load) = cache::component(c.engine, wasm, c.cache_dir, Holds::Plugins)
        .map_err(|e| {
            let m = match e {
                crate::error::Error::Engine(m) => m,
                other => other.to_string(),
            };
            PluginError::Rejected(format!("not a valid component: {m}"))
        })?;
    let unfit = |e: wasmtime::Error| {
        PluginError::Rejected(format!("it does not fit the {world} world: {e:#}"))
    };
    let pre = match world {
        World::Plugin => Pre::Plugin(
            PluginPre::new(c.plugin.instantiate_pre(&component).map_err(unfit)?).map_err(unfit)?,
        ),
        World::Resolver => Pre::Resolver(
            ResolverPre::new(c.resolver.instantiate_pre(&component).map_err(unfit)?)
                .map_err(unfit)?,
        ),
        World::Engine => Pre::Engine,
    };
    Ok(Compiled { world, hash, pre })
}
