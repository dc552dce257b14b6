"""The per-worker training loop run by Ray Train (one loop for every domain model).

Every rank runs exactly ``steps_per_epoch`` optimizer steps per epoch (the shards are equal-sized
and the driver computes the count), so collectives never wait on a rank that ran out of data.
Rank 0 validates, checkpoints, logs to MLflow and prints progress; the early-stopping decision is
broadcast so all ranks stop together. A restarted run resumes from ``ray.train.get_checkpoint()``.

Order of events (``train.shuffle``): under ``global`` the driver shuffled the split once, each
rank reads its equal share from Ray Data in the first epoch, keeps it in memory and draws a new
permutation of it every epoch from ``(seed, epoch, rank)``; negative sampling and dropout are
seeded from the same triple, so a run (and a resumed run) is reproducible for a fixed
``train.num_workers`` on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time

import numpy as np
import ray.train
import ray.train.torch
import torch

from bridgerec.config import Config
from bridgerec.console import epoch_line, step_line
from bridgerec.data.dataset import DatasetDir
from bridgerec.data.sampling import NegativeSampler
from bridgerec.evaluation import RATING_METRIC_NAMES, evaluate_ratings, full_ranking, mlflow_metric_name
from bridgerec.methods import Method, build_method
from bridgerec.methods.inputs import load_method_inputs
from bridgerec.models import build_model, dataset_inputs
from bridgerec.training.collectives import all_gather_objects, all_gather_tensors, broadcast_flag, same_on_all_ranks
from bridgerec.training.engines import STATE_FILE, Engine, build_engine

__all__ = ["train_loop_per_worker", "STATE_FILE", "valid_metric_key", "select_order", "selection_score"]

PROGRESS_FILE = "progress.json"


def valid_metric_key(cfg: Config) -> str:
    return "valid_" + mlflow_metric_name(cfg.train.select_metric)


def select_order(cfg: Config) -> str:
    """``"min"`` when ``train.select_metric`` is a rating error (rmse, mae), else ``"max"``."""
    return "min" if cfg.train.select_metric in RATING_METRIC_NAMES else "max"


def selection_score(cfg: Config, metrics: dict) -> float:
    """The validation metric of ``metrics`` signed so that higher is better (-inf when absent):
    what picks the best epoch and drives early stopping."""
    value = metrics.get(valid_metric_key(cfg))
    if value is None:
        return -math.inf
    return -float(value) if select_order(cfg) == "min" else float(value)


def _validate(model: Method, cfg: Config, data: DatasetDir, train_pairs) -> dict[str, float]:
    """Full-ranking metrics on the valid split; with a rating model (``predicts_ratings``, the
    DomainModel contract) also its ``valid_rmse`` / ``valid_mae``."""
    model.eval()
    device = next(model.parameters()).device  # the GPU under DDP/ZeRO<3 on GPU workers; else CPU
    with torch.no_grad():
        res = full_ranking(
            lambda u: model.full_scores(u.to(device)).float().cpu(), data.n_users, data.n_items, train_pairs, data.pairs("valid"),
            cfg.eval.ks, cfg.eval.user_batch_size,
        )
        out = {"valid_" + k: v for k, v in res.flat().items() if "/" not in k}
        if model.predicts_ratings:
            rating = evaluate_ratings(lambda u, i: model.predict_ratings(u.to(device), i.to(device)), data, "valid")
            out.update({"valid_" + k: v for k, v in rating.items()})
    model.train()
    return out


def _restore(engine: Engine) -> dict:
    """Load the latest checkpoint of this run (after a failure or a restart with the same name).

    bridgerec's own progress is JSON and its weights load with ``weights_only=True``; DeepSpeed's
    files (which DeepSpeed unpickles) are checked against the SHA-256s recorded at save time."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {"epoch": -1, "best": -math.inf, "bad_epochs": 0}
    with ckpt.as_directory() as d:
        with open(os.path.join(d, PROGRESS_FILE)) as fh:
            progress = json.load(fh)
        engine.load(d, progress.get("checkpoint_hashes", {}))
        return progress


def _checkpoint(engine: Engine, progress: dict, rank: int) -> ray.train.Checkpoint:
    """Every rank writes its part (DeepSpeed shards) into its own dir; Ray merges them. Rank 0's
    progress file records every rank's file hashes."""
    d = tempfile.mkdtemp(prefix="bridgerec-ckpt-")
    hashes: dict[str, str] = {}
    for part in all_gather_objects(engine.save(d, rank)):
        hashes.update(part)
    if rank == 0:
        with open(os.path.join(d, PROGRESS_FILE), "w") as fh:
            json.dump({**progress, "checkpoint_hashes": hashes}, fh)
    return ray.train.Checkpoint.from_directory(d)


