"""Behaviour of the Ray Data preparation pipeline (:func:`bridgerec.data.prepare.prepare_dataset`).

Most checks prepare small hand-written CSV tables (the ``table`` source) whose expected output
is known exactly; a few use the session's tiny synthetic dataset. Every preparation costs a few
seconds of Ray work, so results shared by several tests come from module-scoped fixtures.
"""

from __future__ import annotations

import os
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import bridgerec.data.prepare as prepare_module
from bridgerec.config import ConfigError, load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.data.prepare import SPLITS, KCoreNotConvergedWarning, PrepareResult, prepare_dataset
from bridgerec.data.schema import DataValidationError
from bridgerec.data.synthetic import SyntheticWorld

# ----------------------------------------------------------------------------- helpers

_HEADER = "user_id,item_id,rating,timestamp\n"


def _quiet(message: str) -> None:
    pass


def _write_events(root: Path, text: str, name: str = "events.csv") -> Path:
    """``root/name``; an identical existing file is left untouched (its mtime is part of the
    input fingerprint, so rewriting it would defeat dataset reuse)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    text = textwrap.dedent(text).lstrip()
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def _table_config(root: Path, text: str, *overrides: str, name: str = "events.csv"):
    """Config preparing the table ``text`` (written to ``root/name``) into ``root/dataset``;
    k-core is off unless overridden."""
    return _source_config(root, _write_events(root, text, name), *overrides)


def _source_config(root: Path, path: Path, *overrides: str):
    """Config preparing the table file or directory ``path`` into ``root/dataset``; k-core off."""
    return load_config(
        None,
        [
            f"work_dir={root / 'work'}",
            f"data.output_dir={root / 'dataset'}",
            "data.source.kind=table",
            f"data.source.path={path}",
            "data.preprocess.kcore_user=0",
            "data.preprocess.kcore_item=0",
            *overrides,
        ],
    )


def _prepare_table(root: Path, text: str, *overrides: str) -> PrepareResult:
    cfg = _table_config(root, text, *overrides)
    return prepare_dataset(cfg.data, cfg.dataset_dir(), log=_quiet)


def _interactions(path: str) -> pd.DataFrame:
    return pq.read_table(os.path.join(path, "interactions")).to_pandas()


def _original_ids(path: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (uid, iid, ...) with the original ``user_id``/``item_id`` looked up in the id maps."""
    d = DatasetDir(path)
    users = d.users().set_index("uid")["user_id"]
    items = d.items().set_index("iid")["item_id"]
    return frame.assign(user_id=users.reindex(frame["uid"]).to_numpy(), item_id=items.reindex(frame["iid"]).to_numpy())


def _triples(path: str, split: str | None = None) -> set[tuple[str, str, int]]:
    """(user_id, item_id, ts) of the interactions or of one split, in original ids."""
    frame = _interactions(path) if split is None else DatasetDir(path).frame(split)
    frame = _original_ids(path, frame)
    return set(zip(frame["user_id"], frame["item_id"], frame["ts"].astype(int)))


def _split_frames(path: str) -> dict[str, pd.DataFrame]:
    d = DatasetDir(path)
    return {name: d.frame(name) for name in SPLITS}


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["uid"], frame["iid"]))


def _unix(*args: int, offset_hours: int = 0) -> int:
    """Unix seconds of a wall-clock time at UTC+offset_hours."""
    return int((datetime(*args, tzinfo=timezone.utc) - timedelta(hours=offset_hours)).timestamp())


def _assert_kcore(path: str, ku: int, ki: int) -> None:
    frame = _interactions(path)
    assert frame.groupby("uid").size().min() >= ku
    assert frame.groupby("iid").size().min() >= ki


