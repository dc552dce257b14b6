"""The plots of `bridgerec compare` (matplotlib, PNG): metric vs each swept parameter, per-slice
bars per run, and learning curves (the validation metric per epoch).

Each PNG records what it draws in its text chunks: ``Title`` and ``Series`` (a JSON list of the
legend labels per panel, counted from the drawn artists), so a reader or a test can check a file
without looking at the pixels.
"""

from __future__ import annotations

import json
import math
import os

from bridgerec.tracking.compare import SLICES, Comparison, metric_columns

__all__ = ["plot_params", "plot_slices", "plot_curves", "plot_all"]

_SLICE_TITLE = {"overall": "all users", "long_tail_users": "long-tail users", "head_items": "head items",
                "tail_items": "tail items", "cold_items": "cold items"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str, title: str) -> str:
    series = []
    for ax in fig.axes:
        handles, labels = ax.get_legend_handles_labels()
        series.append(labels)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Title": title, "Series": json.dumps(series)})
    _pyplot().close(fig)
    return path


def _label(c: Comparison, i: int) -> str:
    """``rlmrec-con/lightgcn align=0.12 lr=0.004 (75a70f)``: method, model, up to 3 key parameters, run id."""
    row = c.frame.iloc[i]
    params = " ".join(f"{p.rsplit('.', 1)[-1]}={row[p]:.3g}" if isinstance(row[p], float) else f"{p.rsplit('.', 1)[-1]}={row[p]}"
                      for p in c.param_cols[:3])
    return f"{row['method']}/{row['model']} {params} ({row['run'][:6]})".replace("  ", " ")


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None)


def plot_params(c: Comparison, path: str) -> str | None:
    """The sort metric against each key parameter (one panel each; one series per method; log x for
    parameters searched on a log scale). None when the comparison has no key parameters."""
    if not c.param_cols:
        return None
    plt = _pyplot()
    n = len(c.param_cols)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, param in zip(axes.flat, c.param_cols):
        xs = c.frame[param].tolist()
        numeric = _numeric(xs)
        categories = sorted({str(x) for x in xs}) if not numeric else []
        for method, group in c.frame.groupby("method", sort=True):
            x = group[param].tolist() if numeric else [categories.index(str(v)) for v in group[param]]
            ax.scatter(x, group[c.sort], label=method, alpha=0.8, s=28)
        if not numeric:
            ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
        elif c.searched.get(param, "").startswith("loguniform"):
            ax.set_xscale("log")
            # a range under a decade gets labelled minor ticks that overlap ("2×10⁻² 3×10⁻² ..."): plain labels, few of them
            from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(param)
        ax.set_ylabel(f"{c.split} {c.sort}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.remove()
    fig.suptitle(f"{c.split} {c.sort} vs key parameters ({len(c.frame)} runs)")
    fig.tight_layout()
    return _save(fig, path, f"{c.split} {c.sort} vs key parameters")


def plot_slices(c: Comparison, path: str, top: int = 6) -> str:
    """Recall@K per slice (overall, long-tail users, head/tail items, cold items), one bar series
    per run for the ``top`` runs of the table."""
    import numpy as np

    plt = _pyplot()
    shown = list(range(min(top, len(c.frame))))
    width = 0.8 / max(len(shown), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(SLICES) + 0.4 * len(shown)), 4.2))
    x = np.arange(len(SLICES))
    recall_cols = [col for col in metric_columns(c.k) if col.endswith(f"recall@{c.k}")]
    for j, i in enumerate(shown):
        values = [float(c.frame.iloc[i][col]) for col in recall_cols]  # NaN (not logged) draws no bar
        ax.bar(x + (j - (len(shown) - 1) / 2) * width, values, width, label=_label(c, i))
    ax.set_xticks(x, [_SLICE_TITLE[s] for s in SLICES])
    ax.set_ylabel(f"{c.split} recall@{c.k}")
    ax.set_title(f"{c.split} recall@{c.k} per slice (top {len(shown)} by {c.sort}; no bar: not logged)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    return _save(fig, path, f"{c.split} recall@{c.k} per slice")


def plot_curves(client, c: Comparison, metric_key: str, path: str, top: int = 6) -> str:
    """The validation ``metric_key`` (e.g. ``valid_recall_at_20``) per epoch of the ``top`` runs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i in range(min(top, len(c.frame))):
        hist = sorted(client.get_metric_history(c.runs[i].info.run_id, metric_key), key=lambda m: m.step)
        if hist:
            ax.plot([m.step for m in hist], [m.value for m in hist], marker="o", ms=3, label=_label(c, i))
    from matplotlib.ticker import MaxNLocator

    label = metric_key.replace("_at_", "@").replace("_", " ", 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(f"learning curves: {label} per epoch (top {min(top, len(c.frame))} by {c.split} {c.sort})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, f"learning curves of {metric_key}")


def plot_all(client, c: Comparison, out_dir: str, top: int = 6) -> list[str]:
    """Every plot of the comparison under ``out_dir``; returns the written paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [plot_params(c, os.path.join(out_dir, "params.png")),
             plot_slices(c, os.path.join(out_dir, "slices.png"), top),
             plot_curves(client, c, f"valid_recall_at_{c.k}", os.path.join(out_dir, "curves.png"), top)]
    return [p for p in paths if p]
