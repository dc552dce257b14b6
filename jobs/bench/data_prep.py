"""Run: python jobs/bench/data_prep.py --preset large

Benchmark of dataset preparation: bridgerec's Ray Data pipeline against plain pandas.

Both sides prepare the same synthetic preset with the same config (no rating threshold,
de-duplication keep-first, iterative k-core 5/5, dense id maps, leave-last-out, Parquet out):

- Ray: :func:`bridgerec.data.prepare.prepare_dataset` on a local Ray (started before the clock).
- pandas: every chunk of the synthetic world in one DataFrame, in one process, through the same
  per-block kernels as the pipeline (validation, threshold + de-duplication, dense ids,
  leave-last-out labels) and a ``value_counts`` k-core loop, so only the execution engine differs.
  It runs in a child process so that its memory is measured alone.

Printed per side: raw events read, wall seconds, rows/s (raw events / wall seconds), peak memory,
and the Ray/pandas ratios; then whether the counts and the content hash of interactions + splits
agree. Peak memory for pandas is the child's peak RSS (``getrusage``); for Ray the peak of the
summed RSS of the driver and every Ray worker process, sampled every 0.2 s (object-store pages
mapped by several processes count once per process, so it overstates the physical peak).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import resource
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from bridgerec.benchmarking import PeakSampler, driver_and_workers_rss
from bridgerec.config import Config, load_config
from bridgerec.data.prepare import (
    SPLITS,
    _entity_table,
    _frame_hash,
    _label_leave_last_out,
    _threshold_dedup,
    _to_dense,
    _write_table,
    prepare_dataset,
)
from bridgerec.data.schema import validate_events
from bridgerec.data.sources import Source, build_source
from bridgerec.data.synthetic import PRESETS

COUNT_KEYS = ("users", "items", "interactions", *SPLITS)
HASH_COLUMNS = ["uid", "iid", "ts", "rating", "split"]  # the manifest's "interactions+splits" hash
MiB = 1 << 20


@dataclass
class Result:
    raw_rows: int
    wall_s: float
    peak_rss: int
    counts: dict
    content_hash: str

    @property
    def rows_per_s(self) -> float:
        return self.raw_rows / self.wall_s


# ----------------------------------------------------------------------------- config


def bench_config(preset: str, work_dir: str, engine: str) -> Config:
    """The preparation config of one side; outputs go to ``<work_dir>/<engine>/<preset>``."""
    return load_config(
        None,
        [
            f"work_dir={work_dir}",
            f"data.name=synthetic-{preset}",
            f"data.output_dir={os.path.join(work_dir, engine, preset)}",
            f"data.source.synthetic.preset={preset}",
            "data.split.protocol=leave_last_out",
            "data.preprocess.kcore_user=5",
            "data.preprocess.kcore_item=5",
            "data.preprocess.duplicates=first",
            "data.overwrite=true",
        ],
    )


# ----------------------------------------------------------------------------- memory


# ----------------------------------------------------------------------------- Ray side


def run_ray(cfg: Config) -> Result:
    import ray

    from bridgerec.runtime import init_ray

    init_ray(cfg.ray)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        with PeakSampler(driver_and_workers_rss) as sampler:
            start = time.perf_counter()
            result = prepare_dataset(cfg.data, cfg.dataset_dir())
            wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    counts = result.manifest["counts"]
    return Result(
        raw_rows=counts["valid_events_read"] + counts["quarantined"],
        wall_s=wall,
        peak_rss=sampler.peak,
        counts={k: counts[k] for k in COUNT_KEYS},
        content_hash=result.manifest["tables"]["interactions+splits"],
    )


# ----------------------------------------------------------------------------- pandas side


def read_all_events(source: Source, chunk_rows: int) -> pd.DataFrame:
    """Every raw chunk of the source (for synthetic: ``SyntheticWorld.events`` of each chunk)."""
    chunks = [c for path in source.event_files() for c in source.read_events(path, chunk_rows)]
    return pd.concat(chunks, ignore_index=True)


def kcore(events: pd.DataFrame, ku: int, ki: int, max_iter: int) -> tuple[pd.DataFrame, int]:
    """Iterative k-core with the pipeline's stopping rule; returns (events, passes)."""
    passes = 0
    while True:
        users, items = events["user_id"].value_counts(), events["item_id"].value_counts()
        drop_u, drop_i = users.index[users < ku], items.index[items < ki]
        if (not len(drop_u) and not len(drop_i)) or passes >= max_iter:
            return events, passes
        passes += 1
        events = events[~events["user_id"].isin(drop_u) & ~events["item_id"].isin(drop_i)]


def _sorted_ids(values: pd.Series) -> pd.Index:
    return pd.Index(np.sort(values.unique().astype(str)))