def _assert_leave_last_out(path: str) -> None:
    """Per user: test is the latest event (users with >= 2 events), valid the one before (>= 3);
    the splits partition the interactions."""
    splits, every = _split_frames(path), _interactions(path)
    per_user = every.groupby("uid").size()
    for name in ("test", "valid"):
        assert splits[name]["uid"].is_unique, f"{name} has more than one event for a user"
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    latest_train = train.groupby("uid")["ts"].max()
    t_test, t_valid = test.set_index("uid")["ts"], valid.set_index("uid")["ts"]
    assert (t_valid <= t_test.reindex(t_valid.index)).all()
    assert (latest_train.reindex(t_valid.index).fillna(-1) <= t_valid).all()
    assert (latest_train.reindex(t_test.index).fillna(-1) <= t_test).all()
    assert set(test["uid"]) == set(per_user.index[per_user >= 2])
    assert set(valid["uid"]) == set(per_user.index[per_user >= 3])
    assert not (_pairs(test) | _pairs(valid)) & _pairs(train)
    union = pd.concat(splits.values(), ignore_index=True)
    key = ["uid", "iid", "ts", "rating"]
    pd.testing.assert_frame_equal(
        union[key].sort_values(key).reset_index(drop=True), every[key].sort_values(key).reset_index(drop=True)
    )


def _assert_manifest_counts(path: str) -> None:
    d = DatasetDir(path)
    counts = d.manifest["counts"]
    frame = _interactions(path)
    assert counts["interactions"] == len(frame)
    assert counts["users"] == len(d.users()) == frame["uid"].nunique()
    assert counts["items"] == len(d.items()) == frame["iid"].nunique()
    for name in SPLITS:
        assert counts[name] == len(d.frame(name))
    assert sum(counts[name] for name in SPLITS) == counts["interactions"]
    assert counts["removed_kcore"] + counts["removed_threshold_or_duplicate"] + counts["interactions"] == counts["valid_events_read"]


def _assert_dense_ids(path: str) -> None:
    """uid/iid are 0..n-1 and the id maps list the original ids in sorted order."""
    d = DatasetDir(path)
    users, items, frame = d.users(), d.items(), _interactions(path)
    assert users["uid"].tolist() == list(range(len(users)))
    assert items["iid"].tolist() == list(range(len(items)))
    assert users["user_id"].tolist() == sorted(users["user_id"]) and users["user_id"].is_unique
    assert items["item_id"].tolist() == sorted(items["item_id"]) and items["item_id"].is_unique
    assert frame["uid"].between(0, len(users) - 1).all() and frame["iid"].between(0, len(items) - 1).all()


# ----------------------------------------------------------------------------- k-core

# k-core with kcore_user=3, kcore_item=2. The core is 4 users x items P,Q,R,S. Removal cascades:
# pass 1 drops u1 (2 events) and Z (1 user); pass 2 drops X (only u2 left); pass 3 drops u2 (only
# Y, P left); pass 4 drops Y (only 010 left). User ids keep their leading zeros.
CASCADE = """\
    user_id,item_id,rating,timestamp
    010,P,5,1000
    010,Q,4,1010
    010,R,3,1020
    010,S,5,1030
    010,Y,2,1040
    002,S,5,1000
    002,R,4,1010
    002,Q,3,1020
    002,P,5,1030
    002,Z,1,1050
    0031,Q,4,1000
    0031,P,4,1010
    0031,S,4,1020
    0031,R,4,1030
    100,R,2,1000
    100,S,2,1010
    100,P,2,1020
    100,Q,2,1030
    u1,X,3,500
    u1,P,3,510
    u2,X,3,520
    u2,Y,3,530
    u2,P,3,540
"""
CORE_USERS = ["010", "002", "0031", "100"]
CASCADE_TS = {  # (user, item) -> ts of the surviving core events
    ("010", "P"): 1000, ("010", "Q"): 1010, ("010", "R"): 1020, ("010", "S"): 1030,
    ("002", "S"): 1000, ("002", "R"): 1010, ("002", "Q"): 1020, ("002", "P"): 1030,
    ("0031", "Q"): 1000, ("0031", "P"): 1010, ("0031", "S"): 1020, ("0031", "R"): 1030,
    ("100", "R"): 1000, ("100", "S"): 1010, ("100", "P"): 1020, ("100", "Q"): 1030,
}
KCORE = ("data.preprocess.kcore_user=3", "data.preprocess.kcore_item=2")


@pytest.fixture(scope="module")
def cascade(ray_session, tmp_path_factory) -> PrepareResult:
    """The cascade table prepared with k-core 3/2 and leave-last-out."""
    return _prepare_table(tmp_path_factory.mktemp("cascade"), CASCADE, *KCORE)


