"""MovieLens directories in the three published layouts, detected from the files present.

- ``100k`` (ML-100K): ``u.data`` tab-separated ``user item rating unix-ts``; ``u.item``
  ``id|title|release|video release|IMDb URL|19 genre flags``; ``u.user`` ``id|age|gender|occupation|zip``;
  latin-1.
- ``1m`` (ML-1M): ``ratings.dat`` ``UserID::MovieID::Rating::Timestamp``; ``movies.dat``
  ``MovieID::Title::Genre|Genre``; ``users.dat`` ``UserID::Gender::Age::Occupation::Zip``; latin-1.
- ``csv`` (ML-20M/25M/32M/latest): ``ratings.csv`` ``userId,movieId,rating,timestamp`` and
  ``movies.csv`` ``movieId,title,genres`` with headers, utf-8; no user file.

``1m`` also covers ML-10M (same ``::`` files, no ``users.dat``; named ``movielens-10m``);
``csv`` covers ML-20M/25M/32M and ml-latest(-small). Ratings are streamed in chunks; item text is
``"Title (1995). Genres: Action, Comedy."`` and user text, where the layout has demographics,
``"Age 25-34. Gender: female. Occupation: programmer. Zip code: 48067."``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import pandas as pd

from bridgerec.data.config import SourceConfig
from bridgerec.data import fs
from bridgerec.data.sources._common import (
    basename,
    csv_columns,
    items_frame,
    iter_csv,
    raw_frame,
    require_columns,
    sentences,
    users_frame,
)

__all__ = ["MovieLensSource", "GENRES_100K"]

GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)

# ML-1M README: age and occupation codes of users.dat.
_AGES_1M = {"1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55", "56": "56+"}
_OCCUPATIONS_1M = (
    "other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
_GENDERS = {"M": "male", "F": "female"}
_NO_GENRES = "(no genres listed)"


@dataclass(frozen=True)
class _Layout:
    key: str
    label: str
    ratings: str
    movies: str
    users: Optional[str]


_LAYOUTS = (
    _Layout("100k", "ML-100K", "u.data", "u.item", "u.user"),
    _Layout("1m", "ML-1M/10M", "ratings.dat", "movies.dat", "users.dat"),
    _Layout("csv", "ML-20M/25M/32M/latest", "ratings.csv", "movies.csv", None),
)
_LAYOUT_BY_KEY = {layout.key: layout for layout in _LAYOUTS}


def _detect(directory: str) -> tuple[_Layout, set[str]]:
    """The layout whose ratings file is in ``directory``, and the file names found there."""
    if not fs.exists(directory):
        raise FileNotFoundError(f"data.source.path: {directory} does not exist")
    if not fs.is_dir(directory):
        raise ValueError(f"data.source.path: {directory} is not a directory (a MovieLens source is the unpacked dataset folder)")
    names = {basename(f) for f in fs.list_dir(directory)}
    for layout in _LAYOUTS:
        if layout.ratings in names:
            return layout, names
    looked_for = ", ".join(f"{layout.ratings} ({layout.label})" for layout in _LAYOUTS)
    found = sorted(names)
    shown = found[:20] + (["..."] if len(found) > 20 else [])
    raise ValueError(f"data.source.path: {directory} matches no MovieLens layout: looked for {looked_for}; found {shown}")


def _name(directory: str, layout: _Layout, names: set[str]) -> str:
    if layout.key == "100k":
        return "movielens-100k"
    if layout.key == "1m":
        return "movielens-1m" if "users.dat" in names else "movielens-10m"
    match = re.fullmatch(r"ml-(.+)", basename(directory).lower())
    return f"movielens-{match.group(1)}" if match else "movielens"


def _utf8_or_latin1(line: str) -> str:
    """A latin-1-decoded line re-read as utf-8 when it is valid utf-8 (ML-10M ships utf-8 titles)."""
    try:
        return line.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return line


def _split_lines(path: str, sep: str, n_fields: int) -> Iterator[list[str]]:
    """Non-blank lines split on ``sep`` into exactly ``n_fields`` (the last keeps any extra ``sep``)."""
    for lineno, line in fs.iter_lines(path, "latin-1"):
        if not line.strip():
            continue
        line = _utf8_or_latin1(line)
        parts = line.split(sep, n_fields - 1)
        if len(parts) < n_fields:
            raise ValueError(f"{path}: line {lineno}: expected {n_fields} {sep!r}-separated fields, got {len(parts)}")
        yield parts


def _movie_text(title: str, genres: list[str]) -> str:
    genres = [g for g in genres if g and g != _NO_GENRES]
    return sentences([title, "Genres: " + ", ".join(genres) if genres else ""])


def _user_text(age: str, gender: str, occupation: str, zip_code: str) -> str:
    return sentences(
        [
            f"Age {age}" if age else "",
            f"Gender: {_GENDERS.get(gender.upper(), gender)}" if gender else "",
            f"Occupation: {occupation}" if occupation else "",
            f"Zip code: {zip_code}" if zip_code else "",
        ]
    )


# ----------------------------------------------------------------------------- per-layout readers


def _ratings_100k(path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    names = ["user", "item", "rating", "ts"]
    for first, df in iter_csv(path, chunk_rows, "latin-1", sep="\t", header=None, names=names, dtype={"user": str, "item": str}):
        yield raw_frame(path, range(first, first + len(df)), df["user"], df["item"], df["ts"], df["rating"])


def _ratings_1m(path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    # "::" read as ":" with an empty field between values keeps pandas' fast C parser.
    names = ["user", "_a", "item", "_b", "rating", "_c", "ts"]
    kwargs: dict[str, Any] = dict(
        sep=":", header=None, names=names, usecols=["user", "item", "rating", "ts"], dtype={"user": str, "item": str}
    )
    for first, df in iter_csv(path, chunk_rows, "latin-1", **kwargs):
        yield raw_frame(path, range(first, first + len(df)), df["user"], df["item"], df["ts"], df["rating"])


def _ratings_csv(path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    wanted = {"user": "userId", "item": "movieId", "rating": "rating", "ts": "timestamp"}
    require_columns(path, csv_columns(path), wanted)
    kwargs: dict[str, Any] = dict(usecols=list(wanted.values()), dtype={"userId": str, "movieId": str})
    for first, df in iter_csv(path, chunk_rows, **kwargs):
        yield raw_frame(path, range(first, first + len(df)), df["userId"], df["movieId"], df["timestamp"], df["rating"])


def _movies_100k(path: str) -> pd.DataFrame:
    rows = []
    for parts in _split_lines(path, "|", 5 + len(GENRES_100K)):
        flags = parts[5:]
        genres = [g for g, flag in zip(GENRES_100K, flags) if flag.strip() == "1"]
        rows.append((parts[0], parts[1], _movie_text(parts[1], genres)))
    return _items(rows)


def _movies_1m(path: str) -> pd.DataFrame:
    rows = [(i, title, _movie_text(title, genres.split("|"))) for i, title, genres in _split_lines(path, "::", 3)]
    return _items(rows)


def _movies_csv(path: str) -> pd.DataFrame:
    wanted = {"item": "movieId", "title": "title", "genres": "genres"}
    require_columns(path, csv_columns(path), wanted)
    rows = []
    for _, df in iter_csv(path, 100_000, usecols=list(wanted.values()), dtype=str, keep_default_na=False):
        rows.extend((i, t, _movie_text(t, g.split("|"))) for i, t, g in zip(df["movieId"], df["title"], df["genres"]))
    return _items(rows)


def _items(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    ids, titles, texts = (list(col) for col in zip(*rows)) if rows else ([], [], [])
    return items_frame(ids, titles, texts)


def _users_100k(path: str) -> pd.DataFrame:
    rows = [(u, _user_text(age, gender, occ, zip_code)) for u, age, gender, occ, zip_code in _split_lines(path, "|", 5)]
    return _users(rows)


def _users_1m(path: str) -> pd.DataFrame:
    rows = []
    for u, gender, age, occ, zip_code in _split_lines(path, "::", 5):
        occupation = _OCCUPATIONS_1M[int(occ)] if occ.strip().isdigit() and int(occ) < len(_OCCUPATIONS_1M) else occ
        rows.append((u, _user_text(_AGES_1M.get(age.strip(), age), gender, occupation, zip_code)))
    return _users(rows)


def _users(rows: list[tuple[str, str]]) -> pd.DataFrame:
    ids, texts = (list(col) for col in zip(*rows)) if rows else ([], [])
    return users_frame(ids, texts)


_RATINGS = {"100k": _ratings_100k, "1m": _ratings_1m, "csv": _ratings_csv}
_MOVIES = {"100k": _movies_100k, "1m": _movies_1m, "csv": _movies_csv}
_USERS = {"100k": _users_100k, "1m": _users_1m}


# ----------------------------------------------------------------------------- the source


class MovieLensSource:
    """A MovieLens directory (``MovieLensSource(directory)``; the layout is detected)."""

    def __init__(self, path: str):
        layout, names = _detect(path)
        self.path = path
        self.layout = layout.key
        self.name = _name(path, layout, names)
        self._files = names

    @classmethod
    def from_config(cls, cfg: SourceConfig) -> "MovieLensSource":
        if cfg.kind != "movielens":
            raise ValueError(f"data.source.kind is {cfg.kind!r}, not 'movielens'")
        return cls(str(cfg.path))

    def _file(self, name: Optional[str]) -> Optional[str]:
        return fs.join(self.path, name) if name and name in self._files else None

    @property
    def _spec(self) -> _Layout:
        return _LAYOUT_BY_KEY[self.layout]

    def event_files(self) -> list[str]:
        return [fs.join(self.path, self._spec.ratings)]

    def read_events(self, path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        return _RATINGS[self.layout](path, chunk_rows)

    def read_items(self) -> Optional[pd.DataFrame]:
        movies = self._file(self._spec.movies)
        return _MOVIES[self.layout](movies) if movies else None

    def read_users(self) -> Optional[pd.DataFrame]:
        users = self._file(self._spec.users)
        return _USERS[self.layout](users) if users else None

    def describe(self) -> dict:
        spec = self._spec
        return {
            "kind": "movielens",
            "name": self.name,
            "layout": self.layout,
            "paths": {
                "dir": self.path,
                "events": self.event_files(),
                "items": self._file(spec.movies),
                "users": self._file(spec.users),
            },
        }
