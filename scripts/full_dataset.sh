#!/usr/bin/env bash
# Imports the shared debian-pkgs dataset through the CLI and checks recall@10 of queries-A.
# Usage: scripts/full_dataset.sh [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/vektagraf-full}
SET=${VEKTAGRAF_DATASET:-../shared/data/debian-pkgs}
BIN=target/release/vektagraf
cargo build --release -p vektagraf
rm -rf "$DATA"
$BIN --data "$DATA" collection create pkgs --dim 384 --metric dot
/usr/bin/time -f "import: %e s wall, %M KiB max resident" \
  $BIN --data "$DATA" import pkgs --vectors "$SET/base.f32" --meta "$SET/base.jsonl" --edges "$SET/edges.tsv"
/usr/bin/time -f "open + 1000 queries: %e s wall, %M KiB max resident" \
  $BIN --data "$DATA" --json search pkgs --queries "$SET/queries.f32" --k 10 > "$DATA.search.jsonl"
python3 scripts/recall.py "$SET" "$DATA.search.jsonl"
$BIN --data "$DATA" stats pkgs
