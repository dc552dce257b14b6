"""Top-K ranking metrics computed per user from a boolean hit matrix.

Every metric takes the same inputs:

* ``hits``: bool array ``(n_users, K_max)``; ``hits[u, r]`` is True when the item shown at rank
  ``r + 1`` to user ``u`` is relevant (in the user's ground-truth set ``R_u``).
* ``n_relevant``: int array ``(n_users,)``; ``|R_u|``, the size of the ground-truth set, which may
  be larger than the number of hits (relevant items ranked below ``K_max`` or never rankable).
* ``ks``: the cut-offs; each ``K`` must satisfy ``1 <= K <= K_max``.

and returns per-user float64 arrays keyed ``"<name>@<K>"`` (e.g. ``"ndcg@10"``), so a caller can
average any subset of users (a slice) itself. Formulas follow RecBole's definitions.

Users with ``n_relevant == 0`` have undefined Recall/NDCG and must be dropped by the caller before
calling; they raise :class:`ValueError` here rather than silently producing NaN or zero.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "METRIC_NAMES",
    "metric_key",
    "recall",
    "ndcg",
    "hit_rate",
    "mrr",
    "precision",
    "compute_metrics",
    "RATING_METRIC_NAMES",
    "rating_metrics",
]

#: Metric names in the order :func:`compute_metrics` reports them.
METRIC_NAMES: tuple[str, ...] = ("recall", "ndcg", "hr", "mrr", "precision")


def metric_key(name: str, k: int) -> str:
    """The key of metric ``name`` at cut-off ``k``, e.g. ``metric_key("ndcg", 10) == "ndcg@10"``."""
    return f"{name}@{k}"


def _check(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Validate and normalise the common inputs; returns (hits bool, n_relevant int64, ks)."""
    hits = np.asarray(hits)
    n_relevant = np.asarray(n_relevant)
    if hits.ndim != 2:
        raise ValueError(f"hits must be 2-D (n_users, K_max), got shape {hits.shape}")
    if hits.dtype != np.bool_:
        if not np.isin(hits, (0, 1)).all():
            raise ValueError("hits must be boolean (or 0/1)")
        hits = hits.astype(bool)
    if n_relevant.shape != (hits.shape[0],):
        raise ValueError(f"n_relevant must have shape ({hits.shape[0]},), got {n_relevant.shape}")
    n_relevant = n_relevant.astype(np.int64)
    if (n_relevant <= 0).any():
        raise ValueError(
            f"{int((n_relevant <= 0).sum())} user(s) have n_relevant <= 0; "
            "drop users without ground-truth items before computing metrics"
        )
    if (hits.sum(axis=1) > n_relevant).any():
        raise ValueError("a user has more hits than relevant items (n_relevant too small)")
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 or k > hits.shape[1] for k in ks):
        raise ValueError(f"every K must be in [1, K_max={hits.shape[1]}], got {ks}")
    return hits, n_relevant, ks


def _cum_hits(hits: np.ndarray) -> np.ndarray:
    """(n_users, K_max) int64: number of hits within the top r+1 at column r."""
    return np.cumsum(hits, axis=1, dtype=np.int64)


def _discounts(k_max: int) -> np.ndarray:
    """(k_max,) float64: 1 / log2(r + 1) for ranks r = 1..k_max."""
    return 1.0 / np.log2(np.arange(2, k_max + 2, dtype=np.float64))


