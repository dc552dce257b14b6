"""What a domain model conditions on: the per-stage user histories (:func:`histories_for`,
:func:`conditioned_on`) and the inputs a model may need from a prepared dataset."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import numpy as np
from torch import nn

from bridgerec.models.base import DomainModel

__all__ = ["SERVING_HISTORY", "SPLITS", "TEST_HISTORY", "conditioned_on", "dataset_inputs", "histories_for", "known_at",
           "recent_items"]


SPLITS = ("train", "valid", "test")
"""The dataset's splits, in the order that breaks timestamp ties in :func:`histories_for`."""

TEST_HISTORY = ("train", "valid")
"""Splits a model conditions on when scored on test (validation keeps the training items)."""

SERVING_HISTORY = SPLITS
"""Splits a model conditions on for serving: every known interaction."""

Histories = tuple[np.ndarray, np.ndarray]


def histories_for(data, splits: Sequence[str] = ("train",), before: str | None = None) -> Histories:
    """Time-ordered items per user over the events of ``splits``, CSR ``(indptr (U+1,), items)``.

    Rows are ordered by (ts, split, seq, iid) (``seq``: input file, then row, where the dataset has
    it): an event of a later split in :data:`SPLITS` sorts
    after an earlier split's event with the same timestamp (under leave-last-out the validation
    item is then always the last one before the test item). With ``before`` (a split name), the
    events of the splits other than ``train`` are kept only when their ``ts`` is ``<=`` the
    user's earliest ``before`` event (all of them for users without one): under the random
    protocols a validation event may lie after the test event. Training events are always kept:
    the model was trained on them and the evaluation masks them anyway.

    ``histories_for(data, TEST_HISTORY, before="test")`` is the history at test time,
    ``histories_for(data, SERVING_HISTORY)`` the one for serving.
    """
    from bridgerec.models.sasrec import histories_from_frame

    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ValueError(f"splits must name some of {SPLITS}, got {tuple(splits)}")
    cut = None
    if before is not None:
        b = data.frame(before, ["uid", "ts"])
        cut = np.full(data.n_users, np.iinfo(np.int64).max, dtype=np.int64)  # (U,) earliest `before` ts
        np.minimum.at(cut, b["uid"].to_numpy("int64"), b["ts"].to_numpy("int64"))
    parts = []
    for split in dict.fromkeys(splits):
        f = data.frame(split)
        u, i, t = f["uid"].to_numpy("int64"), f["iid"].to_numpy("int64"), f["ts"].to_numpy("int64")
        q = f["seq"].to_numpy("int64") if "seq" in f else np.zeros(len(u), dtype=np.int64)
        if cut is not None and split != "train":
            keep = t <= cut[u]
            u, i, t, q = u[keep], i[keep], t[keep], q[keep]
        parts.append((u, i, t, q, np.full(len(u), SPLITS.index(split), dtype=np.int64)))
    u, i, t, q, rank = (np.concatenate(cols) for cols in zip(*parts))
    indptr, items, _ = histories_from_frame(u, i, t, data.n_users, tiebreak=rank, seq=q)
    return indptr, items


def known_at(data, split: str) -> Histories:
    """The history known when ``split`` is predicted (:func:`histories_for`): the training items
    for ``valid``, also the validation events up to the user's first test event for ``test``."""
    if split == "test":
        return histories_for(data, TEST_HISTORY, before="test")
    return histories_for(data, ("train",))


def recent_items(indptr: np.ndarray, items: np.ndarray, u: int, n: int) -> np.ndarray:
    """The up to ``n`` most recent items of user ``u`` in a time-ordered CSR history, oldest first."""
    end = int(indptr[u + 1])
    return items[max(int(indptr[u]), end - n):end]


@contextlib.contextmanager
def conditioned_on(module: nn.Module, histories: Histories | Callable[[], Histories]) -> Iterator[nn.Module]:
    """Within the block, every :class:`DomainModel` inside ``module`` (``module`` itself, or the
    domain model a method wraps) conditions on ``histories``; the old histories come back after.

    ``histories`` may be a zero-argument callable (e.g. ``lambda: histories_for(data, ...)``):
    it is called only when some model inside does condition on histories, so models without
    them cost nothing. Caches of embeddings derived from the histories are dropped on entry
    and exit: the models drop their own in ``set_histories``, and a module in eval mode is put
    in eval mode again, which by this codebase's convention (``train(mode)`` clears eval-mode
    caches, as in SASRec and DaRec) drops the wrappers' caches too. In train mode nothing is cached.
    """
    models = [m for m in module.modules() if isinstance(m, DomainModel) and m.histories is not None]
    if not models:
        yield module
        return
    new = histories() if callable(histories) else histories
    previous = [m.histories for m in models]
    for m in models:
        m.set_histories(new)
    _drop_caches(module)
    try:
        yield module
    finally:
        for m, old in zip(models, previous):
            m.set_histories(old)
        _drop_caches(module)


def _drop_caches(module: nn.Module) -> None:
    if not module.training:
        module.eval()


def dataset_inputs(data) -> dict:
    """What models may need from a prepared dataset: ``train_pairs`` (uids, iids), ``histories``
    (time-ordered training items per user, CSR ``(indptr, items)``) and ``rating_stats`` (mean,
    min and max rating of the train split; None when it is empty)."""
    train = data.frame("train", ["uid", "iid", "rating"])
    uids, iids = train["uid"].to_numpy("int64"), train["iid"].to_numpy("int64")
    ratings = train["rating"].to_numpy("float64")
    stats = {"mean": float(ratings.mean()), "min": float(ratings.min()), "max": float(ratings.max())} if len(ratings) else None
    return {"train_pairs": (uids, iids), "histories": histories_for(data, ("train",)), "rating_stats": stats}
