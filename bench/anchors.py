#!/usr/bin/env python3
"""The anchors of `just bench`: hnswlib, faiss IndexHNSWFlat and exact search (numpy) on the
same dataset, queries, k and ef values as our engine. Prints one JSON object on stdout.

Queries run one at a time on one thread (as ours do), so QPS and latency compare like for like.
Usage: anchors.py DATASET_DIR --efs 10,16,20,24,32,48,64,128,256 [--m 16] [--ef-construction 200]
"""
import argparse
import json
import os
import resource
import time

import numpy as np


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def recall(ids, gt, k=10):
    return float(np.mean([len(set(ids[i][:k]) & set(gt[i, :k])) / k for i in range(len(ids))]))


def timed_queries(search_one, queries):
    lat, ids = [], []
    t0 = time.perf_counter()
    for q in queries:
        s = time.perf_counter()
        ids.append(search_one(q))
        lat.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    lat = np.array(lat) * 1e3
    return ids, {"qps": len(queries) / total, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--efs", default="10,16,20,24,32,48,64,128,256")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()
    efs = [int(x) for x in a.efs.split(",")]
    base = np.fromfile(f"{a.dataset}/base.f32", dtype="<f4").reshape(-1, 384)
    queries = np.fromfile(f"{a.dataset}/queries.f32", dtype="<f4").reshape(-1, 384)
    gt = np.fromfile(f"{a.dataset}/gt.i32", dtype="<i4").reshape(-1, 100)
    n, dim = base.shape
    out = {"n": n, "dim": dim, "systems": []}

    import hnswlib
    for threads in (1, 2):
        before = rss_mib()
        idx = hnswlib.Index(space="ip", dim=dim)
        idx.init_index(max_elements=n, M=a.m, ef_construction=a.ef_construction, random_seed=1)
        idx.set_num_threads(threads)
        t0 = time.perf_counter()
        idx.add_items(base, np.arange(n))
        build = time.perf_counter() - t0
        mem = rss_mib() - before
        sys_ = {"system": "hnswlib", "build_threads": threads, "build_s": build, "build_vps": n / build, "memory_mib": mem, "runs": []}
        if threads == 1:
            idx.set_num_threads(1)
            path = "/tmp/vektagraf-bench-hnswlib.bin"
            idx.save_index(path)
            sys_["snapshot_mib"] = os.path.getsize(path) / 2**20
            t0 = time.perf_counter()
            idx2 = hnswlib.Index(space="ip", dim=dim)
            idx2.load_index(path, max_elements=n)
            idx2.set_ef(efs[0])
            idx2.knn_query(queries[:1], k=a.k)
            sys_["cold_start_s"] = time.perf_counter() - t0
            os.remove(path)
            del idx2
            for ef in efs:
                idx.set_ef(ef)
                ids, t = timed_queries(lambda q: idx.knn_query(q[None, :], k=a.k)[0][0], queries)
                sys_["runs"].append({"ef": ef, "recall": recall(ids, gt, a.k), **t})
        out["systems"].append(sys_)
        del idx

    import faiss
    faiss.omp_set_num_threads(1)
    before = rss_mib()
    fi = faiss.IndexHNSWFlat(dim, a.m, faiss.METRIC_INNER_PRODUCT)
    fi.hnsw.efConstruction = a.ef_construction
    t0 = time.perf_counter()
    fi.add(base)
    build = time.perf_counter() - t0
    sys_ = {"system": "faiss-hnsw", "build_threads": 1, "build_s": build, "build_vps": n / build, "memory_mib": rss_mib() - before, "runs": []}
    for ef in efs:
        fi.hnsw.efSearch = ef
        ids, t = timed_queries(lambda q: fi.search(q[None, :], a.k)[1][0], queries)
        sys_["runs"].append({"ef": ef, "recall": recall(ids, gt, a.k), **t})
    out["systems"].append(sys_)
    del fi

    ids, t = timed_queries(lambda q: np.argsort(-(base @ q))[: a.k], queries[:200])
    out["systems"].append({"system": "exact-numpy", "build_threads": 1, "runs": [{"ef": 0, "recall": recall(ids, gt[:200], a.k), **t}]})
    out["python_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
