"""Logging a run to MLflow (local SQLite store by default, any tracking server by URI)."""

from __future__ import annotations

import contextlib
import functools
import os
import platform as _platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from bridgerec import __version__
from bridgerec.config import Config
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult

__all__ = ["flatten", "mlflow_run", "log_eval", "log_model_artifacts", "ui_command"]


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested dict/list -> {"a.b.c": "value"} with string values (MLflow params)."""
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix.rstrip(".")] = str(tree)
    return out


def _system_tags() -> dict[str, str]:
    import ray
    import torch

    return {
        "bridgerec.version": __version__,
        "system.python": _platform.python_version(),
        "system.platform": _platform.platform(),
        "system.torch": torch.__version__,
        "system.ray": ray.__version__,
        "system.cuda": str(torch.cuda.is_available()),
        "system.cpus": str(os.cpu_count()),
    }


def _ensure_experiment(uri: str, name: str) -> None:
    """Select experiment ``name``. With a local SQLite store a new experiment keeps its artifacts
    beside the database (``<db dir>/mlartifacts``), not in ``./mlruns`` of whatever directory the
    command ran from; a tracking server decides its own artifact location."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if uri.startswith("sqlite:///"):
        db_dir = Path(uri[len("sqlite:///"):]).resolve().parent
        db_dir.mkdir(parents=True, exist_ok=True)
        if mlflow.get_experiment_by_name(name) is None:
            try:
                mlflow.create_experiment(name, artifact_location=(db_dir / "mlartifacts").as_uri())
            except MlflowException:  # created meanwhile by a concurrent run
                pass
    mlflow.set_experiment(name)


@contextlib.contextmanager
def mlflow_run(cfg: Config, data: DatasetDir, run_name: str | None = None, tags: dict[str, str] | None = None,
               run_id: str | None = None) -> Iterator[tuple[str, str]]:
    """Start an MLflow run with the flattened config as params and the dataset as tags.

    ``tags`` are set at creation (``mlflow.parentRunId`` makes it a child run); ``run_id`` reopens
    an existing run instead (a resumed sweep trial: the same params are logged again).
    Yields ``(run_id, tracking_uri)``; the run ends (FAILED on an exception) when the block exits.
    """
    import mlflow

    uri = cfg.tracking_uri()
    mlflow.set_tracking_uri(uri)
    _ensure_experiment(uri, cfg.tracking.experiment)
    start = dict(run_id=run_id) if run_id else dict(run_name=run_name or cfg.resolved_run_name(), tags=tags)
    with mlflow.start_run(**start) as run:
        params = flatten(cfg.model_dump(mode="json"))
        items = list(params.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i : i + 100]))
        mlflow.set_tags(
            {
                "dataset.name": data.manifest["name"],
                "dataset.content_hash": data.content_hash,
                "dataset.path": data.path,
                "model.name": cfg.model.name,
                **_system_tags(),
            }
        )
        mlflow.log_dict(data.manifest, "dataset/manifest.json")
        mlflow.log_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "config.yaml")
        yield run.info.run_id, uri


def log_eval(result: EvalResult, prefix: str = "test_") -> dict[str, float]:
    """Log every flat metric of ``result`` with ``prefix``; returns what was logged."""
    import mlflow

    metrics = {f"{prefix}{k}": float(v) for k, v in result.flat(include_counts=True).items()}
    mlflow.log_metrics(metrics)
    return metrics


def log_model_artifacts(model, data: DatasetDir, cfg: Config, artifact_path: str = "model") -> None:
    """Weights, the method's serving files (final user/item embeddings), id maps and config
    under ``artifact_path``; ``model`` is a :class:`~bridgerec.methods.Method`.

    The serving embeddings are computed with sequence models conditioned on each user's full
    known history (train, valid and test), as serving sees it; the weights do not depend on it."""
    import mlflow
    import torch

    from bridgerec.models import SERVING_HISTORY, conditioned_on, histories_for

    d = tempfile.mkdtemp(prefix="bridgerec-artifacts-")
    try:
        torch.save(model.state_dict(), os.path.join(d, "weights.pt"))
        with conditioned_on(model, functools.partial(histories_for, data, SERVING_HISTORY)):
            model.export_artifacts(d)  # the method's serving files: final user/item embeddings, ...
        data.users()[["uid", "user_id"]].to_parquet(os.path.join(d, "user_ids.parquet"), index=False)
        data.items()[["iid", "item_id", "title"]].to_parquet(os.path.join(d, "item_ids.parquet"), index=False)
        with open(os.path.join(d, "config.yaml"), "w") as fh:
            yaml.safe_dump(cfg.model_dump(mode="json"), fh, sort_keys=False)
        mlflow.log_artifacts(d, artifact_path)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this tracking store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --port 5000"
