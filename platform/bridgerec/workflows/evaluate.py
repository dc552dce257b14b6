"""`bridgerec evaluate`: score a trained run's model on a split of its dataset, conditioned on
the history known at that split's time."""

from __future__ import annotations

import functools
import os
import tempfile

import torch
from torch import nn

from bridgerec.config import Config, EvalConfig, load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult, evaluate_split
from bridgerec.models import TEST_HISTORY, conditioned_on, histories_for
from bridgerec.training.driver import build_method_for_dataset

__all__ = ["evaluate_model", "evaluate_run"]


def evaluate_model(model: nn.Module, data: DatasetDir, cfg: EvalConfig, split: str = "test") -> EvalResult:
    """:func:`~bridgerec.evaluation.evaluate_split` of ``model.full_scores`` (a method or a
    domain model), with sequence models conditioned on what is known at ``split`` time: the
    training items for ``valid``; for ``test`` also the validation events up to the user's
    first test event (under leave-last-out the history then ends with the validation item).
    The model's own histories come back afterwards."""
    if split == "test":
        known = functools.partial(histories_for, data, TEST_HISTORY, before="test")
    else:
        known = functools.partial(histories_for, data, ("train",))
    with conditioned_on(model, known):  # read from the dataset only when a model needs them
        return evaluate_split(model.full_scores, data, cfg, split)


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
    return cfg, evaluate_model(model, data, cfg.eval, split)
