"""One trained run and one Serve app shared by the serving tests.

``served`` trains MF on the tiny synthetic world (1 Ray Train worker, 2 epochs) with tracking on a
real ``mlflow server``, registers it as ``serve-test@champion`` (with its faiss indexes in the
bundle) and deploys the recommender app on the session's Ray on a free port, with a bearer token,
the two fallback strategies of ``support_strategies``, the ``bdlm`` strategy (added by path, as an
app serving a BDLM run adds it) and an autoscaled Retriever (1..2 replicas).
Serve is shut down when the serving tests end, so the tests after them get the CPUs back.
"""

from __future__ import annotations

import os
import secrets

import httpx
import pytest
from support_servers import free_port

NAME = "serve-test"
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def retriever_autoscaling() -> dict:
    """Scale up fast under load and back down soon after it stops (the autoscaling test)."""
    return {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 1,
            "downscale_delay_s": 4, "metrics_interval_s": 0.5, "look_back_period_s": 2}


@pytest.fixture(scope="package")
def trained(ray_session, tiny_config, mlflow_server):
    from bridgerec.workflows import train_and_log

    cfg = tiny_config.model_copy(deep=True)
    cfg.model.name, cfg.model.dim = "mf", 16
    cfg.train.epochs, cfg.train.num_workers = 2, 1
    cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.registered_model = mlflow_server, "serving", NAME
    cfg.tracking.alias = "champion"  # registration points the alias only when asked (promote moves it otherwise)
    summary = train_and_log(cfg, log=lambda m: None)
    return {"cfg": cfg, "summary": summary, "uri": mlflow_server, "data": summary.dataset}


@pytest.fixture(scope="package")
def served(trained):
    from ray import serve

    from bridgerec.serving.app import DeploymentOptions, RecommenderArgs, build_app

    token = secrets.token_hex(16)
    port = free_port()
    args = RecommenderArgs(
        model=f"models:/{NAME}@champion", tracking_uri=trained["uri"], auth_token=token,
        strategies={"slow-llm": "support_strategies:SLOW", "broken-llm": "support_strategies:BROKEN",
                    "bdlm": "bridgerec.serving.bdlm:BDLM"},
        retriever=DeploymentOptions(autoscaling_config=retriever_autoscaling(), max_ongoing_requests=8,
                                    max_queued_requests=64, num_cpus=0.25),
        grounder=DeploymentOptions(num_replicas=1, num_cpus=0.25),
        ingress=DeploymentOptions(num_replicas=1, max_ongoing_requests=64, max_queued_requests=128, num_cpus=0.25,
                                  runtime_env={"env_vars": {"PYTHONPATH": TESTS}}),  # support_strategies
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name="recommender", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    try:
        yield {**trained, "url": url, "token": token, "client": client, "args": args, "port": port}
    finally:
        client.close()
        serve.shutdown()
