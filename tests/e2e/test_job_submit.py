"""End to end against real servers: `ray job submit` of jobs/train.py to a separate Ray head
(token auth on) logging over HTTP to an `mlflow server`; and the registered pyfunc recommender
served from that server's registry."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid

import mlflow
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
EXCLUDES = [".venv", ".git", "mlruns", "bridgerec_work", "work_dir", "**/__pycache__", "*.egg-info", ".pytest_cache", "build", "dist"]


def _ray(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _job_client(ray_head):
    from ray.job_submission import JobSubmissionClient

    # explicit header: this process's own local Ray (ray_session) uses a different token
    return JobSubmissionClient(ray_head["address"], headers={"Authorization": f"Bearer {ray_head['token']}"})


def test_job_api_requires_the_token(ray_head):
    env = {k: v for k, v in ray_head["env"].items() if k not in ("RAY_AUTH_TOKEN",)}
    env["RAY_AUTH_TOKEN"] = "0" * 64  # wrong token
    proc = _ray(["job", "list", "--address", ray_head["address"]], env)
    assert proc.returncode != 0
    assert "Authentication" in proc.stdout + proc.stderr or "403" in proc.stdout + proc.stderr
    ok = _ray(["job", "list", "--address", ray_head["address"]], ray_head["env"])
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_submitted_train_job_logs_to_mlflow_server(ray_head, mlflow_server, tmp_path):
    sid = f"bridgerec-e2e-{uuid.uuid4().hex[:8]}"
    runtime_env = {
        "working_dir": REPO,
        "excludes": EXCLUDES,
        "env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_DEDUP_LOGS": "1"},
    }
    overrides = [
        "data.name=synthetic-tiny",
        "data.source.synthetic.preset=tiny",
        "data.preprocess.kcore_user=3",
        "data.preprocess.kcore_item=3",
        "train.epochs=2",
        "train.batch_size=128",
        "model.dim=16",
        f"work_dir={tmp_path}/work",
        f"tracking.uri={mlflow_server}",
        "run_name=submitted",
        "tracking.registered_model=submitted-mf",
    ]
    submit = _ray(
        ["job", "submit", "--address", ray_head["address"], "--submission-id", sid, "--no-wait",
         "--runtime-env-json", json.dumps(runtime_env), "--", "python", "jobs/train.py", *overrides],
        ray_head["env"],
    )
    assert submit.returncode == 0, submit.stdout[-2000:] + submit.stderr[-2000:]

    from ray.job_submission import JobStatus

    client = _job_client(ray_head)
    deadline = time.time() + 480
    status = client.get_job_status(sid)
    while not status.is_terminal() and time.time() < deadline:
        time.sleep(3)
        status = client.get_job_status(sid)
    logs = client.get_job_logs(sid)
    if not status.is_terminal():
        client.stop_job(sid)
    assert status == JobStatus.SUCCEEDED, f"job {sid} ended {status}:\n{logs[-6000:]}"
    # `bridgerec train` ends with the results table; each epoch is reported once, by the driver
    assert "bridgerec train: synthetic-tiny" in logs and "\npopularity " in logs and "MLflow run: " in logs, logs[-3000:]
    assert logs.count("[train] epoch 2/2 ") == 1, logs[-3000:]
    for noise in ("Starting execution", "(RayTrainWorker", "(TrainController", "(SplitCoordinator",
                  "PlacementGroupCleaner", "Downloading artifacts", "RayDeprecationWarning", "Traceback"):
        assert noise not in logs, noise  # the libraries' internals stay in the run's log file

    # the CLI agrees
    cli = _ray(["job", "status", sid, "--address", ray_head["address"]], ray_head["env"])
    assert cli.returncode == 0 and "succeeded" in (cli.stdout + cli.stderr).lower(), cli.stdout[-2000:]

    mc = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = mc.get_experiment_by_name("bridgerec")
    assert exp is not None, "experiment 'bridgerec' not on the server"
    runs = mc.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'submitted'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    for key in ("test_recall_at_20", "test_ndcg_at_10", "baseline_popularity_test_recall_at_20", "train_loss"):
        assert key in run.data.metrics and math.isfinite(run.data.metrics[key]), key
    assert run.data.params["train.epochs"] == "2"
    # artifacts went through the server's proxy, not a shared path
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    arts = {a.path for a in mc.list_artifacts(run.info.run_id, "model")}
    assert {"model/weights.pt", "model/item_embeddings.npy", "model/user_ids.parquet"} <= arts

    # the job registered its recommender (no alias: `bridgerec promote` moves @champion); it loads and recommends
    versions = mc.search_model_versions("name = 'submitted-mf'")
    assert [v.run_id for v in versions] == [run.info.run_id] and not versions[0].aliases
    mlflow.set_tracking_uri(mlflow_server)
    users = pd.read_parquet(os.path.join(str(tmp_path), "work", "datasets", "synthetic-tiny", "users"))
    out = mlflow.pyfunc.load_model(f"models:/submitted-mf/{versions[0].version}").predict(pd.DataFrame({"user_id": [users["user_id"].iloc[0]]}))
    assert len(out) == 10 and out["rank"].tolist() == list(range(1, 11))


def test_pyfunc_registered_over_http(mlflow_server, tiny_dataset, tiny_config, tmp_path):
    """log_pyfunc_model against the HTTP server; load `models:/<name>@champion` in a fresh process."""
    import torch

    from bridgerec.config import ModelConfig
    from bridgerec.data.dataset import DatasetDir
    from bridgerec.models import build_model
    from bridgerec.tracking import log_pyfunc_model

    data = DatasetDir(tiny_dataset)
    torch.manual_seed(1)
    model = build_model(ModelConfig(name="mf", dim=8), data.n_users, data.n_items)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        mlflow.set_experiment("pyfunc-http")
        with mlflow.start_run(run_name="pyfunc-http"):
            info = log_pyfunc_model(model, data, tiny_config, registered_name="bridgerec-http-mf", k=3)
        users = data.users()["user_id"].astype(str).head(3).tolist()
        local = mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"user_id": users}))
    finally:
        mlflow.set_tracking_uri(previous)
    code = (
        "import json, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/bridgerec-http-mf@champion')\n"
        f"out = m.predict(pd.DataFrame({{'user_id': {users!r}}}))\n"
        "print(json.dumps(out[['user_id', 'item_id']].values.tolist()))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = mlflow_server
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == local[["user_id", "item_id"]].values.tolist()
    assert len(local) == 9
