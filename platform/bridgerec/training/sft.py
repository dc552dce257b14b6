"""LoRA instruction tuning of the LLM on Ray Train (BIGRec's step 1; any method that tunes the LLM
on (prompt, target) pairs).

The driver tokenises the examples once (:func:`~bridgerec.llm.prompts.encode_example`: labels
only on the target), and :func:`train_sft` runs :func:`sft_loop_per_worker` on
``train.num_workers`` Ray Train workers with the same engines as the domain models
(:mod:`bridgerec.training.engines`: DDP, or DeepSpeed ZeRO 0-3 from ``train.*``). Each rank
takes an equal share of the examples (``examples[rank::world]``, cut to ``steps x batch``) so
every rank runs the same number of steps; the share is permuted every epoch from
``(seed, epoch, rank)``. Only the LoRA weights train (PEFT, ``llm.lora.*``); after every epoch
rank 0 measures the loss on the validation examples, checks that no frozen weight moved, and
saves the adapter into the epoch's checkpoint. The adapter of the best validation loss is copied
to ``<work_dir>/models/adapters/<run name>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from bridgerec.config import Config

__all__ = ["SFTResult", "CausalLMLoss", "collate", "train_sft", "sft_loop_per_worker", "read_training_record"]

ADAPTER_DIR = "adapter"
PROGRESS_FILE = "sft_progress.json"
TRAINING_RECORD = "bridgerec_training.json"  # beside the copied adapter: its best metrics, history, seconds


class CausalLMLoss(nn.Module):
    """The engines' module contract (``forward(batch) -> {loss name: scalar}``) over a causal LM:
    ``{"sft": mean token cross-entropy on the labelled positions}``."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return {"sft": out.loss}


def collate(rows: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded examples into ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding)."""
    width = max(len(r["input_ids"]) for r in rows)
    out = {"input_ids": np.full((len(rows), width), pad_id, np.int64),
           "attention_mask": np.zeros((len(rows), width), np.int64),
           "labels": np.full((len(rows), width), -100, np.int64)}
    for n, r in enumerate(rows):
        k = len(r["input_ids"])
        out["input_ids"][n, :k] = r["input_ids"]
        out["attention_mask"][n, :k] = 1
        out["labels"][n, :k] = r["labels"]
    return {k: torch.from_numpy(v) for k, v in out.items()}


def _frozen_digest(module: nn.Module) -> str:
    """A hash of every parameter that does not train (the base model's weights)."""
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        if not p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _build(cfg: Config, backbone_path: str) -> CausalLMLoss:
    from bridgerec.llm.backbone import load_causal_lm
    from bridgerec.llm.lora import apply_lora

    torch.manual_seed(cfg.train.seed)  # the same LoRA initialisation on every rank
    lm = load_causal_lm(backbone_path, cfg.llm.backbone_dtype, "cpu")
    return CausalLMLoss(apply_lora(lm, cfg.llm.lora))


def _mean_loss(module: CausalLMLoss, rows: Sequence[dict], bs: int, pad_id: int, device) -> float:
    module.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(rows), bs):
            batch = {k: v.to(device) for k, v in collate(rows[s:s + bs], pad_id).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())  # the positions the shifted loss averages over
            total += float(module(batch)["sft"]) * n
            tokens += n
    module.train()
    return total / max(tokens, 1)


def sft_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from bridgerec.training.engines import build_engine
    from bridgerec.training.loop import _quiet_ray_train_reports, _seed

    cfg = Config.model_validate(config["cfg"])
    _quiet_ray_train_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    bs, steps, pad_id = cfg.train.batch_size, int(config["steps_per_epoch"]), int(config["pad_id"])
    share = list(config["train"][rank::world])[: steps * bs]
    valid = list(config["valid"])
    engine = build_engine(lambda: _build(cfg, config["backbone"]), cfg.train, world, {})
    module = engine.module
    before = _frozen_digest(module) if rank == 0 else ""
    device = ray.train.torch.get_device()
    t_start, history = time.time(), []
    for epoch in range(cfg.train.epochs):
        t0, total, tokens = time.time(), 0.0, 0
        order = np.random.default_rng(_seed(cfg.train.seed, epoch, rank)).permutation(len(share))
        torch.manual_seed(_seed(cfg.train.seed, epoch, rank))  # LoRA dropout
        for s in range(steps):
            batch = collate([share[i] for i in order[s * bs:(s + 1) * bs]], pad_id)
            tokens += int(batch["attention_mask"].sum())
            total += float(engine.step({k: v.to(device) for k, v in batch.items()})["sft"])
        full = engine.eval_model()  # every rank (a collective under ZeRO-3)
        metrics = {"epoch": epoch + 1, "train_loss": total / max(steps, 1),
                   "tokens_per_s": world * tokens / max(time.time() - t0, 1e-9), "elapsed_s": time.time() - t_start}
        d = tempfile.mkdtemp(prefix="bridgerec-sft-")
        if rank == 0:
            metrics["valid_loss"] = _mean_loss(full, valid, bs, pad_id, device) if valid else float("nan")
            metrics["frozen_unchanged"] = float(_frozen_digest(full) == before)
            history.append(dict(metrics))
            full.lm.save_pretrained(os.path.join(d, ADAPTER_DIR))
            with open(os.path.join(d, PROGRESS_FILE), "w") as fh:
                json.dump({"metrics": metrics, "history": history}, fh)
            print(f"[sft] epoch {epoch + 1}/{cfg.train.epochs}: train loss {metrics['train_loss']:.4f}, "
                  f"valid loss {metrics['valid_loss']:.4f}, {metrics['tokens_per_s']:.0f} tokens/s", flush=True)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)


