"""Evaluating a scorer on a prepared dataset's split with the right items masked."""

from __future__ import annotations

from typing import Callable

import torch

from bridgerec.config import EvalConfig
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation.evaluator import EvalResult, full_ranking

__all__ = ["evaluate_split"]


def evaluate_split(score_fn: Callable[[torch.Tensor], torch.Tensor], data: DatasetDir, cfg: EvalConfig, split: str = "test") -> EvalResult:
    """Full-ranking evaluation on ``split``: training items are masked, and for ``test`` the
    validation items too (they are known history at test time)."""
    if split not in ("valid", "test"):
        raise ValueError(f"evaluate on valid or test, not {split!r}")
    exclude = data.pairs("valid") if split == "test" else None
    with torch.no_grad():
        return full_ranking(
            score_fn, data.n_users, data.n_items, data.pairs("train"), data.pairs(split), cfg.ks, cfg.user_batch_size,
            exclude=exclude, long_tail_user_quantile=cfg.long_tail_user_quantile,
            cold_item_max_train=cfg.cold_item_max_train, head_item_fraction=cfg.head_item_fraction,
        )
