"""Offline evaluation: per-user top-K metrics, full and sampled ranking protocols, and slices.

Names resolve lazily (PEP 562): importing :mod:`bridgerec.evaluation.config` or
:mod:`bridgerec.evaluation.metrics` (as the root config does) does not import torch.
"""

from importlib import import_module
from typing import Any

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
    "METRIC_NAMES": "metrics",
    "compute_metrics": "metrics",
    "hit_rate": "metrics",
    "metric_key": "metrics",
    "mrr": "metrics",
    "ndcg": "metrics",
    "precision": "metrics",
    "recall": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"bridgerec.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'bridgerec.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
