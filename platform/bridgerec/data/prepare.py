"""Dataset preparation on Ray Data: source -> validated events -> the dataset directory.

Stages (each streams or shuffles through Ray's object store, which spills to disk, so memory
stays bounded for inputs larger than RAM; only id sets travel to the driver):

1. read + validate every event file in parallel (bad rows fail or go to ``quarantine/``); a
   source without times gets one global input order as ``ts`` (file order, then row);
2. implicit threshold and de-duplication of (user, item) events, per user after a hash shuffle;
3. iterative k-core on users and items (counts by Ray ``groupby``); not converging within
   ``kcore_max_iter`` warns and is recorded in the manifest;
4. dense id maps (sorted original ids -> 0..n-1);
5. split labels (leave-last-out by time, global temporal cut, seeded random per event, or the
   per-user ratio splits ``random_per_user`` / ``temporal_per_user``; per-user work runs after a
   hash shuffle by user);
6. Parquet tables, ``manifest.json`` with counts and an order-independent content hash.

Event order: every event carries ``seq``, its position in the input (index of its file in
``source.event_files()``, then its row), written to the tables; "by time" always means by
``ts``, then ``seq``, so same-second events (common in MovieLens) keep their file order.

The output directory is written under a temporary name and renamed at the end, so an interrupted
run never leaves a half-written dataset. Re-running with the same inputs and config is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

from bridgerec import __version__
from bridgerec.console import detail, say
from bridgerec.data.config import DataConfig
from bridgerec.data.schema import DataValidationError, QUARANTINE_COLUMNS, validate_events
from bridgerec.data.sources import Source, build_source

__all__ = ["PrepareResult", "prepare_dataset", "KCoreNotConvergedWarning", "MANIFEST", "SPLITS", "FORMAT_VERSION"]



MANIFEST = "manifest.json"
SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 2  # 2: tables carry ``seq``; float ids keep their value; ties broken by input order
_SPLIT_CODE = {"train": 0, "valid": 1, "test": 2}
_SEQ_FILE_SHIFT = 40  # seq = file index << 40 | row: rows up to 2**40 per file, 2**23 files
TIME_ORDER = "ts, then the event's file (in source event_files order), then its row in that file"


class KCoreNotConvergedWarning(UserWarning):
    """The k-core filter stopped at ``data.preprocess.kcore_max_iter`` with users or items still
    below their minimum: the prepared data is not k-core."""


@dataclass
class PrepareResult:
    path: str
    manifest: dict
    reused: bool


# ----------------------------------------------------------------------------- stage functions
# Module-level functions so Ray pickles them by reference; each takes/returns a pandas batch.


def _read_validate(batch: pd.DataFrame, source: Source, chunk_rows: int, bad_rows: str, quarantine_dir: str) -> Iterator[pd.DataFrame]:
    for path, file_index in zip(batch["path"], batch["file_index"]):
        for n, chunk in enumerate(source.read_events(path, chunk_rows)):
            good, bad = validate_events(chunk, bad_rows, getattr(source, "source_columns", None))
            if len(bad):
                os.makedirs(quarantine_dir, exist_ok=True)
                name = hashlib.sha1(path.encode()).hexdigest()[:12]
                bad.to_parquet(os.path.join(quarantine_dir, f"{name}-{n:05d}.parquet"), index=False)
            if len(good):
                yield good.assign(_fidx=np.int64(file_index))


def _input_order(batch: pd.DataFrame) -> list[str]:
    """Columns that order events as the input did: file index, then row. Frames straight from
    :func:`validate_events` (no ``_fidx``, e.g. in jobs/bench/data_prep.py) order by file name."""
    return ["_fidx", "_row"] if "_fidx" in batch else ["_file", "_row"]


def _global_row_time(batch: pd.DataFrame, offsets: Any) -> pd.DataFrame:
    """``ts`` = rows of the earlier files (up to their last valid row) + the row in its own file."""
    offsets = _resolve(offsets)
    return batch.assign(ts=offsets.reindex(batch["_fidx"]).to_numpy(dtype="int64") + batch["_row"].to_numpy(dtype="int64"))


def _threshold_dedup(batch: pd.DataFrame, threshold: float | None, policy: str) -> pd.DataFrame:
    """Runs on blocks that hold every event of their users (hash-partitioned by user_id)."""
    if threshold is not None:
        batch = batch[batch["rating"] >= threshold]
    if policy == "keep" or batch.empty:
        return batch
    batch = batch.sort_values(["user_id", "item_id", "ts", *_input_order(batch)], kind="stable")
    dup = batch.duplicated(["user_id", "item_id"], keep="first")
    if policy == "error" and dup.any():
        row = batch[dup].iloc[0]
        raise DataValidationError(
            row["_file"], int(row["_row"]), "item_id",
            f"duplicate event for user {row['user_id']!r} and item {row['item_id']!r} "
            "(set data.preprocess.duplicates to first, last or keep)", row["item_id"],
        )
    return batch.drop_duplicates(["user_id", "item_id"], keep="last" if policy == "last" else "first")


def _resolve(obj: Any) -> Any:
    return ray.get(obj) if isinstance(obj, ray.ObjectRef) else obj


def _keep_ids(batch: pd.DataFrame, users: Any, items: Any) -> pd.DataFrame:
    users, items = _resolve(users), _resolve(items)
    return batch[batch["user_id"].isin(users) & batch["item_id"].isin(items)]


def _to_dense(batch: pd.DataFrame, users: Any, items: Any) -> pd.DataFrame:
    users, items = _resolve(users), _resolve(items)
    row = batch["_row"].to_numpy(dtype="int64")
    fidx = batch["_fidx"].to_numpy(dtype="int64") if "_fidx" in batch else np.zeros(len(batch), dtype="int64")
    return pd.DataFrame(
        {
            "uid": users.get_indexer(batch["user_id"]).astype("int64"),
            "iid": items.get_indexer(batch["item_id"]).astype("int64"),
            "ts": batch["ts"].astype("int64").to_numpy(),
            "rating": batch["rating"].astype("float64").to_numpy(),
            "seq": (fidx << _SEQ_FILE_SHIFT) | row,  # input order: file, then row (breaks ts ties)
        }
    )


def _row_uniform(batch: pd.DataFrame, seed: int) -> np.ndarray:
    """A deterministic uniform [0,1) number per (uid, iid, ts) row and seed, independent of block layout."""
    # The seed is hashed as a column: pandas ignores hash_key for numeric columns.
    h = pd.util.hash_pandas_object(batch[["uid", "iid", "ts"]].assign(seed=np.int64(seed)), index=False)
    return (h.to_numpy() >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _label_leave_last_out(batch: pd.DataFrame) -> pd.DataFrame:
    """Blocks hold every event of their users. Last event -> test, the one before -> valid
    (users with >=3 events; 2 events: test only; 1 event: train)."""
    batch = batch.sort_values(["uid", "ts", "seq"], kind="stable").reset_index(drop=True)
    from_end = batch.groupby("uid").cumcount(ascending=False).to_numpy()
    n = batch.groupby("uid")["uid"].transform("size").to_numpy()
    split = np.zeros(len(batch), dtype=np.int8)
    split[(from_end == 0) & (n >= 2)] = 2
    split[(from_end == 1) & (n >= 3)] = 1
    return batch.assign(split=split)


def _label_temporal(batch: pd.DataFrame, valid_cut: int, test_cut: int) -> pd.DataFrame:
    ts = batch["ts"].to_numpy()
    split = np.where(ts > test_cut, 2, np.where(ts > valid_cut, 1, 0)).astype(np.int8)
    return batch.assign(split=split)


def _label_random(batch: pd.DataFrame, seed: int, valid_fraction: float, test_fraction: float) -> pd.DataFrame:
    u = _row_uniform(batch, seed)
    split = np.where(u < test_fraction, 2, np.where(u < test_fraction + valid_fraction, 1, 0)).astype(np.int8)
    return batch.assign(split=split)


def _ratio_counts(n: np.ndarray, valid_fraction: float, test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user (train, valid, test) sizes of the ratio protocols, RecBole's rounding: valid and
    test are rounded down, train takes the rest; then test, and after it valid, takes one event
    from train when its share n*fraction is in (0, 1) and train still holds >= 2 events."""
    n = np.asarray(n, dtype=np.int64)
    share_valid, share_test = n * valid_fraction, n * test_fraction
    n_valid = np.floor(share_valid + 1e-9).astype(np.int64)  # 1e-9: 0.1 * 30 is 3, not 2.999...
    n_test = np.floor(share_test + 1e-9).astype(np.int64)
    n_train = n - n_valid - n_test
    for share, count in ((share_test, n_test), (share_valid, n_valid)):
        bump = (n_train > 1) & (share > 0) & (count == 0)
        count += bump
        n_train -= bump
    return n_train, n_valid, n_test


