"""Amazon reviews as JSON lines (plain or ``.gz``), in the 2018 or the 2023 layout.

The layout of each file is detected from its first record:

- 2018 (McAuley 2018, also the 2014 JSON dumps): ``reviewerID``, ``asin``, ``overall``,
  ``unixReviewTime`` (seconds); metadata ``asin``, ``title``, ``brand``, ``category`` (list),
  ``feature`` (list), ``description`` (list or str).
- 2023 (McAuley Lab 2023): ``user_id``, ``parent_asin`` (the item id; ``asin`` when absent),
  ``rating``, ``timestamp`` in **milliseconds** (converted to seconds); metadata ``parent_asin``,
  ``title``, ``main_category``, ``categories``, ``features``, ``description`` (lists).

A review lacking a field gets a null in that raw column, which validation then reports by file,
row and column. Item text is ``"Title. Brand: B. Categories: A > B. Features: f1; f2.
Description: ..."`` with HTML tags and entities removed and whitespace collapsed.
"""

from __future__ import annotations

import html
import re
from typing import Any, Iterator, Optional

import pandas as pd

from bridgerec.data.config import SourceConfig
from bridgerec.data.sources._common import (
    JSONL_SUFFIXES,
    first_json_record,
    items_frame,
    iter_json_records,
    list_data_files,
    raw_frame,
    sentences,
    to_seconds,
)

__all__ = ["AmazonSource", "LAYOUTS"]

LAYOUTS = ("2018", "2023")

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


# ----------------------------------------------------------------------------- layouts


def _review_layout(path: str, lineno: int, record: dict) -> str:
    if "reviewerID" in record or "overall" in record:
        return "2018"
    if "user_id" in record or "parent_asin" in record:
        return "2023"
    raise ValueError(
        f"{path}: line {lineno}: not an Amazon review record: expected the 2018 fields (reviewerID, asin, "
        f"overall, unixReviewTime) or the 2023 fields (user_id, parent_asin, rating, timestamp); got keys {sorted(record)}"
    )


def _meta_layout(path: str, lineno: int, record: dict) -> str:
    if "parent_asin" in record:
        return "2023"
    if "asin" in record:
        return "2018"
    raise ValueError(
        f"{path}: line {lineno}: not an Amazon metadata record: expected 'asin' (2018) or 'parent_asin' (2023); "
        f"got keys {sorted(record)}"
    )


def _file_review_layout(path: str) -> Optional[str]:
    """Layout of a review file from its first record; None for an empty file."""
    first = first_json_record(path)
    return None if first is None else _review_layout(path, *first)


# ----------------------------------------------------------------------------- reviews


def _field(records: list[dict], key: str) -> list[Any]:
    return [r.get(key) for r in records]


def _reviews_2018(path: str, lines: list[int], records: list[dict]) -> pd.DataFrame:
    users, items = _field(records, "reviewerID"), _field(records, "asin")
    return raw_frame(path, lines, users, items, _field(records, "unixReviewTime"), _field(records, "overall"))


def _reviews_2023(path: str, lines: list[int], records: list[dict]) -> pd.DataFrame:
    items = [r.get("parent_asin") or r.get("asin") for r in records]
    ts = to_seconds(pd.Series(_field(records, "timestamp"), dtype=object), "ms")
    return raw_frame(path, lines, _field(records, "user_id"), items, ts, _field(records, "rating"))


_REVIEWS = {"2018": _reviews_2018, "2023": _reviews_2023}


def _read_reviews(path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    layout: Optional[str] = None
    for lines, records in iter_json_records(path, chunk_rows):
        layout = layout or _review_layout(path, lines[0], records[0])
        yield _REVIEWS[layout](path, lines, records)


# ----------------------------------------------------------------------------- metadata


def _clean_text(value: Any) -> str:
    """Text without HTML tags/entities and with collapsed whitespace; lists are joined."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (_clean_text(v) for v in value) if t)
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(str(value)))).strip()


def _texts(value: Any) -> list[str]:
    """The non-empty cleaned strings of a list or a single value."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [t for t in (_clean_text(v) for v in values) if t]


def _item_text(title: str, brand: str, categories: list[str], features: list[str], description: list[str]) -> str:
    return sentences(
        [
            title,
            f"Brand: {brand}" if brand else "",
            "Categories: " + " > ".join(categories) if categories else "",
            "Features: " + "; ".join(features) if features else "",
            "Description: " + " ".join(description) if description else "",
        ]
    )


def _meta_2018(record: dict) -> tuple[Any, str, str]:
    title = _clean_text(record.get("title"))
    text = _item_text(
        title,
        _clean_text(record.get("brand")),
        _texts(record.get("category")),
        _texts(record.get("feature")),
        _texts(record.get("description")),
    )
    return record.get("asin"), title, text


def _meta_2023(record: dict) -> tuple[Any, str, str]:
    title = _clean_text(record.get("title"))
    categories = _texts(record.get("categories")) or _texts(record.get("main_category"))
    text = _item_text(title, "", categories, _texts(record.get("features")), _texts(record.get("description")))
    return record.get("parent_asin") or record.get("asin"), title, text


_META = {"2018": _meta_2018, "2023": _meta_2023}


def _read_meta(path: str) -> Iterator[tuple[Any, str, str]]:
    layout: Optional[str] = None
    for lines, records in iter_json_records(path, 10_000):
        layout = layout or _meta_layout(path, lines[0], records[0])
        yield from (_META[layout](r) for r in records)


# ----------------------------------------------------------------------------- the source


class AmazonSource:
    """Amazon reviews: ``AmazonSource(path, items_path=None)``; ``path`` a file or a directory."""

    def __init__(self, path: str, items_path: Optional[str] = None):
        self.path = path
        self.items_path = items_path
        self._files = list_data_files(path, JSONL_SUFFIXES, "data.source.path")
        self.layout = self._first_layout()
        self.name = f"amazon-{self.layout}"

    @classmethod
    def from_config(cls, cfg: SourceConfig) -> "AmazonSource":
        if cfg.kind != "amazon":
            raise ValueError(f"data.source.kind is {cfg.kind!r}, not 'amazon'")
        return cls(str(cfg.path), cfg.items_path)

    def _first_layout(self) -> str:
        for path in self._files:
            layout = _file_review_layout(path)
            if layout:
                return layout
        raise ValueError(f"data.source.path: {self.path} holds no review records")

    def event_files(self) -> list[str]:
        return list(self._files)

    def read_events(self, path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        return _read_reviews(path, chunk_rows)

    def read_items(self) -> Optional[pd.DataFrame]:
        if not self.items_path:
            return None
        files = list_data_files(self.items_path, JSONL_SUFFIXES, "data.source.items_path")
        rows = [row for path in files for row in _read_meta(path)]
        ids, titles, texts = (list(col) for col in zip(*rows)) if rows else ([], [], [])
        return items_frame(ids, titles, texts)

    def read_users(self) -> Optional[pd.DataFrame]:
        return None

    def describe(self) -> dict:
        return {
            "kind": "amazon",
            "name": self.name,
            "layout": self.layout,
            "paths": {"events": self.event_files(), "items": self.items_path},
        }
