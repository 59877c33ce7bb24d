# Named entry points. Each recipe is a plain command, so it also runs without `just`.

# Build the node binary (the engine component is built and embedded by host/build.rs).
build:
    cargo build --release -p vektagraf

# The demo: a temporary database with 2,500 Debian packages, and a few queries.
run:
    cargo run --release -p vektagraf -- demo

# Lints and every test (what CI runs).
test:
    bash scripts/test.sh

lint:
    cargo fmt --all --check
    cd guest && cargo fmt --all --check
    cargo clippy --release --workspace --all-targets -- -D warnings
    cd guest && cargo clippy --release --workspace --all-targets -- -D warnings
    cd guest && cargo clippy --release --workspace --target wasm32-wasip2 -- -D warnings

# Import the full shared dataset and measure recall@10 of queries-A against gt.i32.
full-dataset data="/tmp/vektagraf-full":
    bash scripts/full_dataset.sh {{data}}

# Benchmark against hnswlib, faiss and exact search; writes docs/BENCHMARKS.md and docs/benchmarks.json.
bench:
    cargo bench -p vektagraf --bench ann

# The same engine at a million synthetic 384-d vectors with 1, 2 and 4 shards (about 30 min);
# writes the Scale section of docs/BENCHMARKS.md.
bench-scale:
    cargo bench -p vektagraf --bench scale