def _peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from (seed, epoch, rank, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class _Share:
    """One rank's equal share of the train split, read from its Ray Data shard once and kept in
    memory as int64 columns (float32 for float ones such as ``rating``; ``train.shuffle=global``/``none``);
    each epoch yields ``steps`` batches of a fresh permutation."""

    def __init__(self, shard, columns: list[str]):
        blocks = list(shard.iter_batches(batch_size=None, batch_format="numpy"))
        self.cols = {c: _column(c, np.concatenate([b[c] for b in blocks])) if blocks else np.zeros(0, np.int64)
                     for c in columns}
        # a canonical order first: the permutation must not depend on the blocks' arrival order
        # (keys: the per-event columns; multi-valued ones such as token ids follow their event)
        order = np.lexsort(tuple(self.cols[c] for c in reversed(columns) if self.cols[c].ndim == 1))
        self.cols = {c: v[order] for c, v in self.cols.items()}
        self.n = len(order)

    def batches(self, steps: int, bs: int, rng: np.random.Generator | None):
        order = rng.permutation(self.n) if rng is not None else np.arange(self.n)
        for s in range(steps):
            idx = order[s * bs:(s + 1) * bs]
            yield {c: torch.from_numpy(v[idx]) for c, v in self.cols.items()}


def _column(name: str, values: np.ndarray) -> np.ndarray:
    """A stream column as the trainer hands it on: float32 for :data:`FLOAT_STREAM_COLUMNS`, else int64."""
    return values.astype(np.float32 if name in FLOAT_STREAM_COLUMNS else np.int64)


FLOAT_STREAM_COLUMNS = ("rating",)
"""Stream columns that are floats (:data:`bridgerec.models.base.STREAM_COLUMNS`); the rest are int64."""


def _stream_batches(shard, steps: int, bs: int, buffer_batches: int, seed: int, columns: list[str]):
    """``train.shuffle=buffer``: stream the shard through a seeded local shuffle buffer; the
    shard's remainder past ``steps`` full batches is drained so every rank runs exactly ``steps``."""
    step = 0
    dtypes = torch.int64 if not set(columns) & set(FLOAT_STREAM_COLUMNS) else \
        {c: torch.float32 if c in FLOAT_STREAM_COLUMNS else torch.int64 for c in columns}
    for batch in shard.iter_torch_batches(  # on the CPU: negatives and sequences are built with numpy
        batch_size=bs, drop_last=True, dtypes=dtypes, device="cpu",
        local_shuffle_buffer_size=buffer_batches * bs or None, local_shuffle_seed=seed,
    ):
        if step < steps:
            step += 1
            yield batch


class _Tracker:
    """Rank-0 MLflow logging into the run the driver created (no-op without a run id)."""

    def __init__(self, uri: str | None, run_id: str | None):
        self.client = None
        if uri and run_id:
            from mlflow.tracking import MlflowClient

            self.client, self.run_id = MlflowClient(uri), run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


class _Reporter:
    """Rank 0's progress for the driver: events into the driver's queue (``progress_queue`` in the
    loop config, rendered there by :class:`bridgerec.console.EpochBar`), else printed lines."""

    def __init__(self, queue, rank: int, enabled: bool = True):
        self.queue, self.rank, self.enabled = queue, rank, enabled

    def send(self, event: dict) -> None:
        if self.rank != 0 or not self.enabled:
            return
        if self.queue is not None:
            try:
                self.queue.put(event, block=False)
                return
            except Exception:  # noqa: BLE001 - a full or gone queue must not stop training: print instead
                pass
        text = {"epoch": epoch_line, "step": step_line}.get(event["kind"], lambda e: e["text"])(event)
        print(text, flush=True)

    def message(self, text: str) -> None:
        self.send({"kind": "message", "text": text})


def _quiet_ray_train_reports() -> None:
    """Drop Ray Train's INFO line per ``ray.train.report`` (it prints the whole report, per rank).

    Ray 2.60 names that logger after its module's file path, not ``ray.train...``, so the
    ``ray.train`` logger's level does not reach it; warnings and errors still come through.
    """
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as _ray_train_context
    except ImportError:  # another Ray layout: keep its output rather than fail
        return
    logging.getLogger(_ray_train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict) -> None:
    cfg = Config.model_validate(config["cfg"])
    data = DatasetDir(config["dataset_dir"])
    steps = int(config["steps_per_epoch"])
    _quiet_ray_train_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    inputs = dataset_inputs(data)
    train_pairs = inputs["train_pairs"]
    extra = load_method_inputs(cfg, data)
    engine = build_engine(
        lambda: build_method(cfg.method, build_model(cfg.model, data.n_users, data.n_items, **inputs), extra),
        cfg.train, world, cfg.method.loss_weights,
    )
    model = engine.module
    progress = _restore(engine)
    bs, n_neg, seed = cfg.train.batch_size, cfg.train.num_negatives, cfg.train.seed
    report = _Reporter(config.get("progress_queue"), rank, config.get("progress", True))
    report.message(f"[train] {world} worker(s) x batch {bs} x {cfg.train.grad_accum_steps} accumulation = global batch "
                   f"{world * bs * cfg.train.grad_accum_steps}; {steps} steps per epoch; shuffle {cfg.train.shuffle}")
    if progress["epoch"] >= 0:
        report.message(f"[train] resumed from the checkpoint of epoch {progress['epoch'] + 1}")
    sampler = NegativeSampler(data.n_items, *train_pairs, data.n_users, seed=seed)
    shard = ray.train.get_dataset_shard("train")
    share: _Share | None = None
    columns = ["uid", "iid", *model.stream_columns]  # what the model asks of the stream (DomainModel contract)
    tracker = _Tracker(config.get("tracking_uri"), config.get("run_id")) if rank == 0 else _Tracker(None, None)
    key = valid_metric_key(cfg)
    t_start, first_epoch = time.time(), progress["epoch"] + 1
    device = ray.train.torch.get_device()  # where Ray Train / DeepSpeed placed the model
    check_sync = world > 1 and cfg.train.strategy == "ddp"

    for epoch in range(first_epoch, cfg.train.epochs):
        t0, total, step, parts = time.time(), 0.0, 0, {}
        model.begin_epoch(epoch, all_gather_tensors)  # every rank (a method may gather, e.g. recomputed LLM features)
        sampler.reseed(seed, epoch, rank)
        torch.manual_seed(_seed(seed, epoch, rank))  # dropout
        if cfg.train.shuffle == "buffer":
            batches = _stream_batches(shard, steps, bs, cfg.train.shuffle_buffer_batches, _seed(seed, epoch, rank) % 2**31, columns)
        else:
            share = share or _Share(shard, columns)
            batches = share.batches(steps, bs, np.random.default_rng([seed, epoch, rank]) if cfg.train.shuffle == "global" else None)
        for batch in batches:
            uid = batch["uid"]
            neg = torch.from_numpy(sampler.sample(uid.numpy(), n_neg))
            step_batch = {"uid": uid, "pos": batch["iid"], "neg": neg, **model.batch_inputs(batch)}
            if device.type != "cpu":
                step_batch = {k: v.to(device, non_blocking=True) for k, v in step_batch.items()}
            losses = engine.step(step_batch)
            for name, value in losses.items():
                parts[name] = parts.get(name, 0.0) + float(value)
            total += float(sum(cfg.method.loss_weights.get(k, 1.0) * v for k, v in losses.items()))
            step += 1
            if rank == 0 and cfg.train.log_every_steps and step % cfg.train.log_every_steps == 0:
                report.send(_step_event(epoch, first_epoch, cfg.train.epochs, step, steps, total / step,
                                        world * bs * step / (time.time() - t0), t_start, time.time()))
        if step < steps:
            raise RuntimeError(f"rank {rank} got {step} full batches, expected {steps}: shards are unequal")
        metrics = {
            "epoch": epoch + 1,
            "train_loss": total / max(step, 1),
            "samples_per_s": world * bs * steps / (time.time() - t0),
            "epoch_s": time.time() - t0,  # training only (with the method's begin_epoch work), before validation
            "attempt_first_epoch": first_epoch + 1,  # > 1 when this attempt resumed from a checkpoint
            **{f"loss_{k}": v / max(step, 1) for k, v in parts.items()},
        }
        # the largest resident-set peak of any rank so far (MiB; a collective: every rank)
        metrics["peak_rss_mib_per_worker"] = max(all_gather_objects(_peak_rss_mib()))
        if check_sync:  # DDP keeps replicas equal; 1.0 proves it (a collective: every rank)
            metrics["ranks_in_sync"] = float(same_on_all_ranks(model))
        stop = False
        full = engine.eval_model()  # collective under ZeRO-3: every rank calls it
        if rank == 0:
            metrics.update(_validate(full, cfg, data, train_pairs))
            score = selection_score(cfg, metrics)  # signed: higher is better (rmse/mae negated)
            improved = score > progress["best"]
            progress = {
                "epoch": epoch,
                "best": max(progress["best"], score),
                "bad_epochs": 0 if improved else progress["bad_epochs"] + 1,
                # every epoch's metrics, across restarts: the driver's TrainResult.history
                "history": [*progress.get("history", []), {k: float(v) for k, v in metrics.items()}],
            }
            stop = bool(cfg.train.patience) and progress["bad_epochs"] >= cfg.train.patience
            tracker.log({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch + 1)
            eta = (time.time() - t_start) / (epoch + 1 - first_epoch) * (cfg.train.epochs - epoch - 1)
            report.send({"kind": "epoch", "epoch": epoch + 1, "epochs": cfg.train.epochs, "loss": metrics["train_loss"],
                         "metric": key, "value": metrics[key], "samples_per_s": metrics["samples_per_s"],
                         "eta_s": eta, "stop": stop})
        ckpt = _checkpoint(engine, progress, rank)
        ray.train.report(metrics, checkpoint=ckpt)
        if broadcast_flag(stop):
            break


def _step_event(epoch: int, first: int, epochs: int, step: int, steps: int, loss: float, rate: float, t_start: float, now: float) -> dict:
    done = (epoch - first) * steps + step  # steps run by this attempt
    left = ((epochs - first) * steps - done) * (now - t_start) / max(done, 1)
    return {"kind": "step", "epoch": epoch + 1, "epochs": epochs, "step": step, "steps": steps, "loss": loss,
            "samples_per_s": rate, "eta_s": left}
