"""Ray Tune over Train V2: the Tuner of a sweep, its concurrency, resuming, and the trials' names.

One trial is one training run: the trial function (given by the caller, see
:mod:`bridgerec.workflows.tune`) builds the same ``TorchTrainer`` as ``bridgerec train`` with
``ray.tune.integration.ray_train.TuneReportCallback`` on its ``RunConfig``, so Tune sees every
epoch's validation metric and ASHA can stop weak trials between epochs. The trial function itself
holds no resources (its Train workers take theirs in their own placement group), and
``max_concurrent_trials`` keeps the number of trials whose workers fit the cluster.

Names carry no timestamps below the sweep's own name: the experiment lives at
``<storage_path>/<sweep name>`` and each trial's Train run at ``<storage_path>/<sweep>-<trial id>``,
so ``Tuner.restore`` (``bridgerec tune --resume NAME``) finds both again, finished trials are kept
and an interrupted trial's Train run resumes from its latest checkpoint.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

from bridgerec import console
from bridgerec.config import Config, ConfigError, with_values
from bridgerec.training.loop import valid_metric_key
from bridgerec.tuning.space import SweepSpec

__all__ = ["trial_run_name", "max_concurrent", "sweep_path", "check_space", "build_tuner", "restore_tuner", "TRIAL_RESOURCES"]

TRIAL_RESOURCES = {"CPU": 0, "memory": 64 * 2**20}
"""What the trial function itself reserves: no CPU (it waits on its Train workers, which reserve
theirs) and a token of memory (Tune needs a non-empty bundle). Even 0.001 CPU per trial leaves a 2-CPU cluster 0.998 CPU beside one trial's worker, and
the next trial's 1-CPU worker then waits forever."""


def trial_run_name(sweep: str, trial_id: str) -> str:
    """The Train run (and MLflow child run) name of a trial: stable across ``Tuner.restore``."""
    return f"{sweep}-{trial_id}"


def sweep_path(cfg: Config, name: str) -> str:
    return os.path.join(cfg.storage_path(), name)


ASHA_STATE = "asha_rungs.json"
"""ASHA's rungs (trial id -> metric per milestone), kept in the sweep's directory across --resume."""


