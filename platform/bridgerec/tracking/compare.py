"""`bridgerec compare`: runs read back from MLflow into one table (and plots, :mod:`.plots`).

Rows come from an experiment, a sweep (its parent run's children) or a list of run ids. Columns:
run, method, domain model, the key parameters (a sweep's searched keys, else the parameters that
differ between the rows), Recall/NDCG@K overall and per slice on the chosen split, the best
epoch, the run's duration, the trial state and the registered model version. ``split=valid`` reads each run's best
validation epoch (``best_valid_*``, what sweeps select on); ``test`` reads ``test_*`` (logged by
``bridgerec train`` and for a sweep's best trial only).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from bridgerec.config import ConfigError
from bridgerec.tracking.runs import PARENT_TAG, SWEEP_TAG, TRIAL_STATE_TAG, child_runs, find_sweep_run

__all__ = ["Comparison", "collect", "SLICES", "metric_columns", "format_table"]

SLICES = ("overall", "long_tail_users", "head_items", "tail_items", "cold_items")
"""The slices of the table and the per-slice plot (see bridgerec.evaluation's slice names)."""
_SLICE_LABEL = {"overall": "all", "long_tail_users": "tail users", "head_items": "head items",
                "tail_items": "tail items", "cold_items": "cold items"}
_PREFIX = {"valid": "best_valid_", "test": "test_"}
_NOISE = ("run_name", "work_dir", "data.", "tracking.", "ray.", "train.storage_path", "encoder.", "llm.", "augment.",
          "retrieval.", "eval.")
"""Parameter prefixes never shown as key parameters (paths, names, settings that do not change the model)."""


@dataclass
class Comparison:
    frame: pd.DataFrame
    """One row per run, sorted by ``sort``."""
    runs: list
    """The MLflow runs in row order."""
    split: str
    k: int
    sort: str
    param_cols: list[str]
    parent_run_id: Optional[str] = None
    searched: dict[str, str] = field(default_factory=dict)
    """A sweep's searched keys -> their distribution (``loguniform(0.01, 1.0)``)."""

    def metric_cols(self) -> list[str]:
        return metric_columns(self.k)


def metric_columns(k: int) -> list[str]:
    """``recall@20``, ``ndcg@20``, ``tail users recall@20``, ... (overall first)."""
    return [(f"{_SLICE_LABEL[s]} " if s != "overall" else "") + f"{m}@{k}" for s in SLICES for m in ("recall", "ndcg")]


def _metric_name(prefix: str, slice_: str, metric: str, k: int) -> str:
    base = f"{metric}_at_{k}"
    return prefix + (base if slice_ == "overall" else f"{slice_}/{base}")


def _resolve_runs(client, experiment: str, sweep: str | None, run_ids: list[str] | None, all_runs: bool):
    """(runs, parent run id or None)."""
    from mlflow.exceptions import MlflowException

    if run_ids:
        return [client.get_run(r) for r in run_ids], None
    if sweep:
        parent = None
        try:
            parent = client.get_run(sweep).info.run_id
        except MlflowException:
            parent = find_sweep_run(client, experiment, sweep)
        if parent is None:
            raise ConfigError(f"--sweep {sweep}: neither a run id nor a sweep name in experiment {experiment!r}")
        return child_runs(client, parent), parent
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"--experiment {experiment}: no such MLflow experiment")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=50_000)
    if not all_runs:  # a sweep's parent repeats its best child; its trials are compared with --sweep
        runs = [r for r in runs if SWEEP_TAG not in r.data.tags and PARENT_TAG not in r.data.tags]
    return runs, None


def _varying_params(runs: list) -> list[str]:
    keys = sorted({k for r in runs for k in r.data.params})
    out = []
    for k in keys:
        if k.startswith(_NOISE) or k in ("method.name", "model.name"):
            continue
        if len({r.data.params.get(k) for r in runs}) > 1:
            out.append(k)
    return out


def _versions(client, run_id: str) -> str:
    try:
        mvs = client.search_model_versions(f"run_id='{run_id}'")
    except Exception:  # noqa: BLE001 - a store without a registry: no versions to show
        return ""
    return ", ".join(f"{mv.name}/{mv.version}" for mv in sorted(mvs, key=lambda m: int(m.version)))


def _seconds(run) -> Optional[float]:
    if run.info.end_time and run.info.start_time:
        return round((run.info.end_time - run.info.start_time) / 1000.0, 1)
    return None


