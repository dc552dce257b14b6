"""`bridgerec tune`: a Ray Tune sweep over a method's weights, one trial = one Ray Train run.

The driver prepares the dataset and the method's semantic inputs once, opens the sweep's parent
run in MLflow and runs the Tuner (:mod:`bridgerec.tuning`). Each trial builds its config from the
base config plus the sampled values, opens its child run (tagged with the parent's id and its
trial id) and trains with ``TuneReportCallback``; rank 0 of its workers logs every epoch to the
child run, and a trial that runs out logs its best epoch's validation metrics with slices.
Selection is by the validation metric (``valid_<train.select_metric>``) only: after the sweep the
best trial's best checkpoint is evaluated on the test split, logged as a servable model in its
child run (registered when ``tracking.registered_model`` is set, with no alias) and linked from
the parent; the other trials are never tested.

Methods that tune the LLM (``bigrec``, ``llama4rec``; :mod:`bridgerec.workflows.llm_methods`) sweep the same way with one difference: a trial tunes its
LoRA adapter, writes and grounds the validation users' titles, picks gamma on validation and
reports once (so the scheduler must be ``fifo``: ASHA has no epochs to compare); the chosen
trial's adapter then writes the test users' titles, and its test metrics go to its child run and
the parent. No recommender model is registered for them (nothing servable on its own yet).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from bridgerec import console
from bridgerec.config import Config, ConfigError, with_values
from bridgerec.console import say
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult, check_eval_ks
from bridgerec.methods.inputs import load_method_inputs, pin_method_inputs
from bridgerec.runtime import local_cores, state_api_reachable
from bridgerec.tracking import log_eval, mlflow_run
from bridgerec.tracking.runs import (
    PARENT_TAG, STOPPED_AT_TAG, SWEEP_TAG, TRIAL_STATE_TAG, TRIAL_TAG, best_valid_key, find_sweep_run, find_trial_run,
)
from bridgerec.training import check_plugins, train
from bridgerec.training.driver import load_model_from_checkpoint_dir
from bridgerec.training.loop import valid_metric_key
from bridgerec.tuning import (
    build_tuner, check_space, load_space, max_concurrent, restore_tuner, sweep_path, trial_run_name,
)
from bridgerec.workflows.evaluate import evaluate_model, popularity_baseline
from bridgerec.workflows.prepare import prepare
from bridgerec.workflows.train import log_for_serving, log_selection

__all__ = ["SweepSummary", "run_tune", "default_sweep_name"]


@dataclass
class SweepSummary:
    name: str
    path: str
    parent_run_id: str
    tracking_uri: str
    metric: str
    best_trial: str
    best_run_id: str | None
    best_params: dict[str, Any]
    best_valid: float
    test: EvalResult
    baseline: EvalResult
    model_uri: str
    states: dict[str, int] = field(default_factory=dict)
    """Trials per state: completed, stopped_early, error."""
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)


def default_sweep_name(cfg: Config) -> str:
    return f"tune-{cfg.method.name}-{cfg.model.name}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


# ------------------------------------------------------------------------------------ the trial
@contextlib.contextmanager
def _trial_run(params: dict[str, Any], context: dict[str, Any]):
    """The trial's config (base config + sampled values, its stable run name), the dataset and its
    child run (reopened on resume), marked ``running``: yields (cfg, data, run_id, tracking uri)."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    cfg = with_values(Config.model_validate(context["config"]), params, "sweep parameters")
    cfg.run_name = trial_run_name(context["sweep"], trial_id)
    data = DatasetDir(context["dataset_dir"])
    existing = find_trial_run(MlflowClient(context["tracking_uri"]), context["experiment_id"], context["parent_run_id"], trial_id)
    tags = {PARENT_TAG: context["parent_run_id"], TRIAL_TAG: trial_id, SWEEP_TAG + "_name": context["sweep"]}
    with mlflow_run(cfg, data, cfg.run_name, tags=tags, run_id=existing) as (run_id, uri):
        mlflow.set_tag(TRIAL_STATE_TAG, "running")
        yield cfg, data, run_id, uri


