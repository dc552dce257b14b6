"""`bridgerec evaluate`: score a trained run's model on a split of its dataset."""

from __future__ import annotations

import os
import tempfile

import torch

from bridgerec.config import Config, load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult, evaluate_split
from bridgerec.training.driver import build_method_for_dataset

__all__ = ["evaluate_run"]


def evaluate_run(run_id: str, split: str = "test", tracking_uri: str | None = None, dataset_dir: str | None = None) -> tuple[Config, EvalResult]:
    """Download ``model/`` of an MLflow run and evaluate it on ``split`` of its dataset."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    d = tempfile.mkdtemp(prefix="bridgerec-eval-")
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", dst_path=d)
    cfg = load_config(os.path.join(local, "config.yaml"))
    run = mlflow.get_run(run_id)
    data = DatasetDir(dataset_dir or run.data.tags.get("dataset.path") or cfg.dataset_dir())
    if run.data.tags.get("dataset.content_hash") not in (None, data.content_hash):
        raise ValueError(f"dataset at {data.path} has hash {data.content_hash[:12]}, the run was trained on "
                         f"{run.data.tags['dataset.content_hash'][:12]}")
    model = build_method_for_dataset(cfg, data)
    model.load_state_dict(torch.load(os.path.join(local, "weights.pt"), map_location="cpu"))
    model.eval()
    return cfg, evaluate_split(model.full_scores, data, cfg.eval, split)
