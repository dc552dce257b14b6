"""``run_augmentations``: run any subset of stages (dependencies first) for a dataset directory.

Stages whose output directory is finished are reused. The LLM stages that are ready at the same
time share ONE generation pass (their task rows are unioned into one Ray Dataset), so a run starts
one engine per replica however many LLM stages it has. Ray must be initialised
(:func:`bridgerec.runtime.init_ray`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Optional, Sequence

import pandas as pd

from bridgerec.augment.base import META, STAGES, AugmentContext, ShardWriter, StageResult, read_stage_output
from bridgerec.console import progress, say

Config = Any
"""The root :class:`bridgerec.config.Config` (not imported: augment sits below the root config)."""

__all__ = ["run_augmentations", "stage_output_dir", "load_stage", "plan_stages"]

_LLM_COLUMNS = ("_stage", "_row", "_shard", "prompt", "prompt_iids_json")


def plan_stages(ctx: AugmentContext, names: Sequence[str]) -> list[str]:
    """``names`` with their dependencies, each after what it reads."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name not in STAGES:
            raise ValueError(f"unknown augmentation stage {name!r}; known: {', '.join(sorted(STAGES))}")
        if name in path:
            raise ValueError(f"augmentation stages depend on each other in a cycle: {' -> '.join(path + (name,))}")
        if name in order:
            return
        for dep in ctx.stage(name).deps():
            visit(dep, path + (name,))
        order.append(name)

    for n in names:
        visit(n, ())
    return order


def _chunks(df: pd.DataFrame) -> list[pd.DataFrame]:
    """One block per shard, so Ray Data renders shards in parallel."""
    return [part for _, part in df.groupby("_shard", sort=True)]


def _reused(ctx: AugmentContext, name: str) -> StageResult:
    path = ctx.stage_dir(name)
    with open(os.path.join(path, META)) as fh:
        meta = json.load(fh)
    return StageResult(name, path, ctx.stage_key(name), True, int(meta["rows"]), 0, 0.0)


def _run_llm_stages(ctx: AugmentContext, names: list[str]) -> dict[str, StageResult]:
    import ray

    from bridgerec.augment._generate import generate_dataset

    t0 = time.time()
    writers: dict[str, ShardWriter] = {}
    parts = []
    for name in names:
        st = ctx.stage(name)
        w = writers[name] = ShardWriter(st, st.tasks(), ctx.stage_dir(name))
        ctx.log(f"[augment] {name}: {len(w.tasks)} rows, {len(w.remaining)} to generate -> {w.out_dir}")
        if len(w.tasks) == 0:
            w.write_empty()
        elif len(w.remaining):
            fn, kwargs = st.render()
            ds = ray.data.from_pandas(_chunks(w.remaining.assign(_stage=name)))
            ds = ds.map_batches(fn, fn_kwargs=kwargs, batch_format="pandas", batch_size=None)
            parts.append(ds.select_columns([*_LLM_COLUMNS, "sampling_json"]))
    if parts:
        ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        out = generate_dataset(ds, ctx.cfg.llm, ctx.model_path, _LLM_COLUMNS)
        shards = sum(int(w.remaining["_shard"].nunique()) for w in writers.values() if len(w.remaining))
        for batch in progress(out.iter_batches(batch_format="pandas", batch_size=None), shards, f"[augment] {'+'.join(names)}"):
            for name, part in batch.groupby("_stage"):
                writers[str(name)].add(part.drop(columns=["_stage"]))
    seconds = time.time() - t0
    results = {}
    for name, w in writers.items():
        rows = w.finalize(seconds, {"engine": ctx.cfg.llm.engine, "model_path": ctx.model_path})
        results[name] = StageResult(name, w.out_dir, ctx.stage_key(name), False, rows, w.written, seconds)
    return results


def _run_stage(ctx: AugmentContext, name: str) -> StageResult:
    import ray

    t0 = time.time()
    st = ctx.stage(name)
    w = ShardWriter(st, st.tasks(), ctx.stage_dir(name))
    ctx.log(f"[augment] {name}: {len(w.tasks)} rows, {len(w.remaining)} to compute -> {w.out_dir}")
    if len(w.tasks) == 0:
        w.write_empty()
    elif len(w.remaining):
        out = st.transform(ray.data.from_pandas(_chunks(w.remaining)))
        shards = int(w.remaining["_shard"].nunique())
        for batch in progress(out.iter_batches(batch_format="pandas", batch_size=None), shards, f"[augment] {name}"):
            w.add(batch)
    seconds = time.time() - t0
    rows = w.finalize(seconds)
    return StageResult(name, w.out_dir, ctx.stage_key(name), False, rows, w.written, seconds)


def run_augmentations(cfg: Config, stages: Optional[Sequence[str]] = None, *, domain_embeddings: Any = None,
                      log: Callable[[str], None] = say) -> dict[str, StageResult]:
    """Run ``stages`` (default ``cfg.augment.stages``) and what they depend on; returns one result per stage.

    ``domain_embeddings``: ``(user_emb, item_emb)`` arrays, a dict with those keys, or an .npz path
    (overrides ``augment.prompt_aug.embeddings``), for the prompt_aug stage.
    """
    names = list(stages if stages is not None else cfg.augment.stages)
    if not names:
        raise ValueError("no augmentation stages given; set augment.stages or pass stages "
                         f"(known: {', '.join(sorted(STAGES))})")
    ctx = AugmentContext(cfg, domain_embeddings, log)
    plan = plan_stages(ctx, names)
    results: dict[str, StageResult] = {}
    pending = list(plan)
    while pending:
        ready = [n for n in pending if all(d in results for d in ctx.stage(n).deps())]
        for n in ready:
            if ctx.is_done(n):
                results[n] = _reused(ctx, n)
                log(f"[augment] {n}: reusing {results[n].path} ({results[n].rows} rows)")
        todo = [n for n in ready if n not in results]
        llm = [n for n in todo if STAGES[n].uses_llm]
        if llm:
            results.update(_run_llm_stages(ctx, llm))
        for n in todo:
            if n not in llm:
                results[n] = _run_stage(ctx, n)
        pending = [n for n in pending if n not in results]
    for r in results.values():
        if not r.reused:
            log(f"[augment] {r.stage}: {r.rows} rows ({r.computed_rows} computed) in {r.seconds:.1f} s")
    return {n: results[n] for n in plan}


def stage_output_dir(cfg: Config, stage: str, domain_embeddings: Any = None) -> str:
    """Where ``stage`` writes (or wrote) for this config, finished or not."""
    return AugmentContext(cfg, domain_embeddings, log=lambda m: None).stage_dir(stage)



def load_stage(cfg: Config, stage: str, domain_embeddings: Any = None) -> pd.DataFrame:
    """The finished output of ``stage`` for this config (what a method reads); fails if it was not run."""
    path = stage_output_dir(cfg, stage, domain_embeddings)
    if not os.path.exists(os.path.join(path, META)):
        raise FileNotFoundError(f"augmentation stage {stage!r} has no finished output for this config at {path}; "
                                f"run: python jobs/augment.py --config <config> \"augment.stages=[{stage}]\"")
    return read_stage_output(path)
