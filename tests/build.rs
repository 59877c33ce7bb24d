//! Builds the example and hostile plugins (guest/plugins) with scripts/build_plugins.sh, so
//! the tests upload real components; their directory reaches the tests as
//! `VEKTAGRAF_PLUGINS_DIR`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("plugins");
    for p in ["wit", "guest/plugins", "scripts/build_plugins.sh"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let status = Command::new("bash")
        .arg(root.join("scripts/build_plugins.sh"))
        .arg(&out)
        .status()
        .expect("could not run bash scripts/build_plugins.sh");
    if !status.success() {
        panic!("building the plugins (guest/plugins) failed; see the output above");
    }
    println!("cargo:rustc-env=VEKTAGRAF_PLUGINS_DIR={}", out.display());
}
