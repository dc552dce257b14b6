"""Rating prediction on a prepared dataset's split: RMSE/MAE of a model's predicted ratings on the
split's ``(uid, iid, rating)`` triples, and the global-mean baseline (the train split's mean
rating predicted for every pair) to compare it with."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation.metrics import rating_metrics

__all__ = ["rating_triples", "rating_predictions", "evaluate_ratings", "global_mean_ratings", "train_mean_rating"]

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``predict(uids (B,), iids (B,)) -> (B,)`` predicted ratings (e.g. a rating model's ``predict_ratings``)."""


def rating_triples(data: DatasetDir, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uids, iids, ratings) of every event of ``split``: int64, int64, float64."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"evaluate ratings on train, valid or test, not {split!r}")
    f = data.frame(split, ["uid", "iid", "rating"])
    return f["uid"].to_numpy("int64"), f["iid"].to_numpy("int64"), f["rating"].to_numpy("float64")


def rating_predictions(predict: Predict, data: DatasetDir, split: str = "test",
                       batch_size: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) float64 ratings of every event of ``split``, predicted ``batch_size`` at a time."""
    uids, iids, true = rating_triples(data, split)
    out = np.empty(len(true), dtype=np.float64)
    with torch.no_grad():
        for s in range(0, len(true), batch_size):
            u, i = torch.from_numpy(uids[s:s + batch_size]), torch.from_numpy(iids[s:s + batch_size])
            out[s:s + batch_size] = predict(u, i).detach().float().cpu().numpy()
    return out, true


def evaluate_ratings(predict: Predict, data: DatasetDir, split: str = "test", batch_size: int = 65_536) -> dict[str, float]:
    """``{"rmse", "mae"}`` of ``predict`` on ``split`` (:func:`rating_predictions`)."""
    return rating_metrics(*rating_predictions(predict, data, split, batch_size))


def train_mean_rating(data: DatasetDir) -> float:
    """The train split's mean rating."""
    return float(rating_triples(data, "train")[2].mean())


def global_mean_ratings(data: DatasetDir, split: str = "test") -> dict[str, float]:
    """The global-mean baseline: ``{"rmse", "mae"}`` of predicting the train split's mean
    rating (:func:`train_mean_rating`) for every event of ``split``."""
    true = rating_triples(data, split)[2]
    return rating_metrics(np.full(len(true), train_mean_rating(data)), true)
