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
from bridgerec.evaluation import EvalResult, evaluate_split, popularity_scores
from bridgerec.models import conditioned_on, known_at
from bridgerec.training.driver import build_method_for_dataset

__all__ = ["evaluate_model", "evaluate_run", "evaluate_and_report", "load_run", "popularity_baseline"]


def evaluate_model(model: nn.Module, data: DatasetDir, cfg: EvalConfig, split: str = "test") -> EvalResult:
    """:func:`~bridgerec.evaluation.evaluate_split` of ``model.full_scores`` (a method or a
    domain model), with sequence models conditioned on what is known at ``split`` time: the
    training items for ``valid``; for ``test`` also the validation events up to the user's
    first test event (under leave-last-out the history then ends with the validation item).
    The model's own histories come back afterwards."""
    with conditioned_on(model, functools.partial(known_at, data, split)):  # read from the dataset only when a model needs them
        return evaluate_split(model.full_scores, data, cfg, split)


def popularity_baseline(data: DatasetDir, cfg: EvalConfig, split: str = "test") -> EvalResult:
    """Training-split popularity, evaluated like a model on ``split`` (the results tables' baseline)."""
    pop = popularity_scores(data.pairs("train"), data.n_items)
    return evaluate_split(lambda u: pop.expand(len(u), -1), data, cfg, split)


def evaluate_run(run_id: str, split: str = "test", tracking_uri: str | None = None, dataset_dir: str | None = None) -> tuple[Config, EvalResult]:
    """Download ``model/`` of an MLflow run and evaluate it on ``split`` of its dataset."""
    cfg, data, model = load_run(run_id, tracking_uri, dataset_dir)
    return cfg, evaluate_model(model, data, cfg.eval, split)


def load_run(run_id: str, tracking_uri: str | None = None, dataset_dir: str | None = None) -> tuple[Config, DatasetDir, nn.Module]:
    """The config, dataset and trained model (eval mode) of an MLflow run logged by ``bridgerec train``."""
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
    model.load_state_dict(torch.load(os.path.join(local, "weights.pt"), map_location="cpu", weights_only=True))
    return cfg, data, model.eval()


def evaluate_and_report(run_id: str, split: str = "test", tracking_uri: str | None = None,
                        dataset_dir: str | None = None) -> EvalResult:
    """``bridgerec evaluate``: the run's model against popularity on ``split``, as a results table
    with the run id and how to open the MLflow UI."""
    from bridgerec import console
    from bridgerec.tracking import ui_command
    from bridgerec.workflows.report import results_block, run_footer

    console.say(f"[evaluate] run {run_id}: downloading its model")
    cfg, data, model = load_run(run_id, tracking_uri, dataset_dir)
    console.say(f"[evaluate] {split} split of {data.path}, full ranking")
    res = evaluate_model(model, data, cfg.eval, split)
    baseline = popularity_baseline(data, cfg.eval, split)
    import mlflow

    title = f"bridgerec evaluate: {data.manifest['name']} {split} split ({cfg.data.split.describe()})"
    footer = run_footer(run_id, cfg.tracking.experiment, ui_command(tracking_uri or mlflow.get_tracking_uri()),
                        None, console.log_path())
    console.result(results_block(title, baseline, cfg.model.name, res, cfg.eval.ks, footer))
    return res
