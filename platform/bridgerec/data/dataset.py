"""Reading a prepared dataset directory (the contract every downstream stage relies on)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property

from typing import Iterable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["DatasetDir", "read_parts"]


@dataclass
class DatasetDir:
    """A prepared dataset: ``interactions/``, ``splits/{train,valid,test}/``, ``items/``, ``users/``,
    ``manifest.json``. Ids ``uid``/``iid`` are dense int64 from 0. Event tables hold ``uid``,
    ``iid``, ``ts``, ``rating`` and ``seq`` (int64, the event's input order: file index << 40 |
    row); order a user's events by ``(ts, seq)`` to follow the splits' time order (ties in ``ts``
    keep the input order; the manifest's ``preprocessing.time_order`` says so)."""

    path: str

    def __post_init__(self) -> None:
        self.path = os.path.abspath(self.path)
        if not os.path.exists(os.path.join(self.path, "manifest.json")):
            raise FileNotFoundError(f"{self.path} is not a prepared dataset (no manifest.json); run `bridgerec data prepare`")

    @cached_property
    def manifest(self) -> dict:
        with open(os.path.join(self.path, "manifest.json")) as fh:
            return json.load(fh)

    @property
    def n_users(self) -> int:
        return int(self.manifest["counts"]["users"])

    @property
    def n_items(self) -> int:
        return int(self.manifest["counts"]["items"])

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    def split_path(self, split: str) -> str:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {split!r}; expected train, valid or test")
        return os.path.join(self.path, "splits", split)

    def read_split(self, split: str):
        """The split as a streaming Ray Dataset (uid, iid, ts, rating)."""
        import ray.data

        return ray.data.read_parquet(self.split_path(split))

    def pairs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(uids, iids) int64 arrays of a split, read column-wise (16 bytes per event)."""
        table = pq.read_table(self.split_path(split), columns=["uid", "iid"])
        return table.column("uid").to_numpy().astype(np.int64), table.column("iid").to_numpy().astype(np.int64)

    def frame(self, split: str, columns: list[str] | None = None) -> pd.DataFrame:
        return pq.read_table(self.split_path(split), columns=columns).to_pandas()

    def items(self) -> pd.DataFrame:
        return pq.read_table(os.path.join(self.path, "items")).to_pandas().sort_values("iid").reset_index(drop=True)

    def users(self) -> pd.DataFrame:
        return pq.read_table(os.path.join(self.path, "users")).to_pandas().sort_values("uid").reset_index(drop=True)


def read_parts(path: str, columns: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """The ``part-*.parquet`` files of a directory (an augmentation stage's output under the
    dataset directory) as one DataFrame, in shard order; empty when there are none."""
    parts = sorted(f for f in os.listdir(path) if f.startswith("part-") and f.endswith(".parquet"))
    if not parts:
        return pd.DataFrame()
    tables = [pq.read_table(os.path.join(path, p), columns=list(columns) if columns else None) for p in parts]
    return pa.concat_tables(tables, promote_options="default").to_pandas()
