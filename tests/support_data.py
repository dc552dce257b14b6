"""A dataset wrapper for the leakage tests: it fails on any read of a split other than train."""

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