def _trial(params: dict[str, Any], context: dict[str, Any]) -> None:
    """One trial (runs in Tune's trial actor): train with the sampled values, report every epoch."""
    import mlflow
    from ray.tune.integration.ray_train import TuneReportCallback

    with _trial_run(params, context) as (cfg, data, run_id, uri):
        result = train(cfg, data, run_id=run_id, tracking_uri=uri, callbacks=[TuneReportCallback()], progress=False)
        log_selection(result.model, data, cfg, result.best_metrics)
        mlflow.set_tags({TRIAL_STATE_TAG: "completed", "checkpoint_dir": result.checkpoint_dir})


def _llm_trial(params: dict[str, Any], context: dict[str, Any]) -> None:
    """One trial of a method that tunes the LLM: its whole run on validation only, one report
    (the validation metric with the chosen gamma, and the adapter's directory as the checkpoint)."""
    import mlflow
    from ray import tune

    from bridgerec.workflows.llm_methods import llm_workflow

    with _trial_run(params, context) as (cfg, data, _, _):
        wf = llm_workflow(cfg)
        res = wf.run(cfg, data, log=console.detail, test=False)
        wf.log(res, cfg)
        value = res.valid.flat()[valid_metric_key(cfg).removeprefix("valid_")]
        mlflow.set_tags({TRIAL_STATE_TAG: "completed", "checkpoint_dir": res.adapter_dir})
        tune.report({valid_metric_key(cfg): value, "epoch": 1, **wf.trial_report(res), "checkpoint_path": res.adapter_dir})


