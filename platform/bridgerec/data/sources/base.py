"""The contract every interaction source implements.

A source lists its event files and reads each one as a stream of raw chunks. A raw chunk is a
``pandas.DataFrame`` with the columns in :data:`RAW_COLUMNS`:

- ``user_id``, ``item_id``: original ids, any dtype (validated and cast to ``str`` later);
- ``ts``: event time: numbers already in unix **seconds** or date/time strings (sources convert
  known units such as milliseconds themselves); null where the source has no time;
- ``rating``: number or string; null where the source has no rating;
- ``_file``: the path the row came from; ``_row``: its 1-based row/line number in that file
  (counting data rows; a CSV header is not counted).

Values are *not* validated by the source: :mod:`bridgerec.data.schema` checks and casts them, so
a bad value is reported with file, row and column in one place. Sources must stream: no reading
a whole large file into memory; yield chunks of about ``chunk_rows`` rows.

A source without event times yields each row's number in its file as ``ts`` and sets the
optional attribute ``time_from_input_order = True``; the pipeline then replaces ``ts`` with one
global order (the order of :meth:`Source.event_files`, then the row) and records that in the
manifest. Timestamp ties are always broken by that same input order (file, then row).

Item metadata (``read_items``) returns a DataFrame with ``item_id`` (str), ``title`` (str) and
``text`` (str, may be empty); user metadata (``read_users``) ``user_id`` and ``text``; either
may be ``None`` when the source has none.
"""

from __future__ import annotations

from typing import Iterator, Optional, Protocol

import pandas as pd

__all__ = ["RAW_COLUMNS", "Source"]

RAW_COLUMNS = ["user_id", "item_id", "ts", "rating", "_file", "_row"]


class Source(Protocol):
    name: str

    def event_files(self) -> list[str]:
        """Paths (or URIs) of the event files; each is read by one task."""

    def read_events(self, path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """Stream one event file as raw chunks with :data:`RAW_COLUMNS`."""

    def read_items(self) -> Optional[pd.DataFrame]:
        """Item metadata: ``item_id``, ``title``, ``text``; or None."""

    def read_users(self) -> Optional[pd.DataFrame]:
        """User metadata: ``user_id``, ``text``; or None."""

    def describe(self) -> dict:
        """JSON-able description of the source for the manifest (kind, paths, layout)."""