def test_kcore_cascade_gives_exact_survivors(cascade: PrepareResult) -> None:
    assert _triples(cascade.path) == {(u, i, ts) for (u, i), ts in CASCADE_TS.items()}
    counts = cascade.manifest["counts"]
    assert (counts["users"], counts["items"], counts["interactions"]) == (4, 4, 16)
    assert counts["removed_kcore"] == 23 - 16
    assert counts["kcore_iterations"] == 4
    _assert_kcore(cascade.path, 3, 2)


def test_kcore_max_iter_stops_early_with_consistent_ids(ray_session, tmp_path: Path) -> None:
    """Hitting kcore_max_iter keeps the events of that pass, and every id is in the id maps."""
    with pytest.warns(KCoreNotConvergedWarning):
        result = _prepare_table(tmp_path, CASCADE, *KCORE, "data.preprocess.kcore_max_iter=1")
    survivors = _triples(result.path)
    assert len(survivors) == 23 - 3  # pass 1 removed u1's two events and Z's one
    assert {u for u, _, _ in survivors} == set(CORE_USERS) | {"u2"}
    assert {i for _, i, _ in survivors} == set("PQRSXY")
    assert result.manifest["counts"]["kcore_iterations"] == 1
    _assert_dense_ids(result.path)


def test_kcore_not_converged_warns_and_is_recorded(ray_session, tmp_path: Path, cascade: PrepareResult) -> None:
    """Stopping at kcore_max_iter with users/items still below the minimum is not silent: a
    Python warning, a printed WARNING line naming the key, and preprocessing.kcore_converged=false
    in the manifest. A converged run records true."""
    lines: list[str] = []
    cfg = _table_config(tmp_path, CASCADE, *KCORE, "data.preprocess.kcore_max_iter=2")
    with pytest.warns(KCoreNotConvergedWarning, match=r"kcore_max_iter=2 .* NOT 3/2-core"):
        result = prepare_dataset(cfg.data, cfg.dataset_dir(), log=lines.append)
    (line,) = [m for m in lines if "WARNING" in m]
    # after pass 2 (X dropped) u2 has 2 events: the pass that would drop it never runs
    assert "data.preprocess.kcore_max_iter=2" in line and "1 users have fewer than 3" in line and "0 items" in line
    pre = result.manifest["preprocessing"]
    assert (pre["kcore_converged"], pre["kcore_iterations"], pre["kcore_users_below_min"], pre["kcore_items_below_min"]) == (False, 2, 1, 0)
    assert (cascade.manifest["preprocessing"]["kcore_converged"], cascade.manifest["preprocessing"]["kcore_iterations"]) == (True, 4)


def test_kcore_holds_on_synthetic(tiny_dataset: str, tiny_config) -> None:
    pcfg = tiny_config.data.preprocess
    _assert_kcore(tiny_dataset, pcfg.kcore_user, pcfg.kcore_item)


def test_kcore_removing_everything_fails(ray_session, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="k-core filter removed every event"):
        _prepare_table(tmp_path, CASCADE, "data.preprocess.kcore_user=10")


# ----------------------------------------------------------------------------- splits


def test_leave_last_out_exact(cascade: PrepareResult) -> None:
    expected = {"test": set(), "valid": set()}
    for user in CORE_USERS:
        events = sorted((ts, item) for (u, item), ts in CASCADE_TS.items() if u == user)
        expected["test"].add((user, events[-1][1], events[-1][0]))
        expected["valid"].add((user, events[-2][1], events[-2][0]))
    assert _triples(cascade.path, "test") == expected["test"]
    assert _triples(cascade.path, "valid") == expected["valid"]
    _assert_leave_last_out(cascade.path)


def test_leave_last_out_on_synthetic(tiny_dataset: str) -> None:
    _assert_leave_last_out(tiny_dataset)


def test_temporal_split(ray_session, tmp_path: Path) -> None:
    # 50 events with distinct times 1..50 in a scrambled order over 5 users and 50 items
    rows = "\n".join(f"u{k % 5},i{k},3,{(k * 17) % 50 + 1}" for k in range(50))
    result = _prepare_table(
        tmp_path, _HEADER + rows + "\n",
        "data.split.protocol=temporal", "data.split.valid_fraction=0.2", "data.split.test_fraction=0.2",
    )
    splits = _split_frames(result.path)
    assert splits["train"]["ts"].max() <= splits["valid"]["ts"].min()
    assert splits["valid"]["ts"].max() <= splits["test"]["ts"].min()
    assert {name: len(f) for name, f in splits.items()} == {"train": 30, "valid": 10, "test": 10}
    assert sorted(pd.concat(splits.values())["ts"]) == list(range(1, 51))


