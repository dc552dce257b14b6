"""Offline top-K evaluation: full ranking over the catalogue, sampled ranking, and slices.

Interactions are passed as ``(uids, iids)`` pairs of equal-length int64 numpy arrays with dense
ids (users in ``[0, n_users)``, items in ``[0, n_items)``).

Two protocols:

* :func:`full_ranking` ranks every item for every evaluated user (a user with >= 1 ground-truth
  item). ``score_fn`` is called on batches of ``user_batch_size`` users, so at most
  ``user_batch_size x n_items`` scores are alive at once. Items the user has in ``train`` (and in
  ``exclude``, e.g. validation items while testing) are set to ``-inf`` before the top-K; ties are
  broken by the lower item id. Positions filled by ``-inf`` items (a user with fewer than K
  rankable items) never count as hits. No cut-off may exceed ``n_items`` (ValueError). Ground-truth items that are also masked stay in
  ``|R_u|``: they cannot be retrieved, which is charged to the model as in RecBole.
* :func:`sampled_ranking` ranks each (user, ground-truth item) pair against ``num_negatives``
  sampled items the user never interacted with (for expensive scorers such as LLM rankers).
  Rows are averaged per user first, so every user weighs the same in both protocols.

Slices (all means of per-user metric values; see :class:`EvalResult`):

* ``long_tail_users`` / ``head_users``: evaluated users whose number of training interactions
  (rows of ``train``, repeats included) is ``<=`` / ``>`` the ``long_tail_user_quantile``
  quantile (``numpy.quantile``, linear interpolation) of that count over the evaluated users.
* ``cold_items``, ``head_items``, ``tail_items``: item groups from training interaction counts
  (rows of ``train``): cold = count ``<= cold_item_max_train`` (0 included); head = the
  ``floor(head_item_fraction * n_items)`` most-interacted items (ties by lower item id) that
  have at least one training interaction; tail = every other item. For a group, each user's
  metrics are recomputed with the ground truth restricted to the group's items: in full
  ranking the ranked list is unchanged, only hits on group items count and
  ``|R_u| = |R_u ∩ group|``; in sampled ranking only the rows whose positive is in the group
  are averaged. Users with no ground-truth item in the group are left out of that slice.

A slice with no users is omitted from :attr:`EvalResult.slices` (its ``n_users`` entry is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from bridgerec._csr import CSR
from bridgerec._csr import as_ids as _as_ids
from bridgerec._csr import contains as _contains
from bridgerec._csr import item_counts
from bridgerec.evaluation.metrics import compute_metrics

__all__ = [
    "Pairs",
    "CSR",
    "EvalResult",
    "SLICE_NAMES",
    "full_ranking",
    "sampled_ranking",
    "popularity_scores",
    "long_tail_user_mask",
    "item_group_masks",
    "mlflow_metric_name",
]

#: ``(uids, iids)``: two equal-length 1-D integer arrays, one row per interaction.
Pairs = tuple[np.ndarray, np.ndarray]

#: Slice names, in the order they appear in :attr:`EvalResult.slices`.
SLICE_NAMES: tuple[str, ...] = ("long_tail_users", "head_users", "cold_items", "head_items", "tail_items")

ScoreFn = Callable[[torch.Tensor], Any]
_REJECTION_ROUNDS = 32  # vectorised resampling rounds before the exact per-row fallback
PairScoreFn = Callable[[torch.Tensor, torch.Tensor], Any]


# --------------------------------------------------------------------------------------------
# Inputs and the user -> items CSR
# --------------------------------------------------------------------------------------------


def _check_pairs(pairs: Pairs, n_users: Optional[int], n_items: int, name: str) -> Pairs:
    """Validate ``(uids, iids)``: equal length, integer, ids within range."""
    if len(pairs) != 2:
        raise ValueError(f"{name} must be a (uids, iids) pair of arrays")
    uids, iids = _as_ids(pairs[0], f"{name} uids"), _as_ids(pairs[1], f"{name} iids")
    if len(uids) != len(iids):
        raise ValueError(f"{name}: uids has {len(uids)} rows but iids has {len(iids)}")
    if uids.size and (uids.min() < 0 or (n_users is not None and uids.max() >= n_users)):
        raise ValueError(f"{name}: user ids must lie in [0, {n_users})")
    if iids.size and (iids.min() < 0 or iids.max() >= n_items):
        raise ValueError(f"{name}: item ids must lie in [0, {n_items})")
    return uids, iids


def _concat(*pairs: Optional[Pairs]) -> Pairs:
    """Row-wise concatenation of several (uids, iids) pairs, skipping None."""
    present = [p for p in pairs if p is not None]
    return (
        np.concatenate([p[0] for p in present]).astype(np.int64, copy=False),
        np.concatenate([p[1] for p in present]).astype(np.int64, copy=False),
    )


def _check_ks(ks: Sequence[int], n_items: Optional[int] = None) -> list[int]:
    """Sorted distinct cut-offs; each must be >= 1 and, with ``n_items``, at most the catalogue."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be a non-empty list of positive cut-offs, got {ks}")
    if n_items is not None and ks[-1] > n_items:
        raise ValueError(f"ks: cut-off K={ks[-1]} is larger than the catalogue of {n_items} items; "
                         f"set eval.ks to values <= {n_items}")
    return ks


