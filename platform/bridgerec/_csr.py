"""User -> items adjacency in compressed sparse row form (numpy only), and sorted-key membership.

A leaf module: evaluation, negative sampling, methods and tracking build on it; it imports
nothing from bridgerec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["CSR", "as_ids", "contains", "item_counts", "row_offsets"]


def as_ids(a: Any, what: str) -> np.ndarray:
    """A 1-D int64 copy-free view of ``a``; empty arrays of any dtype are accepted."""
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integer ids, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def row_offsets(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """(n_rows + 1,) int64 offsets of rows grouped by ``rows`` (row ``r`` owns
    ``[out[r], out[r + 1])`` once the entries are sorted by row): the ``indptr`` of every
    row-grouped array here (the CSR, SASRec's histories, the augmentation catalog)."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(as_ids(rows, "rows"), minlength=n_rows), out=indptr[1:])
    return indptr


def from_lists(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr (len(lists) + 1,), values)`` int64 of a list of id lists, in order: the CSR form of
    per-request id lists (exclusions of a search batch, histories sent to a sequence model)."""
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in lists], out=indptr[1:])
    parts = [np.asarray(x, dtype=np.int64).reshape(-1) for x in lists]
    return indptr, np.concatenate(parts) if parts else np.zeros(0, np.int64)


def item_counts(iids: np.ndarray, n_items: int) -> np.ndarray:
    """(n_items,) int64 number of events per item: training popularity (the popularity model, the
    popularity baseline, the evaluation's item slices and the prompts' popular items)."""
    return np.bincount(as_ids(iids, "iids"), minlength=n_items).astype(np.int64, copy=False)


@dataclass(frozen=True)
class CSR:
    """Row -> column lists (user -> items) in compressed sparse row form, numpy only.

    ``indices[indptr[u]:indptr[u + 1]]`` are user ``u``'s items, sorted ascending and
    de-duplicated.
    """

    indptr: np.ndarray  # (n_rows + 1,) int64 offsets
    indices: np.ndarray  # (nnz,) int64 column ids

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, n_rows: int) -> "CSR":
        """Build from ``(rows, cols)`` int arrays (each ``rows`` value must be < ``n_rows``)."""
        rows, cols = as_ids(rows, "rows"), as_ids(cols, "cols")
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise ValueError(f"row ids must lie in [0, {n_rows})")
        order = np.lexsort((cols, rows))  # sort by row, then by column
        rows, cols = rows[order], cols[order]
        keep = np.ones(len(rows), dtype=bool)
        keep[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])  # drop repeated pairs
        rows, cols = rows[keep], cols[keep]
        return cls(indptr=row_offsets(rows, n_rows), indices=cols)

    @property
    def n_rows(self) -> int:
        """Number of rows (users)."""
        return len(self.indptr) - 1

    def counts(self) -> np.ndarray:
        """(n_rows,) number of distinct columns per row."""
        return np.diff(self.indptr)

    def row(self, r: int) -> np.ndarray:
        """Sorted column ids of row ``r``."""
        return self.indices[self.indptr[r] : self.indptr[r + 1]]

    def entry_rows(self) -> np.ndarray:
        """(nnz,) the row of every stored entry, aligned with :attr:`indices`."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.counts())

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entries of the given rows as ``(position in rows, column)``, both (total,) int64."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, counts = self.indptr[rows], self.indptr[rows + 1] - self.indptr[rows]
        pos = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
        # offset of each entry inside its own row: 0..count-1, for all rows at once
        within = np.arange(len(pos), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return pos, self.indices[np.repeat(starts, counts) + within]

    def keys(self, n_cols: int) -> np.ndarray:
        """(nnz,) ``row * n_cols + col``; ascending, so membership is a ``searchsorted``."""
        return self.entry_rows() * n_cols + self.indices


def contains(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Boolean mask (query.shape): which ``query`` keys occur in ``sorted_keys``."""
    if sorted_keys.size == 0:
        return np.zeros(query.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return sorted_keys[pos] == query