RANDOM_GRID = _HEADER + "\n".join(
    f"u{u},i{i},{1 + (u * i) % 5},{1000 + 20 * u + i}" for u in range(20) for i in range(20)
) + "\n"
RANDOM = ("data.split.protocol=random", "data.split.valid_fraction=0.1", "data.split.test_fraction=0.2")


@pytest.fixture(scope="module")
def random_runs(ray_session, tmp_path_factory) -> dict:
    """The 400-event grid with the random protocol: seed 0, the same again (reused), the same
    re-prepared with overwrite and another block size, and seed 1."""
    root = tmp_path_factory.mktemp("random")
    first = _prepare_table(root, RANDOM_GRID, *RANDOM)
    first_splits = _split_frames(first.path)
    again = _prepare_table(root, RANDOM_GRID, *RANDOM)
    rewritten = _prepare_table(root, RANDOM_GRID, *RANDOM, "data.overwrite=true", "data.read_batch_rows=7")
    other = _prepare_table(tmp_path_factory.mktemp("random-seed1"), RANDOM_GRID, *RANDOM, "data.seed=1")
    return dict(first=first, first_splits=first_splits, again=again, rewritten=rewritten, other=other)


def test_random_split_fractions(random_runs: dict) -> None:
    sizes = {name: len(frame) for name, frame in random_runs["first_splits"].items()}
    assert sum(sizes.values()) == 400
    assert abs(sizes["test"] / 400 - 0.2) < 0.06
    assert abs(sizes["valid"] / 400 - 0.1) < 0.05
    _assert_manifest_counts(random_runs["first"].path)


def test_random_split_deterministic_per_seed(random_runs: dict) -> None:
    first, rewritten = random_runs["first"], random_runs["rewritten"]
    assert not rewritten.reused
    assert rewritten.manifest["content_hash"] == first.manifest["content_hash"]
    for name, frame in _split_frames(rewritten.path).items():
        assert _pairs(frame) == _pairs(random_runs["first_splits"][name]), name
    other = random_runs["other"]
    assert _pairs(_split_frames(other.path)["test"]) != _pairs(random_runs["first_splits"]["test"])
    assert other.manifest["content_hash"] != first.manifest["content_hash"]


# Per-user ratio protocols. User "n<K>" has K events (distinct items, times 1000 + 10*k, listed
# newest first so that file order disagrees with time); user "tie" has 10 events at the same
# second whose items run backwards ("j9" in row 1 ... "j0" in row 10), so ordering ties by item id
# would reverse them.
PER_USER_SIZES = (1, 2, 3, 4, 5, 10, 19, 20)
PER_USER = _HEADER + "".join(
    f"n{n},n{n}-i{k:02d},3,{1000 + 10 * k}\n" for n in PER_USER_SIZES for k in reversed(range(n))
) + "".join(f"tie,j{9 - r},3,500\n" for r in range(10))
# (train, valid, test) per user at 8:1:1, by the rounding rule of SplitConfig.protocol's docstring
EXPECTED_8_1_1 = {1: (1, 0, 0), 2: (1, 0, 1), 3: (1, 1, 1), 4: (2, 1, 1), 5: (3, 1, 1), 10: (8, 1, 1), 19: (17, 1, 1), 20: (16, 2, 2)}


def _per_user_sizes(path: str) -> dict[str, tuple[int, int, int]]:
    frames = {name: _original_ids(path, frame) for name, frame in _split_frames(path).items()}
    users = sorted(set().union(*(set(f["user_id"]) for f in frames.values())))
    return {u: tuple(int((frames[name]["user_id"] == u).sum()) for name in SPLITS) for u in users}


