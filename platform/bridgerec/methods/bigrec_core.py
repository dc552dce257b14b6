"""BIGRec (arXiv 2308.08434): the parts that do not depend on how the LLM is trained or served.

BIGRec works in two steps. Step 1 tunes the LLM (LoRA) to write the next item's title from the
user's time-ordered history of titles; step 2 grounds the generated text to real items by L2
distance between its embedding and every item's, and reweights the distances with popularity or
a collaborative model's scores. This module holds:

- :func:`next_item_examples`: the instruction set (history -> next item) from the training
  histories, all of it or the paper's few-shot sample;
- :func:`encode_examples`: those examples as causal-LM token ids through the one prompt module
  (labels only on the target title);
- :func:`grounding_distances`: L2 distances from generated-text embeddings to every item's,
  min-max normalised per row as BIGRec's evaluation scripts do;
- :func:`popularity_prior`, :func:`row_minmax` and :func:`reweighted_scores`: the score
  ``dist x (1 + aux)^(-gamma)`` with ``aux`` the min-max normalised popularity share (one row for
  every user) or the domain model's scores (per user), negated so that higher is better;
- :func:`merge_by_rank`: several generations (beams) per user merged by rank;
- :func:`select_gamma`: gamma picked on the validation split with bridgerec's evaluator;
- :func:`generation_validity`: how many generations land on (or near) a real item.

The evaluation protocol here masks the user's known items (the split's training items) before the
top-K; BIGRec's own scripts rank every item, history included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "Example",
    "next_item_examples",
    "encode_examples",
    "grounding_distances",
    "row_minmax",
    "popularity_prior",
    "reweighted_scores",
    "merge_by_rank",
    "GammaChoice",
    "select_gamma",
    "Validity",
    "generation_validity",
]


# ----------------------------------------------------------------------------- instruction set


@dataclass(frozen=True)
class Example:
    """One instruction: ``uid``'s items ``history`` (oldest first) and the ``target`` that followed."""

    uid: int
    history: tuple[int, ...]
    target: int


def next_item_examples(indptr: np.ndarray, items: np.ndarray, history_len: int = 10,
                       samples: Optional[int] = None, seed: int = 0, min_history: int = 1) -> list[Example]:
    """The instruction set from time-ordered histories (CSR ``indptr`` (U+1,), ``items`` (nnz,)).

    Every position ``t >= min_history`` of a user's history is an example: the up to
    ``history_len`` items before ``t`` and the item at ``t`` (BIGRec's sliding window).
    ``samples=None`` keeps them all (the full mode). ``samples=N`` is the few-shot mode (the
    paper's 1,024 samples): N distinct users drawn at random, one random position each, so the
    sample covers as many users as it can; when fewer than N users have an example, N examples
    are drawn from all of them without replacement. Seeded by ``seed``; sorted by (uid, position).
    """
    if history_len < 1:
        raise ValueError(f"history_len must be >= 1, got {history_len}")
    if min_history < 1:
        raise ValueError(f"min_history must be >= 1, got {min_history}")
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be >= 1 or None, got {samples}")
    indptr, items = np.asarray(indptr, np.int64), np.asarray(items, np.int64)
    counts = np.diff(indptr)
    users = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    pos = np.arange(len(items), dtype=np.int64) - indptr[users]  # position inside the user's history
    keep = np.flatnonzero(pos >= min_history)  # global indices of the targets
    if samples is not None and samples < len(keep):
        rng = np.random.default_rng(seed)
        eligible = np.unique(users[keep])
        if samples <= len(eligible):
            chosen_users = rng.choice(eligible, size=samples, replace=False)
            first = indptr[chosen_users] + min_history
            keep = first + (rng.random(samples) * (indptr[chosen_users + 1] - first)).astype(np.int64)
        else:
            keep = rng.choice(keep, size=samples, replace=False)
        keep = np.sort(keep)
    out = []
    for g in keep.tolist():
        u = int(users[g])
        start = max(int(indptr[u]), g - history_len)
        out.append(Example(u, tuple(int(i) for i in items[start:g]), int(items[g])))
    return out


def encode_examples(tokenizer: Any, examples: Sequence[Example], view: Callable[[int], Any], *, chat: Any = None,
                    version: str = "v1", max_length: Optional[int] = 128) -> list[dict[str, list[int]]]:
    """Each example as ``input_ids``, ``attention_mask`` and ``labels`` (-100 on the prompt): the
    prompt module's ``next_item`` template over the history, then the target's quoted title
    (:func:`~bridgerec.llm.prompts.next_item_target`) and EOS
    (:func:`~bridgerec.llm.prompts.encode_example`); batches are padded by
    :func:`bridgerec.training.sft.collate`.

    ``view(iid)`` gives the :class:`~bridgerec.llm.prompts.ItemView` of an item; ``chat`` the
    backbone's :class:`~bridgerec.llm.prompts.ChatFormat` (plain when None). Over ``max_length``
    tokens the prompt is cut from the left, so the target always survives."""
    from bridgerec.llm.prompts import PLAIN, encode_example, next_item_prompt, next_item_target

    return [encode_example(tokenizer, next_item_prompt([view(i) for i in ex.history], version=version).text,
                           next_item_target(view(ex.target)), max_length=max_length, chat=chat or PLAIN)
            for ex in examples]


# ----------------------------------------------------------------------------- grounding


def row_minmax(x: torch.Tensor) -> torch.Tensor:
    """Each row scaled to [0, 1] (a constant row becomes all zeros)."""
    x = x.float()
    lo, hi = x.min(dim=-1, keepdim=True).values, x.max(dim=-1, keepdim=True).values
    return (x - lo) / (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)


