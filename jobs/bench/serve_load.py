"""Run: python jobs/bench/serve_load.py [--items 1361,1000000] [--concurrency 1,8,32,64]

Load benchmark of the recommender app: the same domain-retrieval pipeline behind Ray Serve (the
Recommender ingress calling the Retriever through a handle, with and without ``@serve.batch``)
and behind a plain single-process FastAPI app under uvicorn, plus the in-process call time.

Protocol: per catalog size, a bundle of seeded random embeddings (10,000 users, dim 64, 20 seen
items per user) with its faiss index: exact (``IndexFlatIP``) at the synthetic catalog's size,
HNSW at 1M items (``retrieval.exact_max_items`` decides, as in a real bundle). A bounded load
generator on localhost (asyncio + httpx, one connection per worker) sends ``POST /v1/recommend``
``{"user_id", "k": 10}`` for random known users: ``--requests`` per concurrency level after 20
warm-up requests. Reported per row: throughput (requests/s), p50/p95/p99 latency, errors
(non-200 answers), and the Serve/plain p50 ratio at concurrency 1; a sequential ``GET /healthz``
row per server shows what the HTTP path alone costs. ``--throughput-optimized``
repeats the Serve rows in a child process with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``.
The load generator shares the 2 cores with the server, so absolute figures are low.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from bridgerec.benchmarking import write_report

USERS, DIM, SEEN = 10_000, 64, 20


# ------------------------------------------------------------------------------------ bundles
def make_bundle(n_items: int, root: str) -> str:
    """A bundle directory of random embeddings with its retrieval index (cached under ``root``)."""
    from bridgerec.retrieval.bundle import write_indexes
    from bridgerec.retrieval.config import RetrievalConfig

    d = os.path.join(root, f"bundle-{n_items}")
    if os.path.exists(os.path.join(d, "serving.json")):
        return d
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(n_items)
    users = rng.standard_normal((USERS, DIM), dtype=np.float32)
    items = rng.standard_normal((n_items, DIM), dtype=np.float32)
    np.save(os.path.join(d, "user_embeddings.npy"), users)
    np.save(os.path.join(d, "item_embeddings.npy"), items)
    pd.DataFrame({"uid": np.arange(USERS), "user_id": [f"u{i}" for i in range(USERS)]}).to_parquet(os.path.join(d, "user_ids.parquet"))
    pd.DataFrame({"iid": np.arange(n_items), "item_id": [f"i{i}" for i in range(n_items)],
                  "title": [f"Item {i}" for i in range(n_items)]}).to_parquet(os.path.join(d, "item_ids.parquet"))
    seen = np.sort(rng.integers(0, n_items, size=(USERS, SEEN)), axis=1)
    np.savez(os.path.join(d, "seen.npz"), indptr=np.arange(0, USERS * SEEN + 1, SEEN), indices=seen.ravel())
    t0 = time.time()
    write_indexes(d, items, [f"Item {i}" for i in range(n_items)], RetrievalConfig())
    print(f"[bench] bundle of {n_items:,} items built in {time.time() - t0:.0f} s", flush=True)
    return d


# ---------------------------------------------------------------------------------- load
async def _load(url: str, concurrency: int, n: int, seed: int) -> dict:
    import httpx

    rng = np.random.default_rng(seed)
    users = [f"u{u}" for u in rng.integers(0, USERS, n + 20)]
    lat: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        for u in users[:20]:  # warm-up: connections, first-call paths
            await c.post("/v1/recommend", json={"user_id": u, "k": 10})
        it = iter(users[20:])

        async def worker():
            nonlocal errors
            for u in it:
                t0 = time.perf_counter()
                r = await c.post("/v1/recommend", json={"user_id": u, "k": 10})
                lat.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t_start
    a = np.asarray(lat) * 1e3
    return {"rps": len(a) / wall, "p50": np.percentile(a, 50), "p95": np.percentile(a, 95), "p99": np.percentile(a, 99),
            "errors": errors, "n": len(a)}


def floor(url: str, label: dict, n: int = 200) -> dict:
    """Sequential ``GET /healthz`` (no search, no handle call): what the HTTP path alone costs."""
    import httpx

    times = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(n + 20):
            t0 = time.perf_counter()
            r = c.get("/healthz")
            if i >= 20:
                times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    a = np.asarray(times) * 1e3
    row = {**label, "server": label["server"] + ", GET /healthz only", "concurrency": 1, "rps": 1e3 / a.mean(),
           "p50": np.percentile(a, 50), "p95": np.percentile(a, 95), "p99": np.percentile(a, 99), "errors": 0, "n": len(a)}
    print(f"[bench] {row['server']}: p50 {row['p50']:.1f} ms", flush=True)
    return row


def sweep(url: str, levels: list[int], n: int, label: dict) -> list[dict]:
    rows = [floor(url, label)] if label["server"].startswith("plain") or "no batching" in label["server"] else []
    for c in levels:
        r = asyncio.run(_load(url, c, n if c > 1 else max(50, n // 4), seed=c))
        rows.append({**label, "concurrency": c, **r})
        print(f"[bench] {label} c={c}: {r['rps']:.0f} req/s p50 {r['p50']:.1f} ms errors {r['errors']}", flush=True)
    return rows


# ---------------------------------------------------------------------------- the servers
PLAIN_APP = '''
import sys
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from bridgerec.serving.bundle import ModelVersion, load_catalog
from bridgerec.serving.search import DomainSearcher

root = sys.argv[1]
catalog = load_catalog(root, ModelVersion(uri=root))
searcher = DomainSearcher(root)
app = FastAPI()

class Req(BaseModel):
    user_id: str
    k: int = 10

@app.get("/healthz")
def healthz():
    return {"status": "ok"}

@app.post("/v1/recommend")
def recommend(body: Req):
    uid = catalog.uid(body.user_id)
    if uid is None:
        raise HTTPException(404, "unknown user")
    ids, scores = searcher.search([(uid, [], body.k, catalog.seen(uid).tolist())])[0]
    return {"items": [{"item_id": str(catalog.item_ids[i]), "title": str(catalog.titles[i]), "score": s}
                      for i, s in zip(ids, scores)]}

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''


def run_plain(bundle: str, levels: list[int], n: int, n_items: int) -> list[dict]:
    from bridgerec.workflows.serve import free_port_from

    port = free_port_from("127.0.0.1", 0)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(PLAIN_APP)
    proc = subprocess.Popen([sys.executable, fh.name, bundle, str(port)])
    try:
        _wait_ready(f"http://127.0.0.1:{port}/docs", proc)
        return sweep(f"http://127.0.0.1:{port}", levels, n, {"items": n_items, "server": "plain FastAPI (1 process)"})
    finally:
        proc.terminate()
        proc.wait(30)
        os.unlink(fh.name)


def _wait_ready(url: str, proc=None, timeout: float = 300) -> None:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def run_serve(bundle: str, levels: list[int], n: int, n_items: int, batching: bool, tag: str = "") -> list[dict]:
    from ray import serve

    from bridgerec.serving.app import DeploymentOptions, RecommenderArgs
    from bridgerec.workflows.serve import free_port_from, start_app

    one = DeploymentOptions(num_replicas=1, max_ongoing_requests=128, max_queued_requests=1024, num_cpus=0.5)
    args = RecommenderArgs(model=bundle, grounding=False, batching=batching, retriever=one, ingress=one)
    url = start_app(args, port=free_port_from("127.0.0.1", 8000), name="bench", log=lambda m: None)
    try:
        label = {"items": n_items, "server": f"Ray Serve{tag}, " + ("@serve.batch" if batching else "no batching")}
        return sweep(url, levels, n, label)
    finally:
        serve.delete("bench")
        serve.shutdown()


def in_process(bundle: str, n_items: int, n: int = 200) -> dict:
    from bridgerec.serving.bundle import ModelVersion, load_catalog
    from bridgerec.serving.search import DomainSearcher

    catalog = load_catalog(bundle, ModelVersion(uri=bundle))
    searcher = DomainSearcher(bundle)
    rng = np.random.default_rng(0)
    times = []
    for u in rng.integers(0, USERS, n):
        t0 = time.perf_counter()
        searcher.search([(int(u), [], 10, catalog.seen(int(u)).tolist())])
        times.append(time.perf_counter() - t0)
    a = np.asarray(times[10:]) * 1e3
    return {"items": n_items, "server": "in-process DomainSearcher.search", "concurrency": 1, "rps": 1e3 / a.mean(),
            "p50": np.percentile(a, 50), "p95": np.percentile(a, 95), "p99": np.percentile(a, 99), "errors": 0, "n": len(a)}


# --------------------------------------------------------------------------------- report
def report(rows: list[dict], args) -> str:
    lines = ["# Serving load: Ray Serve vs plain FastAPI, same pipeline", "",
             f"`python jobs/bench/serve_load.py --items {args.items} --concurrency {args.concurrency} --requests {args.requests}`"
             f" on {os.cpu_count()} cores (the load generator shares them), load average before {args.load0:.2f}, "
             f"after {os.getloadavg()[0]:.2f}. POST /v1/recommend, k=10, random known users, {USERS:,} users, dim {DIM}; "
             "exact index at the small catalog, HNSW at 1M. Latency in ms.", "",
             "| items | server | concurrency | req/s | p50 | p95 | p99 | errors |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['items']:,} | {r['server']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50']:.1f} | "
                     f"{r['p95']:.1f} | {r['p99']:.1f} | {r['errors']} |")
    lines += ["", "Ratios (same run):"]
    for n in sorted({r["items"] for r in rows}):
        def get(server_prefix, c):
            m = [r for r in rows if r["items"] == n and r["server"].startswith(server_prefix) and r["concurrency"] == c
                 and not r["server"].endswith("GET /healthz only")]
            return m[0] if m else None
        plain, batched, unbatched = get("plain FastAPI (1 process)", 1), get("Ray Serve, @serve.batch", 1), get("Ray Serve, no batching", 1)
        if plain and batched:
            lines.append(f"- {n:,} items: Serve p50 / plain p50 at concurrency 1 = {batched['p50'] / plain['p50']:.2f}x "
                         f"(goal <= 2x)")
        hz = [r for r in rows if r["items"] == n and r["server"].endswith("GET /healthz only")]
        if len(hz) >= 2:
            lines.append(f"- {n:,} items: GET /healthz p50, Serve / plain = {hz[1]['p50'] / hz[0]['p50']:.2f}x (the HTTP "
                         "path alone: proxy -> ingress replica, before any search or handle call)")
        b32, u32 = get("Ray Serve, @serve.batch", 32), get("Ray Serve, no batching", 32)
        if b32 and u32:
            lines.append(f"- {n:,} items: @serve.batch / no batching throughput at concurrency 32 = {b32['rps'] / u32['rps']:.2f}x "
                         "(goal >= 2x on the 1M catalog)")
    lines.append(f"- errors in all rows: {sum(r['errors'] for r in rows)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", default="1361,1000000", help="catalog sizes (1361 = the synthetic small catalog)")
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--requests", type=int, default=600, help="requests per concurrency level (a quarter at 1)")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bridgerec-serve-bench"), help="bundle cache")
    p.add_argument("--throughput-optimized", action="store_true", help="also Serve with RAY_SERVE_THROUGHPUT_OPTIMIZED=1")
    p.add_argument("--only-serve-json", default=None, help=argparse.SUPPRESS)  # the child of --throughput-optimized
    p.add_argument("--out", default="bench_results/serve_load.md")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    from bridgerec.runtime import init_ray

    if args.only_serve_json:
        init_ray(num_cpus=8)
        rows = []
        for n in [int(x) for x in args.items.split(",")]:
            rows += run_serve(make_bundle(n, args.cache), levels, args.requests, n, True, " (throughput-optimized)")
        with open(args.only_serve_json, "w") as fh:
            json.dump(rows, fh)
        return
    args.load0 = os.getloadavg()[0]
    init_ray(num_cpus=8)
    rows: list[dict] = []
    for n in [int(x) for x in args.items.split(",")]:
        bundle = make_bundle(n, args.cache)
        rows.append(in_process(bundle, n))
        rows += run_plain(bundle, levels, args.requests, n)
        for batching in (True, False):
            rows += run_serve(bundle, levels, args.requests, n, batching)
    if args.throughput_optimized:
        out = os.path.join(args.cache, "tp.json")
        env = {**os.environ, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
        cmd = [sys.executable, __file__, "--items", args.items, "--concurrency", args.concurrency,
               "--requests", str(args.requests), "--cache", args.cache, "--only-serve-json", out]
        import ray

        ray.shutdown()
        if subprocess.run(cmd, env=env).returncode == 0:
            rows += json.load(open(out))
        else:
            print("[bench] RAY_SERVE_THROUGHPUT_OPTIMIZED=1 run failed; its rows are missing", flush=True)
    write_report(report(rows, args), args.out)


if __name__ == "__main__":
    main()
