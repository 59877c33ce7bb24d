//! `bindgen!` for the two plugin worlds (wit/plugin.wit), over the shared `wit/` folder. Both
//! reuse the engine's `types` (so a plugin's `object` is the engine's), and the resolver world
//! reuses the plugin world's `errors` and `logging`.

/// The `plugin` world: imports read, write and logging; exports `handler`.
pub mod plugin {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        with: {
            "vektagraf:engine/types": crate::runtime::wit,
        },
    });
}

/// The `resolver` world: imports logging; exports `resolve`.
pub mod resolver {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "resolver",
        with: {
            "vektagraf:engine/types": crate::runtime::wit,
            "vektagraf:engine/errors": super::plugin::vektagraf::engine::errors,
            "vektagraf:engine/logging": super::plugin::vektagraf::engine::logging,
        },
    });
}

pub use plugin::vektagraf::engine::errors::Error as WitError;
pub use plugin::vektagraf::engine::{logging, read, write};
pub use plugin::{Plugin, PluginPre};
pub use resolver::exports::vektagraf::engine::resolve::Sibling;
pub use resolver::{Resolver, ResolverPre};
