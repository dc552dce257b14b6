"""`bridgerec train` and `bridgerec quickstart`: prepare, train with Ray Train, evaluate, log to MLflow."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bridgerec import console
from bridgerec.config import Config
from bridgerec.console import say
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult, check_eval_ks
from bridgerec.methods import method_class
from bridgerec.methods.inputs import pin_method_inputs
from bridgerec.tracking import log_eval, log_model_artifacts, log_pyfunc_model, mlflow_run, ui_command
from bridgerec.training import check_plugins, train
from bridgerec.workflows.evaluate import evaluate_model, popularity_baseline
from bridgerec.workflows.prepare import prepare
from bridgerec.workflows.report import rating_table, results_block, run_footer

__all__ = ["RunSummary", "train_and_log", "rating_rows", "quickstart", "print_summary", "log_selection", "log_for_serving", "promote_new_version"]


@dataclass
class RunSummary:
    run_id: str | None
    tracking_uri: str
    test: EvalResult | None  # None: a run that ranks nothing (llama4rec's rating task; its ``ratings`` are the result)
    baseline: EvalResult
    dataset: DatasetDir
    seconds: float
    checkpoint_dir: str
    model_uri: str | None = None  # the logged recommender (models:/NAME/VERSION when registered)
    rows: dict[str, EvalResult] = field(default_factory=dict)  # more rows for the results table (name -> test result)
    notes: list[str] = field(default_factory=list)  # lines printed under the results table
    ratings: dict[str, dict[str, float]] = field(default_factory=dict)  # rating models: name -> test rmse/mae (baseline first)


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
    if method_class(cfg.method.name).trains_llm:
        return _train_llm_method(cfg, data, baseline, t0, log)
    if not cfg.tracking.enabled:
        result = train(cfg, data)
        log("[evaluate] test split, full ranking")
        test = evaluate_model(result.model, data, cfg.eval, "test")
        return RunSummary(None, "", test, baseline, data, time.time() - t0, result.checkpoint_dir,
                          ratings=rating_rows(result.model, data, cfg))
    with mlflow_run(cfg, data) as (run_id, uri):
        log(f"[mlflow] run {run_id} in experiment {cfg.tracking.experiment!r} at {uri}")
        result = train(cfg, data, run_id=run_id, tracking_uri=uri)
        log(f"[evaluate] best epoch {int(result.best_metrics.get('epoch', 0))} on the valid and test splits, full ranking")
        log_selection(result.model, data, cfg, result.best_metrics)
        test = evaluate_model(result.model, data, cfg.eval, "test")
        model_uri = log_for_serving(result.model, data, cfg, test, baseline, {"checkpoint_dir": result.checkpoint_dir, **inputs}, log)
        ratings = rating_rows(result.model, data, cfg)
        if ratings:
            import mlflow

            (base, base_m), (_, model_m) = ratings.items()
            mlflow.log_metrics({**{f"test_{k}": v for k, v in model_m.items()},
                                **{f"baseline_global_mean_test_{k}": v for k, v in base_m.items()}})
        return RunSummary(run_id, uri, test, baseline, data, time.time() - t0, result.checkpoint_dir, model_uri,
                          ratings=ratings)


def rating_rows(model, data: DatasetDir, cfg: Config) -> dict[str, dict[str, float]]:
    """A rating model's (``predicts_ratings``) test RMSE/MAE beside the global-mean baseline's,
    baseline first; empty for ranking models."""
    if not model.predicts_ratings:
        return {}
    from bridgerec.evaluation import evaluate_ratings, global_mean_ratings, train_mean_rating

    return {f"global mean ({train_mean_rating(data):.2f})": global_mean_ratings(data, "test"),
            cfg.model.name: evaluate_ratings(model.predict_ratings, data, "test")}


def _train_llm_method(cfg: Config, data: DatasetDir, baseline: EvalResult, t0: float, log=say) -> RunSummary:
    """A method that tunes the LLM (``bigrec``, ``llama4rec``): its own workflow, logged into one MLflow run."""
    from bridgerec.workflows.llm_methods import llm_workflow

    wf = llm_workflow(cfg)

    def summary(res, run_id: str | None, uri: str) -> RunSummary:
        return RunSummary(run_id, uri, res.test, baseline, data, time.time() - t0, res.adapter_dir,
                          rows=wf.test_rows(res), notes=wf.summary_lines(res, cfg), ratings=wf.ratings(res))

    if not cfg.tracking.enabled:
        return summary(wf.run(cfg, data, log), None, "")
    if cfg.tracking.registered_model:
        log(f"[mlflow] tracking.registered_model is set, but a {cfg.method.name} run logs no recommender model: nothing "
            "is registered (serve a domain model's bundle with this run's adapter; README)")
    with mlflow_run(cfg, data) as (run_id, uri):
        log(f"[mlflow] run {run_id} in experiment {cfg.tracking.experiment!r} at {uri}")
        res = wf.run(cfg, data, log)
        log_eval(baseline, "baseline_popularity_test_")
        wf.log(res, cfg)
        return summary(res, run_id, uri)


def log_selection(model, data: DatasetDir, cfg: Config, best_metrics: dict) -> EvalResult:
    """Into the active run: the best epoch's number and its validation metrics with every slice as
    ``best_valid_*`` (what `bridgerec compare` shows and `bridgerec promote` compares)."""
    import mlflow

    valid = evaluate_model(model, data, cfg.eval, "valid")
    log_eval(valid, "best_valid_")
    mlflow.log_metric("best_epoch", float(best_metrics.get("epoch", 0)))
    return valid


def log_for_serving(model, data: DatasetDir, cfg: Config, test: EvalResult, baseline: EvalResult | None,
                    tags: dict[str, str], log=say) -> str:
    """Into the active run: test metrics (and the popularity baseline's), the model artifacts and
    the pyfunc recommender, registered as a new version when ``tracking.registered_model`` is set
    (with no alias unless ``tracking.alias``: `bridgerec promote` moves ``champion``). Returns the
    model's URI (``models:/NAME/VERSION`` when registered)."""
    import mlflow

    log("[mlflow] logging metrics, model artifacts and the pyfunc recommender")
    log_eval(test, "test_")
    if baseline is not None:
        log_eval(baseline, "baseline_popularity_test_")
    log_model_artifacts(model, data, cfg)
    name = cfg.tracking.registered_model
    info = log_pyfunc_model(model, data, cfg, name, k=cfg.tracking.recommend_k, alias=cfg.tracking.alias)
    mlflow.set_tags({"pyfunc_model_uri": info.model_uri, **tags})
    if not (name and info.registered_model_version):
        return info.model_uri
    version = info.registered_model_version
    log(f"[mlflow] registered models:/{name}/{version}" + (f" and pointed @{cfg.tracking.alias} at it" if cfg.tracking.alias
        else f"; `bridgerec promote --model {name} --version {version}` makes it @champion if it beats the champion"))
    return f"models:/{name}/{version}"


def promote_new_version(cfg: Config, s: RunSummary, log=say) -> None:
    """The quickstart's guarded promotion of the version it registered (the first one becomes @champion)."""
    from mlflow.tracking import MlflowClient

    from bridgerec.tracking.registry import promote
    from bridgerec.training.loop import valid_metric_key

    if not (s.model_uri and s.model_uri.startswith("models:/") and not cfg.tracking.alias):
        return
    name, version = s.model_uri[len("models:/"):].rsplit("/", 1)
    p = promote(MlflowClient(s.tracking_uri), name, version, valid_metric_key(cfg))
    log(f"[promote] {p.line()}")


def quickstart(cfg: Config, log=say, serve: bool = True, keep_serving: bool = False, port: int = 8000) -> RunSummary:
    """The newcomer's job: synthetic data -> MF (BPR) on 2 Ray Train workers -> table + MLflow,
    then the model served with Ray Serve and queried once over HTTP (``serve``); ``keep_serving``
    leaves the app up until Ctrl-C."""
    s = train_and_log(cfg, log=log)
    promote_new_version(cfg, s, log)
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
    if cfg.method.name == "base":
        name = cfg.model.name
    else:  # the method's row; a method that trains the domain model names it too (e.g. "bdlm + mf")
        name = cfg.method.name if method_class(cfg.method.name).trains_llm else f"{cfg.method.name} + {cfg.model.name}"
    notes = [*s.notes, *([""] if s.notes else [])]
    if s.ratings:  # the rating task's RMSE/MAE, model beside the global-mean baseline
        notes = [*rating_table(s.ratings), "", *notes]
    if s.test is None:  # a rating-only run (llama4rec's rating task): its RMSE/MAE table is the result
        console.result("\n".join(["", title, *notes, *footer]))
        return
    console.result(results_block(title, s.baseline, name, s.test, cfg.eval.ks, [*notes, *footer], extra=s.rows))