# --------------------------------------------------------------------------------------------
# Slices
# --------------------------------------------------------------------------------------------


def long_tail_user_mask(user_train_counts: np.ndarray, quantile: float = 0.2) -> np.ndarray:
    """Bool mask: users whose training count is ``<=`` the ``quantile`` quantile of the counts.

    The quantile is taken with :func:`numpy.quantile` (linear interpolation) over the given
    array, i.e. over the evaluated users. With ties more than ``quantile`` of users can qualify.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"long_tail_user_quantile must be in [0, 1], got {quantile}")
    counts = np.asarray(user_train_counts, dtype=np.float64)
    if counts.size == 0:
        return np.zeros(0, dtype=bool)
    return counts <= np.quantile(counts, quantile)


def item_group_masks(
    item_train_counts: np.ndarray,
    cold_item_max_train: int = 5,
    head_item_fraction: float = 0.2,
) -> dict[str, np.ndarray]:
    """``{"cold_items", "head_items", "tail_items"}`` -> (n_items,) bool masks.

    * cold: ``count <= cold_item_max_train`` (never-seen items included).
    * head: the ``floor(head_item_fraction * n_items)`` items with the most training
      interactions (ties broken by lower item id), restricted to items with count >= 1.
    * tail: not head. Cold and head/tail overlap freely (cold items are usually tail).
    """
    if not 0.0 <= head_item_fraction <= 1.0:
        raise ValueError(f"head_item_fraction must be in [0, 1], got {head_item_fraction}")
    counts = np.asarray(item_train_counts, dtype=np.int64)
    n_items = len(counts)
    n_head = int(math.floor(head_item_fraction * n_items + 1e-9))  # epsilon: 0.2 * 10 -> 2
    order = np.lexsort((np.arange(n_items), -counts))  # count descending, then id ascending
    head = np.zeros(n_items, dtype=bool)
    head[order[:n_head]] = True
    head &= counts > 0
    return {"cold_items": counts <= cold_item_max_train, "head_items": head, "tail_items": ~head}


def _means(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v.mean()) for k, v in per_user.items()}


def mlflow_metric_name(key: str) -> str:
    """``"long_tail_users/recall@10"`` -> ``"long_tail_users/recall_at_10"``.

    MLflow metric names may only contain alphanumerics, ``_ - . / :`` and spaces (``@`` is
    rejected; see ``mlflow/utils/validation.py``), so ``@`` becomes ``_at_`` (MLflow's own
    autologging uses the same spelling).
    """
    return key.replace("@", "_at_")


@dataclass
class EvalResult:
    """Means of per-user metrics, overall and per slice.

    * ``overall``: ``{"recall@10": mean over all evaluated users, ...}``.
    * ``slices``: ``{slice name: {"recall@10": mean over that slice's users, ...}}`` for the
      non-empty slices among :data:`SLICE_NAMES` (see the module docstring for how each is built).
    * ``n_users``: ``{"all": n, slice name: users in that slice}`` (0 for empty slices).
    * ``users`` / ``per_user``: the evaluated user ids (sorted) and the aligned per-user metric
      arrays behind ``overall`` (e.g. for paired significance tests); not shown in ``repr``.
    """

    overall: dict[str, float]
    slices: dict[str, dict[str, float]]
    n_users: dict[str, int]
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    per_user: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def flat(self, include_counts: bool = False) -> dict[str, float]:
        """One flat dict for ``mlflow.log_metrics``.

        ``{"recall_at_10": ..., "long_tail_users/recall_at_10": ...}``; with ``include_counts``
        also ``{"n_users/all": ..., "n_users/cold_items": ...}``. ``@`` is spelled ``_at_``
        because MLflow rejects it (:func:`mlflow_metric_name`).
        """
        out = {mlflow_metric_name(k): v for k, v in self.overall.items()}
        for name, metrics in self.slices.items():
            out.update({mlflow_metric_name(f"{name}/{k}"): v for k, v in metrics.items()})
        if include_counts:
            out.update({f"n_users/{name}": float(n) for name, n in self.n_users.items()})
        return out


@dataclass(frozen=True)
class _SliceConfig:
    long_tail_user_quantile: float
    cold_item_max_train: int
    head_item_fraction: float


def _assemble(
    users: np.ndarray,
    per_user: dict[str, np.ndarray],
    user_train_counts: np.ndarray,
    item_slices: dict[str, dict[str, np.ndarray]],
    cfg: _SliceConfig,
) -> EvalResult:
    """Build the :class:`EvalResult`; ``item_slices`` holds per-user arrays of each item group."""
    slices: dict[str, dict[str, float]] = {}
    n_users: dict[str, int] = {"all": len(users)}
    long_tail = long_tail_user_mask(user_train_counts, cfg.long_tail_user_quantile)
    user_side = {"long_tail_users": long_tail, "head_users": ~long_tail}
    for name, mask in user_side.items():
        n_users[name] = int(mask.sum())
        if n_users[name]:
            slices[name] = _means({k: v[mask] for k, v in per_user.items()})
    for name, group_per_user in item_slices.items():
        n_users[name] = len(next(iter(group_per_user.values()), ()))
        if n_users[name]:
            slices[name] = _means(group_per_user)
    return EvalResult(overall=_means(per_user), slices=slices, n_users=n_users, users=users, per_user=per_user)


# --------------------------------------------------------------------------------------------
# Full ranking
# --------------------------------------------------------------------------------------------


def popularity_scores(train: Pairs, n_items: int) -> torch.Tensor:
    """(n_items,) float32 training interaction counts, a popularity baseline's scores.

    ``full_ranking(lambda u: pop.expand(len(u), -1), ...)`` evaluates it (the expanded view is
    never written to).
    """
    _, iids = _check_pairs(train, None, n_items, "train")
    return torch.from_numpy(item_counts(iids, n_items).astype(np.float32))


def _topk_ties_by_id(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row, ordered by score descending, equal scores by lower column id.

    ``torch.topk`` gives no tie order, so only its k-th value is used: every column above it
    is taken, plus the lowest-id columns equal to it until the row holds exactly k.
    Returns ``(ids, values)``, both (B, k).
    """
    b, n = scores.shape
    kth = torch.topk(scores, k, dim=1).values[:, k - 1 : k]  # (B, 1)
    above = scores > kth  # (B, n)
    at = scores == kth  # (B, n)
    need = k - above.sum(dim=1)  # (B,) >= 1 columns still to take from the tied ones
    ambiguous = at.sum(dim=1) > need  # rows where the boundary tie must be cut
    if bool(ambiguous.any()):
        sub = at[ambiguous]  # (A, n)
        rank_in_tie = torch.cumsum(sub, dim=1, dtype=torch.int32)  # (A, n)
        at = at.clone()
        at[ambiguous] = sub & (rank_in_tie <= need[ambiguous, None])
    chosen = above | at  # (B, n), exactly k per row
    flat = torch.sort(chosen.reshape(-1).nonzero().squeeze(1)).values  # (B * k,) row-major
    ids = (flat % n).reshape(b, k)  # (B, k) ascending column ids per row
    vals = scores.gather(1, ids)  # (B, k)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices  # stable: id order kept
    return ids.gather(1, order), vals.gather(1, order)


def _rank_user_batch(
    score_fn: ScoreFn, batch_users: np.ndarray, mask: CSR, n_items: int, k: int
) -> np.ndarray:
    """(B, k) top item ids for the batch; -1 where the position holds a -inf (masked) item."""
    with torch.no_grad():
        scores = torch.as_tensor(score_fn(torch.from_numpy(batch_users)))
    if tuple(scores.shape) != (len(batch_users), n_items):
        raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected ({len(batch_users)}, {n_items})")
    if not scores.is_floating_point():
        scores = scores.to(torch.float32)
    if bool(torch.isnan(scores).any()):
        raise ValueError("score_fn returned NaN scores")
    pos, cols = mask.gather(batch_users)
    if pos.size:
        index = (torch.from_numpy(pos).to(scores.device), torch.from_numpy(cols).to(scores.device))
        neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
        scores = scores.index_put(index, neg_inf)  # out of place: score_fn's tensor is untouched
    ids, vals = _topk_ties_by_id(scores, k)
    ids = torch.where(torch.isneginf(vals), torch.full_like(ids, -1), ids)
    return ids.cpu().numpy()


def _full_item_slices(
    users: np.ndarray, top: np.ndarray, hits: np.ndarray, truth: CSR, groups: dict[str, np.ndarray], ks: list[int]
) -> dict[str, dict[str, np.ndarray]]:
    """Per-user metrics with the ground truth restricted to each item group."""
    truth_rows = truth.entry_rows()
    out = {}
    for name, in_group in groups.items():
        group_hits = hits & in_group[np.maximum(top, 0)]  # (n_eval, K) -1 slots are never hits
        n_rel = np.bincount(truth_rows[in_group[truth.indices]], minlength=truth.n_rows)[users]
        keep = n_rel > 0
        out[name] = compute_metrics(group_hits[keep], n_rel[keep], ks) if keep.any() else {}
    return out


def full_ranking(
    score_fn: ScoreFn,
    n_users: int,
    n_items: int,
    train: Pairs,
    truth: Pairs,
    ks: Sequence[int],
    user_batch_size: int = 1024,
    exclude: Optional[Pairs] = None,
    *,
    long_tail_user_quantile: float = 0.2,
    cold_item_max_train: int = 5,
    head_item_fraction: float = 0.2,
) -> EvalResult:
    """Rank the whole catalogue for every user with >= 1 ``truth`` item.

    ``score_fn(users: LongTensor (B,), on CPU) -> (B, n_items)`` float scores (tensor or array,
    any device; masking and top-K run on that device), called under ``torch.no_grad`` on consecutive batches of at most
    ``user_batch_size`` evaluated users (ascending ids). ``train`` and ``exclude`` items get
    ``-inf`` before the top-``max(ks)``; ties go to the lower item id, so the result does not
    depend on ``user_batch_size`` provided ``score_fn``'s rows do not either. NaN scores raise,
    and so does a cut-off larger than the catalogue (``max(ks) > n_items``).
    """
    ks = _check_ks(ks, n_items)
    if user_batch_size < 1:
        raise ValueError("user_batch_size must be >= 1")
    train = _check_pairs(train, n_users, n_items, "train")
    truth = _check_pairs(truth, n_users, n_items, "truth")
    truth_csr = CSR.from_pairs(*truth, n_users)
    masked = train if exclude is None else _concat(train, _check_pairs(exclude, n_users, n_items, "exclude"))
    mask_csr = CSR.from_pairs(*masked, n_users)
    users = np.flatnonzero(truth_csr.counts() > 0)
    if users.size == 0:
        raise ValueError("no user has a ground-truth item")

    top = np.concatenate(
        [
            _rank_user_batch(score_fn, users[s : s + user_batch_size], mask_csr, n_items, ks[-1])
            for s in range(0, len(users), user_batch_size)
        ]
    )  # (n_eval, max(ks)), -1 = a masked (empty) position
    hits = _contains(truth_csr.keys(n_items), users[:, None] * n_items + top) & (top >= 0)
    per_user = compute_metrics(hits, truth_csr.counts()[users], ks)

    cfg = _SliceConfig(long_tail_user_quantile, cold_item_max_train, head_item_fraction)
    groups = item_group_masks(item_counts(train[1], n_items), cold_item_max_train, head_item_fraction)
    item_slices = _full_item_slices(users, top, hits, truth_csr, groups, ks)
    user_counts = np.bincount(train[0], minlength=n_users)[users]
    return _assemble(users, per_user, user_counts, item_slices, cfg)


# --------------------------------------------------------------------------------------------
# Sampled ranking
# --------------------------------------------------------------------------------------------


def _duplicate_mask(cand: np.ndarray) -> np.ndarray:
    """(R, N) bool: True at every repeat of a value earlier in the same row."""
    order = np.argsort(cand, axis=1, kind="stable")  # (R, N)
    srt = np.take_along_axis(cand, order, axis=1)
    dup_sorted = np.zeros(cand.shape, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]  # stable: the first occurrence is kept
    dup = np.zeros(cand.shape, dtype=bool)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup


def _sample_negatives(
    interacted: CSR, row_users: np.ndarray, n_items: int, num_negatives: int, rng: np.random.Generator
) -> np.ndarray:
    """(R, N) distinct items per row, none of them in the row user's ``interacted`` items.

    Vectorised rejection sampling; rows still incomplete after a few rounds (users who
    interacted with most of the catalogue) are finished exactly from their complement.
    """
    n_rows = len(row_users)
    if (n_items - interacted.counts()[row_users] < num_negatives).any():
        raise ValueError(f"a user has fewer than num_negatives={num_negatives} non-interacted items")
    keys = interacted.keys(n_items)
    neg = rng.integers(0, n_items, size=(n_rows, num_negatives), dtype=np.int64)  # (R, N)
    todo = np.arange(n_rows)  # rows that may still hold an invalid draw
    for _ in range(_REJECTION_ROUNDS):
        sub = neg[todo]  # (T, N)
        bad = _contains(keys, row_users[todo, None] * n_items + sub) | _duplicate_mask(sub)
        busy = bad.any(axis=1)
        todo, bad, sub = todo[busy], bad[busy], sub[busy]
        if todo.size == 0:
            break
        sub[bad] = rng.integers(0, n_items, size=int(bad.sum()), dtype=np.int64)
        neg[todo] = sub
    for r in todo:  # exact fallback: keep the valid draws, fill up from the complement
        row = neg[r]
        ok = ~(np.isin(row, interacted.row(row_users[r])) | _duplicate_mask(row[None])[0])
        pool = np.setdiff1d(np.arange(n_items), np.concatenate([interacted.row(row_users[r]), row[ok]]))
        row[~ok] = rng.choice(pool, size=int((~ok).sum()), replace=False)
    return neg


def _positive_ranks(pair_score_fn: PairScoreFn, uids: np.ndarray, cand: np.ndarray, batch_size: int) -> np.ndarray:
    """(R,) pessimistic 1-based rank of column 0 among each row of ``cand`` (R, 1+N)."""
    ranks = []
    for s in range(0, len(uids), batch_size):
        u, c = uids[s : s + batch_size], cand[s : s + batch_size]
        with torch.no_grad():
            scores = torch.as_tensor(pair_score_fn(torch.from_numpy(u), torch.from_numpy(c)))
        if tuple(scores.shape) != c.shape:
            raise ValueError(f"pair_score_fn returned shape {tuple(scores.shape)}, expected {c.shape}")
        scores = scores.detach().to("cpu", torch.float64)
        if bool(torch.isnan(scores).any()):
            raise ValueError("pair_score_fn returned NaN scores")
        # ties count against the positive: rank = 1 + #negatives scoring >= the positive
        ranks.append((1 + (scores[:, 1:] >= scores[:, :1]).sum(dim=1)).numpy())
    return np.concatenate(ranks).astype(np.int64)


def _mean_by_user(per_row: dict[str, np.ndarray], row_users: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Average row metrics per user: (sorted users (U,), {key: (U,)})."""
    users, idx = np.unique(row_users, return_inverse=True)
    n = np.bincount(idx, minlength=len(users))
    return users, {k: np.bincount(idx, weights=v, minlength=len(users)) / n for k, v in per_row.items()}


def sampled_ranking(
    pair_score_fn: PairScoreFn,
    n_items: int,
    train: Pairs,
    truth: Pairs,
    num_negatives: int = 99,
    seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    *,
    exclude: Optional[Pairs] = None,
    batch_size: int = 1024,
    long_tail_user_quantile: float = 0.2,
    cold_item_max_train: int = 5,
    head_item_fraction: float = 0.2,
) -> EvalResult:
    """Rank each distinct (user, truth item) pair against ``num_negatives`` sampled items.

    Negatives are distinct within a row, drawn uniformly (``numpy.random.default_rng(seed)``)
    from the items the user has in none of ``train``, ``truth`` and ``exclude``; rows are in
    (user, item) order, so the draw is a function of the inputs and ``seed`` only.
    ``pair_score_fn(uids: LongTensor (B,), iids: LongTensor (B, 1 + N)) -> (B, 1 + N)`` scores,
    column 0 being the positive, called on batches of ``batch_size`` rows. The positive's rank
    is ``1 + #negatives with score >= its score`` (ties count against it); each row is scored
    with ``n_relevant = 1`` and rows are averaged per user. NaN scores raise.
    """
    ks = _check_ks(ks)
    if num_negatives < 0 or batch_size < 1:
        raise ValueError("num_negatives must be >= 0 and batch_size >= 1")
    train = _check_pairs(train, None, n_items, "train")
    truth = _check_pairs(truth, None, n_items, "truth")
    exclude = None if exclude is None else _check_pairs(exclude, None, n_items, "exclude")
    everything = _concat(train, truth, exclude)
    n_users = int(everything[0].max()) + 1 if everything[0].size else 0
    truth_csr = CSR.from_pairs(*truth, n_users)
    row_users, positives = truth_csr.entry_rows(), truth_csr.indices  # (R,), (R,)
    if row_users.size == 0:
        raise ValueError("no user has a ground-truth item")

    rng = np.random.default_rng(seed)
    negatives = _sample_negatives(CSR.from_pairs(*everything, n_users), row_users, n_items, num_negatives, rng)
    cand = np.concatenate([positives[:, None], negatives], axis=1)  # (R, 1 + N)
    ranks = _positive_ranks(pair_score_fn, row_users, cand, batch_size)
    hits = np.zeros((len(ranks), ks[-1]), dtype=bool)  # (R, max(ks))
    in_k = ranks <= ks[-1]
    hits[np.flatnonzero(in_k), ranks[in_k] - 1] = True
    per_row = compute_metrics(hits, np.ones(len(ranks), dtype=np.int64), ks)
    users, per_user = _mean_by_user(per_row, row_users)

    cfg = _SliceConfig(long_tail_user_quantile, cold_item_max_train, head_item_fraction)
    groups = item_group_masks(item_counts(train[1], n_items), cold_item_max_train, head_item_fraction)
    item_slices = {}
    for name, in_group in groups.items():
        rows = in_group[positives]
        item_slices[name] = _mean_by_user({k: v[rows] for k, v in per_row.items()}, row_users[rows])[1]
    user_counts = np.bincount(train[0], minlength=n_users)[users]
    return _assemble(users, per_user, user_counts, item_slices, cfg)