def _label_per_user_ratio(batch: pd.DataFrame, order: str, seed: int, valid_fraction: float, test_fraction: float) -> pd.DataFrame:
    """Blocks hold every event of their users. Each user's events in order (``random``: a seeded
    permutation by a per-row hash; ``time``: ts, then seq) -> the first share train, then valid,
    then test (:func:`_ratio_counts`). Depends only on the rows, not on block layout."""
    if order == "random":
        batch = batch.assign(_key=_row_uniform(batch, seed)).sort_values(["uid", "_key", "seq"], kind="stable").drop(columns="_key")
    else:
        batch = batch.sort_values(["uid", "ts", "seq"], kind="stable")
    batch = batch.reset_index(drop=True)
    pos = batch.groupby("uid").cumcount().to_numpy()
    n_train, n_valid, _ = _ratio_counts(batch.groupby("uid")["uid"].transform("size").to_numpy(), valid_fraction, test_fraction)
    split = np.where(pos < n_train, 0, np.where(pos < n_train + n_valid, 1, 2)).astype(np.int8)
    return batch.assign(split=split)


def _ts_sample(batch: pd.DataFrame, stride: int) -> pd.DataFrame:
    if stride > 1:
        keep = pd.util.hash_pandas_object(batch[["uid", "iid", "ts"]], index=False).to_numpy() % np.uint64(stride) == 0
        batch = batch[keep]
    return batch[["ts"]]


