"""Run: python jobs/bench/retrieval.py [--sizes 10000,100000,1000000] [--dims 64,384]

Benchmark of item retrieval: bridgerec's faiss index (:mod:`bridgerec.retrieval.index`) against
brute-force torch top-K (a matrix product and ``torch.topk``) on the same queries and embeddings.

Protocol: per (catalog size, dimension), item and query embeddings are drawn from a mixture of
Gaussians (200 centres, unit noise; trained embeddings are clustered, and uniform noise is the
worst case of every approximate index), seeded. Both sides answer the same queries for top-10:

- brute force: ``exact_topk`` (torch, float32, all cores);
- exact faiss: ``IndexFlatIP`` (what bridgerec uses up to ``retrieval.exact_max_items``);
- approximate faiss: HNSW (``retrieval.approximate=hnsw``, M, efConstruction, efSearch from the
  config) and IVF (``nlist`` = 4 sqrt(n), ``nprobe`` from the config), both built only at sizes
  above ``--approx-from``.

Timed: "batch" = all queries in one call (``--queries``), "single" = one query per call
(``--single`` of them), after one warm-up call. Recall@10 of each index is against the exact
answer. Memory is the serialised index size; build time is the index's own. Printed side by side
with the speed-up over brute force measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bridgerec.benchmarking import write_report
from bridgerec.retrieval.config import RetrievalConfig
from bridgerec.retrieval.index import build_index, exact_topk

K = 10


def clustered(n: int, d: int, q: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, d)).astype(np.float32) * 2
    items = np.empty((n, d), dtype=np.float32)
    step = 250_000
    for start in range(0, n, step):  # in chunks: 1M x 384 float64 noise would need 3 GB
        m = min(step, n - start)
        items[start : start + m] = centres[rng.integers(0, 200, m)] + rng.standard_normal((m, d), dtype=np.float32)
    queries = centres[rng.integers(0, 200, q)] + rng.standard_normal((q, d), dtype=np.float32)
    return items, queries


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def recall(ids: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids.tolist(), ref.tolist())]))


def run_one(n: int, d: int, args) -> list[dict]:
    items, queries = clustered(n, d, args.queries, seed=n + d)
    single = queries[: args.single]
    ref, _ = exact_topk(queries, items, K)
    brute_batch = timed(lambda: exact_topk(queries, items, K))
    brute_single = timed(lambda: [exact_topk(single[i : i + 1], items, K) for i in range(len(single))]) / len(single)
    rows = [dict(n=n, d=d, method="torch brute force", build=0.0, mem=items.nbytes, batch=brute_batch,
                 single=brute_single, recall=1.0)]
    kinds = ["flat"] + (["hnsw", "ivf"] if n >= args.approx_from else [])
    cfg = RetrievalConfig(hnsw_m=args.hnsw_m, hnsw_ef_construction=args.ef_construction, hnsw_ef_search=args.ef_search,
                          ivf_nprobe=args.nprobe)
    for kind in kinds:
        index = build_index(items, "ip", cfg, kind=kind)
        ids, _ = index.search(queries, K)
        rows.append(dict(n=n, d=d, method=f"faiss {kind}", build=index.build_seconds, mem=index.memory_bytes(),
                         batch=timed(lambda: index.search(queries, K)),
                         single=timed(lambda: [index.search(single[i : i + 1], K) for i in range(len(single))]) / len(single),
                         recall=recall(ids, ref), params=index.params))
        del index
    for r in rows:
        r["speedup_batch"] = brute_batch / r["batch"]
        r["speedup_single"] = brute_single / r["single"]
    return rows


def report(rows: list[dict], args) -> str:
    lines = [
        "# Retrieval: faiss vs brute-force torch top-10",
        "",
        f"`python jobs/bench/retrieval.py --sizes {args.sizes} --dims {args.dims} --queries {args.queries} "
        f"--single {args.single}` on {os.cpu_count()} cores, load average before {args.load0:.2f}, after "
        f"{os.getloadavg()[0]:.2f}. Clustered Gaussian embeddings (200 centres), inner product, top-10. "
        f"batch = {args.queries} queries in one call; single = one query per call (mean of {args.single}). "
        "Speed-up = brute-force time / this method's time, same run. Recall@10 against exact search.",
        "",
        "| items | dim | method | build s | index MB | batch ms | batch speed-up | single ms | single speed-up | recall@10 |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['d']} | {r['method']} | {r['build']:.2f} | {r['mem'] / 2**20:.0f} | "
                     f"{r['batch'] * 1e3:.1f} | {r['speedup_batch']:.1f}x | {r['single'] * 1e3:.2f} | "
                     f"{r['speedup_single']:.1f}x | {r['recall']:.3f} |")
    params = {r["method"]: r.get("params") for r in rows if r.get("params")}
    lines += ["", "Index parameters: " + "; ".join(f"{m}: {p}" for m, p in params.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000", help="catalog sizes, comma-separated")
    p.add_argument("--dims", default="64,384", help="embedding dimensions, comma-separated")
    p.add_argument("--queries", type=int, default=256, help="queries of the batched call")
    p.add_argument("--single", type=int, default=50, help="single-query calls timed")
    p.add_argument("--approx-from", type=int, default=100_000, help="build HNSW and IVF from this catalog size on")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--out", default="bench_results/retrieval.md", help="markdown report path")
    args = p.parse_args()
    args.load0 = os.getloadavg()[0]
    rows: list[dict] = []
    for n in [int(x) for x in args.sizes.split(",")]:
        for d in [int(x) for x in args.dims.split(",")]:
            t0 = time.perf_counter()
            rows += run_one(n, d, args)
            print(f"[bench] {n:,} items x {d}: {time.perf_counter() - t0:.0f} s", flush=True)
            with open(args.out + ".partial", "w") as fh:  # what is measured survives an interrupted run
                fh.write(report(rows, args))
    write_report(report(rows, args), args.out)
    os.remove(args.out + ".partial")


if __name__ == "__main__":
    main()
