# Named entry points. Each recipe is a plain command, so it also runs without `just`.

# Build the node binary (the engine component is built and embedded by host/build.rs).
build:
    cargo build --release -p vektagraf

# The example and test plugins (guest/plugins, docs/plugins.md) as components in target/plugins.
plugins out="target/plugins":
    bash scripts/build_plugins.sh {{out}}

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

# Benchmark against hnswlib, faiss and exact search on the shared dataset, in one run (about 15
# min after the build on a quiet 2-core machine): batched queries with 1 and 2 query threads
# (ours one shard, 2 read replicas; hnswlib/faiss in bench/anchors.py kept up as a subprocess),
# interleaved per ef over 3 rounds, best QPS kept, crossings of recall 0.95/0.99; builds; data
# directory of the full import; writes during a snapshot; cold start and peak RSS. Writes
# docs/BENCHMARKS.md and docs/benchmarks.json; flags pass through, e.g. `just bench --no-write
# --rounds 1 --efs 16,64`, `--hora` adds hora (~10 min more).
bench *args:
    cargo bench -p vektagraf --bench ann -- {{args}}

# The same engine at a million synthetic 384-d vectors with 1, 2 and 4 shards, and hnswlib and
# faiss on the same vectors in the same run (build, memory, disk, recall and QPS with 2 query
# threads at the same efs, ground truth by numpy); about an hour. Writes the Scale section of
# docs/BENCHMARKS.md; flags pass through, e.g. `just bench-scale --n 50000 --no-write`.
bench-scale *args:
    cargo bench -p vektagraf --bench scale -- {{args}}

# The node over QUIC on loopback against the embedded API: import, search QPS and latency with
# 1, 8 and 64 clients, full vs resumed handshakes (about 1.5 min after the build); writes the
# "Node over QUIC" section of docs/BENCHMARKS.md.
bench-node:
    cargo bench -p vektagraf --bench node

# The HTTP API (Qdrant's REST dialect) on loopback: the dataset uploaded through qdrant-client
# (Python, target/py/venv, made when missing), then the same searches embedded, over QUIC and
# over REST with 1 and 8 clients (a few minutes after the build); writes the "HTTP API (Qdrant
# dialect)" section of docs/BENCHMARKS.md.
bench-http:
    cargo bench -p vektagraf --bench http

# Active-active replication between in-process nodes on loopback (tests/src/mesh.rs): lag under
# a paced write load with 2 and 3 nodes, convergence after a 10 s partition with writes on both
# sides, catch-up after a restart, bootstrap of an empty node from the whole dataset, and write
# throughput with and without replication (about 5 min after the build); writes the
# "Replication (active-active, loopback)" section of docs/BENCHMARKS.md.
bench-replication:
    cargo bench -p vektagraf-tests --bench replication

# Plugins: an empty call, instantiation, a k-NN plugin against the built-in search, fuel's cost,
# upload-to-ready on a three-node cluster (a few minutes); writes the "Plugins" section of
# docs/BENCHMARKS.md.
bench-plugins:
    cargo bench -p vektagraf-tests --bench plugins

# Every decoder of outside bytes (frames, vector files, records, snapshots) against many
# arbitrary and mutated inputs; CI runs the same property tests with the default 256 cases.
fuzz cases="20000":
    PROPTEST_CASES={{cases}} cargo test --release -p vektagraf-proto --test codec
    PROPTEST_CASES={{cases}} cargo test --release -p vektagraf --lib -- cli::vectors store::records
    cd guest && PROPTEST_CASES={{cases}} cargo test --release -p vektagraf-engine-core -- codec::
    cd guest && PROPTEST_CASES={{cases}} cargo test --release -p vektagraf-engine-core --test snapshot_fuzz

# Regenerate docs/openapi.json from the HTTP handlers (a test checks it is current).
openapi:
    cargo run -q -p vektagraf -- openapi > docs/openapi.json
