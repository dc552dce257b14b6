"""Driver side of training: build the TorchTrainer, run it, load the best checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass, field

import pandas as pd
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from bridgerec.config import Config
from bridgerec.console import EpochBar, say
from bridgerec.data.dataset import DatasetDir
from bridgerec.methods import Method, build_method, method_class
from bridgerec.methods.inputs import load_method_inputs
from bridgerec.models import build_model_for_dataset, check_objective, model_class
from bridgerec.training.engines import STATE_FILE, load_state
from bridgerec.training.loop import PROGRESS_FILE, select_order, selection_score, train_loop_per_worker, valid_metric_key

__all__ = ["TrainResult", "train", "check_plugins", "build_method_for_dataset", "load_model_from_checkpoint_dir"]


@dataclass
class TrainResult:
    model: Method
    best_metrics: dict
    history: list[dict] = field(default_factory=list)
    """Metrics of every epoch in order (all attempts of a resumed run)."""
    path: str = ""
    checkpoint_dir: str = ""


def steps_per_epoch(n_train: int, workers: int, batch_size: int) -> int:
    """Full batches each rank gets from an equal streaming split (the remainder is dropped)."""
    from bridgerec.config import ConfigError

    steps = (n_train // workers) // batch_size
    if steps < 1:
        raise ConfigError(
            f"train.batch_size={batch_size} x train.num_workers={workers} exceeds the {n_train} training events "
            f"of this dataset; lower train.batch_size (at most {max(n_train // workers, 1)} here)"
        )
    return steps


def _with_positions(batch: pd.DataFrame) -> pd.DataFrame:
    """Blocks hold every event of their users: ``pos_idx`` = index in the user's (ts, seq, iid)
    order, the same order as :func:`bridgerec.models.histories.histories_for` gives the train split
    (a ``rating`` column, when selected, follows its event)."""
    batch = batch.sort_values(["uid", "ts", "seq", "iid"] if "seq" in batch else ["uid", "ts", "iid"], kind="stable")
    out = {"uid": batch["uid"], "iid": batch["iid"], "pos_idx": batch.groupby("uid").cumcount().astype("int64")}
    if "rating" in batch:
        out["rating"] = batch["rating"]
    return pd.DataFrame(out)


def stream_columns_wanted(cfg: Config) -> tuple[str, ...]:
    """The derived stream columns (:data:`bridgerec.models.base.STREAM_COLUMNS`) that the domain
    model built from ``cfg.model`` and the method's stream stage ask for; a ValueError naming the
    model for a column the trainer does not provide. The DomainModel contract, no model names."""
    from bridgerec.models.base import STREAM_COLUMNS

    wanted = (*model_class(cfg.model.name).stream_columns_for(cfg.model), *method_class(cfg.method.name).stream_needs)
    unknown = [c for c in wanted if c not in STREAM_COLUMNS]
    if unknown:
        raise ValueError(f"model {cfg.model.name!r} asks for stream columns {unknown}; the trainer provides: "
                         f"{', '.join(STREAM_COLUMNS)} (see bridgerec.models.base.STREAM_COLUMNS)")
    return tuple(dict.fromkeys(wanted))


def check_plugins(cfg: Config) -> None:
    """Fail before any data work when ``model.name`` or ``method.name`` is not registered
    (naming the key and the registered names), when the model does not train for
    ``model.objective``, or when the method cannot run under
    ``train.zero_stage=3`` (it reads the domain model's parameters outside its forward)."""
    from bridgerec.config import ConfigError

    for lookup, name in ((model_class, cfg.model.name), (method_class, cfg.method.name)):
        try:
            lookup(name)
        except ValueError as exc:  # the registries' messages name the key and the registered names
            raise ConfigError(str(exc)) from None
    try:
        check_objective(cfg.model)
    except ValueError as exc:  # names model.objective and the models that train for it
        raise ConfigError(str(exc)) from None
    t = cfg.train
    if t.strategy == "deepspeed" and t.zero_stage == 3 and not method_class(cfg.method.name).supports_zero3:
        raise ConfigError(f"train.zero_stage=3: method {cfg.method.name!r} reads the domain model's embeddings outside "
                          "its forward, which ZeRO-3 does not gather; use train.zero_stage <= 2 or train.strategy=ddp")


@contextlib.contextmanager
def _ordered_execution(on: bool):
    """Ray Data keeps block order while the stream is built and materialised (``train.deterministic``).

    ``random_shuffle`` seeds each input block with ``seed + its index in the input list``, and
    without ``preserve_order`` that list is in task-completion order: the same seed then gave
    different shuffles (and different shares per rank) from run to run. Datasets snapshot the
    current DataContext when they are created, so it is set before the read and restored after."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = before or on
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = before


def training_stream(cfg: Config, data: DatasetDir):
    """The train split as a Ray Dataset of (uid, iid) plus the columns the model declares in
    ``stream_columns`` (:data:`bridgerec.models.base.STREAM_COLUMNS`), for the workers to shard.

    Under ``train.shuffle=global`` it is shuffled once here (Ray Data ``random_shuffle``, seeded)
    so each rank's share is a random sample of all events, not a range of users (the split is
    stored sorted by user); the ranks then permute their shares every epoch. Under
    ``train.deterministic`` the stream is built with Ray Data's block order preserved, so the same
    seed gives the same rows in the same order (see :func:`_ordered_execution`)."""
    with _ordered_execution(cfg.train.deterministic):
        return _build_stream(cfg, data)


def _build_stream(cfg: Config, data: DatasetDir):
    ds = data.read_split("train")
    method = method_class(cfg.method.name)
    wanted = stream_columns_wanted(cfg)
    rating = ["rating"] if "rating" in wanted else []  # the dataset's own column, passed through
    if "pos_idx" not in wanted:
        ds = ds.select_columns(["uid", "iid", *rating])
    else:
        n = int(data.manifest["counts"]["train"])
        cols = ["uid", "iid", "ts", *rating] + (["seq"] if "seq" in ds.schema().names else [])
        ds = ds.select_columns(cols).repartition(max(2, n // 500_000 + 2), keys=["uid"]).map_batches(
            _with_positions, batch_size=None, batch_format="pandas"
        )
    stage = method.stream_stage(cfg, data)
    if stage is not None:  # e.g. BDLM's prompts, built and tokenised here, in Ray Data, not in the training step
        ds = ds.map_batches(stage, batch_format="numpy")
    if cfg.train.shuffle == "global":
        ds = ds.random_shuffle(seed=cfg.train.seed)
    # Materialised once into the object store (which spills to disk when it must): every epoch
    # then streams blocks to the workers instead of re-reading and re-projecting Parquet.
    return ds.materialize() if cfg.train.materialize_train else ds


def data_config(cfg: Config) -> DataConfig:
    """Ray Train's dataset sharding: under ``train.deterministic`` block order is preserved and
    locality is ignored, so which rows reach which rank does not depend on timing."""
    if not cfg.train.deterministic:
        return DataConfig()
    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return DataConfig(execution_options=options, enable_shard_locality=False)


def build_method_for_dataset(cfg: Config, data: DatasetDir) -> Method:
    """The method (with its domain model) as the training loop builds it, for loading weights."""
    return build_method(cfg.method, build_model_for_dataset(cfg.model, data), load_method_inputs(cfg, data))


def load_model_from_checkpoint_dir(cfg: Config, data: DatasetDir, path: str, model: Method | None = None) -> Method:
    """The method with the weights of the checkpoint in ``path`` (into ``model`` when given)."""
    model = model or build_method_for_dataset(cfg, data)
    model.load_state_dict(load_state(os.path.join(path, STATE_FILE))["model"])  # weights_only=True
    return model.eval()


def train(cfg: Config, data: DatasetDir, run_id: str | None = None, tracking_uri: str | None = None,
          callbacks: list | None = None, progress: bool = True) -> TrainResult:
    """Train ``cfg.model`` on ``data`` with Ray Train (Ray must be initialised).

    ``callbacks`` go on the trainer's ``RunConfig`` (a Tune trial passes ``TuneReportCallback``);
    ``progress=False`` renders nothing (a sweep's trials run side by side: Tune reports them)."""
    from bridgerec.evaluation import check_eval_ks

    check_plugins(cfg)  # before any worker starts
    check_eval_ks(cfg.eval, data.n_items)
    n_train = int(data.manifest["counts"]["train"])
    workers = cfg.train.num_workers
    key = valid_metric_key(cfg)
    model = build_method_for_dataset(cfg, data)
    if not any(p.requires_grad for p in model.parameters()):
        return _nothing_to_train(cfg, data, model)
    steps = steps_per_epoch(n_train, workers, cfg.train.batch_size)
    pump = _ProgressPump(cfg.train.epochs) if progress else contextlib.nullcontext(None)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg.model_dump(),
            "dataset_dir": data.path,
            "steps_per_epoch": steps,
            "run_id": run_id,
            "tracking_uri": tracking_uri,
            "progress_queue": pump.queue if progress else None,
            "progress": progress,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=cfg.train.use_gpu),
        datasets={"train": training_stream(cfg, data)},
        dataset_config=data_config(cfg),
        run_config=RunConfig(
            name=cfg.resolved_run_name(),
            storage_path=cfg.storage_path(),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints, checkpoint_score_attribute=key,
                checkpoint_score_order=select_order(cfg),
            ),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            callbacks=list(callbacks or []),
        ),
    )
    with pump:
        result = trainer.fit()
    if result.error:
        raise result.error
    best_ckpt, best_metrics = max(result.best_checkpoints, key=lambda cm: selection_score(cfg, cm[1]))
    with best_ckpt.as_directory() as d:
        model = load_model_from_checkpoint_dir(cfg, data, d, model)
    return TrainResult(model, dict(best_metrics), _history(result), result.path, best_ckpt.path)


