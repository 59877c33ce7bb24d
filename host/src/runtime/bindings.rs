//! The one place that runs `bindgen!`, pointed at the shared `wit/` folder.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "engine",
});

pub use vektagraf::engine::host as host_api;
pub use vektagraf::engine::types as wit;
