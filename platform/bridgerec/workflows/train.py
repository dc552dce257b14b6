"""`bridgerec train` and `bridgerec quickstart`: prepare, train with Ray Train, evaluate, log to MLflow."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bridgerec import console
from bridgerec.config import Config
from bridgerec.console import say
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult, check_eval_ks
from bridgerec.methods.inputs import pin_method_inputs
from bridgerec.tracking import log_eval, log_model_artifacts, log_pyfunc_model, mlflow_run, ui_command
from bridgerec.training import check_plugins, train
from bridgerec.workflows.evaluate import evaluate_model, popularity_baseline
from bridgerec.workflows.prepare import prepare
from bridgerec.workflows.report import results_block, run_footer

__all__ = ["RunSummary", "train_and_log", "quickstart", "print_summary"]


@dataclass
class RunSummary:
    run_id: str | None
    tracking_uri: str
    test: EvalResult
    baseline: EvalResult
    dataset: DatasetDir
    seconds: float
    checkpoint_dir: str
    model_uri: str | None = None  # the logged recommender (models:/NAME/VERSION when registered)


def train_and_log(cfg: Config, log=say) -> RunSummary:
    """Prepare the dataset, train, evaluate the best checkpoint on test beside a popularity
    baseline, and log everything to MLflow (when ``tracking.enabled``)."""
    t0 = time.time()
    check_plugins(cfg)
    data = prepare(cfg, log=log)
    check_eval_ks(cfg.eval, data.n_items)
    inputs = pin_method_inputs(cfg, data)  # the augmentation output this run consumes, fixed before any worker starts
    if inputs:
        log(f"[train] method inputs: {inputs['input.text_embeddings']}")
    baseline = popularity_baseline(data, cfg.eval, "test")
    if not cfg.tracking.enabled:
        result = train(cfg, data)
        log("[evaluate] test split, full ranking")
        test = evaluate_model(result.model, data, cfg.eval, "test")
        return RunSummary(None, "", test, baseline, data, time.time() - t0, result.checkpoint_dir)
    with mlflow_run(cfg, data) as (run_id, uri):
        log(f"[mlflow] run {run_id} in experiment {cfg.tracking.experiment!r} at {uri}")
        result = train(cfg, data, run_id=run_id, tracking_uri=uri)
        log(f"[evaluate] test split, full ranking (best epoch {int(result.best_metrics.get('epoch', 0))})")
        test = evaluate_model(result.model, data, cfg.eval, "test")
        log("[mlflow] logging metrics, model artifacts and the pyfunc recommender")
        log_eval(test, "test_")
        log_eval(baseline, "baseline_popularity_test_")
        log_model_artifacts(result.model, data, cfg)
        info = log_pyfunc_model(result.model, data, cfg, cfg.tracking.registered_model,
                                k=cfg.tracking.recommend_k, alias=cfg.tracking.alias)
        import mlflow

        mlflow.set_tags({"checkpoint_dir": result.checkpoint_dir, "pyfunc_model_uri": info.model_uri, **inputs})
        if cfg.tracking.registered_model:
            log(f"[mlflow] registered models:/{cfg.tracking.registered_model}"
                + (f"@{cfg.tracking.alias}" if cfg.tracking.alias else f"/{info.registered_model_version}"))
        model_uri = (f"models:/{cfg.tracking.registered_model}/{info.registered_model_version}"
                     if cfg.tracking.registered_model and info.registered_model_version else info.model_uri)
        return RunSummary(run_id, uri, test, baseline, data, time.time() - t0, result.checkpoint_dir, model_uri)


def quickstart(cfg: Config, log=say, serve: bool = True, keep_serving: bool = False, port: int = 8000) -> RunSummary:
    """The newcomer's job: synthetic data -> MF (BPR) on 2 Ray Train workers -> table + MLflow,
    then the model served with Ray Serve and queried once over HTTP (``serve``); ``keep_serving``
    leaves the app up until Ctrl-C."""
    s = train_and_log(cfg, log=log)
    served = None
    if serve and s.model_uri:
        from bridgerec.workflows.serve import serve_and_query

        user = str(s.dataset.users()["user_id"].iloc[0])
        served = serve_and_query(s.model_uri, s.tracking_uri, user, port=port, keep=keep_serving, log=log)
    elif serve:
        log("[serve] skipped: tracking is off, so there is no logged model to serve")
    print_summary(cfg, s, "quickstart", served)
    if keep_serving and served:
        import time as _time

        log("[serve] serving until Ctrl-C (the page for people is at the served URL's /)")
        while True:
            _time.sleep(3600)
    return s


def print_summary(cfg: Config, s: RunSummary, command: str, served: str | None = None) -> None:
    """The results block of ``bridgerec train`` / ``quickstart``: the dataset, model vs
    popularity on test (overall and per slice), time, MLflow run, UI command, log file."""
    c = s.dataset.manifest["counts"]
    title = (f"bridgerec {command}: {s.dataset.manifest['name']} ({c['users']} users, {c['items']} items, "
             f"{c['interactions']} interactions; split {cfg.data.split.describe()})")
    footer = run_footer(s.run_id, cfg.tracking.experiment, ui_command(s.tracking_uri) if s.run_id else None,
                        s.seconds, console.log_path())
    if served:
        footer = [*served.split("\n"), "", *footer]
    console.result(results_block(title, s.baseline, cfg.model.name, s.test, cfg.eval.ks, footer))