class _ProgressPump:
    """Rank 0's progress events (a Ray queue actor, no CPU) rendered on the driver by
    :class:`~bridgerec.console.EpochBar` while ``trainer.fit()`` blocks the main thread. Workers
    print nothing themselves, so every epoch is reported once, by the driver."""

    def __init__(self, epochs: int):
        from ray.util.queue import Queue

        self.queue = Queue(maxsize=10_000, actor_options={"num_cpus": 0})
        self.epochs = epochs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: EpochBar | None = None

    def _drain(self, block: bool) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                event = self.queue.get(block=block, timeout=0.5 if block else None)
            except Empty:
                return
            except Exception:  # noqa: BLE001 - the queue actor is gone (Ray shutting down)
                self._stop.set()
                return
            self._bar.handle(event)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain(block=True)

    def __enter__(self) -> "_ProgressPump":
        self._bar = EpochBar(self.epochs)
        self._thread = threading.Thread(target=self._run, name="bridgerec-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._drain(block=False)
        self._bar.close()
        self.queue.shutdown()


def _nothing_to_train(cfg: Config, data: DatasetDir, model: Method) -> TrainResult:
    """A model without trainable parameters (``popularity``): no Ray Train run, one validation."""
    from bridgerec.evaluation import evaluate_split

    valid = {"valid_" + k: v for k, v in evaluate_split(model.full_scores, data, cfg.eval, "valid").flat().items() if "/" not in k}
    say(f"[train] {cfg.model.name} has no trainable parameters: nothing to train; "
        f"{valid_metric_key(cfg)} {valid[valid_metric_key(cfg)]:.4f}")
    return TrainResult(model.eval(), {"epoch": 0, **valid}, [{"epoch": 0, **valid}], "", "")


def _history(result) -> list[dict]:
    """Every epoch's metrics in order, from the latest checkpoint's progress file (the trainer's
    ``metrics_dataframe`` only holds the kept checkpoints, ordered by score)."""
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            path = os.path.join(d, PROGRESS_FILE)
            if os.path.exists(path):
                with open(path) as fh:
                    return json.load(fh).get("history", [])
    frame = result.metrics_dataframe
    return frame.sort_values("epoch").to_dict("records") if isinstance(frame, pd.DataFrame) and len(frame) else []
