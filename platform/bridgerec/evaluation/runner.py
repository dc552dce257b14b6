"""Evaluating a scorer on a prepared dataset's split with the right items masked."""

from __future__ import annotations

from typing import Callable

import torch

from bridgerec._config_base import ConfigError
from bridgerec.evaluation.config import EvalConfig
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation.evaluator import EvalResult, full_ranking

__all__ = ["check_eval_ks", "evaluate_split"]


def check_eval_ks(cfg: EvalConfig, n_items: int) -> None:
    """:class:`~bridgerec.config.ConfigError` naming ``eval.ks`` when a cut-off exceeds the
    catalogue: a top-K list cannot be longer than the number of items. Call it as soon as the
    dataset is known (before training)."""
    too_large = sorted(k for k in set(cfg.ks) if k > n_items)
    if too_large:
        raise ConfigError(f"eval.ks: {too_large} larger than the catalog of {n_items} items in this dataset; "
                          f"use cut-offs <= {n_items}")


def evaluate_split(score_fn: Callable[[torch.Tensor], torch.Tensor], data: DatasetDir, cfg: EvalConfig, split: str = "test") -> EvalResult:
    """Full-ranking evaluation on ``split``: training items are masked, and for ``test`` the
    validation items too (they are known history at test time).

    ``score_fn`` scores with whatever history it was given; for a model, use
    :func:`bridgerec.workflows.evaluate_model`, which conditions sequence models on the
    history known at ``split`` time (train for valid, train + valid for test)."""
    if split not in ("valid", "test"):
        raise ValueError(f"evaluate on valid or test, not {split!r}")
    check_eval_ks(cfg, data.n_items)
    exclude = data.pairs("valid") if split == "test" else None
    with torch.no_grad():
        return full_ranking(
            score_fn, data.n_users, data.n_items, data.pairs("train"), data.pairs(split), cfg.ks, cfg.user_batch_size,
            exclude=exclude, long_tail_user_quantile=cfg.long_tail_user_quantile,
            cold_item_max_train=cfg.cold_item_max_train, head_item_fraction=cfg.head_item_fraction,
        )
