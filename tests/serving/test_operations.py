"""Operating the app: overload answers 503 with Retry-After (no hang), the Retriever autoscales
1 -> 2 -> 1 under real load and survives a killed replica, metrics reach Ray's Prometheus
endpoint, and moving the alias plus a redeploy rolls out the new version without a failed request."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from ray import serve

from bridgerec.serving.app import DeploymentOptions

pytestmark = pytest.mark.slow


def _users(served, n=16) -> list[str]:
    users = served["data"].users()["user_id"].astype(str).tolist()
    return users[:: max(1, len(users) // n)][:n]


async def _burst(url: str, headers: dict, bodies: list[dict], concurrency: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as c:
        return await asyncio.gather(*(c.post("/v1/recommend", json=b) for b in bodies))


def _running(deployment: str) -> int:
    status = serve.status().applications["recommender"].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def test_overload_answers_503_with_retry_after(served):
    """A second app with room for 2 requests at the ingress (1 ongoing + 1 queued) gets 64 at once."""
    from bridgerec.serving.app import build_app

    args = served["args"].model_copy(update={
        "grounding": False, "strategies": {},
        "retriever": DeploymentOptions(num_replicas=1, num_cpus=0.1),
        "ingress": DeploymentOptions(num_replicas=1, max_ongoing_requests=1, max_queued_requests=1, num_cpus=0.1)})
    serve.run(build_app(args), name="tight", route_prefix="/tight")
    try:
        headers = {"Authorization": f"Bearer {served['token']}"}
        bodies = [{"user_id": u, "k": 5} for u in _users(served)] * 4
        t0 = time.time()
        responses = asyncio.run(_burst(served["url"] + "/tight", headers, bodies, 64))
        elapsed = time.time() - t0
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503}, codes
        refused = [r for r in responses if r.status_code == 503]
        assert len(refused) >= 16, codes  # at most ~2 in the app at a time
        assert codes.count(200) >= 2
        assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
        assert elapsed < 30
        # healthy afterwards
        after = httpx.post(served["url"] + "/tight/v1/recommend", json=bodies[0], headers=headers, timeout=30)
        assert after.status_code == 200
    finally:
        serve.delete("tight")


def _drive(served, stop: threading.Event, codes: list, concurrency: int = 24) -> None:
    users = _users(served, 24)

    async def worker(c: httpx.AsyncClient, i: int):
        while not stop.is_set():
            r = await c.post("/v1/recommend", json={"user_id": users[i % len(users)], "k": 10})
            codes.append((time.time(), r.status_code))

    async def main():
        headers = {"Authorization": f"Bearer {served['token']}"}
        async with httpx.AsyncClient(base_url=served["url"], headers=headers, timeout=60) as c:
            await asyncio.gather(*(worker(c, i) for i in range(concurrency)))

    asyncio.run(main())


def _wait(cond, timeout: float, what: str) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return time.time() - t0
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def test_retriever_autoscales_and_survives_a_killed_replica(served):
    import ray

    assert _running("Retriever") == 1
    stop, codes = threading.Event(), []
    load = threading.Thread(target=_drive, args=(served, stop, codes), daemon=True)
    load.start()
    try:
        _wait(lambda: _running("Retriever") == 2, 150, "scaling the Retriever up to 2 replicas")
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith("SERVE_REPLICA::recommender#Retriever#")]
        assert len(names) == 2
        killed_at = time.time()
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        _wait(lambda: _running("Retriever") >= 1 and len([c for t, c in codes if t > killed_at + 5]) > 50, 60,
              "requests after the kill")
        time.sleep(2)
    finally:
        stop.set()
        load.join(60)
    after = [c for t, c in codes if t > killed_at + 5]
    assert after and set(after) == {200}, sorted(set(after))
    before = [c for t, c in codes if t < killed_at]
    assert set(before) == {200}
    _wait(lambda: _running("Retriever") == 1, 90, "scaling the Retriever back down to 1 replica")


def test_metrics_on_prometheus_endpoint(served):
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    def scrape() -> str:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text

    def answered(text: str) -> float:  # summed over every replica's and tag set's series
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("ray_bridgerec_requests") and 'strategy="domain"' in line)

    _wait(lambda: answered(scrape()) > 100, 150, "bridgerec metrics on Ray's Prometheus endpoint")  # the autoscaling load
    assert "ray_bridgerec_latency_s_bucket" in scrape()


def test_alias_move_rolls_out_without_failed_requests(served):
    """Register the run's model again (version 2), move @champion to it, redeploy during a burst."""
    import mlflow

    from bridgerec.serving.app import build_app

    client = mlflow.MlflowClient(served["uri"])
    run = client.get_run(served["summary"].run_id)
    mlflow.set_tracking_uri(served["uri"])
    v2 = mlflow.register_model(run.data.tags["pyfunc_model_uri"], "serve-test")
    assert str(v2.version) == "2"
    client.set_registered_model_alias("serve-test", "champion", "2")
    stop, codes = threading.Event(), []
    load = threading.Thread(target=_drive, args=(served, stop, codes, 4), daemon=True)
    load.start()
    try:
        time.sleep(1)
        serve.run(build_app(served["args"]), name="recommender", route_prefix="/")  # the rolling update
        time.sleep(2)
    finally:
        stop.set()
        load.join(60)
    assert len(codes) > 20 and set(c for _, c in codes) == {200}, sorted(set(c for _, c in codes))
    body = served["client"].post("/v1/recommend", json={"user_id": _users(served, 1)[0], "k": 3}).json()
    assert body["model"]["version"] == "2"
    assert served["client"].get("/readyz").json()["model"]["version"] == "2"
