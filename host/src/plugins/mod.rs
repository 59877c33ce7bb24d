//! User plugins (docs/plugins.md): WebAssembly components of the `plugin` world (query
//! handlers), the `resolver` world (conflict resolvers) or the `engine` world (an engine
//! upgrade), uploaded by an admin, stored in redb, replicated through the log and run
//! sandboxed on every node.
//!
//! - `sandbox/`: the wasmtime side: its own engine with fuel and epoch deadlines, one linker
//!   per world, compile once (cached by content hash), a fresh instance per call.
//! - `record.rs`: what is stored and replicated about a plugin.
//! - `registry.rs`: the plugins of a database in memory, compiled, with their fault counts.
//! - `metrics.rs`: calls, errors by kind and durations, by plugin.

pub mod metrics;
pub mod record;
pub mod registry;
pub mod sandbox;

use std::fmt;

pub use record::{PluginRecord, PluginVersion};
pub use registry::Registry;

/// Which WIT world a component implements (wit/plugin.wit, wit/engine.wit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// Exports `handler`: called with bytes, answers bytes.
    Plugin,
    /// Exports `resolve`: merges the siblings of a key under the vector-clock policy.
    Resolver,
    /// Exports `shard`: a new engine.
    Engine,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Plugin => "plugin",
            World::Resolver => "resolver",
            World::Engine => "engine",
        })
    }
}

/// What a plugin may do beyond reading. Resolvers get none, ever.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Grants {
    /// The `write` interface works (without it every call answers `denied`), and calling the
    /// plugin needs the write role.
    pub write: bool,
    /// The wall and monotonic clocks read the real time (without: frozen at the epoch).
    pub clock: bool,
    /// `wasi:random` is seeded from the OS (without: a fixed seed, the same on every call).
    pub random: bool,
}

impl Grants {
    /// Parses `write`, `clock`, `random` (a list; unknown names are an error).
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Grants, String> {
        let mut g = Grants::default();
        for n in names {
            match n.trim() {
                "write" => g.write = true,
                "clock" => g.clock = true,
                "random" => g.random = true,
                other => {
                    return Err(format!(
                        "unknown grant `{other}` (grants are write, clock and random)"
                    ))
                }
            }
        }
        Ok(g)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.write {
            v.push("write");
        }
        if self.clock {
            v.push("clock");
        }
        if self.random {
            v.push("random");
        }
        v
    }
}

/// How a plugin call or an upload failed. The kind is what metrics count.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The upload was refused: not a component, a world or version this node does not run,
    /// too large, imports the node does not offer.
    #[error("{0}")]
    Rejected(String),
    /// The plugin ran past its deadline (the epoch interrupted it).
    #[error("plugin `{0}` ran past its deadline and was stopped")]
    Timeout(String),
    /// The plugin used up its fuel (instructions) for one call.
    #[error("plugin `{0}` used up its fuel for one call and was stopped")]
    Fuel(String),
    /// The plugin tried to grow its memory past the cap.
    #[error(
        "plugin `{name}` tried to use more than its {limit_mib} MiB of memory and was stopped"
    )]
    Memory { name: String, limit_mib: u64 },
    /// The plugin overflowed its stack (deep recursion).
    #[error("plugin `{0}` overflowed its stack and was stopped")]
    Stack(String),
    /// Any other trap: a panic, unreachable, a bad memory access.
    #[error("plugin `{name}` trapped: {reason}")]
    Trap { name: String, reason: String },
    /// The plugin answered with an error of its own (`errors.error`).
    #[error("plugin `{name}` answered with an error: {message}")]
    Failed { name: String, message: String },
    /// There is no plugin of that name.
    #[error("there is no plugin `{0}`")]
    Unknown(String),
    /// The plugin is there but cannot be called: disabled, or not a query plugin.
    #[error("{reason}")]
    NotRunnable { name: String, reason: String },
    /// The database is closed (or closing).
    #[error("the database is closed")]
    Closed,
    /// The host could not run the call (instantiation, the node's own failure).
    #[error("running plugin `{name}`: {reason}")]
    Host { name: String, reason: String },
}

impl PluginError {
    /// The label of `vektagraf_plugin_errors_total{kind=...}`.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Rejected(_) => "rejected",
            PluginError::Timeout(_) => "timeout",
            PluginError::Fuel(_) => "fuel",
            PluginError::Memory { .. } => "memory",
            PluginError::Stack(_) => "stack",
            PluginError::Trap { .. } => "trap",
            PluginError::Failed { .. } => "failed",
            PluginError::Unknown(_) => "unknown",
            PluginError::Closed => "closed",
            PluginError::NotRunnable { .. } => "not_runnable",
            PluginError::Host { .. } => "host",
        }
    }

    /// Whether the plugin itself misbehaved (counts towards disabling it automatically); an
    /// error it answered with on purpose does not.
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            PluginError::Failed { .. }
                | PluginError::Host { .. }
                | PluginError::Rejected(_)
                | PluginError::Unknown(_)
                | PluginError::NotRunnable { .. }
                | PluginError::Closed
        )
    }
}
