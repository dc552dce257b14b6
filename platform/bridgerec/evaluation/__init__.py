"""Offline evaluation: per-user top-K metrics, full and sampled ranking protocols, and slices."""

from bridgerec.evaluation.evaluator import (
    CSR,
    SLICE_NAMES,
    EvalResult,
    Pairs,
    full_ranking,
    item_group_masks,
    long_tail_user_mask,
    mlflow_metric_name,
    popularity_scores,
    sampled_ranking,
)
from bridgerec.evaluation.runner import check_eval_ks, evaluate_split
from bridgerec.evaluation.metrics import (
    METRIC_NAMES,
    compute_metrics,
    hit_rate,
    metric_key,
    mrr,
    ndcg,
    precision,
    recall,
)

__all__ = [
    "check_eval_ks",
    "evaluate_split",
    "CSR",
    "EvalResult",
    "METRIC_NAMES",
    "Pairs",
    "SLICE_NAMES",
    "compute_metrics",
    "full_ranking",
    "hit_rate",
    "item_group_masks",
    "long_tail_user_mask",
    "metric_key",
    "mlflow_metric_name",
    "mrr",
    "ndcg",
    "popularity_scores",
    "precision",
    "recall",
    "sampled_ranking",
]
