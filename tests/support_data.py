"""Helpers of the leakage tests: a dataset wrapper that fails on any read of a split other than
train, and each user's items of a split."""

from __future__ import annotations


class TrainOnly:
    """``inner`` (a DatasetDir), refusing ``pairs``/``frame`` of every split but train; ``who``
    names what read it in the failure."""

    def __init__(self, inner, who: str = "the code"):
        self.inner, self.who = inner, who

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def pairs(self, split):
        assert split == "train", f"{self.who} read the {split} split"
        return self.inner.pairs(split)

    def frame(self, split, *args, **kwargs):
        assert split == "train", f"{self.who} read the {split} split"
        return self.inner.frame(split, *args, **kwargs)


def items_by_user(dataset, split) -> dict[int, set]:
    """user -> the set of their items in ``split``."""
    u, i = dataset.pairs(split)
    out: dict[int, set] = {}
    for a, b in zip(u.tolist(), i.tolist()):
        out.setdefault(a, set()).add(b)
    return out