@dataclass
class SFTResult:
    adapter_dir: str
    """The best epoch's adapter (PEFT directory), by validation loss (the last epoch without validation examples)."""
    best_metrics: dict
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


def train_sft(cfg: Config, backbone_path: str, train_rows: Sequence[dict], valid_rows: Sequence[dict] = (),
              pad_id: int = 0, out_dir: str | None = None) -> SFTResult:
    """Tune a LoRA adapter on ``train_rows`` (encoded examples: ``input_ids``, ``labels``) with Ray
    Train (Ray must be initialised); returns the best adapter, copied to ``out_dir`` (default
    ``<work_dir>/models/adapters/<run name>``)."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from bridgerec.config import ConfigError

    workers, bs = cfg.train.num_workers, cfg.train.batch_size
    steps = len(train_rows) // (workers * bs)
    if steps < 1:
        raise ConfigError(f"train.batch_size={bs} x train.num_workers={workers} exceeds the {len(train_rows)} "
                          f"instruction examples; lower train.batch_size (at most {max(len(train_rows) // workers, 1)} here)")
    rows = [{"input_ids": list(map(int, r["input_ids"])), "labels": list(map(int, r["labels"]))} for r in train_rows]
    valid = [{"input_ids": list(map(int, r["input_ids"])), "labels": list(map(int, r["labels"]))} for r in valid_rows]
    name = cfg.resolved_run_name()
    t0 = time.time()
    trainer = TorchTrainer(
        sft_loop_per_worker,
        train_loop_config={"cfg": cfg.model_dump(), "backbone": os.path.abspath(backbone_path), "train": rows,
                           "valid": valid, "steps_per_epoch": steps, "pad_id": int(pad_id)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=cfg.train.use_gpu),
        run_config=RunConfig(name=name, storage_path=cfg.storage_path(),
                             checkpoint_config=CheckpointConfig(checkpoint_score_attribute="valid_loss"
                                                                if valid else "epoch",
                                                                checkpoint_score_order="min" if valid else "max")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    key, sign = ("valid_loss", 1.0) if valid else ("epoch", -1.0)
    ckpt, _ = min(result.best_checkpoints, key=lambda cm: sign * float(cm[1].get(key, float("inf"))))
    out = os.path.abspath(out_dir or os.path.join(cfg.work_dir, "models", "adapters", name))
    with ckpt.as_directory() as d:
        with open(os.path.join(d, PROGRESS_FILE)) as fh:
            best = json.load(fh)["metrics"]
        if os.path.exists(out):
            shutil.rmtree(out)
        shutil.copytree(os.path.join(d, ADAPTER_DIR), out)
    with result.checkpoint.as_directory() as d:  # the latest epoch's file holds every epoch
        with open(os.path.join(d, PROGRESS_FILE)) as fh:
            history = json.load(fh)["history"]
    res = SFTResult(out, best, history, time.time() - t0)
    with open(os.path.join(out, TRAINING_RECORD), "w") as fh:  # read back when the adapter is reused (read_training_record)
        json.dump({"best": best, "history": history, "seconds": res.train_seconds}, fh, indent=2)
    return res


def read_training_record(adapter_dir: str) -> dict | None:
    """The record :func:`train_sft` wrote beside an adapter (best metrics, history, seconds), or None
    for an adapter tuned elsewhere or before the record existed."""
    path = os.path.join(adapter_dir, TRAINING_RECORD)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)
