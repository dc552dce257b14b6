"""Run: python jobs/bench/methods.py [--preset small] [--seeds 3] [--epochs N] [--sources item_text,profiles] [--out bench_results/methods.md] [--override k=v ...]

Benchmark of the representation-alignment methods against the domain model alone, on LightGCN.

``base``, ``rlmrec-con``, ``rlmrec-gen`` and ``darec`` train on the same prepared synthetic
dataset (``--preset``) with the same seeds (``train.seed`` = 0 .. seeds-1) on 2 Ray Train workers,
from the shipped configs (``jobs/configs/lightgcn_synthetic.yaml`` for ``base``,
``jobs/configs/<method>_lightgcn_synthetic.yaml`` for the others: same data, model and train
blocks, each method's own section and loss weights). Each run's best-validation checkpoint is
evaluated on the test split (full ranking, training and validation items masked).

Printed and written as markdown to ``--out``: Recall@10/20 and NDCG@10/20 over all test users and
on the long-tail-user slice, Recall@20 on the cold-item slice, each mean ± std over seeds with the
relative change of the mean against ``base``, and the wall time per run (training + test
evaluation; the semantic inputs are computed once, before the clock, and cached on disk).

``--sources`` runs every alignment method once per semantic source (``method.semantic.source``):
``item_text`` (MiniLM embeddings of the item texts; a user is the mean of their training items)
and ``profiles`` (MiniLM embeddings of LLM profiles, which must have been generated first on the
same work dir, e.g. with SmolLM2:
``bridgerec augment --config jobs/configs/augment_smollm2_synthetic.yaml``). A ``profiles`` row's
relative change is against the same method on ``item_text``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from bridgerec.benchmarking import write_report
from bridgerec.config import Config, load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult
from bridgerec.methods.inputs import load_method_inputs
from bridgerec.training import train
from bridgerec.workflows import evaluate_model, prepare

METHODS = {
    "base": "lightgcn_synthetic.yaml",
    "rlmrec-con": "rlmrec_con_lightgcn_synthetic.yaml",
    "rlmrec-gen": "rlmrec_gen_lightgcn_synthetic.yaml",
    "darec": "darec_lightgcn_synthetic.yaml",
}
COLUMNS = [  # (header, slice or None for all users, metric)
    ("R@10", None, "recall@10"), ("R@20", None, "recall@20"), ("N@10", None, "ndcg@10"), ("N@20", None, "ndcg@20"),
    ("tail R@10", "long_tail_users", "recall@10"), ("tail R@20", "long_tail_users", "recall@20"),
    ("tail N@10", "long_tail_users", "ndcg@10"), ("tail N@20", "long_tail_users", "ndcg@20"),
    ("cold R@20", "cold_items", "recall@20"),
]


def bench_config(args: argparse.Namespace, method: str, seed: int, stamp: str, source: str | None = None) -> Config:
    # the run name carries everything that makes a run different: a run started under the name of a
    # finished one resumes it (restores its last checkpoint and trains no further)
    name = f"bench-methods-{method}-{args.preset}-s{seed}" + (f"-{source}" if source else "") + f"-{stamp}"
    overrides = [
        f"work_dir={args.work_dir}", f"data.name=synthetic-{args.preset}", f"data.source.synthetic.preset={args.preset}",
        f"train.seed={seed}", "tracking.enabled=false", f"run_name={name}",
    ]
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    overrides += args.override
    return load_config(os.path.join(args.configs, METHODS[method]), overrides)


def fit_batch_size(cfg: Config, data: DatasetDir) -> None:
    """Small presets: lower the batch so that every worker runs at least 4 steps per epoch."""
    n_train = int(data.manifest["counts"]["train"])
    most = max(32, n_train // (cfg.train.num_workers * 4))
    if cfg.train.batch_size > most:
        print(f"[bench] train.batch_size {cfg.train.batch_size} -> {most} ({n_train} training events)")
        cfg.train.batch_size = most


def run(cfg: Config, data: DatasetDir) -> tuple[EvalResult, float, tuple[int, int]]:
    """(test result, wall seconds, (best epoch, last epoch run))."""
    load_method_inputs(cfg, data)  # semantic inputs: computed and cached before the clock
    t0 = time.perf_counter()
    res = train(cfg, data)
    test = evaluate_model(res.model, data, cfg.eval, "test")  # sequence models: + validation history
    epochs = (int(res.best_metrics.get("epoch", 0)), int(res.history[-1]["epoch"]) if res.history else 0)
    return test, time.perf_counter() - t0, epochs


def _value(res: EvalResult, slice_name: str | None, metric: str) -> float:
    source = res.overall if slice_name is None else res.slices.get(slice_name, {})
    return float(source.get(metric, float("nan")))


def table(results: dict[str, list[tuple[EvalResult, float, tuple[int, int]]]]) -> str:
    """Markdown: one row per method, ``mean ± std (relative change of the mean vs base)``."""
    def stats(values: list[float]) -> tuple[float, float]:
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    means = {row: {h: stats([_value(r, s, m) for r, *_ in runs])[0] for h, s, m in COLUMNS}
             for row, runs in results.items()}
    head = ["method", *[h for h, _, _ in COLUMNS], "best / last epoch", "wall s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for method, runs in results.items():
        ref = means.get(method.replace(" (profiles)", " (item_text)") if method.endswith("(profiles)") else "base", {})
        cells = [method]
        for h, s, m in COLUMNS:
            mean, std = stats([_value(r, s, m) for r, *_ in runs])
            rel = "" if method == "base" or not ref.get(h) else f" ({100 * (mean / ref[h] - 1):+.1f}%)"
            cells.append(f"{mean:.4f} ± {std:.4f}{rel}")
        cells.append(" ".join(f"{b}/{last}" for *_, (b, last) in runs))  # per seed: early stopping at work
        wall, wall_std = stats([w for _, w, _ in runs])
        cells.append(f"{wall:.1f} ± {wall_std:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help="synthetic size preset (default: small)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method (default: 3)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs of the shipped configs")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="methods to run (default: all)")
    p.add_argument("--configs", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"),
                   help="directory of the shipped configs (default: jobs/configs beside this script)")
    p.add_argument("--sources", default="item_text", help="comma-separated method.semantic.source values for the "
                   "alignment methods: item_text, profiles (default: item_text)")
    p.add_argument("--work-dir", default="bridgerec_work", help="work dir (datasets, Ray results)")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every run (e.g. train.strategy=deepspeed)")
    p.add_argument("--out", default="bench_results/methods.md", help="markdown output path")
    args = p.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    data = prepare(bench_config(args, "base", 0, stamp), log=lambda m: None)
    counts = data.manifest["counts"]
    results: dict[str, list[tuple[EvalResult, float, tuple[int, int]]]] = {}
    sources = args.sources.split(",")
    for method in args.methods:
        for source in ([None] if method == "base" else sources):
            row = method if source is None or len(sources) == 1 else f"{method} ({source})"
            for seed in range(args.seeds):
                cfg = bench_config(args, method, seed, stamp, source)
                if source is not None:
                    cfg.method.semantic.source = source
                fit_batch_size(cfg, data)
                print(f"[bench] {row} seed {seed}: {cfg.train.epochs} epochs", flush=True)
                results.setdefault(row, []).append(run(cfg, data))
    cfg = bench_config(args, "base", 0, stamp)
    header = (f"# Alignment methods on LightGCN, synthetic `{args.preset}` "
              f"({counts['users']} users, {counts['items']} items, {counts['train']} training events)\n\n"
              f"seeds 0..{args.seeds - 1}, epochs {args.epochs or cfg.train.epochs} (best validation {cfg.train.select_metric}), "
              f"{cfg.train.num_workers} Ray Train workers ({cfg.train.strategy}), {os.cpu_count()} CPU cores, "
              f"{platform.machine()}; semantic source {args.sources}; mean ± std over seeds, (relative change of the mean "
              f"vs base; a `(profiles)` row vs the same method on `(item_text)`); "
              f"tail = long-tail users, cold = cold items.\n\n")
    text = header + table(results) + "\n"
    write_report(text, args.out)


if __name__ == "__main__":
    main()