def recall(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    r"""Recall@K = |hits in top K| / |R_u|.

    :math:`\mathrm{Recall@K}(u) = \frac{\sum_{r=1}^{K} rel_r}{|R_u|}` with ``rel_r = hits[u, r-1]``.
    """
    hits, n_relevant, ks = _check(hits, n_relevant, ks)
    cum = _cum_hits(hits)
    return {metric_key("recall", k): cum[:, k - 1] / n_relevant for k in ks}


def ndcg(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    r"""NDCG@K = DCG@K / IDCG@K (binary relevance).

    * :math:`\mathrm{DCG@K}(u) = \sum_{r=1}^{K} \frac{rel_r}{\log_2(r+1)}`
    * :math:`\mathrm{IDCG@K}(u) = \sum_{r=1}^{\min(|R_u|, K)} \frac{1}{\log_2(r+1)}`, the DCG of
      an ideal list with all relevant items ranked first.

    Example: hits ``[0, 1, 0, 1]``, ``|R_u| = 3``, K = 4: DCG = 1/log2(3) + 1/log2(5),
    IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4).
    """
    hits, n_relevant, ks = _check(hits, n_relevant, ks)
    disc = _discounts(hits.shape[1])  # (K_max,)
    dcg = np.cumsum(hits * disc[None, :], axis=1)  # (n_users, K_max): DCG@(r+1) at column r
    idcg_table = np.cumsum(disc)  # (K_max,): IDCG for 1..K_max ideal positions
    out = {}
    for k in ks:
        ideal = np.minimum(n_relevant, k)  # >= 1 by _check
        out[metric_key("ndcg", k)] = dcg[:, k - 1] / idcg_table[ideal - 1]
    return out


def hit_rate(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    r"""HR@K = 1 if at least one relevant item is in the top K, else 0.

    :math:`\mathrm{HR@K}(u) = \mathbb{1}\left[\sum_{r=1}^{K} rel_r > 0\right]`.
    """
    hits, n_relevant, ks = _check(hits, n_relevant, ks)
    cum = _cum_hits(hits)
    return {metric_key("hr", k): (cum[:, k - 1] > 0).astype(np.float64) for k in ks}


def mrr(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    r"""MRR@K = 1 / rank of the first relevant item if it is within the top K, else 0.

    :math:`\mathrm{MRR@K}(u) = \frac{1}{\mathrm{rank}_u}` where
    :math:`\mathrm{rank}_u = \min\{r \le K : rel_r = 1\}`; 0 when no such r exists.
    """
    hits, n_relevant, ks = _check(hits, n_relevant, ks)
    any_hit = hits.any(axis=1)
    first_rank = np.where(any_hit, hits.argmax(axis=1) + 1, np.iinfo(np.int64).max)  # (n_users,)
    out = {}
    for k in ks:
        within = first_rank <= k
        out[metric_key("mrr", k)] = np.where(within, 1.0 / np.where(within, first_rank, 1), 0.0)
    return out


def precision(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    r"""Precision@K = |hits in top K| / K.

    :math:`\mathrm{Precision@K}(u) = \frac{1}{K}\sum_{r=1}^{K} rel_r`; the denominator is K even
    when fewer than K items could be ranked.
    """
    hits, n_relevant, ks = _check(hits, n_relevant, ks)
    cum = _cum_hits(hits)
    return {metric_key("precision", k): cum[:, k - 1] / float(k) for k in ks}


_METRIC_FNS: Mapping[str, Callable[[np.ndarray, np.ndarray, Sequence[int]], dict[str, np.ndarray]]] = {
    "recall": recall,
    "ndcg": ndcg,
    "hr": hit_rate,
    "mrr": mrr,
    "precision": precision,
}


def compute_metrics(
    hits: np.ndarray,
    n_relevant: np.ndarray,
    ks: Sequence[int],
    names: Sequence[str] = METRIC_NAMES,
) -> dict[str, np.ndarray]:
    """All requested metrics at all cut-offs: ``{"recall@5": (n_users,), ...}``.

    Keys are ordered by metric (as in ``names``) then by K ascending. Raises :class:`ValueError`
    for an unknown metric name or invalid inputs (see the module docstring).
    """
    unknown = [n for n in names if n not in _METRIC_FNS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(METRIC_NAMES)}")
    ks = sorted({int(k) for k in ks})
    out: dict[str, np.ndarray] = {}
    for name in names:
        out.update(_METRIC_FNS[name](hits, n_relevant, ks))
    return out


#: Rating-prediction metrics (lower is better), in the order :func:`rating_metrics` reports them.
RATING_METRIC_NAMES: tuple[str, ...] = ("rmse", "mae")


def rating_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    r"""RMSE and MAE of predicted against true ratings (1-D arrays of the same length, >= 1 pair).

    :math:`\mathrm{RMSE} = \sqrt{\frac{1}{n}\sum_j (\hat r_j - r_j)^2}`,
    :math:`\mathrm{MAE} = \frac{1}{n}\sum_j |\hat r_j - r_j|`.
    """
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.ndim != 1 or pred.shape != true.shape:
        raise ValueError(f"pred and true must be 1-D of the same length, got {pred.shape} and {true.shape}")
    if not len(pred):
        raise ValueError("no (prediction, rating) pairs to evaluate")
    if not (np.isfinite(pred).all() and np.isfinite(true).all()):
        raise ValueError("pred and true must be finite")
    err = pred - true
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}