def write_tables(out: str, labeled: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame) -> None:
    """The dataset directory layout: interactions/, splits/<name>/, items/, users/."""
    _write_table(labeled.drop(columns="split"), os.path.join(out, "interactions"))
    for code, name in enumerate(SPLITS):
        _write_table(labeled.loc[labeled["split"] == code].drop(columns="split"), os.path.join(out, "splits", name))
    _write_table(items, os.path.join(out, "items"))
    _write_table(users, os.path.join(out, "users"))


def prepare_pandas(cfg: Config) -> tuple[int, dict, str]:
    """Prepare ``cfg.data`` with pandas alone; returns (raw events, counts, content hash)."""
    pcfg = cfg.data.preprocess
    source = build_source(cfg.data.source, cfg.data.seed)
    raw = read_all_events(source, cfg.data.read_batch_rows)
    valid, _ = validate_events(raw, "error")
    events = _threshold_dedup(valid, pcfg.implicit_threshold, pcfg.duplicates)
    events, _ = kcore(events, pcfg.kcore_user, pcfg.kcore_item, pcfg.kcore_max_iter)
    user_index, item_index = _sorted_ids(events["user_id"]), _sorted_ids(events["item_id"])
    labeled = _label_leave_last_out(_to_dense(events, user_index, item_index))
    items = _entity_table(source.read_items(), item_index, "item_id", "iid", with_title=True)
    users = _entity_table(source.read_users(), user_index, "user_id", "uid", with_title=False)
    write_tables(cfg.dataset_dir(), labeled, items, users)
    split_counts = {name: int((labeled["split"] == code).sum()) for code, name in enumerate(SPLITS)}
    counts = {"users": len(user_index), "items": len(item_index), "interactions": len(labeled), **split_counts}
    return len(raw), counts, _frame_hash(labeled, HASH_COLUMNS)


def _pandas_child(cfg: Config, queue: "mp.Queue") -> None:
    start = time.perf_counter()
    raw_rows, counts, digest = prepare_pandas(cfg)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    queue.put(Result(raw_rows, wall, peak, counts, digest))


def run_pandas(cfg: Config) -> Result:
    """:func:`prepare_pandas` in a fresh (spawned) process, so its peak RSS is its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_pandas_child, args=(cfg, queue))
    child.start()
    try:
        result = queue.get()  # before join: a large result would block the child's exit
    finally:
        child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"pandas run failed with exit code {child.exitcode}")
    return result


# ----------------------------------------------------------------------------- report


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(preset: str, ray_res: Result, pandas_res: Optional[Result]) -> str:
    rows = [
        ("raw events read", lambda r: r.raw_rows, ",d"),
        ("wall seconds", lambda r: r.wall_s, ",.1f"),
        ("rows/s", lambda r: r.rows_per_s, ",.0f"),
        ("peak RSS (MiB)", lambda r: r.peak_rss / MiB, ",.0f"),
    ]
    lines = [
        f"data preparation: synthetic-{preset}, {os.cpu_count()} CPU cores",
        f"{'':<18}{'ray data':>14}{'pandas':>14}{'ray/pandas':>12}",
    ]
    for label, get, spec in rows:
        ray_v, pandas_v = get(ray_res), get(pandas_res) if pandas_res else None
        ratio = ray_v / pandas_v if pandas_v else None
        lines.append(f"{label:<18}{_fmt(ray_v, spec):>14}{_fmt(pandas_v, spec):>14}{_fmt(ratio, '.2f'):>12}")
    counts = ", ".join(f"{k} {ray_res.counts[k]:,}" for k in COUNT_KEYS)
    lines.append(f"ray counts: {counts}")
    if pandas_res:
        same_counts = ray_res.counts == pandas_res.counts
        lines.append(f"counts agree: {'yes' if same_counts else 'NO'}"
                     + ("" if same_counts else f" (pandas: {pandas_res.counts})"))
        lines.append(f"content hash agrees: {'yes' if ray_res.content_hash == pandas_res.content_hash else 'NO'}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="large", choices=sorted(PRESETS), help="synthetic preset (default: large)")
    parser.add_argument("--work-dir", default=os.path.join("bridgerec_work", "bench", "data_prep"),
                        help="where both prepared datasets are written (default: bridgerec_work/bench/data_prep)")
    parser.add_argument("--skip-pandas", action="store_true", help="run only the Ray Data pipeline")
    args = parser.parse_args(argv)
    work_dir = os.path.abspath(args.work_dir)

    pandas_res = None
    if not args.skip_pandas:  # first, so that no Ray process is alive beside it
        print(f"[bench] pandas: preparing synthetic-{args.preset}", flush=True)
        pandas_res = run_pandas(bench_config(args.preset, work_dir, "pandas"))
        print(f"[bench] pandas: {pandas_res.wall_s:.1f} s", flush=True)
    print(f"[bench] ray data: preparing synthetic-{args.preset}", flush=True)
    ray_res = run_ray(bench_config(args.preset, work_dir, "ray"))
    print()
    print(report(args.preset, ray_res, pandas_res))


if __name__ == "__main__":
    main()