def max_concurrent(spec: SweepSpec, cfg: Config, resources: dict[str, float], cores: Optional[int] = None) -> int:
    """``spec.max_concurrent_trials`` or as many trials as the cluster holds Train workers for
    (one CPU per worker; one GPU per worker with ``train.use_gpu``), at least 1.

    ``cores``: the machine's cores when Ray was started locally, which advertises ``max(8, cores)``
    logical CPUs so that small actors schedule: CPU trials count the cores, not those (on 2 cores,
    4 trials of 2 workers each would share them and each run at a quarter speed)."""
    if spec.max_concurrent_trials:
        return spec.max_concurrent_trials
    kind = "GPU" if cfg.train.use_gpu else "CPU"
    have = resources.get(kind, 1)
    if kind == "CPU" and cores:
        have = min(have, cores)
    return max(1, int(have // cfg.train.num_workers))


def check_space(spec: SweepSpec, cfg: Config, source: str) -> None:
    """Every searched key exists in the config and takes both ends of its range (before any trial starts)."""
    for values in spec.examples():
        with_values(cfg, values, source)
    if cfg.train.epochs < 2 and spec.scheduler == "asha":
        raise ConfigError(f"{source}: scheduler asha needs train.epochs >= 2 (it stops trials between epochs)")
    if spec.scheduler == "asha" and spec.grace_period >= cfg.train.epochs:
        raise ConfigError(f"{source}: grace_period {spec.grace_period} >= train.epochs {cfg.train.epochs}: ASHA could "
                          "never stop a trial; lower grace_period or raise train.epochs")


def _search_alg(spec: SweepSpec):
    if spec.search == "random":
        return None  # Tune's BasicVariantGenerator (samples, and enumerates grid values)
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=spec.seed)


def _scheduler(spec: SweepSpec, cfg: Config, on_stop: Callable[[str, Any], None], state_path: str):
    if spec.scheduler == "fifo":
        return None
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    class RecordingASHA(AsyncHyperBandScheduler):
        """ASHA that reports each trial it stops (Tune marks stopped and interrupted trials alike
        TERMINATED, so the sweep could not tell an early stop from a Ctrl-C otherwise), and keeps
        its rungs in ``state_path``: ``Tuner.restore`` brings the scheduler back as it was pickled
        when the sweep started, so a resumed sweep would otherwise forget every result recorded at
        a rung and stop nothing until the rungs filled again."""

        _rungs_loaded = False

        def on_trial_result(self, tune_controller, trial, result):
            self._load_rungs()
            decision = super().on_trial_result(tune_controller, trial, result)
            self._save_rungs()
            if decision == TrialScheduler.STOP:
                on_stop(trial.trial_id, result.get(self._time_attr))
            return decision

        def _load_rungs(self) -> None:
            if self._rungs_loaded:
                return
            self._rungs_loaded = True
            if "://" not in state_path and os.path.exists(state_path):
                with open(state_path) as fh:
                    saved = json.load(fh)
                for bracket, rungs in zip(self._brackets, saved):
                    for (_, recorded), kept in zip(bracket._rungs, rungs):
                        recorded.update(kept)

        def _save_rungs(self) -> None:
            if "://" in state_path:  # cloud storage: kept in memory only (a resume starts the rungs afresh)
                return
            os.makedirs(os.path.dirname(state_path), exist_ok=True)
            tmp = state_path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump([[recorded for _, recorded in b._rungs] for b in self._brackets], fh)
            os.replace(tmp, state_path)

    # max_t one past the last epoch: at max_t ASHA stops the trial itself, before the trial function
    # returns and logs its best epoch (a finished trial must end on its own)
    # time_attr "epoch" (reported by every epoch), not Tune's iteration counter: a trial resumed from
    # its Train checkpoint restarts the counter at 1 but continues at its real epoch
    return RecordingASHA(time_attr="epoch", max_t=cfg.train.epochs + 1,
                         grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)


def _quiet_tune() -> None:
    """Tune's own tables and boxes off unless ``--verbose``: the sweep prints one line per trial."""
    if not console.verbose():
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0


def _trainable(trial_fn: Callable, context: dict[str, Any]):
    from ray import tune

    _quiet_tune()
    return tune.with_resources(tune.with_parameters(trial_fn, context=context), TRIAL_RESOURCES)


def _run_config(cfg: Config, name: str, callbacks: list):
    from ray import tune

    return tune.RunConfig(name=name, storage_path=cfg.storage_path(), callbacks=callbacks, verbose=0,
                          failure_config=tune.FailureConfig(max_failures=0))


def build_tuner(trial_fn: Callable, context: dict[str, Any], spec: SweepSpec, cfg: Config, name: str,
                concurrency: int, callbacks: list, on_stop: Callable[[str, Any], None]):
    """A new Tuner for sweep ``name`` over ``spec`` (the metric: ``valid_<train.select_metric>``, max).
    ``on_stop(trial_id, epoch)`` is called for every trial the scheduler stops (at that epoch) (it must pickle: the
    scheduler is saved with the experiment)."""
    from ray import tune

    if spec.search == "random" and spec.seed is not None:
        import random

        import numpy as np

        random.seed(spec.seed)  # Tune's variant generator draws from the global generators
        np.random.seed(spec.seed)
    return tune.Tuner(
        _trainable(trial_fn, context),
        param_space=spec.tune_space(),
        tune_config=tune.TuneConfig(
            metric=valid_metric_key(cfg), mode="max", search_alg=_search_alg(spec), scheduler=_scheduler(spec, cfg, on_stop, os.path.join(sweep_path(cfg, name), ASHA_STATE)),
            num_samples=spec.num_samples, max_concurrent_trials=concurrency, trial_dirname_creator=_trial_dirname,
        ),
        run_config=_run_config(cfg, name, callbacks),
    )


def restore_tuner(trial_fn: Callable, context: dict[str, Any], cfg: Config, name: str):
    """The Tuner of an interrupted sweep: finished trials are kept, unfinished ones resume."""
    from ray import tune

    path = sweep_path(cfg, name)
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"--resume {name}: no sweep to resume at {path} (is train.storage_path / work_dir the same "
                          "as when it started?)")
    console.say(f"[tune] resuming {name} from {path}")
    return tune.Tuner.restore(path, trainable=_trainable(trial_fn, context), resume_unfinished=True, resume_errored=True)


def _trial_dirname(trial) -> str:
    return f"trial-{trial.trial_id}"
