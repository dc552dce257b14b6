"""File-based sources (MovieLens, Amazon, generic tables) read from small fixtures written here."""

from __future__ import annotations

import gzip
import json
import pickle
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bridgerec.config import ColumnMapping, SourceConfig
from bridgerec.data.schema import validate_events
from bridgerec.data.sources.amazon import AmazonSource
from bridgerec.data.sources.base import RAW_COLUMNS
from bridgerec.data.sources.movielens import MovieLensSource
from bridgerec.data.sources.table import TableSource


# ----------------------------------------------------------------------------- helpers


def _write(path: Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data if isinstance(data, bytes) else data.encode(encoding)
    if path.suffix == ".gz":
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _events(source, chunk_rows: int = 1000) -> pd.DataFrame:
    """All events of a source, checking the raw-chunk contract on the way."""
    chunks = []
    for path in source.event_files():
        for chunk in source.read_events(path, chunk_rows):
            assert list(chunk.columns) == RAW_COLUMNS
            assert len(chunk) <= chunk_rows
            assert (chunk["_file"] == path).all()
            chunks.append(chunk)
    return pd.concat(chunks, ignore_index=True)


def _rows(df: pd.DataFrame) -> list[tuple]:
    """(user, item, ts, rating, row) with ids as str and numbers as float, for exact comparison."""
    return [
        (str(u), str(i), None if pd.isna(t) else float(t), None if pd.isna(r) else float(r), int(n))
        for u, i, t, r, n in zip(df["user_id"], df["item_id"], df["ts"], df["rating"], df["_row"])
    ]


def _assert_chunking_stable(source) -> None:
    whole, small = _events(source), _events(source, chunk_rows=2)
    assert _rows(small) == _rows(whole)
    validate_events(whole)  # the chunks satisfy the downstream validator
    copy = pickle.loads(pickle.dumps(source))  # Ray ships sources to tasks
    assert _rows(_events(copy)) == _rows(whole)
    json.dumps(source.describe())


def _by_id(df: pd.DataFrame, key: str) -> dict[str, dict]:
    return {row[key]: row for row in df.to_dict("records")}


# ----------------------------------------------------------------------------- MovieLens


def _ml100k(tmp_path: Path) -> Path:
    d = tmp_path / "ml-100k"
    _write(d / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    flags_toy = ["0"] * 19
    for g in (3, 4, 5):  # Animation, Children's, Comedy
        flags_toy[g] = "1"
    flags_mis = ["0"] * 19
    flags_mis[8] = "1"  # Drama
    item = (
        "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|" + "|".join(flags_toy) + "\n"
        "2|Misérables, Les (1995)|01-Jan-1995||http://x|" + "|".join(flags_mis) + "\n"
    )
    _write(d / "u.item", item, encoding="latin-1")
    _write(d / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    return d


def test_movielens_100k(tmp_path: Path) -> None:
    src = MovieLensSource.from_config(SourceConfig(kind="movielens", path=str(_ml100k(tmp_path))))
    assert (src.name, src.layout) == ("movielens-100k", "100k")
    assert [Path(p).name for p in src.event_files()] == ["u.data"]
    assert _rows(_events(src)) == [
        ("196", "242", 881250949.0, 3.0, 1),
        ("186", "302", 891717742.0, 3.0, 2),
        ("22", "377", 878887116.0, 1.0, 3),
    ]
    _assert_chunking_stable(src)
    items = _by_id(src.read_items(), "item_id")
    assert items["1"]["title"] == "Toy Story (1995)"
    assert items["1"]["text"] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert items["2"]["title"] == "Misérables, Les (1995)"
    assert items["2"]["text"] == "Misérables, Les (1995). Genres: Drama."
    users = _by_id(src.read_users(), "user_id")
    assert users["1"]["text"] == "Age 24. Gender: male. Occupation: technician. Zip code: 85711."
    assert users["2"]["text"] == "Age 53. Gender: female. Occupation: other. Zip code: 94043."
    desc = src.describe()
    assert (desc["kind"], desc["layout"]) == ("movielens", "100k")
    json.dumps(desc)


def _ml1m(tmp_path: Path) -> Path:
    d = tmp_path / "ml-1m"
    _write(d / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n")
    _write(
        d / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "1357::Shine (1996)::Drama|Romance\n"
        "260::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
        "73::Misérables, Les (1995)::Drama|Musical\n",
        encoding="latin-1",
    )
    _write(d / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return d


def test_movielens_1m(tmp_path: Path) -> None:
    src = MovieLensSource.from_config(SourceConfig(kind="movielens", path=str(_ml1m(tmp_path))))
    assert (src.name, src.layout) == ("movielens-1m", "1m")
    assert _rows(_events(src)) == [
        ("1", "1193", 978300760.0, 5.0, 1),
        ("1", "661", 978302109.0, 3.0, 2),
        ("2", "1357", 978298709.0, 5.0, 3),
    ]
    _assert_chunking_stable(src)
    items = _by_id(src.read_items(), "item_id")
    assert items["260"]["title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items["260"]["text"] == "Star Wars: Episode IV - A New Hope (1977). Genres: Action, Adventure, Fantasy, Sci-Fi."
    assert items["73"]["title"] == "Misérables, Les (1995)"
    users = _by_id(src.read_users(), "user_id")
    assert users["1"]["text"] == "Age under 18. Gender: female. Occupation: K-12 student. Zip code: 48067."
    assert users["2"]["text"] == "Age 56+. Gender: male. Occupation: self-employed. Zip code: 70072."


def _ml25m(tmp_path: Path) -> Path:
    d = tmp_path / "ml-25m"
    _write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n1,306,3.5,1147868817\n2,1,4.0,1147868828\n")
    _write(
        d / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '296,"Pulp Fiction, The (1994)",Comedy|Crime|Drama|Thriller\n'
        "306,Trois Couleurs: Rouge (1994),(no genres listed)\n"
        "307,Amélie (2001),Comedy|Romance\n",
    )
    return d


def test_movielens_csv_layout(tmp_path: Path) -> None:
    src = MovieLensSource.from_config(SourceConfig(kind="movielens", path=str(_ml25m(tmp_path))))
    assert (src.name, src.layout) == ("movielens-25m", "csv")
    assert _rows(_events(src)) == [
        ("1", "296", 1147880044.0, 5.0, 1),
        ("1", "306", 1147868817.0, 3.5, 2),
        ("2", "1", 1147868828.0, 4.0, 3),
    ]
    _assert_chunking_stable(src)
    items = _by_id(src.read_items(), "item_id")
    assert items["296"]["title"] == "Pulp Fiction, The (1994)"
    assert items["296"]["text"] == "Pulp Fiction, The (1994). Genres: Comedy, Crime, Drama, Thriller."
    assert items["306"]["text"] == "Trois Couleurs: Rouge (1994)."
    assert items["307"]["title"] == "Amélie (2001)"
    assert src.read_users() is None


def test_movielens_unknown_layout(tmp_path: Path) -> None:
    _write(tmp_path / "data" / "ratings.txt", "1 2 3\n")
    with pytest.raises(ValueError) as err:
        MovieLensSource.from_config(SourceConfig(kind="movielens", path=str(tmp_path / "data")))
    message = str(err.value)
    for name in ("u.data", "ratings.dat", "ratings.csv", "ratings.txt"):
        assert name in message


def test_movielens_latin1_bytes_in_utf8_csv(tmp_path: Path) -> None:
    d = tmp_path / "ml-latest-small"
    ratings = _write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.0,10\n1,3\xe9,3.0,11\n", encoding="latin-1")
    src = MovieLensSource.from_config(SourceConfig(kind="movielens", path=str(d)))
    assert src.name == "movielens-latest-small"
    with pytest.raises(ValueError, match=re.escape(f"{ratings}:3")):
        _events(src)


def test_movielens_missing_column(tmp_path: Path) -> None:
    d = tmp_path / "ml-32m"
    ratings = _write(d / "ratings.csv", "userId,itemId,rating,timestamp\n1,2,3.0,10\n")
    src = MovieLensSource.from_config(SourceConfig(kind="movielens", path=str(d)))
    with pytest.raises(ValueError, match=re.escape(f"file {ratings}: column 'movieId' not found")):
        _events(src)


# ----------------------------------------------------------------------------- Amazon

_REVIEWS_2018 = [
    {"overall": 5.0, "verified": True, "reviewTime": "09 13, 2009", "reviewerID": "A3SGXH7AUHU8GW", "asin": "0006641040",
     "unixReviewTime": 1252800000},
    {"overall": 3.0, "reviewerID": "A1D87F6ZCVE5NK", "asin": "0006641040", "unixReviewTime": 1352764800, "reviewText": "ok"},
    {"overall": 4.0, "reviewerID": "A2MUGFV2TDQ47K", "asin": "B00002N6AN"},  # no time -> null
]
_META_2018 = [
    {"asin": "0006641040", "title": "Chicken Soup &amp; Rice", "brand": "Sendak", "category": ["Books", "Children's Books"],
     "description": ["<b>A classic</b>\n  picture book.", ""], "feature": []},
    {"asin": "B00002N6AN", "title": "Crayons", "description": "Bright  colours", "category": []},
]


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_amazon_2018(tmp_path: Path, suffix: str) -> None:
    reviews = _write(tmp_path / f"Books_5{suffix}", _jsonl(_REVIEWS_2018))
    meta = _write(tmp_path / f"meta_Books{suffix}", _jsonl(_META_2018))
    src = AmazonSource.from_config(SourceConfig(kind="amazon", path=str(reviews), items_path=str(meta)))
    assert (src.name, src.layout, src.event_files()) == ("amazon-2018", "2018", [str(reviews)])
    assert _rows(_events(src)) == [
        ("A3SGXH7AUHU8GW", "0006641040", 1252800000.0, 5.0, 1),
        ("A1D87F6ZCVE5NK", "0006641040", 1352764800.0, 3.0, 2),
        ("A2MUGFV2TDQ47K", "B00002N6AN", None, 4.0, 3),
    ]
    assert _rows(_events(src, chunk_rows=2)) == _rows(_events(src))
    items = _by_id(src.read_items(), "item_id")
    assert items["0006641040"]["title"] == "Chicken Soup & Rice"
    assert items["0006641040"]["text"] == (
        "Chicken Soup & Rice. Brand: Sendak. Categories: Books > Children's Books. Description: A classic picture book."
    )
    assert items["B00002N6AN"]["text"] == "Crayons. Description: Bright colours."
    assert src.read_users() is None
    json.dumps(src.describe())


_REVIEWS_2023 = [
    {"rating": 5.0, "title": "Great", "text": "x", "images": [], "asin": "B00YQ6X8EO", "parent_asin": "B00YQ6X8EO",
     "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": True},
    {"rating": 4.0, "asin": "B081TJ8YS3", "parent_asin": "B081TJ8YS3", "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": 1588615855070},
    {"rating": 1.0, "asin": "B0000001", "user_id": "AE74DYR3QUGVPZJ3P7RFWBGIX7XQ", "timestamp": 1589665266052},  # no parent_asin
]
_META_2023 = [
    {"main_category": "All Beauty", "title": "Howard LC0008 Leather Conditioner", "features": ["For leather", "8 oz"],
     "description": ["<p>Conditions</p>  leather."], "categories": [], "parent_asin": "B00YQ6X8EO", "store": "Howard"},
    {"main_category": "All Beauty", "title": "Yes To Tomatoes", "features": [], "description": [],
     "categories": ["Beauty", "Skin Care"], "parent_asin": "B081TJ8YS3"},
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_amazon_2023_milliseconds(tmp_path: Path, suffix: str) -> None:
    reviews = _write(tmp_path / "reviews" / f"All_Beauty{suffix}", "\n" + _jsonl(_REVIEWS_2023))  # line 1 blank
    meta = _write(tmp_path / f"meta_All_Beauty{suffix}", _jsonl(_META_2023))
    src = AmazonSource.from_config(SourceConfig(kind="amazon", path=str(tmp_path / "reviews"), items_path=str(meta)))
    assert (src.name, src.layout, src.event_files()) == ("amazon-2023", "2023", [str(reviews)])
    assert _rows(_events(src)) == [
        ("AGKHLEW2SOWHNMFQIJGBECAF7INQ", "B00YQ6X8EO", 1588687728.0, 5.0, 2),
        ("AGKHLEW2SOWHNMFQIJGBECAF7INQ", "B081TJ8YS3", 1588615855.0, 4.0, 3),
        ("AE74DYR3QUGVPZJ3P7RFWBGIX7XQ", "B0000001", 1589665266.0, 1.0, 4),
    ]
    _assert_chunking_stable(src)
    items = _by_id(src.read_items(), "item_id")
    assert items["B00YQ6X8EO"]["text"] == (
        "Howard LC0008 Leather Conditioner. Categories: All Beauty. Features: For leather; 8 oz. Description: Conditions leather."
    )
    assert items["B081TJ8YS3"]["text"] == "Yes To Tomatoes. Categories: Beauty > Skin Care."


def test_amazon_missing_field_is_null_and_reported_downstream(tmp_path: Path) -> None:
    reviews = _write(tmp_path / "r.jsonl", _jsonl([{"user_id": "u1", "parent_asin": "i1", "timestamp": 1000}]))
    src = AmazonSource.from_config(SourceConfig(kind="amazon", path=str(reviews)))
    (row,) = _rows(_events(src))
    assert row == ("u1", "i1", 1.0, None, 1)
    with pytest.raises(ValueError, match=r"row 1, column 'rating'"):
        validate_events(_events(src))


def test_amazon_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    text = _jsonl(_REVIEWS_2018[:2]) + '{"overall": 5.0, "reviewerID": "A"\n'
    reviews = _write(tmp_path / "bad.json.gz", text)
    src = AmazonSource.from_config(SourceConfig(kind="amazon", path=str(reviews)))
    with pytest.raises(ValueError, match=re.escape(f"{reviews}: line 3: malformed JSON")):
        _events(src)


# ----------------------------------------------------------------------------- generic tables


def _custom_mapping(**overrides) -> ColumnMapping:
    fields = dict(user="uid", item="iid", rating="stars", timestamp="when", title="name", text="blurb")
    fields.update(overrides)
    return ColumnMapping(**fields)


def test_table_parquet_custom_mapping_ms(tmp_path: Path) -> None:
    d = tmp_path / "events"
    d.mkdir()
    first = {"uid": [1, 2], "iid": ["a", "b"], "stars": [4.0, 2.5], "when": [1600000000123, 1600000001999], "x": [0, 0]}
    pq.write_table(pa.table(first), d / "part-0.parquet")
    pq.write_table(pa.table({"uid": [3], "iid": ["c"], "stars": [1.0], "when": [1600000002000], "x": [0]}), d / "part-1.parquet")
    (d / "_SUCCESS").write_text("")
    cfg = SourceConfig(kind="table", path=str(d), columns=_custom_mapping(), timestamp_unit="ms")
    src = TableSource.from_config(cfg)
    assert src.describe()["layout"] == "parquet"
    assert [Path(p).name for p in src.event_files()] == ["part-0.parquet", "part-1.parquet"]
    assert _rows(_events(src)) == [
        ("1", "a", 1600000000.0, 4.0, 1),
        ("2", "b", 1600000001.0, 2.5, 2),
        ("3", "c", 1600000002.0, 1.0, 1),
    ]
    assert _rows(_events(src, chunk_rows=1)) == _rows(_events(src))
    json.dumps(src.describe())


def test_table_csv_implicit_without_time_and_item_table(tmp_path: Path) -> None:
    events = _write(tmp_path / "clicks.csv.gz", "uid,iid,other\n007,a,x\n8,b,y\n9,a,z\n")
    items = _write(tmp_path / "items.csv", 'iid,name,blurb\na,"Alpha, the first",first item\nb,1984,\n')
    cfg = SourceConfig(kind="table", path=str(events), items_path=str(items), columns=_custom_mapping(rating=None, timestamp=None))
    src = TableSource.from_config(cfg)
    assert _rows(_events(src)) == [("007", "a", 1.0, 1.0, 1), ("8", "b", 2.0, 1.0, 2), ("9", "a", 3.0, 1.0, 3)]
    _assert_chunking_stable(src)
    table = src.read_items()
    assert table.to_dict("records") == [
        {"item_id": "a", "title": "Alpha, the first", "text": "first item"},
        {"item_id": "b", "title": "1984", "text": ""},
    ]
    assert src.read_users() is None


def test_table_jsonl_string_times_pass_through(tmp_path: Path) -> None:
    records = [
        {"uid": "u1", "iid": 10, "stars": 5, "when": "2020-01-01T00:00:00Z"},
        {"uid": "u2", "iid": 11, "stars": 3, "when": 1600000000},
    ]
    events = _write(tmp_path / "ev.data", _jsonl(records))
    cfg = SourceConfig(kind="table", path=str(events), format="jsonl", columns=_custom_mapping())
    src = TableSource.from_config(cfg)
    chunk = next(src.read_events(str(events), 10))
    assert chunk["ts"].tolist() == ["2020-01-01T00:00:00Z", 1600000000]
    assert chunk["item_id"].tolist() == [10, 11]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_table_missing_mapped_column(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"events.{fmt}"
    frame = pd.DataFrame({"uid": ["u"], "item": ["i"], "stars": [1.0], "when": [5]})
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        _write(path, _jsonl(frame.to_dict("records")))
    src = TableSource.from_config(SourceConfig(kind="table", path=str(path), columns=_custom_mapping()))
    expected = f"file {path}: column 'iid' (data.source.columns.item) not found; columns are "
    with pytest.raises(ValueError, match=re.escape(expected)):
        _events(src)


def test_float_ids_keep_their_value_in_events_and_metadata(tmp_path: Path) -> None:
    """Float ids (a Parquet column, JSON numbers) that are not whole numbers are not truncated:
    1.5 and 1.7 stay two ids; whole floats read as integers ("2", not "2.0"); event ids and item
    metadata ids are cast alike, so the item table still joins."""
    d = tmp_path / "t"
    d.mkdir()
    pq.write_table(pa.table({"user_id": [1.5, 1.7, 2.0], "item_id": [10.25, 10.75, 11.0], "rating": [1.0, 2.0, 3.0],
                             "timestamp": [1, 2, 3]}), d / "events.parquet")
    pq.write_table(pa.table({"item_id": [10.25, 10.75, 11.0], "title": ["A", "B", "C"], "text": ["a", "b", "c"]}),
                   tmp_path / "items.parquet")
    src = TableSource(str(d / "events.parquet"), items_path=str(tmp_path / "items.parquet"))
    good, bad = validate_events(_events(src))
    assert bad.empty
    assert good["user_id"].tolist() == ["1.5", "1.7", "2"]
    assert good["item_id"].tolist() == ["10.25", "10.75", "11"]
    assert src.read_items()[["item_id", "title"]].values.tolist() == [["10.25", "A"], ["10.75", "B"], ["11", "C"]]
    # JSON numbers arrive as Python objects of mixed type
    mixed = pd.DataFrame({"user_id": [1.5, 7, "u", 3.0], "item_id": ["x"] * 4, "ts": [1] * 4, "rating": [1] * 4,
                          "_file": "f", "_row": [1, 2, 3, 4]}, dtype=object)
    assert validate_events(mixed)[0]["user_id"].tolist() == ["1.5", "7", "u", "3"]
