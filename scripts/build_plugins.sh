#!/usr/bin/env bash
# Builds the example and test plugins (guest/plugins, docs/plugins.md) for wasm32-wasip2 in
# release and copies each component to OUT_DIR as <crate>.wasm (default: target/plugins).
#
#   bash scripts/build_plugins.sh [OUT_DIR]
#
# The build directory is target/plugins-build (override with PLUGINS_TARGET_DIR). A clean build
# takes about a minute on two cores; a rebuild with nothing changed, about a second.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/target/plugins}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac # relative to where it was called from
target_dir="${PLUGINS_TARGET_DIR:-$root/target/plugins-build}"
manifest="$root/guest/plugins/Cargo.toml"
target=wasm32-wasip2

fail() {
    echo "build_plugins: $*" >&2
    exit 1
}

command -v cargo >/dev/null || fail "cargo is not on PATH"
# rust-toolchain.toml names the target; a toolchain installed before it may lack it.
if command -v rustup >/dev/null; then
    installed="$(cd "$root" && rustup target list --installed)" || fail "rustup target list failed"
    if ! grep -qx "$target" <<<"$installed"; then
        (cd "$root" && rustup target add "$target") || fail "could not add the $target target"
    fi
fi

# Run from the repository root, so that guest/.cargo/config.toml (the engine's SIMD flags) does
# not apply, and drop any flags meant for the host: plugins are built with the target's
# defaults, the same on every machine.
cd "$root"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR CARGO_BUILD_TARGET
cargo build --release --locked --target "$target" --manifest-path "$manifest" \
    --target-dir "$target_dir" ||
    fail "cargo build of guest/plugins for $target failed (see above)"

# The crates of the workspace: every guest/plugins/*/Cargo.toml.
mkdir -p "$out"
built="$target_dir/$target/release"
count=0
for crate_manifest in "$root"/guest/plugins/*/Cargo.toml; do
    crate="$(basename "$(dirname "$crate_manifest")")"
    wasm="$built/${crate//-/_}.wasm"
    [ -f "$wasm" ] || fail "the build did not produce $wasm"
    cp "$wasm" "$out/$crate.wasm"
    count=$((count + 1))
done
echo "build_plugins: $count plugins in $out:"
ls -l "$out"/*.wasm
