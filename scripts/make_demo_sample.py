#!/usr/bin/env python3
"""Cuts the demo sample (host/demo-data/) out of the shared debian-pkgs dataset.

Takes the `games`, `editors` and `shells` sections plus the packages they depend on directly,
capped at 2,500 rows, and keeps the edges between chosen packages. Deterministic.
Usage: scripts/make_demo_sample.py ../shared/data/debian-pkgs host/demo-data
"""
import json
import sys
from array import array

src, dst = sys.argv[1], sys.argv[2]
DIM, CAP = 384, 2500
meta = [json.loads(line) for line in open(f"{src}/base.jsonl")]
row = {m["id"]: i for i, m in enumerate(meta)}
edges = [l.rstrip("\n").split("\t") for l in open(f"{src}/edges.tsv")]
seeds = [m["id"] for m in meta if m["section"] in ("games", "editors", "shells")]
chosen = set(seeds)
deps = sorted({b for a, b, _ in edges if a in chosen and b not in chosen})
for d in deps:
    if len(chosen) >= CAP:
        break
    chosen.add(d)
rows = sorted(row[n] for n in chosen)
vec = array("f")
with open(f"{src}/base.f32", "rb") as f:
    for r in rows:
        f.seek(r * DIM * 4)
        vec.frombytes(f.read(DIM * 4))
with open(f"{dst}/vectors.f32", "wb") as f:
    vec.tofile(f)
with open(f"{dst}/meta.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(meta[r]) + "\n")
with open(f"{dst}/edges.tsv", "w") as f:
    for a, b, k in edges:
        if a in chosen and b in chosen:
            f.write(f"{a}\t{b}\t{k}\n")
print(len(rows), "rows")