def _hash_block(batch: pd.DataFrame, groups: dict[str, list[str]]) -> pd.DataFrame:
    sums = {name: [int(pd.util.hash_pandas_object(batch[cols], index=False).to_numpy().sum(dtype=np.uint64))]
            for name, cols in groups.items()}
    return pd.DataFrame({"n": [len(batch)], **sums}, dtype="uint64")


# ----------------------------------------------------------------------------- helpers


def _table_hash(ds: "ray.data.Dataset", groups: dict[str, list[str]]) -> tuple[int, dict[str, str]]:
    """Order- and block-independent hashes, one per named column group: the sum of per-row
    hashes mod 2**64; with the row count. One pass over ``ds``."""
    parts = ds.map_batches(_hash_block, fn_kwargs={"groups": groups}, batch_format="pandas").to_pandas()
    n = int(parts["n"].sum()) if len(parts) else 0
    sums = {name: int(parts[name].to_numpy(dtype=np.uint64).sum(dtype=np.uint64)) if len(parts) else 0 for name in groups}
    return n, {name: f"{v:016x}" for name, v in sums.items()}


def _frame_hash(df: pd.DataFrame, columns: list[str]) -> str:
    h = pd.util.hash_pandas_object(df[columns], index=False).to_numpy()
    return f"{int(h.sum(dtype=np.uint64)):016x}"


def _counts(ds: "ray.data.Dataset", key: str, parts: int) -> pd.Series:
    df = ds.groupby(key, num_partitions=parts).count().to_pandas()
    if df.empty:
        return pd.Series(dtype="int64")
    return df.set_index(key)["count()"].astype("int64")


