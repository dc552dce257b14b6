"""`bridgerec serve`, `bridgerec index build` and `bridgerec recommend`: the serving half's commands.

- :func:`start_app` deploys the recommender app (:mod:`bridgerec.serving.app`) on the local Ray
  (or ``RAY_ADDRESS``) and returns its URL; deploying again under the same app name is Ray Serve's
  rolling update (new replicas start before the old ones stop), which is how ``--reload`` follows
  a moved alias.
- :func:`build_run_index` adds the serving indexes to a run logged before they existed (under the
  run's ``serving/`` artifacts, where the bundle loader looks).
- :func:`batch_recommend` writes top-k for every user (or a list) with Ray Data ``map_batches``
  over the same bundle, exclusions and search code as the app.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Optional, Sequence

from bridgerec import console
from bridgerec.console import say

__all__ = ["start_app", "curl_example", "build_run_index", "batch_recommend", "serve_and_query", "free_port_from", "APP_NAME"]

APP_NAME = "recommender"


def start_app(args: Any, host: str = "127.0.0.1", port: int = 8000, name: str = APP_NAME, log=say) -> str:
    """Deploy (or update) the app from ``args`` (RecommenderArgs or dict); returns its base URL."""
    from ray import serve

    from bridgerec.runtime import init_ray
    from bridgerec.serving.app import RecommenderArgs, build_app

    args = args if isinstance(args, RecommenderArgs) else RecommenderArgs(**args)
    init_ray()
    serve.start(http_options={"host": host, "port": port})
    console.quiet_libraries()  # Serve configures its loggers on start
    t0 = time.time()
    parts = ["Retriever", "Grounder" if args.grounding else "", f"LLM ({args.llm.engine})" if args.llm else "", "Recommender"]
    log(f"[serve] deploying {args.model} as app {name!r} ({', '.join(p for p in parts if p)})")
    serve.run(build_app(args), name=name, route_prefix="/", blocking=False)
    console.quiet_libraries()
    url = f"http://{host}:{port}"
    log(f"[serve] ready at {url} in {time.time() - t0:.1f} s (OpenAPI at {url}/docs)")
    return url


def free_port_from(host: str, port: int) -> int:
    """``port`` when nothing listens on it, else a free one (the quickstart must not fail on a busy 8000)."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind((host, port))
            return sock.getsockname()[1]  # port 0 asks for any free one
        except OSError:
            sock.bind((host, 0))
            return sock.getsockname()[1]


def serve_and_query(model_uri: str, tracking_uri: str, user_id: str, port: int = 8000, k: int = 5,
                    keep: bool = False, log=say) -> str:
    """The quickstart's last step: serve ``model_uri``, send one real ``POST /v1/recommend`` for
    ``user_id`` and return the printable block (response table and the curl to repeat it). Unless
    ``keep``, the app is shut down before returning."""
    import httpx
    from ray import serve

    from bridgerec.serving.app import DeploymentOptions, RecommenderArgs

    host = "127.0.0.1"
    chosen = free_port_from(host, port)
    if chosen != port:
        log(f"[serve] port {port} is busy; using {chosen}")
    small = DeploymentOptions(num_replicas=1, num_cpus=0.25)
    args = RecommenderArgs(model=model_uri, tracking_uri=tracking_uri, retriever=small, grounder=small, ingress=small)
    url = start_app(args, host=host, port=chosen, log=log)
    body = {"user_id": user_id, "k": k}
    try:
        r = httpx.post(f"{url}/v1/recommend", json=body, timeout=60)
        r.raise_for_status()
        answer = r.json()
    finally:
        if not keep:
            serve.shutdown()
    rows = [f"{'rank':>4}  {'item_id':<14} {'score':>8}  title"]
    rows += [f"{i['rank']:>4}  {i['item_id']:<14} {i['score']:>8.4f}  {i['title']}" for i in answer["items"]]
    m = answer["model"]
    version = f"{m['name']} v{m['version']}" if m.get("name") else m["uri"]
    return "\n".join([f"served: POST {url}/v1/recommend {json.dumps(body)} -> {len(answer['items'])} items "
                      f"(strategy {answer['strategy']}, model {version})", *rows,
                      f"repeat it: {curl_example(url, user_id, k)}"])


def curl_example(url: str, user_id: str, k: int = 5, token: Optional[str] = None) -> str:
    auth = ' -H "Authorization: Bearer $BRIDGEREC_SERVE_TOKEN"' if token else ""
    body = json.dumps({"user_id": user_id, "k": k})
    return f"curl -s -X POST {url}/v1/recommend -H 'Content-Type: application/json'{auth} -d '{body}'"


