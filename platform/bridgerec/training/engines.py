"""Training engines: how one optimisation step, a checkpoint and a full-weight view are done.

Two implementations behind one small interface, picked by ``train.strategy``:

- ``ddp``: ``ray.train.torch.prepare_model`` (DistributedDataParallel) + a torch optimizer;
- ``deepspeed``: ``deepspeed.initialize`` with ZeRO stage 0-3, micro-batch, gradient accumulation,
  precision and optimizer from config (or a DeepSpeed JSON given by ``train.deepspeed_config``).

Both are driven the same way by :mod:`bridgerec.training.loop`::

    losses = engine.step(batch)          # {name: value}; forward, backward of the weighted sum,
                                         # optimizer step at accumulation boundaries
    model = engine.eval_model()          # every rank calls (a collective under ZeRO-3); a plain
                                         # module with the full weights, safe to call on rank 0 only
    engine.save(dir, rank); engine.load(dir)   # every rank; DeepSpeed writes its own sharded files
"""

from __future__ import annotations

import os
from typing import Any, Callable, Protocol

import torch

from bridgerec.config import TrainConfig
from bridgerec.methods.base import Method, weighted_sum

__all__ = ["Engine", "DDPEngine", "DeepSpeedEngine", "build_engine", "deepspeed_config", "resolve_precision"]

STATE_FILE = "state.pt"


class Engine(Protocol):
    module: Method

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def eval_model(self) -> Method: ...

    def save(self, directory: str, rank: int) -> None: ...

    def load(self, directory: str) -> None: ...


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 on a GPU that supports it, else fp32 (CPU training is fp32)."""
    if precision != "auto":
        if precision in ("bf16", "fp16") and not torch.cuda.is_available():
            raise ValueError(f"train.precision={precision} needs a GPU; use fp32 or auto on CPU")
        return precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def _optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class DDPEngine:
    """DistributedDataParallel through Ray Train; gradient accumulation by loss scaling."""

    def __init__(self, model: Method, cfg: TrainConfig, weights: dict[str, float]):
        import ray.train.torch

        self.module = model
        self.weights = weights
        self.opt = _optimizer(model.parameters(), cfg)
        self.accum = cfg.grad_accum_steps
        self._n = 0
        self.wrapped = ray.train.torch.prepare_model(model)

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = self.wrapped(batch)  # through the wrapper so DDP's gradient hooks fire
        (weighted_sum(losses, self.weights) / self.accum).backward()
        self._n += 1
        if self._n % self.accum == 0:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return {k: v.detach() for k, v in losses.items()}

    def eval_model(self) -> Method:
        return self.module

    def save(self, directory: str, rank: int) -> None:
        if rank == 0:
            torch.save({"model": self.module.state_dict(), "optim": self.opt.state_dict()}, os.path.join(directory, STATE_FILE))

    def load(self, directory: str) -> None:
        state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON built from ``train.*``, or the file in ``train.deepspeed_config`` with the
    batch geometry of ``train.*`` filled in (the config loader checked they agree)."""
    if cfg.deepspeed_config:
        conf = cfg._read_deepspeed_json()
        conf["train_micro_batch_size_per_gpu"] = cfg.batch_size
        conf["gradient_accumulation_steps"] = cfg.grad_accum_steps
        conf["train_batch_size"] = cfg.batch_size * cfg.grad_accum_steps * world_size
        return conf
    precision = resolve_precision(cfg.precision)
    opt_type = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}[cfg.optimizer]
    opt_params: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if opt_type != "SGD":
        # torch's implementation: DeepSpeed's fused CPU Adam needs a compiled op and a CPU
        # optimizer offload; this keeps the same optimizer on every device.
        opt_params["torch_adam"] = True
        opt_params["adam_w_mode"] = opt_type == "AdamW"
    conf: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "train_batch_size": cfg.batch_size * cfg.grad_accum_steps * world_size,
        "optimizer": {"type": "Adam" if opt_type == "AdamW" else opt_type, "params": opt_params},
        "zero_optimization": {"stage": cfg.zero_stage},
        "gradient_clipping": cfg.grad_clip or 0.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if precision == "bf16":
        conf["bf16"] = {"enabled": True}
    elif precision == "fp16":
        conf["fp16"] = {"enabled": True}
    return conf


class DeepSpeedEngine:
    """A DeepSpeed engine over the domain model (ZeRO stage from config)."""

    TAG = "ds"

    def __init__(self, model: Method, cfg: TrainConfig, world_size: int, factory: Callable[[], Method], weights: dict[str, float]):
        import deepspeed

        self.module = model
        self.weights = weights
        self._factory = factory
        self._plain: Method | None = None
        self._plain_step = -1  # engine.global_steps when _plain was gathered
        self.conf = deepspeed_config(cfg, world_size)
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=self.conf)
        self.zero3 = self.conf.get("zero_optimization", {}).get("stage", 0) == 3

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = self.engine(batch)
        self.engine.backward(weighted_sum(losses, self.weights))
        self.engine.step()  # DeepSpeed steps the optimizer at accumulation boundaries
        return {k: v.detach() for k, v in losses.items()}

    def eval_model(self) -> Method:
        """Under ZeRO-3 the module's sub-modules carry gather hooks: calling them on one rank
        desynchronises the ranks' collectives (a hang), so the full weights are gathered (every
        rank) into a plain copy of the model that rank 0 can use freely. The copy is reused
        until the next optimizer step (validation and the checkpoint of one epoch share it)."""
        if not self.zero3:
            return self.module
        if self._plain is not None and self._plain_step == self.engine.global_steps:
            return self._plain
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
            state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        if self._plain is None:
            self._plain = self._factory()
        self._plain.load_state_dict(state)
        self._plain_step = self.engine.global_steps
        return self._plain

    def save(self, directory: str, rank: int) -> None:
        self.engine.save_checkpoint(directory, tag=self.TAG)  # collective; each rank writes its shards
        model = self.eval_model()  # plain weights for evaluation/export without DeepSpeed
        if rank == 0:
            torch.save({"model": model.state_dict()}, os.path.join(directory, STATE_FILE))

    def load(self, directory: str) -> None:
        self.engine.load_checkpoint(directory, tag=self.TAG)
        self._plain_step = -1  # the weights changed without a step


def build_engine(factory: Callable[[], Method], cfg: TrainConfig, world_size: int, weights: dict[str, float]) -> Engine:
    """``factory`` builds the (identically initialised) method; DeepSpeed may call it again.
    ``weights`` weigh the method's named losses (missing names weigh 1)."""
    model = factory()
    if cfg.strategy == "deepspeed":
        return DeepSpeedEngine(model, cfg, world_size, factory, weights)
    return DDPEngine(model, cfg, weights)
