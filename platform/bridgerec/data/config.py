"""Config section of the data layer (``cfg.data``; wired into the root Config): the source of
the raw interactions, preprocessing and the split protocol.

Light on purpose (pydantic only). ``data.source.kind`` is checked against
:data:`bridgerec.data.sources.SOURCES` by the root config.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import model_validator

from bridgerec._config_base import Section

__all__ = ["ColumnMapping", "DataConfig", "PreprocessConfig", "SourceConfig", "SplitConfig", "SyntheticConfig"]


SyntheticPreset = Literal["tiny", "small", "medium", "large", "xlarge"]


class SyntheticConfig(Section):
    preset: SyntheticPreset = "small"
    """Size preset of the synthetic world: tiny (~300 users, tests), small (~3k users, ~60k events,
    quickstart), medium (~20k users, ~400k events), large (~50k users, >=1M events), xlarge (>=10M)."""
    n_users: Optional[int] = None
    """Override the preset's number of users."""
    n_items: Optional[int] = None
    """Override the preset's number of items."""
    n_topics: Optional[int] = None
    """Override the preset's number of hidden topics (at most the size of the built-in vocabulary)."""
    cold_item_fraction: float = 0.05
    """Fraction of items released only near the end of the timeline (cold items)."""
    duplicate_fraction: float = 0.01
    """Fraction of extra duplicate events (same user, item) mixed in, to exercise de-duplication."""


class ColumnMapping(Section):
    user: str = "user_id"
    """Column holding the user id in a generic table."""
    item: str = "item_id"
    """Column holding the item id in a generic table."""
    rating: Optional[str] = "rating"
    """Column holding the rating; None means every row is a positive event with rating 1."""
    timestamp: Optional[str] = "timestamp"
    """Column holding the event time (unix seconds/ms or an ISO-8601 string); None uses the global
    input order (files in listing order, then rows) as the time, recorded in the manifest."""
    title: str = "title"
    """Column holding an item's title in a generic item table."""
    text: Optional[str] = "text"
    """Column holding an item's description in a generic item table."""


class SourceConfig(Section):
    kind: str = "synthetic"
    """Where interactions come from: synthetic (embedded seeded world), movielens (a MovieLens
    directory: 100K, 1M or the ratings.csv layouts), amazon (Amazon reviews JSON lines, 2018 or
    2023 layout), table (generic Parquet/CSV/JSON-lines with a column mapping)."""
    path: Optional[str] = None
    """Directory or file of the source (local path or any pyarrow filesystem URI such as s3://)."""
    items_path: Optional[str] = None
    """Item metadata file/dir: Amazon meta JSON lines, or the generic item table."""
    format: Optional[Literal["parquet", "csv", "jsonl"]] = None
    """File format of a generic table; inferred from the extension when None."""
    columns: ColumnMapping = ColumnMapping()
    """Column mapping for generic tables."""
    timestamp_unit: Literal["s", "ms", "us", "ns"] = "s"
    """Unit of numeric timestamps in a generic table (Amazon and MovieLens know their own)."""
    synthetic: SyntheticConfig = SyntheticConfig()
    """Settings of the synthetic world (kind=synthetic)."""

    @model_validator(mode="after")
    def _path_needed(self) -> "SourceConfig":
        from bridgerec.data.sources import SOURCES  # light: the registry of source factories

        SOURCES.validate(self.kind)  # first: a path error would hide a mistyped kind
        if self.kind != "synthetic" and not self.path:
            raise ValueError(f"data.source.path is required when data.source.kind is {self.kind!r}")
        return self