def build_run_index(run_id: str, tracking_uri: Optional[str] = None, overrides: Sequence[str] = (), log=say) -> dict[str, str]:
    """Build the serving indexes of run ``run_id``'s recommender and log them under ``serving/``."""
    import mlflow
    import numpy as np
    import pandas as pd

    from bridgerec.config import Config, load_config
    from bridgerec.retrieval.bundle import write_indexes
    from bridgerec.serving.bundle import _artifacts_dir

    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    model_uri = run.data.tags.get("pyfunc_model_uri") or f"runs:/{run_id}/recommender"
    d = tempfile.mkdtemp(prefix="bridgerec-index-")
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=d, tracking_uri=tracking_uri)
    root = _artifacts_dir(local)
    cfg_path = os.path.join(root, "config.yaml")
    cfg = load_config(cfg_path if os.path.exists(cfg_path) else None, list(overrides))
    assert isinstance(cfg, Config)
    items = pd.read_parquet(os.path.join(root, "item_ids.parquet")).sort_values("iid")
    emb = np.load(os.path.join(root, "item_embeddings.npy"))
    encode = settings = None
    if cfg.retrieval.grounding_index:
        from bridgerec.llm.encoder import TextEncoder

        encode, settings = TextEncoder(cfg.encoder).encode, cfg.encoder.model_dump(mode="json")
    out = os.path.join(d, "serving")
    t0 = time.time()
    files = write_indexes(out, emb, items["title"].astype(str).tolist(), cfg.retrieval, encode, settings)
    client.log_artifacts(run_id, out, "serving")
    log(f"[index] {len(items)} items: {', '.join(sorted(files))} logged to run {run_id} under serving/ "
        f"in {time.time() - t0:.1f} s")
    return files


class _Scorer:
    """A Ray Data actor: the domain strategy's search over one bundle, for batches of users."""

    def __init__(self, root: str, k: int, exclude_seen: bool, retrieval: Optional[dict] = None):
        from bridgerec.serving.bundle import ModelVersion, load_catalog
        from bridgerec.serving.search import DomainSearcher

        self.catalog = load_catalog(root, ModelVersion(uri=root))
        self.searcher = DomainSearcher(root, retrieval)
        self.k, self.exclude_seen = k, exclude_seen

    def __call__(self, batch):
        import pandas as pd

        uids = batch["uid"].astype("int64").tolist()
        requests = [(u, [], self.k, self.catalog.seen(u).tolist() if self.exclude_seen else []) for u in uids]
        rows = []
        for user_id, (ids, scores) in zip(batch["user_id"].astype(str), self.searcher.search(requests)):
            rows += [(user_id, r, self.catalog.item_ids[i], self.catalog.titles[i], s)
                     for r, (i, s) in enumerate(zip(ids, scores), 1)]
        return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "title", "score"])


def batch_recommend(model_uri: str, out: str, tracking_uri: Optional[str] = None, k: int = 10,
                    users: Optional[Sequence[str]] = None, exclude_seen: bool = True, batch_size: int = 1024,
                    concurrency: int = 1, log=say):
    """Top-``k`` per user (every user of the bundle, or ``users``) written as Parquet under ``out``;
    returns the result as a DataFrame when it is small (under 1M rows), else None."""
    import pandas as pd
    import ray
    from ray.data import ActorPoolStrategy

    from bridgerec.runtime import init_ray
    from bridgerec.serving.bundle import bundle_dir, load_catalog

    root, version = bundle_dir(model_uri, tracking_uri)
    catalog = load_catalog(root, version)
    if users is None:
        table = pd.DataFrame({"user_id": catalog.user_ids, "uid": range(catalog.n_users)})
    else:
        uids = [catalog.uid(u) for u in users]
        unknown = [u for u, v in zip(users, uids) if v is None]
        if unknown:
            from bridgerec.config import ConfigError

            raise ConfigError(f"users: unknown user ids: {unknown[:10]}"
                              + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "") + f" (the model knows {catalog.n_users})")
        table = pd.DataFrame({"user_id": list(users), "uid": uids})
    init_ray()
    t0 = time.time()
    ds = ray.data.from_pandas(table).repartition(max(1, len(table) // batch_size))
    recs = ds.map_batches(_Scorer, fn_constructor_args=(root, k, exclude_seen), batch_size=batch_size,
                          batch_format="pandas", compute=ActorPoolStrategy(size=concurrency))
    if os.path.exists(out):
        import shutil

        shutil.rmtree(out) if os.path.isdir(out) else os.remove(out)
    recs.write_parquet(out)
    result = pd.read_parquet(out)
    log(f"[recommend] {len(table)} users x top-{k} = {len(result)} rows from {version.uri} in "
        f"{time.time() - t0:.1f} s -> {out}")
    console.detail(f"[recommend] model {version.as_dict()}")
    return result if len(result) < 1_000_000 else None
