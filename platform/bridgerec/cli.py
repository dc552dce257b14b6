"""The `bridgerec` command: parse arguments, load the config, call a workflow.

Every subcommand that takes a config accepts ``--config FILE`` and trailing ``key=value``
overrides (``bridgerec config-docs`` lists every key).
"""

from __future__ import annotations

import argparse
import sys

from bridgerec.config import ConfigError, config_docs, load_config

__all__ = ["main", "build_parser"]

_OVERRIDES_HELP = "config overrides as dotted key=value (e.g. train.epochs=5 data.source.synthetic.preset=tiny)"


def _add_config_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--config", "-c", default=default, help=f"YAML config file (default: {default or 'built-in defaults'})")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=_OVERRIDES_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridgerec", description="LLM + domain-model recommenders on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("quickstart", help="prepare the synthetic dataset, train MF (BPR) on 2 Ray Train workers, evaluate, log to MLflow",
                       description="The newcomer's end-to-end run on the embedded synthetic data. Starts a local Ray "
                       "unless RAY_ADDRESS is set; prints a results table and the MLflow run id.")
    _add_config_args(p)

    data = sub.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    p = data.add_parser("prepare", help="read, validate, filter and split a source into a dataset directory",
                        description="Runs the Ray Data preparation pipeline for data.source and writes "
                        "<work_dir>/datasets/<data.name> (Parquet tables + manifest.json). Re-running with the same inputs reuses it.")
    _add_config_args(p)

    p = sub.add_parser("train", help="train a domain model with Ray Train and log it to MLflow",
                       description="Prepares (or reuses) the dataset, trains model.name with train.num_workers Ray Train "
                       "workers, evaluates the best checkpoint on the test split and logs params, metrics and the model to MLflow.")
    _add_config_args(p)

    p = sub.add_parser("augment", help="run LLM augmentation stages (profiles, text_embeddings, pairs, attributes, prompt_aug)",
                       description="Runs augment.stages (dependencies first) for the prepared dataset on Ray Data; finished "
                       "stages are reused, interrupted ones resume. Outputs: <dataset_dir>/augment/<stage>/<hash>/.")
    _add_config_args(p)

    p = sub.add_parser("evaluate", help="evaluate a logged MLflow run's model on a split",
                       description="Downloads the run's model artifacts and computes full-ranking metrics with slices.")
    p.add_argument("--run-id", required=True, help="MLflow run id (printed by train/quickstart)")
    p.add_argument("--split", default="test", choices=["valid", "test"], help="split to evaluate (default test)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default MLFLOW_TRACKING_URI or the local store)")
    p.add_argument("--dataset-dir", default=None, help="dataset directory (default: the one recorded in the run)")

    p = sub.add_parser("config-docs", help="list every config key with its type, default and meaning")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"bridgerec: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from bridgerec import workflows

    if args.command == "config-docs":
        print("\n".join(config_docs()))
        return 0
    if args.command == "evaluate":
        from bridgerec.workflows.report import results_table

        cfg, res = workflows.evaluate_run(args.run_id, args.split, args.tracking_uri, args.dataset_dir)
        print(results_table({cfg.model.name: res}, cfg.eval.ks))
        return 0
    default = "jobs/configs/quickstart.yaml" if args.command == "quickstart" else None
    cfg = load_config(args.config or _shipped(default), args.overrides)
    if args.command == "quickstart":
        workflows.quickstart(cfg)
    elif args.command == "train":
        workflows.train_and_log(cfg)
    elif args.command == "data":
        workflows.prepare(cfg)
    elif args.command == "augment":
        from bridgerec.augment import run_augmentations
        from bridgerec.runtime import init_ray

        init_ray(cfg.ray)
        run_augmentations(cfg, cfg.augment.stages)
    return 0


def _shipped(path: str | None) -> str | None:
    """A shipped config if it exists relative to the cwd (repo checkout), else built-in defaults."""
    import os

    return path if path and os.path.exists(path) else None


if __name__ == "__main__":
    raise SystemExit(main())