@pytest.fixture(scope="module")
def per_user_runs(ray_session, tmp_path_factory) -> dict:
    """PER_USER under both per-user protocols at 8:1:1 (seed 0), again with 7 partitions and
    3-row read blocks, and with seed 1."""
    runs = {}
    for protocol in ("random_per_user", "temporal_per_user"):
        root = tmp_path_factory.mktemp(protocol)
        over = (f"data.split.protocol={protocol}", "data.split.valid_fraction=0.1", "data.split.test_fraction=0.1")
        runs[protocol] = _prepare_table(root, PER_USER, *over)
        runs[protocol + "/splits"] = _split_frames(runs[protocol].path)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(prepare_module, "_n_partitions", lambda n_rows: 7)
            runs[protocol + "/relaid"] = _prepare_table(root, PER_USER, *over, f"data.output_dir={root / 'relaid'}",
                                                        "data.read_batch_rows=3")
        runs[protocol + "/seed1"] = _prepare_table(tmp_path_factory.mktemp(protocol + "-seed1"), PER_USER, *over, "data.seed=1")
    return runs


@pytest.mark.parametrize("protocol", ["random_per_user", "temporal_per_user"])
def test_per_user_ratio_sizes_follow_the_rounding_rule(per_user_runs: dict, protocol: str) -> None:
    result = per_user_runs[protocol]
    sizes = _per_user_sizes(result.path)
    assert sizes == {**{f"n{n}": EXPECTED_8_1_1[n] for n in PER_USER_SIZES}, "tie": (8, 1, 1)}
    _assert_manifest_counts(result.path)
    assert result.manifest["split"]["protocol"] == protocol


@pytest.mark.parametrize("protocol", ["random_per_user", "temporal_per_user"])
def test_per_user_ratio_is_deterministic_and_layout_independent(per_user_runs: dict, protocol: str) -> None:
    """Other partitions and read blocks give the same splits and content hash; for the random
    order another seed gives other test events, for the time order the same ones."""
    first, relaid, seed1 = (per_user_runs[protocol + k] for k in ("", "/relaid", "/seed1"))
    assert not relaid.reused
    assert relaid.manifest["content_hash"] == first.manifest["content_hash"]
    for name, frame in _split_frames(relaid.path).items():
        assert _pairs(frame) == _pairs(per_user_runs[protocol + "/splits"][name]), name
    same_test = _triples(seed1.path, "test") == _triples(first.path, "test")
    assert same_test == (protocol == "temporal_per_user")


def test_temporal_per_user_orders_by_time_then_row(per_user_runs: dict) -> None:
    path = per_user_runs["temporal_per_user"].path
    frames = {name: _original_ids(path, frame) for name, frame in _split_frames(path).items()}
    for user, per in pd.concat([f.assign(split=n) for n, f in frames.items()]).groupby("user_id"):
        ts = {name: per.loc[per["split"] == name, "ts"] for name in SPLITS}
        if len(ts["valid"]):
            assert ts["train"].max() <= ts["valid"].min() and ts["valid"].max() <= ts["test"].min(), user
        if len(ts["test"]):
            assert ts["train"].max() <= ts["test"].min(), user
    # same-second events keep their file order: rows 9 and 10 hold j1 and j0
    assert _triples(path, "test") >= {("tie", "j0", 500)} and ("tie", "j1", 500) in _triples(path, "valid")


def test_random_per_user_is_not_the_time_order(per_user_runs: dict) -> None:
    path = per_user_runs["random_per_user"].path
    test = _original_ids(path, _split_frames(path)["test"])
    latest = _original_ids(path, _interactions(path)).groupby("user_id")["ts"].max()
    assert (test["ts"].to_numpy() < latest.reindex(test["user_id"]).to_numpy()).any()


# ----------------------------------------------------------------------------- input order and ids

# Two files of one directory, read in listing order. User a has three events at ts 200: item z
# (file 1, row 2), item b (file 1, row 3), item c (file 2, row 1): in input order c is the last.
TIES_1 = _HEADER + "a,m,5,100\na,z,4,200\na,b,3,200\nq,m,1,50\n"
TIES_2 = _HEADER + "a,c,3,200\nq,z,1,50\n"


def _prepare_dir(root: Path, files: dict[str, str], *overrides: str) -> PrepareResult:
    directory = root / "events"
    for name, text in files.items():
        _write_events(directory, text, name)
    cfg = _source_config(root, directory, *overrides)
    return prepare_dataset(cfg.data, cfg.dataset_dir(), log=_quiet)


