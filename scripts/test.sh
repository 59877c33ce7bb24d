#!/usr/bin/env bash
# The project's test command (README): lints, then every test of both workspaces.
# Exits non-zero as soon as anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# rust-toolchain.toml pins the toolchain and names wasm32-wasip2; rustup installs a missing
# target only with a new toolchain, so make sure it is there (a no-op when it is).
if command -v rustup >/dev/null; then rustup toolchain install >/dev/null 2>&1 || rustup target add wasm32-wasip2; fi

echo "== fmt"
cargo fmt --all --check
(cd guest && cargo fmt --all --check)
cargo fmt --all --check --manifest-path guest/plugins/Cargo.toml

echo "== clippy (host workspace, guest natively and for wasm32-wasip2)"
cargo clippy --release --workspace --all-targets --locked -- -D warnings
(cd guest && cargo clippy --release --workspace --all-targets --locked -- -D warnings)
(cd guest && cargo clippy --release --workspace --locked --target wasm32-wasip2 -- -D warnings)
# The plugins build from the root (not under guest/.cargo's engine flags), as build_plugins.sh does.
cargo clippy --release --workspace --locked --manifest-path guest/plugins/Cargo.toml \
    --target wasm32-wasip2 --target-dir target/plugins-build -- -D warnings

# Every test binary's result line is kept, to print one total at the end.
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== tests (guest core, natively)"
(cd guest && cargo test --release --workspace --locked) 2>&1 | tee -a "$log"

echo "== tests (example plugins' logic, natively)"
cargo test --release --workspace --locked --manifest-path guest/plugins/Cargo.toml \
    --target-dir target/plugins-build 2>&1 | tee -a "$log"

echo "== tests (host workspace: unit, integration, node, client, crash)"
cargo test --release --workspace --locked 2>&1 | tee -a "$log"

echo "== tests (Python clients against a node: qdrant-client, LangChain, LlamaIndex)"
bash scripts/python-tests.sh 2>&1 | tee -a "$log"

awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed; exit (failed > 0 || passed == 0) }' "$log"
