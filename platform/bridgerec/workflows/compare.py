"""`bridgerec compare` and the results block of `bridgerec tune`: the comparison table printed and
written as CSV/Markdown, its plots as PNGs, both logged to the sweep's parent run when there is one."""

from __future__ import annotations

import os

from bridgerec import console
from bridgerec.tracking import ui_command
from bridgerec.tracking.compare import Comparison, collect, format_table, write_tables
from bridgerec.tracking.plots import plot_all

__all__ = ["compare_and_report", "sweep_report"]


def compare_and_report(tracking_uri: str, out_dir: str, *, experiment: str = "bridgerec", sweep: str | None = None,
                       run_ids: list[str] | None = None, split: str = "valid", k: int = 20, sort: str | None = None,
                       params: list[str] | None = None, top: int = 6, all_runs: bool = False,
                       print_rows: int | None = 30) -> tuple[Comparison, list[str]]:
    """Collect, write, plot, log (to the parent run of a sweep) and print; returns the comparison
    and the written files."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    c = collect(client, experiment=experiment, sweep=sweep, run_ids=run_ids, split=split, k=k, sort=sort,
                params=params, all_runs=all_runs)
    files = write_tables(c, out_dir) + plot_all(client, c, out_dir, top)
    if c.parent_run_id:
        for f in files:
            client.log_artifact(c.parent_run_id, f, "compare")
    what = f"sweep {sweep}" if sweep else (f"{len(run_ids)} run(s)" if run_ids else f"experiment {experiment}")
    shown = f" (first {print_rows} of {len(c.frame)})" if print_rows and len(c.frame) > print_rows else ""
    lines = [f"bridgerec compare: {what}, {len(c.frame)} run(s), {split} split, sorted by {c.sort}{shown}", "",
             format_table(c, print_rows), "", *(f"  {f}" for f in files)]
    if c.parent_run_id:
        lines.append(f"  (also logged to the sweep's run {c.parent_run_id} under compare/)")
    lines += [f"MLflow UI: {ui_command(tracking_uri)}", f"full log: {console.log_path()}"]
    console.result("\n".join(lines))
    return c, files


def sweep_report(summary, cfg, space: str, out_dir: str) -> list[str]:
    """`bridgerec tune`'s results: the trials' table and plots (as `compare --sweep`), then the best
    trial against popularity on test, the parent run and how to resume."""
    from bridgerec.workflows.report import results_block, run_footer

    _, files = compare_and_report(summary.tracking_uri, out_dir, experiment=cfg.tracking.experiment,
                                  sweep=summary.parent_run_id, k=int(cfg.train.select_metric.split("@")[1]), print_rows=20)
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.best_params.items())
    states = ", ".join(f"{n} {s}" for s, n in sorted(summary.states.items()))
    title = (f"bridgerec tune: sweep {summary.name} ({states}); best trial {summary.best_trial}: {params}; "
             f"{summary.metric} {summary.best_valid:.4f}; its test split:")
    footer = run_footer(summary.parent_run_id, cfg.tracking.experiment, ui_command(summary.tracking_uri), summary.seconds,
                        console.log_path())
    footer = [f"best model: {summary.model_uri}", f"resume or extend: bridgerec tune --config ... --space {space} "
              f"--resume {summary.name}", f"compare again: bridgerec compare --sweep {summary.name}", *footer]
    console.result(results_block(title, summary.baseline, f"{cfg.method.name}", summary.test, cfg.eval.ks, footer))
    return files


def default_out_dir(work_dir: str, what: str) -> str:
    return os.path.join(work_dir, "compare", what.replace("/", "_"))
