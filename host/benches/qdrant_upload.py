"""Upload the debian-pkgs dataset into a node through qdrant-client, as a Qdrant user would.

Run by host/benches/http.rs (`just bench-http`) with target/py/venv/bin/python:

    qdrant_upload.py --url http://127.0.0.1:PORT --api-key TOKEN --dataset DIR
        [--collection pkgs] [--rows N] [--batch 256]

Creates the collection (384-d, Cosine, Qdrant's default HNSW: m 16, ef_construct 100), then
`upload_collection` of every base row (ids 0..n, payload = the row's base.jsonl object) in
batches of --batch, one process (parallel=1), wait=True, no retries (max_retries=0, so a server
error ends the run instead of being retried). Only the upload is timed. Prints one JSON line:
{"points": n, "secs": s, "batch": b}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

DIM = 384


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--collection", default="pkgs")
    ap.add_argument("--rows", type=int, default=0, help="only the first N rows (0: all)")
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()

    # The node is on loopback: the warning about an api key over plain http is expected.
    warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")

    vectors = np.fromfile(a.dataset / "base.f32", dtype="<f4").reshape(-1, DIM)
    with open(a.dataset / "base.jsonl", encoding="utf-8") as f:
        payload = [json.loads(line) for line in f]
    if len(payload) != len(vectors):
        sys.exit(f"base.jsonl has {len(payload)} rows, base.f32 {len(vectors)}")
    if a.rows:
        vectors, payload = vectors[: a.rows], payload[: a.rows]
    n = len(vectors)

    client = QdrantClient(url=a.url, api_key=a.api_key, prefer_grpc=False, timeout=120)
    client.create_collection(
        a.collection,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
    )
    t = time.perf_counter()
    client.upload_collection(
        a.collection,
        vectors=vectors,
        payload=payload,
        ids=range(n),
        batch_size=a.batch,
        parallel=1,
        max_retries=0,
        wait=True,
    )
    secs = time.perf_counter() - t
    count = client.count(a.collection, exact=True).count
    if count != n:
        sys.exit(f"uploaded {n} points, the collection counts {count}")
    client.close()
    print(json.dumps({"points": n, "secs": secs, "batch": a.batch}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
