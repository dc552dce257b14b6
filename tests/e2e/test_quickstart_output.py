"""The quickstart as a newcomer runs it: a fresh process, started from a directory that is not
the repository, stdout not a terminal. Checks the line budget and that each epoch is reported
once, by the driver, with Ray's and MLflow's internals kept in the log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

BRIDGEREC = os.path.join(os.path.dirname(sys.executable), "bridgerec")
LINE_BUDGET = 30
NOISE = ("Starting execution", "Execution plan", "(RayTrainWorker", "(TrainController", "(SplitCoordinator",
         "PlacementGroupCleaner", "Downloading artifacts", "RayDeprecationWarning", "PreemptionWatcher",
         "Traceback", "mlflow.store.db")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("newcomer")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "BRIDGEREC_VERBOSE")}
    cmd = [BRIDGEREC, "quickstart", "data.name=synthetic-tiny", "data.source.synthetic.preset=tiny",
           "data.preprocess.kcore_user=3", "data.preprocess.kcore_item=3", "model.dim=16", "train.epochs=3",
           "train.batch_size=128", "train.patience=0"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return cwd, proc


@pytest.mark.slow
def test_quickstart_prints_a_short_report(quickstart):
    cwd, proc = quickstart
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    lines = text.splitlines()
    assert len(lines) <= LINE_BUDGET, f"{len(lines)} lines:\n{text}"
    for noise in NOISE:
        assert noise not in text, noise
    for k in (1, 2, 3):
        assert len([ln for ln in lines if ln.startswith(f"[train] epoch {k}/3 ")]) == 1, text
    assert "popularity" in text and re.search(r"^mf\s+0\.\d{4}", text, re.M), text
    assert "MLflow run: " in text and "open the MLflow UI: mlflow ui" in text


@pytest.mark.slow
def test_quickstart_writes_the_full_log_under_work_dir(quickstart):
    cwd, proc = quickstart
    printed = re.search(r"full log: (\S+\.log)", proc.stdout)
    assert printed, proc.stdout
    path = printed.group(1)
    assert path.startswith(str(cwd / "bridgerec_work" / "logs")) and os.path.exists(path)
    with open(path) as fh:
        log = fh.read()
    assert "Starting execution of Dataset" in log  # Ray Data's lines live here
    assert log.count("[train] epoch 3/3 ") == 1 and "recall@20" in log