def _input_fingerprint(source: Source, dcfg: DataConfig) -> str:
    from bridgerec.data import fs

    stamps = []
    for path in source.event_files() + [p for p in [dcfg.source.items_path] if p]:
        if "://" in path and path.startswith("synthetic://"):
            continue
        fsys, inner = fs.resolve(path)
        info = fsys.get_file_info(inner)
        stamps.append((path, info.size, str(info.mtime)))
    spec = {
        "files": stamps,
        "source": source.describe(),
        "seed": dcfg.seed,
        "preprocess": dcfg.preprocess.model_dump(),
        "split": dcfg.split.model_dump(),
        "format": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def read_manifest(path: str) -> dict | None:
    p = os.path.join(path, MANIFEST)
    if not os.path.exists(p):
        return None
    with open(p) as fh:
        return json.load(fh)


def _n_partitions(n_rows: int) -> int:
    return int(max(2, min(200, n_rows // 200_000 + 2)))


# ----------------------------------------------------------------------------- the pipeline


def prepare_dataset(dcfg: DataConfig, out_dir: str, log: Callable[[str], None] = say) -> PrepareResult:
    """Prepare the ``data`` section ``dcfg`` into ``out_dir`` (the root config's
    ``dataset_dir()``; Ray must be initialised).

    Errors raised inside Ray tasks (bad rows, duplicates, source problems) are re-raised here
    as their original exception type, not wrapped in ``RayTaskError``.
    """
    ctx = ray.data.DataContext.get_current()
    wrapped = ctx.raise_original_map_exception
    # Otherwise a UDF error inside a shuffle-reduce actor (duplicates=error) reaches the driver
    # as a bare UserCodeException that has lost its cause.
    ctx.raise_original_map_exception = True
    try:
        return _prepare(dcfg, out_dir, log)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        while isinstance(cause, ray.exceptions.RayTaskError):
            cause = cause.cause
        if isinstance(cause, (ValueError, OSError, UnicodeError)):
            raise cause from None
        raise
    finally:
        ctx.raise_original_map_exception = wrapped


def _prepare(dcfg: DataConfig, out_dir: str, log: Callable[[str], None]) -> PrepareResult:
    out = os.path.abspath(out_dir)
    source = build_source(dcfg.source, dcfg.seed)
    fingerprint = _input_fingerprint(source, dcfg)
    existing = read_manifest(out)
    if existing and existing.get("input_fingerprint") == fingerprint and not dcfg.overwrite:
        log(f"[data] {out} already holds this dataset (hash {existing['content_hash'][:12]}); reusing it")
        return PrepareResult(out, existing, reused=True)
    if os.path.isdir(out) and os.listdir(out) and existing is None:
        raise FileExistsError(f"{out} exists, is not empty and holds no {MANIFEST}; refusing to overwrite it")

    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        manifest = _build(dcfg, source, fingerprint, tmp, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed run leaves nothing behind
        raise
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    os.rename(tmp, out)
    c = manifest["counts"]
    log(f"[data] {c['users']} users, {c['items']} items, {c['interactions']} interactions "
        f"(train {c['train']}, valid {c['valid']}, test {c['test']}) in {manifest['prepare_seconds']} s; "
        f"hash {manifest['content_hash'][:12]}")
    return PrepareResult(out, manifest, reused=False)


def _build(dcfg: DataConfig, source: Source, fingerprint: str, tmp: str, log: Callable[[str], None]) -> dict:
    """Write the dataset's tables and manifest into ``tmp``; return the manifest."""
    pcfg = dcfg.preprocess
    t0 = time.time()
    files = source.event_files()
    if not files:
        raise ValueError(f"data.source: {source.name} found no event files")
    if len(files) >= 1 << (63 - _SEQ_FILE_SHIFT):
        raise ValueError(f"data.source: {source.name} lists {len(files)} event files; at most {(1 << (63 - _SEQ_FILE_SHIFT)) - 1} are supported")
    log(f"[data] reading {len(files)} file(s) from {source.name}")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(int(os.environ.get("BRIDGEREC_PROGRESS_BARS", "0")))

    events = (
        ray.data.from_items([{"path": f, "file_index": i} for i, f in enumerate(files)], override_num_blocks=len(files))
        .map_batches(
            _read_validate,
            batch_size=1,
            batch_format="pandas",
            fn_kwargs=dict(source=source, chunk_rows=dcfg.read_batch_rows, bad_rows=pcfg.bad_rows,
                           quarantine_dir=os.path.join(tmp, "quarantine")),
        )
        .materialize()
    )
    n_valid = events.count()
    quarantined = _quarantine_counts(os.path.join(tmp, "quarantine"))
    log(f"[data] {n_valid} valid events, {sum(quarantined.values())} quarantined")
    if n_valid == 0:
        raise ValueError(f"data.source: no valid events in {source.name}")
    timestamps = "source"
    if getattr(source, "time_from_input_order", False):
        # Per-file row numbers would put row 1 of every file at the same time: one global order.
        last_rows = events.groupby("_fidx").max("_row").to_pandas().set_index("_fidx")["max(_row)"].sort_index()
        offsets = (last_rows.cumsum() - last_rows).astype("int64")
        events = events.map_batches(_global_row_time, batch_format="pandas", fn_kwargs=dict(offsets=ray.put(offsets))).materialize()
        timestamps = "input_order"
        log("[data] no timestamp column: ts is each event's position in the input (file order, then row)")

    parts = _n_partitions(n_valid)
    events = (
        events.repartition(parts, keys=["user_id"])
        .map_batches(_threshold_dedup, batch_size=None, batch_format="pandas",
                     fn_kwargs=dict(threshold=pcfg.implicit_threshold, policy=pcfg.duplicates))
        .materialize()
    )
    n_dedup = events.count()
    log(f"[data] {n_dedup} events after threshold and de-duplication")

    events, users, items, kcore = _kcore(events, pcfg.kcore_user, pcfg.kcore_item, pcfg.kcore_max_iter, parts, log)
    n_events = events.count()
    if n_events == 0:
        raise ValueError("data.preprocess: the k-core filter removed every event; lower kcore_user/kcore_item")
    user_index, item_index = pd.Index(np.sort(users.to_numpy(dtype=object).astype(str))), pd.Index(np.sort(items.to_numpy(dtype=object).astype(str)))
    uref, iref = ray.put(user_index), ray.put(item_index)
    dense = events.map_batches(_to_dense, batch_format="pandas", fn_kwargs=dict(users=uref, items=iref))
    labeled = _label_splits(dense, dcfg, n_events, parts).materialize()

    detail(f"[data] writing tables into {tmp}")
    labeled.drop_columns(["split"]).write_parquet(os.path.join(tmp, "interactions"))
    split_counts = {}
    for name in SPLITS:
        part = labeled.filter(expr=col("split") == _SPLIT_CODE[name]).drop_columns(["split"]).materialize()
        split_counts[name] = part.count()
        part.write_parquet(os.path.join(tmp, "splits", name))

    items_df = _entity_table(source.read_items(), item_index, "item_id", "iid", with_title=True)
    users_df = _entity_table(source.read_users(), user_index, "user_id", "uid", with_title=False)
    _write_table(items_df, os.path.join(tmp, "items"))
    _write_table(users_df, os.path.join(tmp, "users"))

    n_all, hashes = _table_hash(labeled, {"interactions+splits": ["uid", "iid", "ts", "rating", "split"],
                                          "event_order": ["uid", "iid", "ts", "seq"]})
    tables = {
        **hashes,
        "items": _frame_hash(items_df, ["iid", "item_id", "title", "text"]),
        "users": _frame_hash(users_df, ["uid", "user_id", "text"]),
    }
    content_hash = hashlib.sha256(json.dumps({"n": n_all, "tables": tables}, sort_keys=True).encode()).hexdigest()
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": dcfg.name,
        "source": source.describe(),
        "seed": dcfg.seed,
        "preprocess": pcfg.model_dump(),
        "split": dcfg.split.model_dump(),
        "counts": {
            "users": len(user_index),
            "items": len(item_index),
            "interactions": n_events,
            **split_counts,
            "valid_events_read": n_valid,
            "quarantined": sum(quarantined.values()),
            "removed_threshold_or_duplicate": n_valid - n_dedup,
            "removed_kcore": n_dedup - n_events,
            "kcore_iterations": kcore.iterations,
        },
        "preprocessing": {  # what preparation did (the "preprocess" entry is the config)
            "kcore_converged": kcore.converged,
            "kcore_iterations": kcore.iterations,
            "kcore_users_below_min": kcore.users_below,
            "kcore_items_below_min": kcore.items_below,
            "timestamps": timestamps,
            "timestamps_rule": ("the source's event times" if timestamps == "source" else
                                "no timestamp column: ts = rows of all earlier files (up to their last valid row) "
                                "+ the row in its own file, files in source event_files order"),
            "time_order": TIME_ORDER,
            "split_rule": dcfg.split.describe(),
        },
        "quarantine_by_column": quarantined,
        "tables": tables,
        "content_hash": content_hash,
        "input_fingerprint": fingerprint,
        "bridgerec_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prepare_seconds": round(time.time() - t0, 2),
    }
    with open(os.path.join(tmp, MANIFEST), "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
    return manifest


def _quarantine_counts(qdir: str) -> dict[str, int]:
    if not os.path.isdir(qdir):
        return {}
    df = pq.read_table(qdir, columns=["_column"]).to_pandas()
    return {str(k): int(v) for k, v in df["_column"].value_counts().sort_index().items()}


@dataclass
class _KCore:
    iterations: int
    converged: bool
    users_below: int
    items_below: int


def _kcore(events, ku: int, ki: int, max_iter: int, parts: int, log) -> tuple[Any, pd.Index, pd.Index, _KCore]:
    """Iteratively drop users with < ku and items with < ki events until stable (or ``max_iter``
    passes); the returned ids are exactly those of the returned events. Stopping at ``max_iter``
    before it is stable warns (:class:`KCoreNotConvergedWarning` and a log line)."""
    it, dropped = 0, (0, 0)
    while True:
        users, items = _counts(events, "user_id", parts), _counts(events, "item_id", parts)
        keep_u, keep_i = users[users >= ku].index, items[items >= ki].index
        below_u, below_i = len(users) - len(keep_u), len(items) - len(keep_i)
        if (not below_u and not below_i) or it >= max_iter:
            converged = not below_u and not below_i
            if not converged:
                message = (f"data.preprocess.kcore_max_iter={max_iter} reached before the k-core converged: "
                           f"{below_u} users have fewer than {ku} events and {below_i} items fewer than {ki}; "
                           f"the dataset is NOT {ku}/{ki}-core (raise kcore_max_iter); recorded in the manifest "
                           "as preprocessing.kcore_converged=false")
                warnings.warn(message, KCoreNotConvergedWarning, stacklevel=2)
                log(f"[data] WARNING: {message}")
            if it:
                log(f"[data] {ku}/{ki}-core: {it} pass(es) dropped {dropped[0]} users, {dropped[1]} items")
            return events, users.index, items.index, _KCore(it, converged, below_u, below_i)
        it += 1
        dropped = (dropped[0] + below_u, dropped[1] + below_i)
        detail(f"[data] k-core pass {it}: dropping {below_u} users, {below_i} items")
        events = events.map_batches(
            _keep_ids, batch_format="pandas", fn_kwargs=dict(users=ray.put(keep_u), items=ray.put(keep_i))
        ).materialize()


def _label_splits(dense, dcfg: DataConfig, n_events: int, parts: int):
    s = dcfg.split
    if s.protocol == "leave_last_out":
        return dense.repartition(parts, keys=["uid"]).map_batches(_label_leave_last_out, batch_size=None, batch_format="pandas")
    if s.protocol == "random":
        return dense.map_batches(_label_random, batch_format="pandas",
                                 fn_kwargs=dict(seed=dcfg.seed, valid_fraction=s.valid_fraction, test_fraction=s.test_fraction))
    if s.protocol in ("random_per_user", "temporal_per_user"):
        order = "random" if s.protocol == "random_per_user" else "time"
        return dense.repartition(parts, keys=["uid"]).map_batches(
            _label_per_user_ratio, batch_size=None, batch_format="pandas",
            fn_kwargs=dict(order=order, seed=dcfg.seed, valid_fraction=s.valid_fraction, test_fraction=s.test_fraction),
        )
    stride = max(1, n_events // 1_000_000)  # exact quantiles up to 1M events, a hashed sample beyond
    ts = dense.map_batches(_ts_sample, batch_format="pandas", fn_kwargs=dict(stride=stride)).to_pandas()["ts"].to_numpy()
    test_cut = int(np.quantile(ts, 1 - s.test_fraction, method="lower"))
    valid_cut = int(np.quantile(ts, 1 - s.test_fraction - s.valid_fraction, method="lower"))
    return dense.map_batches(_label_temporal, batch_format="pandas", fn_kwargs=dict(valid_cut=valid_cut, test_cut=test_cut))


def _entity_table(meta: pd.DataFrame | None, index: pd.Index, id_col: str, dense_col: str, with_title: bool) -> pd.DataFrame:
    base = pd.DataFrame({dense_col: np.arange(len(index), dtype="int64"), id_col: index.to_numpy(dtype=object).astype(str)})
    if meta is not None and len(meta):
        meta = meta.copy()
        meta[id_col] = meta[id_col].astype(str)
        meta = meta.drop_duplicates(id_col, keep="first")
        base = base.merge(meta, on=id_col, how="left")
    if with_title:
        base["title"] = base["title"].fillna(base[id_col]).astype(str) if "title" in base else base[id_col]
    base["text"] = base["text"].fillna("").astype(str) if "text" in base else ""
    first = [dense_col, id_col] + (["title"] if with_title else []) + ["text"]
    return base[first + [c for c in base.columns if c not in first]]


def _write_table(df: pd.DataFrame, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), os.path.join(path, "part-00000.parquet"))
