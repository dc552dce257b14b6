"""Generic event tables: Parquet, CSV or JSON lines, one file or a directory of files.

Columns come from ``data.source.columns`` (:class:`~bridgerec.data.config.ColumnMapping`):

- ``user`` / ``item``: the ids (CSV ids are read as strings, so ``"007"`` stays ``"007"``);
- ``rating``: the rating; ``None`` gives every row rating 1.0 (implicit feedback);
- ``timestamp``: numbers in ``data.source.timestamp_unit`` (s/ms/us/ns) are converted to
  seconds, Parquet timestamps too; strings pass through (validation parses ISO dates);
  ``None`` has no time: the source yields each row's number in its file and the pipeline
  replaces it with the global input order (file order, then row; see
  :attr:`TableSource.time_from_input_order`), which the manifest records;
- ``title`` / ``text``: the item table at ``data.source.items_path`` (``text`` may be ``None``).

The format is ``data.source.format`` or, when that is unset, the extension (``.parquet``/``.pq``,
``.csv[.gz]``, ``.jsonl``/``.json``/``.ndjson`` ``[.gz]``); the item table's format is taken from
its extension first. Parquet is streamed by row batches, CSV and JSON lines by chunks of rows.
A mapped column missing from a file raises a :class:`ValueError` naming the file, the column and
its config key. For JSON lines the columns present are the keys seen in the first chunk; a later
record lacking one gets a null, which validation reports by file and line.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from bridgerec.data.config import ColumnMapping, SourceConfig
from bridgerec.data import fs
from bridgerec.data.sources._common import (
    JSONL_SUFFIXES,
    basename,
    csv_columns,
    has_suffix,
    items_frame,
    iter_csv,
    iter_json_records,
    list_data_files,
    raw_frame,
    require_columns,
    to_seconds,
)

__all__ = ["TableSource", "FORMAT_SUFFIXES"]

FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "parquet": (".parquet", ".pq"),
    "csv": (".csv", ".csv.gz"),
    "jsonl": JSONL_SUFFIXES,
}
_ALL_SUFFIXES = tuple(s for suffixes in FORMAT_SUFFIXES.values() for s in suffixes)
_COLUMNS_KEY = "data.source.columns"

Chunk = tuple[np.ndarray, pd.DataFrame]


# ----------------------------------------------------------------------------- formats


def _format_from_extension(path: str) -> Optional[str]:
    for fmt, suffixes in FORMAT_SUFFIXES.items():
        if has_suffix(path, suffixes):
            return fmt
    return None


def _format_or_fail(path: str, fmt: Optional[str]) -> str:
    if fmt is None:
        raise ValueError(f"{path}: cannot tell the table format from the name; set data.source.format to parquet, csv or jsonl")
    return fmt


def _single_format(files: Sequence[str], explicit: Optional[str], key: str) -> str:
    """The one format of ``files`` (``explicit`` when given); mixed formats must be chosen explicitly."""
    if explicit:
        return explicit
    formats = {_format_or_fail(f, _format_from_extension(f)) for f in files}
    if len(formats) > 1:
        raise ValueError(f"{key} mixes table formats {sorted(formats)}; set data.source.format to read one of them")
    return formats.pop()


def _table_files(path: str, fmt: Optional[str], key: str) -> list[str]:
    return list_data_files(path, FORMAT_SUFFIXES[fmt] if fmt else _ALL_SUFFIXES, key)


# ----------------------------------------------------------------------------- readers


def _by_key(df: pd.DataFrame, wanted: Mapping[str, str]) -> pd.DataFrame:
    """The wanted columns renamed to their mapping keys (one column may serve several keys)."""
    return pd.DataFrame({key: df[column].reset_index(drop=True) for key, column in wanted.items()})


def _unique(columns: Mapping[str, str]) -> list[str]:
    return list(dict.fromkeys(columns.values()))


def _parquet_chunks(path: str, wanted: Mapping[str, str], chunk_rows: int) -> Iterator[Chunk]:
    filesystem, inner = fs.resolve(path)
    with filesystem.open_input_file(inner) as fh:
        parquet = pq.ParquetFile(fh)
        require_columns(path, parquet.schema_arrow.names, wanted, _COLUMNS_KEY)
        first = 1
        for batch in parquet.iter_batches(batch_size=max(1, chunk_rows), columns=_unique(wanted)):
            df = batch.to_pandas()
            yield np.arange(first, first + len(df), dtype="int64"), _by_key(df, wanted)
            first += len(df)


def _csv_chunks(path: str, wanted: Mapping[str, str], chunk_rows: int, text_keys: Sequence[str]) -> Iterator[Chunk]:
    require_columns(path, csv_columns(path), wanted, _COLUMNS_KEY)
    dtype = {wanted[k]: str for k in text_keys if k in wanted}
    for first, df in iter_csv(path, chunk_rows, usecols=_unique(wanted), dtype=dtype):
        yield np.arange(first, first + len(df), dtype="int64"), _by_key(df, wanted)


def _jsonl_chunks(path: str, wanted: Mapping[str, str], chunk_rows: int) -> Iterator[Chunk]:
    checked = False
    for lines, records in iter_json_records(path, chunk_rows):
        if not checked:
            require_columns(path, sorted(set().union(*records)), wanted, _COLUMNS_KEY)
            checked = True
        frame = pd.DataFrame({key: [r.get(column) for r in records] for key, column in wanted.items()})
        yield np.asarray(lines, dtype="int64"), frame


def _read_columns(path: str, fmt: str, wanted: Mapping[str, str], chunk_rows: int, text_keys: Sequence[str]) -> Iterator[Chunk]:
    """Stream ``(row numbers, frame with one column per key of wanted)`` from one file."""
    if fmt == "parquet":
        return _parquet_chunks(path, wanted, chunk_rows)
    if fmt == "csv":
        return _csv_chunks(path, wanted, chunk_rows, text_keys)
    return _jsonl_chunks(path, wanted, chunk_rows)


def _mapped(columns: Mapping[str, Optional[str]]) -> dict[str, str]:
    return {key: column for key, column in columns.items() if column}


# ----------------------------------------------------------------------------- the source


class TableSource:
    """``TableSource(path, items_path=None, format=None, columns=ColumnMapping(), timestamp_unit="s")``."""

    def __init__(
        self,
        path: str,
        items_path: Optional[str] = None,
        format: Optional[str] = None,
        columns: Optional[ColumnMapping] = None,
        timestamp_unit: str = "s",
    ):
        if format is not None and format not in FORMAT_SUFFIXES:
            raise ValueError(f"data.source.format: {format!r} is not one of {sorted(FORMAT_SUFFIXES)}")
        self.path = path
        self.items_path = items_path
        self.columns = columns or ColumnMapping()
        self.timestamp_unit = timestamp_unit
        self._files = _table_files(path, format, "data.source.path")
        self.format = _single_format(self._files, format, "data.source.path")
        self.name = "table-" + basename(path).split(".", 1)[0]

    @classmethod
    def from_config(cls, cfg: SourceConfig) -> "TableSource":
        if cfg.kind != "table":
            raise ValueError(f"data.source.kind is {cfg.kind!r}, not 'table'")
        return cls(str(cfg.path), cfg.items_path, cfg.format, cfg.columns, cfg.timestamp_unit)

    @property
    def source_columns(self) -> dict[str, str]:
        """Canonical event column -> this table's column (for validation errors)."""
        cols = self.columns
        mapped = {"user_id": cols.user, "item_id": cols.item, "rating": cols.rating, "ts": cols.timestamp}
        return {k: v for k, v in mapped.items() if v}

    @property
    def time_from_input_order(self) -> bool:
        """True when the table has no timestamp column: ``ts`` is then the per-file row number,
        which :func:`bridgerec.data.prepare.prepare_dataset` turns into one global order."""
        return not self.columns.timestamp

    def event_files(self) -> list[str]:
        return list(self._files)

    def read_events(self, path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        cols = self.columns
        wanted = _mapped({"user": cols.user, "item": cols.item, "rating": cols.rating, "timestamp": cols.timestamp})
        for rows, df in _read_columns(path, self.format, wanted, chunk_rows, ("user", "item")):
            rating = df["rating"] if cols.rating else 1.0
            ts = to_seconds(df["timestamp"], self.timestamp_unit) if cols.timestamp else rows
            yield raw_frame(path, rows, df["user"], df["item"], ts, rating)

    def read_items(self) -> Optional[pd.DataFrame]:
        if not self.items_path:
            return None
        cols = self.columns
        wanted = _mapped({"item": cols.item, "title": cols.title, "text": cols.text})
        parts = []
        for path in _table_files(self.items_path, None, "data.source.items_path"):
            fmt = _format_or_fail(path, _format_from_extension(path) or self.format)
            parts.extend(df for _, df in _read_columns(path, fmt, wanted, 100_000, ("item", "title", "text")))
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({key: [] for key in wanted})
        return items_frame(table["item"], table["title"], table["text"] if "text" in table else None)

    def read_users(self) -> Optional[pd.DataFrame]:
        return None

    def describe(self) -> dict:
        return {
            "kind": "table",
            "name": self.name,
            "layout": self.format,
            "paths": {"events": self.event_files(), "items": self.items_path},
            "columns": self.columns.model_dump(),
            "timestamp_unit": self.timestamp_unit,
        }