def test_timestamp_ties_follow_file_then_row(ray_session, tmp_path: Path) -> None:
    result = _prepare_dir(tmp_path, {"part-1.csv": TIES_1, "part-2.csv": TIES_2})
    assert _triples(result.path, "test") == {("a", "c", 200), ("q", "z", 50)}
    assert ("a", "b", 200) in _triples(result.path, "valid")
    frame = _original_ids(result.path, _interactions(result.path)).sort_values("seq")
    assert list(zip(frame["user_id"], frame["item_id"])) == [("a", "m"), ("a", "z"), ("a", "b"), ("q", "m"), ("a", "c"), ("q", "z")]
    assert result.manifest["preprocessing"]["time_order"].startswith("ts, then the event's file")


NO_TIME_1 = "user_id,item_id\na,x\na,y\nb,x\n"
NO_TIME_2 = "user_id,item_id\na,z\nb,y\n"


def test_table_without_timestamps_uses_global_input_order(ray_session, tmp_path: Path) -> None:
    """Without a timestamp column, ts is the position in the whole input (file order, then row),
    not the row number in each file (which would put both files' first rows at the same time)."""
    result = _prepare_dir(tmp_path, {"part-1.csv": NO_TIME_1, "part-2.csv": NO_TIME_2},
                          "data.source.columns.timestamp=null", "data.source.columns.rating=null")
    assert _triples(result.path) == {("a", "x", 1), ("a", "y", 2), ("b", "x", 3), ("a", "z", 4), ("b", "y", 5)}
    assert _triples(result.path, "test") == {("a", "z", 4), ("b", "y", 5)}
    pre = result.manifest["preprocessing"]
    assert pre["timestamps"] == "input_order" and "earlier files" in pre["timestamps_rule"]


def test_float_ids_do_not_collide(ray_session, tmp_path: Path) -> None:
    """Parquet float ids 1.5 and 1.7 are two users (not both "1"); 2.0 is "2"."""
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": [1.5, 1.7, 2.0, 1.5], "item_id": [10.0, 10.0, 10.5, 10.5],
                  "rating": [1.0, 2.0, 3.0, 4.0], "timestamp": [1, 2, 3, 4]}).to_parquet(path, index=False)
    cfg = _source_config(tmp_path, path)
    result = prepare_dataset(cfg.data, cfg.dataset_dir(), log=_quiet)
    assert DatasetDir(result.path).users()["user_id"].tolist() == ["1.5", "1.7", "2"]
    assert DatasetDir(result.path).items()["item_id"].tolist() == ["10", "10.5"]
    assert result.manifest["counts"]["interactions"] == 4


# ----------------------------------------------------------------------------- manifest and ids


def test_rerun_reuses_directory(random_runs: dict) -> None:
    again, first = random_runs["again"], random_runs["first"]
    assert again.reused and again.path == first.path
    assert again.manifest["content_hash"] == first.manifest["content_hash"]


def test_manifest_counts_match_tables(cascade: PrepareResult, tiny_dataset: str) -> None:
    _assert_manifest_counts(cascade.path)
    _assert_manifest_counts(tiny_dataset)


def test_dense_ids_and_id_maps(cascade: PrepareResult, tiny_dataset: str, tiny_config) -> None:
    _assert_dense_ids(cascade.path)
    assert DatasetDir(cascade.path).users()["user_id"].tolist() == sorted(CORE_USERS)  # "002" < "0031" < "010" < "100"
    _assert_dense_ids(tiny_dataset)
    world = SyntheticWorld(tiny_config.data.source.synthetic, tiny_config.data.seed)
    raw = pd.concat([world.events(c) for c in range(world.n_chunks)], ignore_index=True)
    raw_triples = set(zip(raw["user_id"], raw["item_id"], raw["ts"].astype(int)))
    assert _triples(tiny_dataset) <= raw_triples
    titles = world.items().set_index("item_id")["title"]
    items = DatasetDir(tiny_dataset).items()
    assert items["title"].tolist() == titles.reindex(items["item_id"]).tolist()


