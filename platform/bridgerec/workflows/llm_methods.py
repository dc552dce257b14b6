"""The workflows of the methods that tune the LLM (``trains_llm``), by method name: what `bridgerec
train` and `bridgerec tune` call instead of the domain-model trainer.

Each entry gives the run (``run(cfg, data, log, *, test=..., adapter_dir=...)``), its MLflow
logging, the lines printed under the results table, the extra test rows of the table, the values a
sweep's trial reports beside its validation metric, how the chosen trial's settings are fixed
before it is tested, and the MLflow path of the run's adapter. Also what those workflows share:
loading the trained domain model they read (:func:`open_domain_run`, :func:`load_domain_run`) and logging a tuned run's
SFT record and export (:func:`log_tuned_run`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["DomainRun", "LLMWorkflow", "llm_workflow", "load_domain_run", "log_tuned_run", "open_domain_run"]


@dataclass(frozen=True)
class LLMWorkflow:
    run: Callable[..., Any]
    log: Callable[[Any, Any], None]
    summary_lines: Callable[[Any, Any], list[str]]
    test_rows: Callable[[Any], dict]
    trial_report: Callable[[Any], dict]
    """Extra values a sweep trial reports (read back by :attr:`fix_choice`)."""
    fix_choice: Callable[[Any, dict], None]
    """``(cfg, best trial's reported metrics)``: fix what the trial chose on validation."""
    test_logs: Callable[[Any], dict]
    """MLflow prefix -> EvalResult of the test rows logged for a sweep's chosen trial."""
    adapter_artifact: str
    ratings: Callable[[Any], dict] = lambda res: {}
    """RMSE/MAE rows of a rating task (name -> {"rmse", "mae"}, baseline first); empty otherwise."""


def _bigrec() -> LLMWorkflow:
    from bridgerec.workflows import bigrec as wf

    def fix(cfg, metrics):
        cfg.method.bigrec.gamma = float(metrics.get("bigrec_gamma", 0.0))

    return LLMWorkflow(wf.run_bigrec, wf.log_bigrec, wf.summary_lines,
                       lambda res: {"bigrec gamma 0": res.test_grounding},
                       lambda res: {"bigrec_gamma": res.gamma}, fix,
                       lambda res: {"test_": res.test, "test_grounding_only_": res.test_grounding}, "bigrec/adapter")


def _llama4rec() -> LLMWorkflow:
    from bridgerec.workflows import llama4rec as wf

    # the trial's validation choice is made again, identically, when the chosen adapter is tested
    # (greedy rankings of the same prompts): nothing to fix
    return LLMWorkflow(wf.run_llama4rec, wf.log_llama4rec, wf.summary_lines,
                       lambda res: {"domain order (alpha 0)": res.test_domain, "LLM order (alpha 1)": res.test_llm},
                       lambda res: {f"llama4rec_{k}": float(v) for k, v in res.choice.items() if k != "aggregation"},
                       lambda cfg, metrics: None,
                       lambda res: {"test_": res.test, "test_domain_order_": res.test_domain,
                                    "test_llm_order_": res.test_llm}, "llama4rec/adapter")


def _llama4rec_rating() -> LLMWorkflow:
    from bridgerec.workflows import llama4rec_rating as wf

    return LLMWorkflow(wf.run_llama4rec_rating, wf.log_llama4rec_rating, wf.rating_summary_lines,
                       lambda res: {}, lambda res: {}, lambda cfg, metrics: None, lambda res: {}, "llama4rec/adapter",
                       ratings=lambda res: res.ratings)


_WORKFLOWS = {"bigrec": _bigrec, "llama4rec": _llama4rec, "llama4rec:rating": _llama4rec_rating}


def llm_workflow(cfg: Any) -> LLMWorkflow:
    """The workflow of ``cfg.method`` (llama4rec's by ``method.llama4rec.task``)."""
    name = cfg.method.name
    key = f"{name}:rating" if name == "llama4rec" and cfg.method.llama4rec.task == "rating" else name
    try:
        return _WORKFLOWS[key]()
    except KeyError:
        raise ValueError(f"method {name!r} tunes the LLM but has no workflow; known: {', '.join(_WORKFLOWS)}") from None


@dataclass(frozen=True)
class DomainRun:
    """A trained domain run as the LLM workflows read it."""

    users: np.ndarray
    """(U, d) exported user vectors (a sequence model's read every known item, test included)."""
    items: np.ndarray
    """(I, d) exported item vectors."""
    history_model: Any = None
    """A sequence model rebuilt from the run's bundle (CPU, eval mode; ``embed_histories`` gives a
    user's vector from the history known at some time), or None (MF, LightGCN)."""


def open_domain_run(cfg: Any, data: Any, src: str, key: str, *, sequence_ok: bool = False) -> DomainRun:
    """The domain run ``src`` (config key ``key``), checked against the dataset (same users and
    items). A sequence model's exported user vectors read every known item, test included: it is
    refused unless ``sequence_ok``, and then it is rebuilt from the bundle's weights (the loading
    path of serving, :func:`~bridgerec.models.snapshot.load_domain_model`) so the caller embeds the
    histories it may show."""
    from bridgerec.config import ConfigError
    from bridgerec.models.pretrained import embeddings_dir, load_domain_embeddings, local_model_source
    from bridgerec.models.snapshot import conditions_on_history, load_domain_model, read_description

    local = embeddings_dir(local_model_source(src, cfg.tracking_uri()))  # (downloaded once: the description is read beside it)
    try:
        users, items = load_domain_embeddings(local, key=key)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from e
    if users.shape[0] != data.n_users or items.shape[0] != data.n_items:
        raise ConfigError(f"{key}={src}: {users.shape[0]} users x {items.shape[0]} items, but the "
                          f"dataset has {data.n_users} x {data.n_items} (a run on another dataset?)")
    if not (os.path.isdir(local) and conditions_on_history(local)):
        return DomainRun(users, items)
    desc = read_description(local) or {}
    name = (desc.get("model") or {}).get("name")
    what = f"a sequence model ({name})" if name else "a sequence model"
    if not sequence_ok:
        raise ConfigError(f"{key}={src}: {what}; its exported user vectors read every known item, test included; "
                          "use MF or LightGCN")
    if not desc.get("weights"):
        why = desc.get("reason") or "no domain_model.pt: a run's model/ artifacts hold none"
        raise ConfigError(f"{key}={src}: {what} without its weights here ({why}); name the "
                          "run's recommender instead (models:/<model id> from the run's pyfunc_model_uri tag, or "
                          "models:/NAME@alias)")
    return DomainRun(users, items, load_domain_model(local))


def load_domain_run(cfg: Any, data: Any, src: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) embeddings of the domain run ``src`` (:func:`open_domain_run`; a sequence model
    is refused)."""
    run = open_domain_run(cfg, data, src, key)
    return run.users, run.items


def log_tuned_run(sft: dict, metrics: dict[str, float], export: Callable[[str], str], artifact: str) -> None:
    """Into the active MLflow run: ``metrics``, the SFT record's best-epoch metrics and (when the
    adapter was tuned in this run, not reused) its tuning seconds, then the directory ``export``
    writes into a temporary folder, as the ``artifact`` artifacts."""
    import mlflow

    tuned_here = bool(sft["history"])  # (an adapter reused from an earlier run has its own record)
    mlflow.log_metrics({
        **metrics,
        **({"sft_seconds": float(sft["seconds"])} if tuned_here else {}),
        **{f"sft_{k}": float(v) for k, v in sft["best"].items() if isinstance(v, (int, float))},
    })
    d = tempfile.mkdtemp(prefix=f"bridgerec-{artifact}-")
    try:
        mlflow.log_artifacts(export(d), artifact)
    finally:
        shutil.rmtree(d, ignore_errors=True)
