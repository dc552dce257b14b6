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
    hashes = engine.save(dir, rank)      # every rank; DeepSpeed writes its own sharded files and
    engine.load(dir, hashes)             # their SHA-256s are checked before DeepSpeed unpickles them
"""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import Any, Callable, Protocol

import torch

from bridgerec._files import file_sha256
from bridgerec.config import TrainConfig
from bridgerec.methods.base import Method, weighted_sum

__all__ = ["Engine", "DDPEngine", "DeepSpeedEngine", "UnsafeCheckpointError", "build_engine", "deepspeed_config",
           "load_state", "resolve_precision"]

STATE_FILE = "state.pt"


class Engine(Protocol):
    module: Method

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def eval_model(self) -> Method: ...

    def save(self, directory: str, rank: int) -> dict[str, str]: ...

    def load(self, directory: str, hashes: dict[str, str] | None = None) -> None: ...


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 on a GPU that supports it, else fp32 (CPU training is fp32)."""
    if precision != "auto":
        if precision in ("bf16", "fp16") and not torch.cuda.is_available():
            raise ValueError(f"train.precision={precision} needs a GPU; use fp32 or auto on CPU")
        return precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def _param_groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """A method's own groups (:meth:`Method.param_groups`, e.g. a separate LLM learning rate); any
    other module: its trainable parameters at ``lr``."""
    if isinstance(model, Method):
        return model.param_groups(lr)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]


def _optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class DDPEngine:
    """DistributedDataParallel through Ray Train.

    Gradient accumulation by loss scaling, with the gradient all-reduce skipped (``no_sync``) on
    every micro-batch but the last of an optimizer step; ``train.grad_clip`` clips the global norm
    before the step; ``train.precision`` bf16/fp16 runs the forward under autocast (fp16 with a
    gradient scaler) while weights and optimizer state stay fp32. ``wrap`` replaces
    ``ray.train.torch.prepare_model`` (tests wrap in a plain ``DistributedDataParallel``)."""

    def __init__(self, model: Method, cfg: TrainConfig, weights: dict[str, float], wrap: Callable[[Method], Any] | None = None):
        if wrap is None:
            import ray.train.torch

            wrap = ray.train.torch.prepare_model
        self.module = model
        self.weights = weights
        self.opt = _optimizer(_param_groups(model, cfg.lr), cfg)
        self.accum = cfg.grad_accum_steps
        self.clip = cfg.grad_clip
        self.precision = resolve_precision(cfg.precision)
        self._n = 0
        self.wrapped = wrap(model)
        self.scaler = torch.amp.GradScaler(_device_type(model)) if self.precision == "fp16" else None

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=_device_type(self.module), dtype=dtype)

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        boundary = (self._n + 1) % self.accum == 0
        # DDP all-reduces in backward; between boundaries the gradients only accumulate locally
        no_sync = getattr(self.wrapped, "no_sync", None)
        with (contextlib.nullcontext() if boundary or no_sync is None else no_sync()):
            with self._autocast():
                losses = self.wrapped(batch)  # through the wrapper so DDP's gradient hooks fire
            loss = weighted_sum(losses, self.weights).float() / self.accum
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        self._n += 1
        if boundary:
            self._optimizer_step()
        return {k: v.detach().float() for k, v in losses.items()}

    def _optimizer_step(self) -> None:
        if self.scaler:
            self.scaler.unscale_(self.opt)
        if self.clip:
            torch.nn.utils.clip_grad_norm_([p for p in self.module.parameters() if p.grad is not None], self.clip)
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def eval_model(self) -> Method:
        return self.module

    def save(self, directory: str, rank: int) -> dict[str, str]:
        if rank == 0:
            torch.save({"model": self.module.state_dict(), "optim": self.opt.state_dict()}, os.path.join(directory, STATE_FILE))
        return {}

    def load(self, directory: str, hashes: dict[str, str] | None = None) -> None:
        state = load_state(os.path.join(directory, STATE_FILE))
        self.module.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])


def _device_type(module: torch.nn.Module) -> str:
    p = next(module.parameters(), None)
    return p.device.type if p is not None else "cpu"


class UnsafeCheckpointError(ValueError):
    """A checkpoint file holds something other than tensors and plain containers, or a DeepSpeed
    file does not match the hash recorded when it was written."""


