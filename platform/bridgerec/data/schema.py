"""Validation of raw event chunks: cast to the canonical schema or report the bad cell.

Canonical events (after validation): ``user_id`` (str), ``item_id`` (str), ``ts`` (int64 unix
seconds), ``rating`` (float64). A bad value either raises :class:`DataValidationError` naming
file, row and column, or, with ``bad_rows="quarantine"``, is returned in a separate frame with
``_column`` and ``_reason`` so it can be written aside and counted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bridgerec.data.sources.base import RAW_COLUMNS

__all__ = ["DataValidationError", "EVENT_COLUMNS", "validate_events", "QUARANTINE_COLUMNS", "id_text"]

EVENT_COLUMNS = ["user_id", "item_id", "ts", "rating"]
QUARANTINE_COLUMNS = ["_file", "_row", "_column", "_reason", "value"]


class DataValidationError(ValueError):
    """A bad data row, named by file, row and column."""

    def __init__(self, file: str, row: int, column: str, reason: str, value: object, source_column: str | None = None):
        self.file, self.row, self.column, self.reason, self.value = file, row, column, reason, value
        self.source_column = source_column  # the file's own column name when it differs, e.g. "when"
        where = f"column {column!r}" if not source_column or source_column == column else f"column {source_column!r} (as {column!r})"
        super().__init__(f"{file}: row {row}, {where}: {reason} (value {value!r})")

    def __reduce__(self):  # survives pickling across Ray tasks
        return (type(self), (self.file, self.row, self.column, self.reason, self.value, self.source_column))


def _float_id(value: float) -> str:
    """A float id as text: exact integers as integers ("12", not "12.0"), the rest as the shortest
    text that reads back as the same float ("1.5"), so distinct numbers never share an id."""
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(float(value))


def id_text(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Ids as ``str`` and the mask of bad ones (null, or empty after stripping).

    Strings are stripped. Floats (a numeric column with nulls, numbers in JSON) that are exact
    integers become ``"12"``; other floats keep their value (``1.5`` -> ``"1.5"``): truncating
    them would merge distinct ids. Event ids and metadata ids are cast by this one function.
    """
    bad = col.isna()
    kind = col.dtype.kind if col.dtype.kind in "fiub" else pd.api.types.infer_dtype(col, skipna=True)
    if kind not in ("i", "u", "b", "string", "empty", "integer", "boolean"):  # may hold floats: elementwise
        text = pd.Series(
            ["" if miss else _float_id(v) if isinstance(v, (float, np.floating)) else str(v).strip()
             for v, miss in zip(col.to_numpy(dtype=object), bad.to_numpy())],
            index=col.index, dtype=object,
        ).astype(str)
    else:  # strings, integers: vectorised
        text = col.where(~bad, "").astype(str).str.strip()
    return text, bad | (text == "")


def _ids(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    return id_text(col)


def _ratings(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    num = pd.to_numeric(col, errors="coerce").astype("float64")
    bad = num.isna() | ~np.isfinite(num.fillna(0.0))
    return num, bad


def _times(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    num = pd.to_numeric(col, errors="coerce")
    out = pd.Series(np.zeros(len(col), dtype="int64"), index=col.index)
    ok_num = num.notna()
    out[ok_num] = num[ok_num].astype("float64").round().astype("int64")
    rest = ~ok_num & col.notna()
    if rest.any():
        parsed = pd.to_datetime(col[rest].astype(str), errors="coerce", utc=True, format="mixed")
        good_dt = parsed.notna()
        # unit-independent: pandas 3 may parse to datetime64[us], not [ns]
        secs = (parsed[good_dt] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        out[secs.index] = secs.astype("int64")
        ok_num = ok_num.copy()
        ok_num[secs.index] = True
    return out, ~ok_num


_CHECKS = (
    ("user_id", _ids, "missing or empty user id"),
    ("item_id", _ids, "missing or empty item id"),
    ("rating", _ratings, "rating is not a finite number"),
    ("ts", _times, "timestamp is missing or not a number/date"),
)


def validate_events(
    chunk: pd.DataFrame, bad_rows: str = "error", source_columns: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (valid events, quarantined rows with :data:`QUARANTINE_COLUMNS`).

    Valid events have :data:`EVENT_COLUMNS` plus ``_file``/``_row`` (kept for later error messages).
    ``source_columns`` maps a canonical column to the file's own name for it (a source's column
    mapping), so an error names the column the user sees in the file.
    """
    source_columns = source_columns or {}
    missing = [c for c in RAW_COLUMNS if c not in chunk.columns]
    if missing:
        raise ValueError(f"source chunk lacks columns {missing}; a source must yield {RAW_COLUMNS}")
    chunk = chunk.reset_index(drop=True)
    out = {}
    any_bad = pd.Series(False, index=chunk.index)
    bad_parts = []
    for column, cast, reason in _CHECKS:
        values, bad = cast(chunk[column])
        out[column] = values
        new_bad = bad & ~any_bad
        if new_bad.any():
            if bad_rows == "error":
                i = int(np.flatnonzero(new_bad.to_numpy())[0])
                raise DataValidationError(
                    str(chunk["_file"].iat[i]), int(chunk["_row"].iat[i]), column, reason, chunk[column].iat[i],
                    source_columns.get(column),
                )
            rows = chunk.loc[new_bad]
            bad_parts.append(
                pd.DataFrame(
                    {
                        "_file": rows["_file"].astype(str),
                        "_row": rows["_row"].astype("int64"),
                        "_column": column,
                        "_reason": reason,
                        "value": rows[column].astype(str),
                    }
                )
            )
        any_bad |= bad
    frame = pd.DataFrame(out)[EVENT_COLUMNS]
    frame["_file"], frame["_row"] = chunk["_file"].astype(str), chunk["_row"].astype("int64")
    good = frame.loc[~any_bad].reset_index(drop=True)
    good["ts"] = good["ts"].astype("int64")
    quarantined = (
        pd.concat(bad_parts, ignore_index=True) if bad_parts else pd.DataFrame({c: pd.Series(dtype="object") for c in QUARANTINE_COLUMNS}).astype({"_row": "int64"})
    )
    return good, quarantined