def grounding_distances(generated: Any, items: Any) -> torch.Tensor:
    """(B, I) L2 distances from each generated text's embedding (B, d) to every item's (I, d),
    min-max normalised per row (0 = the nearest item, 1 = the farthest), as BIGRec's scripts do
    before reweighting. Exact; :func:`~bridgerec.retrieval.index.build_index` with ``metric="l2"``
    gives the same nearest items for serving."""
    g = torch.as_tensor(np.asarray(generated, np.float32))
    x = torch.as_tensor(np.asarray(items, np.float32))
    if g.ndim != 2 or x.ndim != 2 or g.shape[1] != x.shape[1]:
        raise ValueError(f"generated {tuple(g.shape)} and item {tuple(x.shape)} embeddings must be 2-D with the same width")
    return row_minmax(torch.cdist(g, x, p=2))


def popularity_prior(train_items: np.ndarray, n_items: int) -> torch.Tensor:
    """(1, I): each item's share of the training interactions, min-max normalised (BIGRec's
    ``pop_rank``), to broadcast over users in :func:`reweighted_scores`."""
    counts = np.bincount(np.asarray(train_items, np.int64), minlength=n_items).astype(np.float64)
    share = counts / max(counts.sum(), 1.0)
    return row_minmax(torch.from_numpy(share[None, :]).float())


def reweighted_scores(dist: torch.Tensor, aux: Optional[torch.Tensor], gamma: float) -> torch.Tensor:
    """Scores (higher is better) ``-(dist x (1 + aux)^(-gamma))``.

    ``dist`` (B, I) from :func:`grounding_distances`; ``aux`` in [0, 1]: :func:`popularity_prior`
    (1, I), or the domain model's scores for the same users passed through :func:`row_minmax`
    (B, I); None or ``gamma == 0`` leaves the distances alone. A larger ``gamma`` pulls popular
    (or collaboratively likely) items forward."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if aux is None or gamma == 0:
        return -dist
    return -(dist * torch.pow(1.0 + aux.to(dist), -float(gamma)))


def merge_by_rank(scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Merge the rankings of several generations per user (beams, best beam first) by rank.

    Each element of ``scores`` is (B, I) (higher is better). The merged order takes every beam's
    first item, then every beam's second, and so on, in beam order, each item at its best
    position; returned as (B, I) scores whose descending order is that merged order."""
    if not scores:
        raise ValueError("merge_by_rank needs at least one ranking")
    if len(scores) == 1:
        return scores[0]
    n_beams = len(scores)
    best = None
    for b, s in enumerate(scores):
        rank = torch.argsort(torch.argsort(-s, dim=1, stable=True), dim=1)  # 0 = this beam's first
        key = rank * n_beams + b
        best = key if best is None else torch.minimum(best, key)
    return -best.float()


# ----------------------------------------------------------------------------- gamma and validity


@dataclass(frozen=True)
class GammaChoice:
    gamma: float
    metric: str
    value: float
    table: dict[float, float]  # every gamma tried -> its validation value


def select_gamma(score_fn: Callable[[torch.Tensor, float], torch.Tensor], gammas: Sequence[float], n_users: int,
                 n_items: int, train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray],
                 metric: str = "ndcg@10", ks: Sequence[int] = (10,), user_batch_size: int = 1024) -> GammaChoice:
    """Pick gamma on the VALIDATION split: ``score_fn(uids, gamma) -> (B, I)`` scores of those users,
    ranked by :func:`~bridgerec.evaluation.full_ranking` (known items masked) for every gamma in
    ``gammas``; the largest ``metric`` wins (ties: the smaller gamma). The test split is never read.

    Each metric keeps its own formula: BIGRec's published gamma search (``adjust_pda.py``) assigns
    ``HR = get_ndcg(...)``, so its "best-HR gamma" is in fact the best-NDCG gamma; here HR is
    computed as HR.
    """
    from bridgerec.evaluation import full_ranking

    if not gammas:
        raise ValueError("method.bigrec.gammas is empty")
    table: dict[float, float] = {}
    for gamma in gammas:
        res = full_ranking(lambda u, g=float(gamma): score_fn(u, g), n_users, n_items, train, valid, ks, user_batch_size)
        if metric not in res.overall:
            raise ValueError(f"unknown selection metric {metric!r}; choose from {sorted(res.overall)}")
        table[float(gamma)] = float(res.overall[metric])
    best = max(sorted(table), key=lambda g: (table[g], -g))
    return GammaChoice(best, metric, table[best], table)


@dataclass(frozen=True)
class Validity:
    """How grounded generations relate to the catalogue."""

    n: int
    near: float  # share whose nearest item is within the distance threshold
    exact: float  # share that is exactly a real title (case and outer spaces ignored)
    threshold: float
    median_distance: float


def generation_validity(generated: Sequence[str], nearest_distance: np.ndarray, titles: Sequence[str],
                        threshold: float) -> Validity:
    """``generated`` texts (parsed titles), the raw L2 distance of each one's embedding to its
    nearest item, the catalogue's titles and the distance under which a generation counts as
    valid."""
    d = np.asarray(nearest_distance, np.float64)
    if len(d) != len(generated):
        raise ValueError(f"{len(generated)} generations but {len(d)} distances")
    known = {str(t).strip().lower() for t in titles}
    n = len(generated)
    exact = sum(str(g).strip().lower() in known for g in generated)
    return Validity(n, float((d <= threshold).mean()) if n else 0.0, exact / n if n else 0.0, float(threshold),
                    float(np.median(d)) if n else float("nan"))