def load_state(path: str) -> dict:
    """Load a bridgerec weights file with ``weights_only=True``: tensors, numbers, strings and
    containers only; a pickled object (which could run code on load) is refused with a clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds objects other than tensors (a checkpoint bridgerec did "
            f"not write, or a tampered one); {str(exc).splitlines()[0]}") from None


def _ds_optimizer(cfg: TrainConfig) -> dict[str, Any]:
    """The DeepSpeed ``optimizer`` section for ``train.optimizer``/``lr``/``weight_decay``."""
    opt_type = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}[cfg.optimizer]
    params: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if opt_type != "SGD":
        # torch's implementation: DeepSpeed's fused CPU Adam needs a compiled op and a CPU
        # optimizer offload; this keeps the same optimizer on every device.
        params["torch_adam"] = True
        params["adam_w_mode"] = opt_type == "AdamW"
    return {"type": "Adam" if opt_type == "AdamW" else opt_type, "params": params}


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON built from ``train.*``, or the file in ``train.deepspeed_config`` with the
    batch geometry of ``train.*`` filled in (the config loader checked they agree)."""
    if cfg.deepspeed_config:
        conf = cfg._read_deepspeed_json()
        # a file without an optimizer section gets train.*'s (else DeepSpeed would build none and
        # the caller's parameters would never step)
        conf.setdefault("optimizer", _ds_optimizer(cfg))
        conf["train_micro_batch_size_per_gpu"] = cfg.batch_size
        conf["gradient_accumulation_steps"] = cfg.grad_accum_steps
        conf["train_batch_size"] = cfg.batch_size * cfg.grad_accum_steps * world_size
        return conf
    precision = resolve_precision(cfg.precision)
    conf: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "train_batch_size": cfg.batch_size * cfg.grad_accum_steps * world_size,
        "optimizer": _ds_optimizer(cfg),
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
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=_param_groups(model, cfg.lr), config=self.conf)
        self.zero3 = self.conf.get("zero_optimization", {}).get("stage", 0) == 3

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = self.engine(batch)
        self.engine.backward(weighted_sum(losses, self.weights))
        self.engine.step()  # DeepSpeed steps the optimizer at accumulation boundaries
        return {k: v.detach().float() for k, v in losses.items()}

    def full_state(self, rank: int) -> dict[str, torch.Tensor] | None:
        """The full fp32 weights on rank 0 (None on the others); every rank must call it.

        Trainable parameters come from the optimizer's fp32 master copy
        (``safe_get_full_fp32_param``: under bf16/fp16 the module holds rounded copies); the rest
        are gathered one tensor at a time under ZeRO-3, so only rank 0 ever holds the whole model."""
        import deepspeed
        from deepspeed.utils import safe_get_full_fp32_param

        state = self.module.state_dict() if rank == 0 else None  # buffers (+ placeholders under ZeRO-3)
        for name, p in self.module.named_parameters(remove_duplicate=False):
            full = safe_get_full_fp32_param(p) if p.requires_grad else None  # collective
            if full is None:
                with deepspeed.zero.GatheredParameters([p], modifier_rank=None, enabled=self.zero3):
                    full = p.detach().clone() if rank == 0 else None
            if rank == 0:
                state[name] = full.detach().float().cpu()
        return state

    def eval_model(self) -> Method:
        """Under ZeRO-3 the module's sub-modules carry gather hooks: calling them on one rank
        desynchronises the ranks' collectives (a hang), so the full weights are gathered (every
        rank calls this) into a plain copy of the model on rank 0. The copy is reused until the
        next optimizer step (validation and the checkpoint of one epoch share it). Other ranks get
        the module back and must not call it outside a collective step."""
        if not self.zero3:
            return self.module
        if self._plain is not None and self._plain_step == self.engine.global_steps:
            return self._plain
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else 0
        state = self.full_state(rank)
        self._plain_step = self.engine.global_steps
        if rank != 0:
            return self.module
        if self._plain is None:
            self._plain = self._factory()
        self._plain.load_state_dict(state)
        return self._plain

    def save(self, directory: str, rank: int) -> dict[str, str]:
        """DeepSpeed's sharded files (every rank) plus fp32 ``state.pt`` (rank 0); returns the
        SHA-256 of each DeepSpeed file this rank wrote (``load`` checks them: DeepSpeed unpickles)."""
        self.engine.save_checkpoint(directory, tag=self.TAG)  # collective; each rank writes its shards
        state = self.full_state(rank)
        if rank == 0:
            torch.save({"model": state}, os.path.join(directory, STATE_FILE))
        return file_hashes(directory, exclude=(STATE_FILE,))

    def load(self, directory: str, hashes: dict[str, str] | None = None) -> None:
        check_hashes(directory, hashes or {}, STATE_FILE)
        self.engine.load_checkpoint(directory, tag=self.TAG)
        self._plain_step = -1  # the weights changed without a step


def file_hashes(directory: str, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256} of the files under ``directory`` (those in ``exclude`` left out)."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if rel not in exclude:
                out[rel] = file_sha256(path)
    return out


def check_hashes(directory: str, hashes: dict[str, str], *trusted: str) -> None:
    """Refuse a checkpoint whose unpickled files do not match the hashes recorded at save time
    (``trusted`` files are loaded with ``weights_only=True`` and need no hash)."""
    found = file_hashes(directory)
    for rel in found:
        if rel.endswith(".pt") and rel not in hashes and os.path.basename(rel) not in trusted:
            raise UnsafeCheckpointError(f"refusing to load {os.path.join(directory, rel)}: no hash was recorded for it "
                                        "when the checkpoint was written")
    for rel, want in hashes.items():
        if found.get(rel) != want:
            raise UnsafeCheckpointError(f"refusing to load {os.path.join(directory, rel)}: "
                                        + ("it is missing" if rel not in found else "its SHA-256 differs from the one recorded at save time"))


def build_engine(factory: Callable[[], Method], cfg: TrainConfig, world_size: int, weights: dict[str, float]) -> Engine:
    """``factory`` builds the (identically initialised) method; DeepSpeed may call it again.
    ``weights`` weigh the method's named losses (missing names weigh 1)."""
    model = factory()
    if cfg.strategy == "deepspeed":
        return DeepSpeedEngine(model, cfg, world_size, factory, weights)
    return DDPEngine(model, cfg, weights)
