"""Helpers shared by the file-based sources (private to :mod:`bridgerec.data.sources`).

- listing the data files of a file-or-directory path;
- streaming readers for delimited text (:func:`iter_csv`) and JSON lines
  (:func:`iter_json_records`) whose structural failures (undecodable bytes, malformed lines,
  missing columns) raise :class:`ValueError` naming the file and line;
- :func:`raw_frame`, the builder of the raw event chunks of :mod:`.base`, and
  :func:`to_seconds`, the conversion of numeric timestamps to unix seconds;
- :func:`items_frame` / :func:`users_frame` and :func:`sentences` for the metadata tables.

Everything here works on paths (strings), so the sources that use it stay picklable for Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from bridgerec.data import fs
from bridgerec.data.schema import id_text
from bridgerec.data.sources.base import RAW_COLUMNS

__all__ = [
    "JSONL_SUFFIXES",
    "basename",
    "has_suffix",
    "list_data_files",
    "require_columns",
    "csv_columns",
    "iter_csv",
    "iter_json_records",
    "first_json_record",
    "raw_frame",
    "to_seconds",
    "id_strings",
    "items_frame",
    "users_frame",
    "sentences",
]

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")

_UNIT_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


# ----------------------------------------------------------------------------- files


def basename(path: str) -> str:
    """Last component of a local path or URI."""
    return posixpath.basename(path.replace("\\", "/").rstrip("/"))


def has_suffix(path: str, suffixes: Sequence[str]) -> bool:
    name = basename(path).lower()
    return any(name.endswith(s) for s in suffixes)


def _listing_root(path: str) -> str:
    """The prefix :func:`fs.list_dir` puts before the paths under ``path``."""
    if "://" in path:
        return f"{path.split('://', 1)[0]}://{fs.resolve(path)[1]}"
    return os.path.abspath(path)


def _visible(relative: str) -> bool:
    """False for hidden or marker files (``.crc``, ``_SUCCESS``, ``.ipynb_checkpoints/...``)."""
    return not any(part.startswith((".", "_")) for part in relative.replace("\\", "/").split("/") if part)


def list_data_files(path: str, suffixes: Sequence[str], key: str) -> list[str]:
    """``[path]`` for a file; for a directory its visible files (recursively) ending in ``suffixes``.

    ``key`` names the config entry in error messages (e.g. ``data.source.path``).
    """
    if not fs.exists(path):
        raise FileNotFoundError(f"{key}: {path} does not exist")
    if not fs.is_dir(path):
        return [path]
    root = _listing_root(path)
    files = [
        f for f in fs.list_dir(path, recursive=True) if _visible(f[len(root):]) and has_suffix(f, suffixes)
    ]
    if not files:
        raise ValueError(f"{key}: directory {path} holds no files ending in {', '.join(suffixes)}")
    return files


def require_columns(path: str, present: Sequence[str], wanted: Mapping[str, str], config_prefix: Optional[str] = None) -> None:
    """Raise naming the file and the first wanted column missing from ``present``.

    ``wanted`` maps a label (the config key when ``config_prefix`` is given) to a column name.
    """
    for key, column in wanted.items():
        if column not in present:
            where = f" ({config_prefix}.{key})" if config_prefix else ""
            raise ValueError(f"file {path}: column {column!r}{where} not found; columns are {list(present)}")


# ----------------------------------------------------------------------------- delimited text


def _decode_error(path: str, encoding: str, original: UnicodeDecodeError) -> ValueError:
    """The decode error re-found line by line, so that it names the file and line."""
    try:
        for _ in fs.iter_lines(path, encoding):
            pass
    except UnicodeDecodeError as located:
        return located
    return ValueError(f"{path}: bytes that are not valid {encoding}: {original}")


@contextlib.contextmanager
def _csv_errors(path: str, encoding: str) -> Iterator[None]:
    try:
        yield
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: {exc}") from None


def csv_columns(path: str, encoding: str = "utf-8", **read_csv_kwargs: Any) -> list[str]:
    """Column names from the header line of a delimited file."""
    with _csv_errors(path, encoding), fs.open_text(path, encoding) as fh:
        try:
            return [str(c) for c in pd.read_csv(fh, nrows=0, **read_csv_kwargs).columns]
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path}: file is empty (no header line)") from None


def iter_csv(path: str, chunk_rows: int, encoding: str = "utf-8", **read_csv_kwargs: Any) -> Iterator[tuple[int, pd.DataFrame]]:
    """Stream a delimited file as ``(row number of the chunk's first data row, chunk)``.

    Chunks have a fresh ``RangeIndex``. An empty file yields nothing.
    """
    row = 1
    with _csv_errors(path, encoding), fs.open_text(path, encoding) as fh:
        try:
            reader = pd.read_csv(fh, chunksize=max(1, chunk_rows), **read_csv_kwargs)
        except pd.errors.EmptyDataError:
            return
        with reader:
            for chunk in reader:
                yield row, chunk.reset_index(drop=True)
                row += len(chunk)


# ----------------------------------------------------------------------------- JSON lines


def _parse_json_line(path: str, lineno: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        python_literal = line.lstrip().startswith("{'")
        hint = " (Python-literal lines such as the 2014 Amazon dumps must be converted to JSON)" if python_literal else ""
        raise ValueError(f"{path}: line {lineno}: malformed JSON: {exc.msg} at column {exc.colno}{hint}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: line {lineno}: expected a JSON object, got {type(record).__name__}")
    return record


def iter_json_records(path: str, chunk_rows: int) -> Iterator[tuple[list[int], list[dict]]]:
    """Stream a (possibly gzipped) JSON-lines file as ``(line numbers, objects)`` chunks.

    Blank lines are skipped; line numbers are 1-based physical lines of the file.
    """
    lines: list[int] = []
    records: list[dict] = []
    for lineno, line in fs.iter_lines(path, "utf-8"):
        if not line.strip():
            continue
        lines.append(lineno)
        records.append(_parse_json_line(path, lineno, line))
        if len(records) >= chunk_rows:
            yield lines, records
            lines, records = [], []
    if records:
        yield lines, records


def first_json_record(path: str) -> Optional[tuple[int, dict]]:
    """``(line number, object)`` of the first non-blank line, or None for an empty file."""
    chunks = iter_json_records(path, 1)
    try:
        first = next(chunks, None)
    finally:
        chunks.close()
    return None if first is None else (first[0][0], first[1][0])


# ----------------------------------------------------------------------------- event chunks


def _column(values: Any) -> Any:
    """Series lose their index (chunks are positional); scalars broadcast; the rest as is."""
    return values.reset_index(drop=True) if isinstance(values, pd.Series) else values


def raw_frame(path: str, rows: Any, user: Any, item: Any, ts: Any, rating: Any) -> pd.DataFrame:
    """A raw event chunk with exactly :data:`RAW_COLUMNS`; ``rows`` are the 1-based row numbers."""
    rows = np.asarray(rows, dtype="int64")
    frame = pd.DataFrame(
        {
            "user_id": _column(user),
            "item_id": _column(item),
            "ts": _column(ts),
            "rating": _column(rating),
        },
        index=pd.RangeIndex(len(rows)),
    )
    frame["_file"] = path
    frame["_row"] = rows
    return frame[RAW_COLUMNS]


def to_seconds(values: pd.Series, unit: str) -> pd.Series:
    """Numeric times in ``unit`` -> unix seconds; date/time strings pass through untouched.

    Datetime columns (e.g. Parquet timestamps) become seconds whatever the unit. Nulls stay null;
    values that are neither numbers nor datetimes are left for validation to parse or report.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        epoch = pd.Timestamp(0, tz=getattr(values.dt, "tz", None))
        return (values - epoch) // pd.Timedelta(seconds=1)
    factor = _UNIT_PER_SECOND[unit]
    if factor == 1:
        return values
    if values.dtype.kind in "iu":
        return values // factor
    if values.dtype.kind == "f":
        return np.floor(values / factor)
    numbers = pd.to_numeric(values, errors="coerce")
    numeric = numbers.notna()
    out = values.astype(object)
    out[numeric] = np.floor(numbers[numeric].astype("float64") / factor).astype("int64").astype(object)
    return out


# ----------------------------------------------------------------------------- metadata


def id_strings(values: pd.Series) -> pd.Series:
    """Ids as ``str`` exactly as validation casts event ids (:func:`bridgerec.data.schema.id_text`:
    whole floats -> "12", other floats keep their value); null or empty ids become None."""
    text, bad = id_text(values.reset_index(drop=True))
    return text.astype(object).where(~bad, None)


def _text_column(values: Any, n: int) -> pd.Series:
    if values is None:
        return pd.Series([""] * n, dtype=object)
    series = values.reset_index(drop=True) if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    return series.astype(object).where(series.notna(), "").astype(str)


def items_frame(item_id: Any, title: Any, text: Any = None) -> pd.DataFrame:
    """``item_id`` / ``title`` / ``text`` as ``str``; rows without an id dropped; first row per id kept."""
    ids = id_strings(pd.Series(item_id, dtype=object) if not isinstance(item_id, pd.Series) else item_id)
    frame = pd.DataFrame({"item_id": ids, "title": _text_column(title, len(ids)), "text": _text_column(text, len(ids))})
    return _dedup(frame, "item_id")


def users_frame(user_id: Any, text: Any) -> pd.DataFrame:
    """``user_id`` / ``text`` as ``str``; rows without an id dropped; first row per id kept."""
    ids = id_strings(pd.Series(user_id, dtype=object) if not isinstance(user_id, pd.Series) else user_id)
    frame = pd.DataFrame({"user_id": ids, "text": _text_column(text, len(ids))})
    return _dedup(frame, "user_id")


def _dedup(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    frame = frame[frame[key].notna()]
    frame = frame.drop_duplicates(key, keep="first").reset_index(drop=True)
    return frame.astype({key: str})


def sentences(parts: Iterable[Optional[str]]) -> str:
    """Join the non-empty parts as sentences: ``["A", "B: c"]`` -> ``"A. B: c."``."""
    out = []
    for part in parts:
        part = (part or "").strip()
        if part:
            out.append(part if part[-1] in ".!?" else part + ".")
    return " ".join(out)
