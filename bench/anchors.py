#!/usr/bin/env python3
"""The anchors of `just bench` and `just bench-scale`: hnswlib, faiss IndexHNSWFlat and exact
search (numpy), kept up as a subprocess so the Rust harness can interleave them with our engine
(ours at ef X, then hnswlib at ef X, ...) in one run on one machine.

Usage: anchors.py --base FILE --queries FILE [--dim 384] [--gt FILE --gt-width 100]
                  [--m 16] [--ef-construction 200] [--k 10]

It loads the vectors (raw little-endian f32, row-major), prints one JSON line {"ready": ...}
and then answers one command per stdin line with one JSON line on stdout ({"error": ...} when a
command fails). Progress and warnings go to stderr.

  gt NQ                      exact top-k (inner product, numpy, float64 accumulation) of the
                             first NQ queries: {"seconds", "ids": [[...], ...]}; recall is
                             then measured against it (instead of --gt)
  build SYSTEM THREADS [drop] build hnswlib|faiss with THREADS threads: {"build_s", "build_vps",
                             "memory_mib"}; `drop` measures it and throws it away, otherwise it is
                             the index that `query` and `latency` use
  query SYSTEM EF THREADS MIN_SECS
                             every query row in one call (hnswlib `knn_query`, faiss `search`)
                             with THREADS threads, repeated until MIN_SECS have passed:
                             {"qps", "recall", "passes"}
  latency SYSTEM EF          the query rows one at a time on one thread: {"p50_ms", "p99_ms"}
  save hnswlib               save_index, then load_index + one query: {"disk_mib", "cold_start_s"}
  exact NQ                   numpy brute force, one query at a time, over the first NQ rows:
                             {"qps", "recall", "p50_ms", "p99_ms"}
  free SYSTEM                drops the index SYSTEM: {}
  rss                        {"max_rss_mib"} of this process
  quit
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Anchors:
    def __init__(self, a):
        self.k = a.k
        self.m = a.m
        self.efc = a.ef_construction
        self.base = np.fromfile(a.base, dtype="<f4").reshape(-1, a.dim)
        self.queries = np.fromfile(a.queries, dtype="<f4").reshape(-1, a.dim)
        self.gt = None
        if a.gt:
            self.gt = np.fromfile(a.gt, dtype="<i4").reshape(-1, a.gt_width)[:, : a.k]
        self.index = {}

    def recall(self, ids):
        gt = self.gt
        if gt is None:
            raise ValueError("no ground truth: pass --gt or run `gt NQ` first")
        n = min(len(gt), len(ids))
        return float(sum(len(set(ids[i][: self.k]) & set(gt[i])) for i in range(n)) / (n * self.k))

    def cmd_gt(self, nq):
        nq = min(int(nq), len(self.queries))
        t0 = time.perf_counter()
        q = self.queries[:nq].astype(np.float64)
        best_s = np.full((nq, self.k), -np.inf)
        best_i = np.zeros((nq, self.k), dtype=np.int64)
        step = 65536
        for start in range(0, len(self.base), step):
            block = self.base[start : start + step].astype(np.float64)
            s = q @ block.T
            top = np.argpartition(-s, self.k - 1, axis=1)[:, : self.k]
            s_top = np.take_along_axis(s, top, axis=1)
            all_s = np.concatenate([best_s, s_top], axis=1)
            all_i = np.concatenate([best_i, top + start], axis=1)
            keep = np.argsort(-all_s, axis=1, kind="stable")[:, : self.k]
            best_s = np.take_along_axis(all_s, keep, axis=1)
            best_i = np.take_along_axis(all_i, keep, axis=1)
        self.gt = best_i.astype(np.int32)
        return {"seconds": time.perf_counter() - t0, "ids": self.gt.tolist()}

    def cmd_build(self, system, threads, *rest):
        threads = int(threads)
        n, dim = self.base.shape
        if "drop" not in rest:
            self.index.pop(system, None)
        before = rss_mib()
        t0 = time.perf_counter()
        if system == "hnswlib":
            import hnswlib

            idx = hnswlib.Index(space="ip", dim=dim)
            idx.init_index(max_elements=n, M=self.m, ef_construction=self.efc, random_seed=1)
            idx.set_num_threads(threads)
            t0 = time.perf_counter()
            idx.add_items(self.base, np.arange(n))
        elif system == "faiss":
            import faiss

            faiss.omp_set_num_threads(threads)
            idx = faiss.IndexHNSWFlat(dim, self.m, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = self.efc
            t0 = time.perf_counter()
            idx.add(self.base)
        else:
            raise ValueError(f"unknown system {system}")
        build = time.perf_counter() - t0
        out = {"build_s": build, "build_vps": n / build, "memory_mib": rss_mib() - before}
        if "drop" not in rest:
            self.index[system] = idx
        del idx
        return out

    def search_all(self, system, ef, threads, queries):
        idx = self.index[system]
        if system == "hnswlib":
            idx.set_ef(ef)
            return idx.knn_query(queries, k=self.k, num_threads=threads)[0]
        import faiss

        faiss.omp_set_num_threads(threads)
        idx.hnsw.efSearch = ef
        return idx.search(queries, self.k)[1]

    def cmd_query(self, system, ef, threads, min_secs):
        ef, threads, min_secs = int(ef), int(threads), float(min_secs)
        ids = self.search_all(system, ef, threads, self.queries[:1])  # set-up outside the clock
        passes = 0
        t0 = time.perf_counter()
        while True:
            ids = self.search_all(system, ef, threads, self.queries)
            passes += 1
            total = time.perf_counter() - t0
            if total >= min_secs:
                break
        return {"qps": passes * len(self.queries) / total, "recall": self.recall(ids), "passes": passes}

    def cmd_latency(self, system, ef):
        ef = int(ef)
        idx = self.index[system]
        if system == "hnswlib":
            idx.set_ef(ef)
            one = lambda q: idx.knn_query(q, k=self.k, num_threads=1)
        else:
            import faiss

            faiss.omp_set_num_threads(1)
            idx.hnsw.efSearch = ef
            one = lambda q: idx.search(q, self.k)
        lat = []
        for i in range(len(self.queries)):
            q = self.queries[i : i + 1]
            s = time.perf_counter()
            one(q)
            lat.append(time.perf_counter() - s)
        lat = np.array(lat) * 1e3
        return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}

    def cmd_save(self, system):
        import hnswlib

        if system != "hnswlib":
            raise ValueError("only hnswlib has save")
        n, dim = self.base.shape
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "hnswlib.bin")
            self.index["hnswlib"].save_index(path)
            size = os.path.getsize(path)
            t0 = time.perf_counter()
            idx2 = hnswlib.Index(space="ip", dim=dim)
            idx2.load_index(path, max_elements=n)
            idx2.set_ef(64)
            idx2.knn_query(self.queries[:1], k=self.k)
            cold = time.perf_counter() - t0
            del idx2
        return {"disk_mib": size / 2**20, "cold_start_s": cold}

    def cmd_exact(self, nq):
        nq = int(nq)
        ids, lat = [], []
        t0 = time.perf_counter()
        for q in self.queries[:nq]:
            s = time.perf_counter()
            ids.append(np.argsort(-(self.base @ q))[: self.k])
            lat.append(time.perf_counter() - s)
        total = time.perf_counter() - t0
        lat = np.array(lat) * 1e3
        return {
            "qps": nq / total,
            "recall": self.recall(ids),
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
        }

    def cmd_free(self, system):
        self.index.pop(system, None)
        return {}

    def cmd_rss(self):
        return {"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--gt")
    ap.add_argument("--gt-width", type=int, default=100)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()
    s = Anchors(a)
    from importlib.metadata import version

    versions = {p: version(p) for p in ("numpy", "hnswlib", "faiss-cpu")}
    print(json.dumps({"ready": True, "n": len(s.base), "queries": len(s.queries), "versions": versions}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        try:
            out = getattr(s, "cmd_" + words[0])(*words[1:])
        except Exception as e:  # noqa: BLE001 - reported to the harness, which stops
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
