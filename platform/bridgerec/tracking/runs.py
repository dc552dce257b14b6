"""Finding runs again in MLflow: a sweep's parent run and its trials' child runs (by tags, so a
resumed sweep reopens the same runs), and a run's validation metric."""

from __future__ import annotations

from typing import Optional

__all__ = [
    "SWEEP_TAG", "TRIAL_TAG", "TRIAL_STATE_TAG", "STOPPED_AT_TAG", "PARENT_TAG",
    "find_sweep_run", "find_trial_run", "child_runs", "valid_metric", "best_valid_key",
]

SWEEP_TAG = "bridgerec.sweep"
"""On the parent run of a sweep: the sweep's name."""
TRIAL_TAG = "bridgerec.trial_id"
"""On a trial's child run: the Tune trial id."""
TRIAL_STATE_TAG = "bridgerec.trial_state"
"""On a trial's child run: completed, stopped_early (by the scheduler) or error."""
STOPPED_AT_TAG = "bridgerec.stopped_at_epoch"
"""On a trial the scheduler stopped: the epoch of its decision (the trial may finish the epoch it
is in before the stop reaches it, so its run can hold a few more)."""
PARENT_TAG = "mlflow.parentRunId"


def _experiment_ids(client, experiment: str) -> list[str]:
    exp = client.get_experiment_by_name(experiment)
    return [exp.experiment_id] if exp else []


def find_sweep_run(client, experiment: str, sweep: str) -> Optional[str]:
    """The parent run id of sweep ``sweep`` in ``experiment`` (None if it has none yet)."""
    ids = _experiment_ids(client, experiment)
    if not ids:
        return None
    runs = client.search_runs(ids, filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}'", max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def find_trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str) -> Optional[str]:
    runs = client.search_runs([experiment_id], max_results=1,
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'")
    return runs[0].info.run_id if runs else None


def child_runs(client, parent_run_id: str) -> list:
    """Every child run of ``parent_run_id`` (oldest first)."""
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=50_000)


def best_valid_key(metric_key: str) -> str:
    """``valid_recall_at_20`` -> ``best_valid_recall_at_20``: the best epoch's value, logged once per run."""
    return "best_" + metric_key


def valid_metric(client, run, metric_key: str) -> Optional[float]:
    """A run's validation ``metric_key`` (e.g. ``valid_recall_at_20``) at its best epoch: the logged
    ``best_<key>`` where the run has it, else the maximum over the per-epoch history."""
    best = run.data.metrics.get(best_valid_key(metric_key))
    if best is not None:
        return float(best)
    history = client.get_metric_history(run.info.run_id, metric_key)
    return max((m.value for m in history), default=None)
