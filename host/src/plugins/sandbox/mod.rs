//! The wasmtime side of plugins (being written: see the plugin issue).
