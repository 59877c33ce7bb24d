#!/usr/bin/env python3
"""recall@10 of `vektagraf search --json` output against the dataset's gt.i32 (no numpy needed).
Usage: scripts/recall.py DATASET_DIR RESULTS.jsonl"""
import json
import struct
import sys

d, results = sys.argv[1], sys.argv[2]
ids = [json.loads(l)["id"] for l in open(f"{d}/base.jsonl")]
raw = open(f"{d}/gt.i32", "rb").read()
gt = [struct.unpack_from("<100i", raw, i * 400) for i in range(len(raw) // 400)]
rows = [json.loads(l)["ids"] for l in open(results)]
hits = sum(len(set(r[:10]) & {ids[j] for j in gt[i][:10]}) for i, r in enumerate(rows))
print(json.dumps({"queries": len(rows), "recall_at_10": hits / (10 * len(rows))}))