class PreprocessConfig(Section):
    implicit_threshold: Optional[float] = None
    """Keep only events with rating >= this value (implicit feedback); None keeps every event."""
    kcore_user: int = 5
    """Iterative k-core: drop users with fewer than this many interactions (0 disables)."""
    kcore_item: int = 5
    """Iterative k-core: drop items with fewer than this many interactions (0 disables)."""
    kcore_max_iter: int = 50
    """Upper bound on k-core iterations (it stops earlier once nothing changes). Hitting it leaves
    data that is not k-core: preparation then warns (KCoreNotConvergedWarning and a printed line)
    and the manifest records ``preprocessing.kcore_converged: false``."""
    duplicates: Literal["first", "last", "keep", "error"] = "first"
    """What to do with repeated (user, item) events: keep the first or last by time, keep all,
    or fail naming the first duplicate."""
    bad_rows: Literal["error", "quarantine"] = "error"
    """Invalid rows (null ids, unparsable rating/time): fail naming file, row and column, or write
    them to quarantine/ in the dataset dir and count them in the manifest."""


SplitProtocol = Literal["leave_last_out", "temporal", "random", "random_per_user", "temporal_per_user"]


class SplitConfig(Section):
    protocol: SplitProtocol = "leave_last_out"
    """How events are split (time order is always ts, then input file, then row):

    - leave_last_out: each user's last event is test, the one before valid (users with 2 events:
      test only; 1 event: train);
    - temporal: a global time cut at the valid/test quantiles of all events;
    - random: each event independently, by a seeded hash, with probability valid/test_fraction;
    - random_per_user: each user's events in a seeded random order, split by ratio
      (train : valid : test = 1-valid_fraction-test_fraction : valid_fraction : test_fraction,
      e.g. 8:1:1), as peer libraries such as RecBole do ("RS" grouped by user, random order);
    - temporal_per_user: the same ratio split of each user's events ordered by time: the
      earliest share train, then valid, then test.

    Rounding of the per-user ratio split (RecBole's rule) for a user with n events:
    valid = floor(n * valid_fraction), test = floor(n * test_fraction), train = the rest; then
    test, and after it valid, takes 1 event from train when its share n * fraction is in (0, 1)
    and train still holds at least 2 events. So at 8:1:1: n=1 -> 1/0/0, n=2 -> 1/0/1,
    n=3 -> 1/1/1, n=10 -> 8/1/1, n=19 -> 17/1/1, n=20 -> 16/2/2; every user keeps at least
    one training event."""
    valid_fraction: float = 0.1
    """Fraction of events for validation (temporal, random and the per-user ratio protocols)."""
    test_fraction: float = 0.1
    """Fraction of events for test (temporal, random and the per-user ratio protocols)."""

    @model_validator(mode="after")
    def _fractions(self) -> "SplitConfig":
        if not (0 <= self.valid_fraction < 1 and 0 < self.test_fraction < 1):
            raise ValueError("data.split.valid_fraction must be in [0,1) and test_fraction in (0,1)")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("data.split.valid_fraction + data.split.test_fraction must be < 1")
        return self

    def describe(self) -> str:
        """One line saying how the split was made (for run summaries and reports)."""
        v, t = self.valid_fraction, self.test_fraction
        ratio = f"{1 - v - t:g}:{v:g}:{t:g}"
        return {
            "leave_last_out": "test = each user's last event, valid = the one before",
            "temporal": f"test = the events after a global time cut ({ratio})",
            "random": f"test = a random sample of events ({ratio}, drawn per event)",
            "random_per_user": f"each user's events split {ratio} in a seeded random order",
            "temporal_per_user": f"each user's events split {ratio} by time (latest = test)",
        }[self.protocol]


class DataConfig(Section):
    name: str = "synthetic-small"
    """Dataset name; the prepared directory is <work_dir>/datasets/<name> unless output_dir is set."""
    output_dir: Optional[str] = None
    """Where the prepared dataset directory is written."""
    seed: int = 0
    """Seed for the synthetic world, random splits and negative sampling."""
    source: SourceConfig = SourceConfig()
    """Source of the raw interactions."""
    preprocess: PreprocessConfig = PreprocessConfig()
    """Filtering, de-duplication and bad-row handling."""
    split: SplitConfig = SplitConfig()
    """Train/valid/test split protocol."""
    read_batch_rows: int = 100_000
    """Rows per block when reading files (bounds memory per task)."""
    overwrite: bool = False
    """Re-prepare even when the output directory holds a dataset with the same inputs."""