# ----------------------------------------------------------------------------------- the driver
class _Progress:
    """A Tune callback: one line per trial start and end (Tune's own tables are off)."""

    def __init__(self, total: int, metric: str):
        self.total, self.metric, self.done = total, metric, 0

    def make(self):
        from ray import tune

        outer = self

        class ProgressLines(tune.Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                shown = ", ".join(f"{k}={_short(v)}" for k, v in trial.config.items())
                say(f"[tune] trial {trial.trial_id} started: {shown}")

            def on_trial_result(self, iteration, trials, trial, result, **info):
                console.detail(f"[tune] trial {trial.trial_id} epoch {result.get('training_iteration')}: "
                               f"{outer.metric} {result.get(outer.metric, float('nan')):.4f}")

            def on_trial_complete(self, iteration, trials, trial, **info):
                outer.done += 1
                last = trial.last_result or {}
                say(f"[tune] trial {trial.trial_id} ended after {last.get('training_iteration', 0)} epoch(s): "
                    f"{outer.metric} {last.get(outer.metric, float('nan')):.4f} ({outer.done}/{outer.total} trials ended)")

            def on_trial_error(self, iteration, trials, trial, **info):
                outer.done += 1
                say(f"[tune] trial {trial.trial_id} failed: see {trial.path} ({outer.done}/{outer.total} trials ended)")

        return ProgressLines()


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _absolute(cfg: Config) -> Config:
    """Trials run in Tune's trial directories: every path they read must be absolute."""
    cfg = cfg.model_copy(deep=True)
    cfg.work_dir = os.path.abspath(cfg.work_dir)
    if cfg.data.output_dir:
        cfg.data.output_dir = os.path.abspath(cfg.data.output_dir)
    cfg.tracking.uri = cfg.tracking_uri()
    cfg.train.storage_path = cfg.storage_path()
    return cfg


def _best_point(result, metric: str) -> tuple[float, str | None]:
    """(best validation value, checkpoint path reported with it) over a trial's epochs."""
    frame = result.metrics_dataframe
    if frame is None or metric not in frame or frame[metric].isna().all():
        return -math.inf, None
    row = frame.loc[frame[metric].idxmax()]
    return float(row[metric]), row.get("checkpoint_path")


class _MarkStopped:
    """The scheduler's report of a trial it stops: the trial's child run gets state ``stopped_early``
    (runs in the driver; pickled with the experiment, so it holds only plain values)."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str):
        self.uri, self.experiment_id, self.parent = tracking_uri, experiment_id, parent_run_id

    def __call__(self, trial_id: str, epoch=None) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        run_id = find_trial_run(client, self.experiment_id, self.parent, trial_id)
        if run_id:
            client.set_tag(run_id, TRIAL_STATE_TAG, "stopped_early")
            if epoch is not None:
                client.set_tag(run_id, STOPPED_AT_TAG, int(epoch))
        at = f" after epoch {int(epoch)}" if epoch is not None else ""
        say(f"[tune] trial {trial_id} stopped early by the scheduler{at}")


def _left_placement_groups(log, wait_s: float = 20.0) -> int:
    """After a finished sweep: the placement groups that trials' Train workers left behind (Ray
    Train removes a stopped trial's through the State API: ray-project/ray#54305). Checked only on
    a Ray this process started (a shared cluster holds other jobs' groups); any left are removed and
    counted in a warning. Returns how many were left."""
    if not local_cores():
        return 0
    from ray.util import placement_group_table
    from ray.util.placement_group import PlacementGroup, remove_placement_group
    from ray._raylet import PlacementGroupID

    def workers_groups() -> list[str]:
        return [pg_id for pg_id, pg in placement_group_table().items() if pg["state"] != "REMOVED"
                and any(b.get("CPU") or b.get("GPU") for b in pg["bundles"].values())]

    deadline = time.time() + wait_s
    while (left := workers_groups()) and time.time() < deadline:
        time.sleep(1)
    if left:
        log(f"[tune] warning: {len(left)} placement group(s) of stopped trials' workers were still held after the "
            "sweep (Ray Train could not remove them; see ray-project/ray#54305); removing them")
        for pg_id in left:
            remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_id)))
    return len(left)


def _settle_trials(client, results, parent_run_id: str, experiment_id: str, metric: str, total: int) -> tuple[dict[str, int], bool]:
    """Each trial's state: ``completed`` (its function returned), ``stopped_early`` (the scheduler
    stopped it), ``error``, or ``interrupted`` (Ctrl-C, or never started). Unless the sweep was
    interrupted, the child runs of stopped trials end as KILLED with their best validation value.
    Returns (trials per state, interrupted)."""
    states: dict[str, int] = {}
    settle = []
    for r in results:
        trial_id = r.metrics.get("trial_id") or os.path.basename(r.path).removeprefix("trial-")
        run_id = find_trial_run(client, experiment_id, parent_run_id, trial_id)
        tag = client.get_run(run_id).data.tags.get(TRIAL_STATE_TAG) if run_id else None
        state = "error" if r.error else tag if tag in ("completed", "stopped_early") else "interrupted"
        states[state] = states.get(state, 0) + 1
        if run_id and state in ("stopped_early", "error"):
            settle.append((r, run_id, state))
    stopped = states.get("interrupted", 0) > 0 or len(results) < total
    if not stopped:
        for r, run_id, state in settle:
            best, _ = _best_point(r, metric)
            if best > -math.inf:
                client.log_metric(run_id, best_valid_key(metric), best)
            client.set_terminated(run_id, "FAILED" if state == "error" else "KILLED")
    return states, stopped


def _best_trial(results, metric: str):
    best, best_value, best_ckpt = None, -math.inf, None
    for r in results:
        value, ckpt = _best_point(r, metric)
        if value > best_value and ckpt:
            best, best_value, best_ckpt = r, value, ckpt
    if best is None:
        raise RuntimeError(f"no trial reported {metric} with a checkpoint; see the trials under {results.experiment_path}")
    return best, best_value, best_ckpt


def _test_llm_trial(cfg: Config, data: DatasetDir, best, adapter_dir: str, run_id: str | None,
                    baseline: EvalResult, sweep: str, log) -> tuple[EvalResult, str]:
    """The chosen trial of an LLM method on the test split, with what it chose on validation (bigrec:
    its gamma; llama4rec: its alpha, chosen again identically); the metrics go to its child run.
    Returns (test metrics, the adapter's URI in MLflow)."""
    import mlflow

    from bridgerec.workflows.llm_methods import llm_workflow

    wf = llm_workflow(cfg)
    wf.fix_choice(cfg, best.metrics)
    res = wf.run(cfg, data, log=log, adapter_dir=adapter_dir)
    if cfg.tracking.registered_model:
        log(f"[tune] tracking.registered_model is set, but a {cfg.method.name} trial logs no recommender model: "
            "nothing is registered")
    with mlflow.start_run(run_id=run_id, nested=True):
        for prefix, result in wf.test_logs(res).items():
            log_eval(result, prefix)
        log_eval(baseline, "baseline_popularity_test_")
        mlflow.set_tag("bridgerec.best_of_sweep", sweep)
    return res.test, f"runs:/{run_id}/{wf.adapter_artifact}"


def run_tune(cfg: Config, space: str, name: str | None = None, resume: str | None = None,
             spec_overrides: dict[str, Any] | None = None, log=say) -> SweepSummary:
    """Run (or resume) a sweep; log the parent, the children and the best trial's model to MLflow."""
    import mlflow
    import ray
    from mlflow.tracking import MlflowClient

    t0 = time.time()
    if not cfg.tracking.enabled:
        raise ConfigError("tracking.enabled=false: a sweep records its trials in MLflow; enable tracking")
    spec = load_space(space, spec_overrides)
    check_plugins(cfg)
    from bridgerec.evaluation import RATING_METRIC_NAMES

    if cfg.train.select_metric in RATING_METRIC_NAMES:
        raise ConfigError(f"train.select_metric={cfg.train.select_metric}: a sweep maximises its metric, and a rating "
                          "error is minimised; sweeps over rating models are not supported yet (pick a ranking metric)")
    if cfg.method.name == "llama4rec" and cfg.method.llama4rec.task == "rating":
        raise ConfigError("method.llama4rec.task=rating: a sweep maximises its metric, and the rating task is scored by "
                          "RMSE (minimised; its alpha is already chosen on validation RMSE inside the run): not supported")
    from bridgerec.methods import method_class

    llm = method_class(cfg.method.name).trains_llm
    if llm and spec.scheduler != "fifo":
        raise ConfigError(f"space file {space}: scheduler: {spec.scheduler} with method.name={cfg.method.name}: a trial "
                          "that tunes the LLM reports once, after its validation titles are grounded, so there are no "
                          "epochs for ASHA to compare; use scheduler: fifo")
    cfg = _absolute(cfg)
    check_space(spec, cfg, f"space file {space}")
    name = resume or name or default_sweep_name(cfg)
    path = sweep_path(cfg, name)
    from ray import tune

    if not resume and tune.Tuner.can_restore(path):
        raise ConfigError(f"sweep {name} already exists at {path}: --resume {name} finishes it; --name starts another")
    data = prepare(cfg, log=log)
    check_eval_ks(cfg.eval, data.n_items)
    inputs = pin_method_inputs(cfg, data)
    load_method_inputs(cfg, data)  # semantic inputs computed (and cached) once, before any trial
    if llm:
        from bridgerec.llm.backbone import resolve_backbone

        resolve_backbone(cfg.llm, cfg.work_dir, data)  # built (tiny) or converted once, before the trials share it
    metric = valid_metric_key(cfg)
    concurrency = max_concurrent(spec, cfg, ray.cluster_resources(), local_cores())
    log(f"[tune] sweep {name}: {spec.total_trials()} trial(s), {spec.search} search, {spec.scheduler} scheduler, "
        f"{concurrency} at a time, selecting on {metric}")
    if spec.scheduler == "asha" and not state_api_reachable():
        log("[tune] warning: Ray's State API does not answer (no dashboard on this cluster, or several local Ray "
            "instances on this machine): Ray Train cannot remove the placement group of a trial the scheduler stops, "
            "and later trials may wait for its CPUs forever (ray-project/ray#54305). Run the sweep on a cluster with "
            "a dashboard (`ray start --head` has one; so does the Ray bridgerec starts), alone on this machine.")
    client = MlflowClient(cfg.tracking.uri)
    existing = find_sweep_run(client, cfg.tracking.experiment, name) if resume else None
    with mlflow_run(cfg, data, name, tags={SWEEP_TAG: name}, run_id=existing) as (parent_id, uri):
        if not existing:
            mlflow.log_params({f"space.{k}": v for k, v in spec.describe().items()})
            mlflow.log_params({f"tune.{k}": str(v) for k, v in spec.model_dump(exclude={"params"}).items()})
            mlflow.log_params({"tune.max_concurrent_trials_used": concurrency, "tune.metric": metric})
            mlflow.log_text(open(space).read(), "space.yaml")
            mlflow.set_tags(inputs)
        log(f"[mlflow] sweep run {parent_id} in experiment {cfg.tracking.experiment!r} at {uri}")
        context = {"config": cfg.model_dump(mode="json"), "dataset_dir": data.path, "sweep": name,
                   "parent_run_id": parent_id, "tracking_uri": uri,
                   "experiment_id": client.get_run(parent_id).info.experiment_id}
        progress = _Progress(spec.total_trials(), metric).make()
        on_stop = _MarkStopped(uri, context["experiment_id"], parent_id)
        trial_fn = _llm_trial if llm else _trial
        tuner = (restore_tuner(trial_fn, context, cfg, name) if resume
                 else build_tuner(trial_fn, context, spec, cfg, name, concurrency, [progress], on_stop))
        results = tuner.fit()
        states, stopped = _settle_trials(client, results, parent_id, context["experiment_id"], metric, spec.total_trials())
        if stopped:
            mlflow.set_tag("bridgerec.sweep_state", "interrupted")
            raise KeyboardInterrupt(f"sweep {name} saved at {path} ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}); "
                                    f"finish it with: bridgerec tune --config ... --space {space} --resume {name}")
        mlflow.set_tag("bridgerec.sweep_state", "finished")
        _left_placement_groups(log)  # (an interrupted sweep's Ray goes down with it, groups and all)
        log("[tune] trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        best, best_value, ckpt = _best_trial(results, metric)
        params = {k: v for k, v in best.config.items()}
        trial_id = best.metrics.get("trial_id")
        best_run = find_trial_run(client, context["experiment_id"], parent_id, trial_id)
        trial_cfg = with_values(cfg, params, "best trial")
        trial_cfg.run_name = trial_run_name(name, trial_id)
        log(f"[tune] best trial {trial_id}: {metric} {best_value:.4f}; evaluating it on the test split")
        baseline = popularity_baseline(data, cfg.eval, "test")
        if llm:
            test, model_uri = _test_llm_trial(trial_cfg, data, best, ckpt, best_run, baseline, name, log)
        else:
            model = load_model_from_checkpoint_dir(trial_cfg, data, ckpt)
            test = evaluate_model(model, data, cfg.eval, "test")
            with mlflow.start_run(run_id=best_run, nested=True):
                model_uri = log_for_serving(model, data, trial_cfg, test, baseline, {"bridgerec.best_of_sweep": name}, log)
        mlflow.log_params({f"best.{k}": v for k, v in params.items()})
        mlflow.log_metric(best_valid_key(metric), best_value)
        log_eval(test, "best_test_")
        mlflow.set_tags({"best_run_id": best_run or "", "best_trial_id": trial_id, "best_model_uri": model_uri,
                         **{f"trials.{s}": str(n) for s, n in states.items()}})
        return SweepSummary(name, path, parent_id, uri, metric, trial_id, best_run, params, best_value, test, baseline,
                            model_uri, states, time.time() - t0)
