"""Run: python jobs/bench/models.py [--models mf,lightgcn,sasrec] [--epochs N]

Quality of every domain model on the synthetic default, beside the popularity baseline: trains
each model with its shipped config (`jobs/configs/<model>_synthetic.yaml`) on the same prepared
dataset, evaluates the best checkpoint on the test split, and prints Recall/NDCG@10/20 overall,
Recall@20 on long-tail users, the relative change of Recall@20 vs popularity, and wall time.
Every run is logged to MLflow, so they can also be compared there.
"""

from __future__ import annotations

import argparse
import os
import time

from bridgerec.config import load_config
from bridgerec.workflows import train_and_log
from bridgerec.workflows.report import results_table

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Domain models vs popularity on the synthetic default.")
    p.add_argument("--models", default="mf,lightgcn,sasrec", help="comma-separated models with a <model>_synthetic.yaml")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--work-dir", default="bridgerec_work", help="work dir (dataset and MLflow store)")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = p.parse_args(argv)

    rows, seconds, baseline = {}, {}, None
    for model in args.models.split(","):
        extra = [f"work_dir={args.work_dir}", *args.overrides] + ([f"train.epochs={args.epochs}"] if args.epochs else [])
        cfg = load_config(os.path.join(CONFIGS, f"{model}_synthetic.yaml"), extra)
        t0 = time.time()
        s = train_and_log(cfg, log=lambda m: None)
        seconds[model] = time.time() - t0
        baseline = baseline or s.baseline
        rows[model] = s.test
    table = {"popularity": baseline, **rows}
    print(results_table(table, [10, 20]))
    base = baseline.overall["recall@20"]
    print()
    for model, res in rows.items():
        r = res.overall["recall@20"]
        print(f"{model:<10} recall@20 {r:.4f} vs popularity {base:.4f}: {100 * (r / base - 1):+.0f}%  ({seconds[model]:.0f} s)")


if __name__ == "__main__":
    main()
