"""Every registered trainable model trains on 2 Ray Train workers under DDP and DeepSpeed ZeRO
0 and 2 (and 3 for MF); a run whose worker is killed resumes from its checkpoint."""

from __future__ import annotations

import json
import math
import os
import threading
import time

import pytest
import torch

from bridgerec.config import load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.models import build_model_for_dataset
from bridgerec.training import train

CASES = [
    ("mf", "ddp", 0),
    ("lightgcn", "ddp", 0),
    ("mf", "deepspeed", 0),
    ("mf", "deepspeed", 2),
    ("mf", "deepspeed", 3),
    ("lightgcn", "deepspeed", 0),
    ("lightgcn", "deepspeed", 2),
    ("sasrec", "deepspeed", 0),
    ("sasrec", "deepspeed", 2),
]


def _cfg(session_dir, name: str, *extra: str):
    return load_config(None, [
        f"work_dir={session_dir}/work", "data.name=synthetic-tiny", "data.source.synthetic.preset=tiny",
        "data.preprocess.kcore_user=3", "data.preprocess.kcore_item=3", "model.dim=16", "model.max_seq_len=10",
        "train.batch_size=128", "train.lr=0.01", "tracking.enabled=false", "train.patience=0", f"run_name={name}", *extra,
    ])


@pytest.mark.parametrize("model,strategy,stage", CASES, ids=[f"{m}-{s}{z}" for m, s, z in CASES])
def test_trains_with_two_workers(ray_session, tiny_dataset, session_dir, model, strategy, stage):
    cfg = _cfg(session_dir, f"dist-{model}-{strategy}{stage}", f"model.name={model}", f"train.strategy={strategy}",
               f"train.zero_stage={stage}", "train.epochs=1")
    data = DatasetDir(tiny_dataset)
    torch.manual_seed(cfg.train.seed)
    init = build_model_for_dataset(cfg.model, data).state_dict()
    res = train(cfg, data)
    assert math.isfinite(res.best_metrics["train_loss"]) and res.best_metrics["epoch"] == 1
    assert 0.0 <= res.best_metrics["valid_recall_at_20"] <= 1.0
    trained = res.model.domain.state_dict()
    changed = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert changed, "no parameter moved"
    assert os.path.exists(os.path.join(res.checkpoint_dir, "state.pt"))
    if strategy == "deepspeed":  # DeepSpeed's own sharded checkpoint is there too
        assert os.path.isdir(os.path.join(res.checkpoint_dir, "ds"))


def _train_workers() -> list:
    """RayTrainWorker processes of THIS test session's Ray (children of its raylet)."""
    import psutil
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    out = []
    for p in psutil.Process(raylet).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _controller_has_a_checkpoint(run_dir: str) -> bool:
    """True once the Ray Train controller has registered a checkpoint (what a restart resumes from).

    A ``checkpoint_*`` directory on disk is not enough: workers write it before the controller
    polls their report, and a worker killed in between takes the pending report with it. The
    controller's own snapshot file names the latest checkpoint only after it registered it.
    """
    path = os.path.join(run_dir, "checkpoint_manager_snapshot.json")
    try:
        with open(path) as f:
            return json.load(f).get("latest_checkpoint_result") is not None
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return False


def _kill_one_worker_after_a_checkpoint(run_dir: str, done: threading.Event, killed: list) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and not done.is_set():
        if _controller_has_a_checkpoint(run_dir):
            workers = _train_workers()
            if workers:
                workers[-1].kill()
                killed.append(workers[-1].pid)
                return
        time.sleep(0.3)


def test_killed_worker_resumes_from_checkpoint(ray_session, tiny_dataset, session_dir):
    cfg = _cfg(session_dir, "resume-mf", "train.epochs=6", "train.max_failures=2", "train.batch_size=64")
    run_dir = os.path.join(cfg.storage_path(), cfg.resolved_run_name())
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one_worker_after_a_checkpoint, args=(run_dir, done, killed), daemon=True)
    killer.start()
    try:
        res = train(cfg, DatasetDir(tiny_dataset))
    finally:
        done.set()
        killer.join(timeout=5)
    assert killed, "no training worker was found to kill"
    last = res.history[-1]
    assert last["epoch"] == 6
    assert last["attempt_first_epoch"] > 1, "the restarted attempt started over instead of resuming"


def test_same_name_resumes_interrupted_run(ray_session, tiny_dataset, session_dir):
    data = DatasetDir(tiny_dataset)
    first = train(_cfg(session_dir, "same-name", "train.epochs=1"), data)
    assert first.history[-1]["attempt_first_epoch"] == 1
    again = train(_cfg(session_dir, "same-name", "train.epochs=2"), data)
    assert again.history[-1]["epoch"] == 2 and again.history[-1]["attempt_first_epoch"] == 2