def test_synthetic_content_hash_is_reproducible_and_seeded(tiny_dataset: str, tiny_config, tmp_path: Path) -> None:
    def prepare(output_dir: Path, **data) -> PrepareResult:
        cfg = tiny_config.model_copy(deep=True)
        cfg.data.output_dir = str(output_dir)
        for key, value in data.items():
            setattr(cfg.data, key, value)
        return prepare_dataset(cfg.data, cfg.dataset_dir(), log=_quiet)

    reference = DatasetDir(tiny_dataset).content_hash
    fresh = prepare(tmp_path / "fresh", overwrite=True)
    assert not fresh.reused and fresh.path != tiny_dataset
    assert fresh.manifest["content_hash"] == reference
    seeded = prepare(tmp_path / "seed1", seed=1)
    assert seeded.manifest["content_hash"] != reference


# ----------------------------------------------------------------------------- validation

_JSONL_NULL_USER = (
    '{"user_id": "a", "item_id": "x", "rating": 5, "timestamp": 100}\n'
    "\n"  # blank lines are skipped but counted: JSON-lines rows are physical lines
    '{"user_id": null, "item_id": "y", "rating": 4, "timestamp": 200}\n'
)
BAD_FILES = {  # case -> (file name, content, row of the bad cell, canonical column named)
    "csv-user": ("events.csv", _HEADER + "a,x,5,100\nb,y,4,200\n,z,3,300\nc,x,2,400\n", 3, "user_id"),
    "csv-rating": ("events.csv", _HEADER + "a,x,5,100\nb,y,4,200\nc,z,four,300\nc,x,2,400\n", 3, "rating"),
    "csv-timestamp": ("events.csv", _HEADER + "a,x,5,100\nb,y,4,200\nc,z,3,next tuesday\nc,x,2,400\n", 3, "ts"),
    "jsonl-user": ("events.jsonl", _JSONL_NULL_USER, 3, "user_id"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_row_error_names_file_row_column(ray_session, tmp_path: Path, case: str) -> None:
    name, text, row, column = BAD_FILES[case]
    cfg = _table_config(tmp_path, text, name=name)
    with pytest.raises(DataValidationError) as info:
        prepare_dataset(cfg.data, cfg.dataset_dir(), log=_quiet)
    err = info.value
    assert type(err) is DataValidationError  # unwrapped from Ray's task error
    path = cfg.data.source.path
    assert (err.file, err.row, err.column) == (path, row, column)
    assert path in str(err) and f"row {row}," in str(err) and repr(column) in str(err)
    assert os.listdir(tmp_path) == [name], "a failed run must leave no dataset or temporary dir"


def test_bad_row_error_names_the_files_own_column(ray_session, tmp_path: Path) -> None:
    """With a column mapping the error names the column as it is in the file ('stars', not 'rating')."""
    text = "who,what,stars,when\na,x,5,100\nb,y,lots,200\n"
    cfg = _table_config(tmp_path, text, "data.source.columns.user=who", "data.source.columns.item=what",
                        "data.source.columns.rating=stars", "data.source.columns.timestamp=when")
    with pytest.raises(DataValidationError) as info:
        prepare_dataset(cfg.data, cfg.dataset_dir(), log=_quiet)
    err = info.value
    assert (err.row, err.column, err.source_column) == (2, "rating", "stars")
    assert "row 2, column 'stars' (as 'rating'): rating is not a finite number (value 'lots')" in str(err)


QUARANTINE = """\
    user_id,item_id,rating,timestamp
    a,x,5,2024-01-01T00:00:00Z
    ,y,4,2024-01-01T00:00:00Z
    b,x,oops,2024-01-01T00:00:00Z
    b,y,3,not a date
    b,x,4,2024-03-01T12:30:00+02:00
    c,y,2,2024-02-29 06:00:00
    ,z,bad,2024-01-01T00:00:00Z
    c,x,1,1700000000
"""


@pytest.fixture(scope="module")
def quarantined(ray_session, tmp_path_factory) -> PrepareResult:
    return _prepare_table(tmp_path_factory.mktemp("quarantine"), QUARANTINE, "data.preprocess.bad_rows=quarantine")


def test_quarantine_writes_bad_rows_aside(quarantined: PrepareResult) -> None:
    manifest = quarantined.manifest
    assert manifest["counts"]["quarantined"] == 4
    assert manifest["quarantine_by_column"] == {"rating": 1, "ts": 1, "user_id": 2}  # row 7 is counted once
    assert manifest["counts"]["valid_events_read"] == 4
    bad = pq.read_table(os.path.join(quarantined.path, "quarantine")).to_pandas().sort_values("_row")
    assert bad["_row"].tolist() == [2, 3, 4, 7]
    assert bad["_column"].tolist() == ["user_id", "rating", "ts", "user_id"]
    assert (bad["_file"] == manifest["source"]["paths"]["events"][0]).all()
    assert bad["value"].tolist()[1:3] == ["oops", "not a date"]


def test_iso_timestamps_parsed_to_unix_seconds(quarantined: PrepareResult) -> None:
    assert _triples(quarantined.path) == {
        ("a", "x", _unix(2024, 1, 1)),
        ("b", "x", _unix(2024, 3, 1, 12, 30, offset_hours=2)),
        ("c", "y", _unix(2024, 2, 29, 6)),
        ("c", "x", 1_700_000_000),
    }


# ----------------------------------------------------------------------------- duplicates and threshold

# (a, x) appears twice: file row 1 at ts 300 (rating 1) and file row 3 at ts 200 (rating 5).
DUPLICATES = """\
    user_id,item_id,rating,timestamp
    a,x,1,300
    a,y,3,100
    a,x,5,200
    b,x,4,100
"""
OTHERS = {("a", "y", 100, 3.0), ("b", "x", 100, 4.0)}


def _quads(path: str) -> set[tuple[str, str, int, float]]:
    frame = _original_ids(path, _interactions(path))
    return set(zip(frame["user_id"], frame["item_id"], frame["ts"].astype(int), frame["rating"]))


@pytest.mark.parametrize(
    "policy, kept",
    [
        ("first", {("a", "x", 200, 5.0)}),
        ("last", {("a", "x", 300, 1.0)}),
        ("keep", {("a", "x", 200, 5.0), ("a", "x", 300, 1.0)}),
    ],
)
def test_duplicate_policies(ray_session, tmp_path: Path, policy: str, kept: set) -> None:
    result = _prepare_table(tmp_path, DUPLICATES, f"data.preprocess.duplicates={policy}")
    assert _quads(result.path) == OTHERS | kept
    assert result.manifest["counts"]["removed_threshold_or_duplicate"] == 4 - len(OTHERS | kept)


def test_duplicate_error_names_file_and_row(ray_session, tmp_path: Path) -> None:
    cfg = _table_config(tmp_path, DUPLICATES, "data.preprocess.duplicates=error")
    with pytest.raises(DataValidationError, match="duplicate event for user 'a' and item 'x'") as info:
        prepare_dataset(cfg.data, cfg.dataset_dir(), log=_quiet)
    err = info.value
    # the later event by time (file row 1, ts 300) is the duplicate of the earlier one (row 3)
    assert (err.file, err.row) == (cfg.data.source.path, 1)
    assert f"{cfg.data.source.path}: row 1" in str(err)


def test_implicit_threshold_drops_low_ratings(ray_session, tmp_path: Path) -> None:
    rows = "".join(f"u{k % 3},i{k},{r},{100 + k}\n" for k, r in enumerate([1, 2, 2.5, 3, 4, 5, 3, 1]))
    result = _prepare_table(tmp_path, _HEADER + rows, "data.preprocess.implicit_threshold=3")
    frame = _original_ids(result.path, _interactions(result.path))
    assert sorted(frame["item_id"]) == ["i3", "i4", "i5", "i6"]
    assert frame["rating"].min() >= 3
    assert result.manifest["counts"]["removed_threshold_or_duplicate"] == 4


# ----------------------------------------------------------------------------- config errors


def test_bad_enum_names_key_and_allowed_values() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.split.protocol=bogus"])
    message = str(info.value)
    assert "data.split.protocol" in message and "bogus" in message
    for allowed in ("leave_last_out", "temporal", "random", "random_per_user", "temporal_per_user"):
        assert allowed in message


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"data\.preprocess\.kcore_users: unknown key") as info:
        load_config(None, ["data.preprocess.kcore_users=3"])
    assert "kcore_user" in str(info.value).split("allowed keys:")[1]