def _row(client, run, split: str, k: int, params: list[str]) -> dict:
    m, tags = run.data.metrics, run.data.tags
    row = {"run": run.info.run_id, "name": run.info.run_name, "method": run.data.params.get("method.name", "?"),
           "model": run.data.params.get("model.name", "?")}
    for p in params:
        row[p] = _parse(run.data.params.get(p))
    for col, (s, metric) in zip(metric_columns(k), [(s, mt) for s in SLICES for mt in ("recall", "ndcg")]):
        row[col] = m.get(_metric_name(_PREFIX[split], s, metric, k), math.nan)
    row["best epoch"] = int(m["best_epoch"]) if "best_epoch" in m else None
    row["run s"] = _seconds(run)  # start to end of the MLflow run (a sweep's best trial: with its test and model logging)
    row["state"] = tags.get(TRIAL_STATE_TAG) or run.info.status.lower()
    row["version"] = _versions(client, run.info.run_id)
    return row


def _parse(v: Optional[str]):
    if v is None:
        return None
    try:
        f = float(v)
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
    except ValueError:
        return v


def collect(client, *, experiment: str = "bridgerec", sweep: str | None = None, run_ids: list[str] | None = None,
            split: str = "valid", k: int = 20, sort: str | None = None, params: list[str] | None = None,
            all_runs: bool = False) -> Comparison:
    """The comparison table of the selected runs (see the module docstring)."""
    if split not in _PREFIX:
        raise ConfigError(f"--split {split}: expected one of {', '.join(_PREFIX)}")
    runs, parent = _resolve_runs(client, experiment, sweep, run_ids, all_runs)
    if not runs:
        raise ConfigError("no runs to compare" + (f" under sweep {sweep}" if sweep else f" in experiment {experiment!r}"))
    searched = {}
    if parent:
        searched = {k[len("space."):]: v for k, v in client.get_run(parent).data.params.items() if k.startswith("space.")}
    keys = params or list(searched) or _varying_params(runs)[:6]
    sort = sort or f"recall@{k}"
    cols = metric_columns(k)
    if sort not in cols:
        raise ConfigError(f"--sort {sort}: not a column; columns: {', '.join(cols)}")
    frame = pd.DataFrame([_row(client, r, split, k, keys) for r in runs])
    order = frame[sort].fillna(-math.inf).sort_values(ascending=False, kind="stable").index
    frame = frame.loc[order].reset_index(drop=True)
    runs = [runs[i] for i in order]
    return Comparison(frame, runs, split, k, sort, keys, parent, searched)


def format_table(c: Comparison, max_rows: int | None = None) -> str:
    """The table as fixed-width text (metrics with 4 decimals, n/a where a run lacks one)."""
    f = c.frame.copy()
    f["run"] = f["run"].str[:8]
    f = f.drop(columns=["name"])
    if max_rows and len(f) > max_rows:
        f = f.head(max_rows)
    fmt = {col: (lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}")
           for col in c.metric_cols()}
    return f.to_string(index=False, formatters=fmt, na_rep="n/a")


def write_tables(c: Comparison, out_dir: str) -> list[str]:
    """``compare.csv`` and ``compare.md`` under ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    csv, md = os.path.join(out_dir, "compare.csv"), os.path.join(out_dir, "compare.md")
    c.frame.to_csv(csv, index=False)
    f = c.frame.copy()
    f["run"] = f["run"].str[:8]
    with open(md, "w") as fh:
        fh.write(f"Sorted by {c.split} {c.sort}; metrics on the {c.split} split"
                 + (" (each run's best validation epoch)" if c.split == "valid" else "") + ".\n\n")
        fh.write(_markdown(f, set(c.metric_cols())))
    return [csv, md]


def _cell(v, metric: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if metric:
        return f"{v:.4f}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _markdown(f: pd.DataFrame, metrics: set[str]) -> str:
    head = "| " + " | ".join(f.columns) + " |"
    rule = "|" + "|".join("---:" if c in metrics or c in ("run s", "best epoch") else "---" for c in f.columns) + "|"
    rows = ["| " + " | ".join(_cell(v, c in metrics) for c, v in zip(f.columns, r)) + " |" for r in f.itertuples(index=False)]
    return "\n".join([head, rule, *rows]) + "\n"
