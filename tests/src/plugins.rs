//! The example and hostile plugins (guest/plugins), built by this crate's build script.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// The directory the build script put the `.wasm` files in.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("VEKTAGRAF_PLUGINS_DIR"))
}

/// The component bytes of `guest/plugins/<name>`.
pub fn bytes(name: &str) -> Result<Vec<u8>> {
    let path = dir().join(format!("{name}.wasm"));
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}
