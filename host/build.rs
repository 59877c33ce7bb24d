//! Builds the engine component (`guest/`) for wasm32-wasip2 into its own target directory and
//! hands its path to the crate as `VEKTAGRAF_ENGINE_WASM`, so the binary embeds it and
//! `cargo run -p vektagraf` needs nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("host/ has a parent").to_path_buf();
    let guest = root.join("guest");
    let out = PathBuf::from(env("OUT_DIR"));
    let target_dir = out.join("guest-target");

    for p in [
        "wit",
        "guest/Cargo.toml",
        "guest/Cargo.lock",
        "guest/.cargo",
        "guest/core",
        "guest/engine",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    ensure_target(&guest);

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest) // so guest/.cargo/config.toml (simd128) applies
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "vektagraf-engine",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags are for the host target, not for the guest.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("could not run cargo to build the guest");
    if !status.success() {
        panic!("building the engine component (guest/) for {TARGET} failed; see the output above");
    }
    let wasm = target_dir
        .join(TARGET)
        .join("release")
        .join("vektagraf_engine.wasm");
    if !wasm.exists() {
        panic!("the guest build did not produce {}", wasm.display());
    }
    println!("cargo:rustc-env=VEKTAGRAF_ENGINE_WASM={}", wasm.display());
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// rust-toolchain.toml names the target, but rustup only installs it with the toolchain; on a
/// machine that already had the toolchain, add it here so a fresh clone builds with no extra step.
fn ensure_target(guest: &Path) {
    let installed = Command::new("rustup")
        .current_dir(guest)
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) => {}
        Ok(_) => {
            let ok = Command::new("rustup")
                .current_dir(guest)
                .args(["target", "add", TARGET])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                panic!("the {TARGET} target is missing and `rustup target add {TARGET}` failed");
            }
        }
        // No rustup: the toolchain must already have the target; the build below says if not.
        Err(_) => {}
    }
}
