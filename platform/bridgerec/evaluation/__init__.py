"""Offline evaluation: per-user top-K metrics, full and sampled ranking protocols, and slices;
RMSE/MAE of rating predictions beside the global-mean baseline.

Names resolve lazily (PEP 562): importing :mod:`bridgerec.evaluation.config` or
:mod:`bridgerec.evaluation.metrics` (as the root config does) does not import torch.
"""

from bridgerec._lazy import lazy_exports

_EXPORTS = {
    "EvalConfig": "config",
    "check_eval_ks": "runner",
    "evaluate_split": "runner",
    "CSR": "evaluator",
    "EvalResult": "evaluator",
    "Pairs": "evaluator",
    "SLICE_NAMES": "evaluator",
    "full_ranking": "evaluator",
    "item_group_masks": "evaluator",
    "long_tail_user_mask": "evaluator",
    "mlflow_metric_name": "evaluator",
    "popularity_scores": "evaluator",
    "sampled_ranking": "evaluator",
    "evaluate_ratings": "ratings",
    "global_mean_ratings": "ratings",
    "rating_predictions": "ratings",
    "train_mean_rating": "ratings",
    "METRIC_NAMES": "metrics",
    "RATING_METRIC_NAMES": "metrics",
    "rating_metrics": "metrics",
    "compute_metrics": "metrics",
    "hit_rate": "metrics",
    "metric_key": "metrics",
    "mrr": "metrics",
    "ndcg": "metrics",
    "precision": "metrics",
    "recall": "metrics",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
