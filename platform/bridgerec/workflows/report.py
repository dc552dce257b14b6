"""Plain-text result tables printed at the end of jobs."""

from __future__ import annotations

from bridgerec.evaluation import EvalResult

__all__ = ["results_table", "results_block", "run_footer", "rating_table"]


def results_table(rows: dict[str, EvalResult], ks: list[int]) -> str:
    """One line per model: Recall/NDCG@K overall and Recall@max(K) on long-tail users."""
    k_max = max(ks)
    cols = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
    w = max(14, *(len(n) + 2 for n in rows))
    head = f"{'model':<{w}}" + "".join(f"{c:>11}" for c in cols) + f"{'tail-user R@' + str(k_max):>16}{'cold-item R@' + str(k_max):>16}"
    lines = [head, "-" * len(head)]
    for name, res in rows.items():
        vals = "".join(f"{res.overall.get(c, float('nan')):>11.4f}" for c in cols)
        tail = res.slices.get("long_tail_users", {}).get(f"recall@{k_max}", float("nan"))
        cold = res.slices.get("cold_items", {}).get(f"recall@{k_max}", float("nan"))
        lines.append(f"{name:<{w}}{vals}{tail:>16.4f}{cold:>16.4f}")
    return "\n".join(lines)


def rating_table(rows: dict[str, dict[str, float]], split: str = "test") -> list[str]:
    """Rating prediction lines under the ranking table: one row per model (e.g. the global-mean
    baseline and the rating model) with RMSE and MAE on ``split``."""
    w = max(14, *(len(n) + 2 for n in rows))
    head = f"{'rating (' + split + ')':<{w}}{'RMSE':>11}{'MAE':>11}"
    return [head, "-" * len(head), *(f"{name:<{w}}{m['rmse']:>11.4f}{m['mae']:>11.4f}" for name, m in rows.items())]


def results_block(title: str, baseline: EvalResult, name: str, result: EvalResult, ks: list[int], footer: list[str],
                  extra: dict[str, EvalResult] | None = None) -> str:
    """What train, quickstart and evaluate end with: a blank line, ``title``, the model beside
    popularity (:func:`results_table`; ``extra`` rows after popularity), a blank line, then
    ``footer`` (:func:`run_footer`)."""
    return "\n".join(["", title, results_table({"popularity": baseline, **(extra or {}), name: result}, ks), "", *footer])


def run_footer(run_id: str | None, experiment: str, ui: str | None, seconds: float | None = None,
               log_file: str | None = None) -> list[str]:
    """The lines under a results table: time, MLflow run and how to open the UI, the log file."""
    lines = [f"finished in {seconds:.0f} s"] if seconds is not None else []
    if run_id:
        lines.append(f"MLflow run: {run_id} (experiment {experiment!r})")
        if ui:
            lines.append(f"open the MLflow UI: {ui}")
    if log_file:
        lines.append(f"full log: {log_file}")
    return lines
