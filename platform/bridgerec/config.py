"""Typed configuration tree: YAML files plus ``key=value`` overrides.

The root :class:`Config` composes the section configs that live with their packages
(``data``: :mod:`bridgerec.data.config`, ``model``: :mod:`bridgerec.models.config`, ``method``:
:mod:`bridgerec.methods.config`, ``eval``: :mod:`bridgerec.evaluation.config`, ``llm`` and
``encoder``: :mod:`bridgerec.llm.config`, ``augment``: :mod:`bridgerec.augment.config`), holds the
sections of the packages above it (``train``, ``tracking``, ``ray``), and checks every field that
names a plugin against that plugin's registry (the error lists the registered names). The
section classes are re-exported here, so ``from bridgerec.config import DataConfig`` keeps working.

Every field carries a docstring (shown by ``bridgerec config-docs``). Unknown keys and wrong
types fail at load time with :class:`ConfigError`, which names the dotted key and, for enums,
the allowed values, before anything starts running.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ValidationError, model_validator

from bridgerec._config_base import ConfigError, Section, read_yaml_mapping
from bridgerec.augment.config import AugmentConfig
from bridgerec.augment.registry import STAGES
from bridgerec.data.config import (
    ColumnMapping,
    DataConfig,
    PreprocessConfig,
    SourceConfig,
    SplitConfig,
    SyntheticConfig,
)
from bridgerec.data.sources import SOURCES
from bridgerec.evaluation.config import EvalConfig
from bridgerec.evaluation.metrics import METRIC_NAMES, RATING_METRIC_NAMES
from bridgerec.llm.config import EncoderConfig, LLMConfig
from bridgerec.llm.engine import ENGINES
from bridgerec.methods.config import MethodConfig
from bridgerec.methods.registry import METHODS
from bridgerec.models.config import ModelConfig
from bridgerec.models.registry import MODELS
from bridgerec.retrieval.config import RetrievalConfig

__all__ = [
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "PreprocessConfig",
    "RayConfig",
    "SourceConfig",
    "SplitConfig",
    "SyntheticConfig",
    "TrackingConfig",
    "TrainConfig",
    "ColumnMapping",
    "EncoderConfig",
    "LLMConfig",
    "MethodConfig",
    "load_config",
    "with_values",
    "apply_overrides",
    "config_docs",
    "PLUGIN_FIELDS",
]


_Section = Section


# ------------------------------------------------------------------- sections of the upper layers


class TrainConfig(_Section):
    num_workers: int = 2
    """Ray Train workers (data-parallel ranks)."""
    use_gpu: bool = False
    """Give each worker a GPU (only on clusters that have them)."""
    epochs: int = 20
    """Passes over the training interactions."""
    batch_size: int = 1024
    """Training events per batch PER WORKER: the global batch of one optimizer step is
    batch_size x num_workers x grad_accum_steps (printed at the start of training)."""
    lr: float = 0.01
    """Learning rate (Adam)."""
    weight_decay: float = 0.0
    """Optimizer weight decay (on all trainable parameters; models add their own L2 terms)."""
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    """Optimizer."""
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    """Distributed engine: ddp (torch DistributedDataParallel) or deepspeed (ZeRO)."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage 0-3 (strategy=deepspeed)."""
    grad_accum_steps: int = 1
    """Micro-batches (of batch_size) per optimizer step."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Training precision; auto = bf16 on GPUs that support it, fp32 on CPU. Under ddp: autocast
    to bf16/fp16 (fp16 with a gradient scaler), fp32 weights and optimizer state; under deepspeed:
    DeepSpeed's bf16/fp16 mode with fp32 master weights."""
    grad_clip: Optional[float] = None
    """Clip the global gradient norm to this value before each optimizer step (ddp: torch's
    clip_grad_norm_; deepspeed: gradient_clipping); None disables."""
    deepspeed_config: Optional[str] = None
    """Path to a DeepSpeed JSON used instead of the config built from train.* (strategy=deepspeed).
    Its ZeRO stage (if set) becomes train.zero_stage; the batch geometry stays train.batch_size and
    train.grad_accum_steps (the data loader's), so the file may omit those keys or set them to
    "auto", and a different value is an error."""
    patience: int = 3
    """Early stopping: stop after this many validations without improving the metric (0 disables)."""
    select_metric: str = "recall@20"
    """Validation metric that picks the best checkpoint and drives early stopping: a ranking
    metric <metric>@<K> (higher is better; K in eval.ks), or rmse / mae (lower is better; needs
    model.objective=rating). Left unset under model.objective=rating it is rmse."""
    keep_checkpoints: int = 2
    """Keep the best N checkpoints by the validation metric."""
    max_failures: int = 1
    """Ray Train FailureConfig: restarts of the worker group after a failure."""
    num_negatives: int = 1
    """Negatives sampled per positive."""
    seed: int = 0
    """Seed for model init and sampling."""
    storage_path: Optional[str] = None
    """Ray Train storage (checkpoints); default <work_dir>/ray_results."""
    materialize_train: bool = True
    """Materialise the train stream once in Ray's object store (spills to disk) instead of
    re-reading Parquet every epoch."""
    shuffle: Literal["global", "buffer", "none"] = "global"
    """Order of training events. global: the train split is shuffled once by Ray Data
    (random_shuffle, seeded) when it is materialised, each worker keeps its equal share in memory
    and draws a fresh seeded permutation of it every epoch (no Ray Data work after epoch 1);
    buffer: stream the share from Ray Data every epoch through a local shuffle buffer of
    shuffle_buffer_batches batches (for shares larger than a worker's memory); none: the stored
    order (sorted by user: for debugging only)."""
    shuffle_buffer_batches: int = 4
    """shuffle=buffer: local shuffle buffer per worker, in batches."""
    deterministic: bool = True
    """Reproducible runs for a fixed num_workers on CPU: Ray Data keeps block order (preserve_order,
    no locality-based sharding), sampling and dropout are seeded per (seed, rank, epoch), and
    torch's deterministic algorithms are requested (warn-only where an op has none; some GPU kernels
    stay non-deterministic)."""
    log_every_steps: int = 50
    """Print progress every this many steps (rank 0)."""

    @model_validator(mode="after")
    def _positive(self) -> "TrainConfig":
        for key in ("num_workers", "epochs", "batch_size", "num_negatives", "grad_accum_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key} must be >= 1")
        if self.deepspeed_config:
            stage = self._read_deepspeed_json().get("zero_optimization", {}).get("stage")
            if stage is not None:
                self.__dict__["zero_stage"] = int(stage)  # no re-validation (validate_assignment would recurse)
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError("train.grad_clip must be > 0 (or null to disable clipping)")
        if not 0 <= self.zero_stage <= 3:
            raise ValueError("train.zero_stage must be 0, 1, 2 or 3" + (" (set by train.deepspeed_config)" if self.deepspeed_config else ""))
        return self

    def _read_deepspeed_json(self) -> dict:
        """The file at train.deepspeed_config, checked against the batch geometry of train.*."""
        import json

        path = Path(self.deepspeed_config)
        try:
            conf = json.loads(path.read_text())
        except OSError as exc:
            raise ValueError(f"train.deepspeed_config: cannot read {path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"train.deepspeed_config: {path} is not valid JSON: {exc}") from None
        if not isinstance(conf, dict):
            raise ValueError(f"train.deepspeed_config: {path} must hold a JSON object")
        for key, ours, name in (("train_micro_batch_size_per_gpu", self.batch_size, "train.batch_size"),
                                ("gradient_accumulation_steps", self.grad_accum_steps, "train.grad_accum_steps")):
            if conf.get(key, "auto") not in ("auto", ours):
                raise ValueError(f"train.deepspeed_config: {path} sets {key}={conf[key]} but {name}={ours}; the "
                                 f"data loader uses {name}: make them equal or drop the key from the file")
        return conf


class TrackingConfig(_Section):
    uri: Optional[str] = None
    """MLflow tracking URI; default MLFLOW_TRACKING_URI, else sqlite:///<work_dir>/mlflow.db."""
    experiment: str = "bridgerec"
    """MLflow experiment name."""
    enabled: bool = True
    """Log to MLflow at all."""
    registered_model: Optional[str] = None
    """Register the pyfunc recommender under this name in the model registry; None logs it unregistered."""
    alias: Optional[str] = None
    """Alias pointed at every new registered version (models:/<name>@<alias>), unchecked. Default none:
    a new version gets no alias and only `bridgerec promote` moves `champion` (when it beats the champion)."""
    recommend_k: int = 10
    """Default k of the logged pyfunc recommender."""


class RayConfig(_Section):
    address: Optional[str] = None
    """Ray cluster address; default RAY_ADDRESS, else a local Ray started by the command."""
    num_cpus: Optional[int] = None
    """Logical CPUs of a locally started Ray (default: max(8, cores) so small actors schedule)."""


PLUGIN_FIELDS = {
    "data.source.kind": SOURCES,
    "model.name": MODELS,
    "method.name": METHODS,
    "llm.engine": ENGINES,
    "augment.stages": STAGES,
}
"""Config keys that name plugins, and the registry each is checked against (Literal stays for
true enums such as train.optimizer)."""


def _lookup(node: Any, dotted: str) -> Any:
    for part in dotted.split(".") if dotted else []:
        node = getattr(node, part)
    return node


class Config(_Section):
    work_dir: str = "bridgerec_work"
    """Root for datasets, MLflow store and Ray results (relative paths are from the cwd)."""
    run_name: Optional[str] = None
    """Name of the run in Ray Train and MLflow; default <model>-<data name>-<UTC time>. Starting a
    run with the name of an interrupted one resumes it from its latest checkpoint."""
    data: DataConfig = DataConfig()
    """Data source, preprocessing and splits."""
    model: ModelConfig = ModelConfig()
    """Domain model."""
    method: MethodConfig = MethodConfig()
    """Method plugin (base, rlmrec-con, rlmrec-gen, darec, ...) and its loss weights."""
    train: TrainConfig = TrainConfig()
    """Ray Train settings."""
    eval: EvalConfig = EvalConfig()
    """Evaluation settings."""
    tracking: TrackingConfig = TrackingConfig()
    """MLflow settings."""
    ray: RayConfig = RayConfig()
    """Ray cluster settings."""
    llm: LLMConfig = LLMConfig()
    """LLM backbone and engine."""
    encoder: EncoderConfig = EncoderConfig()
    """Text encoder for item texts and profiles."""
    augment: AugmentConfig = AugmentConfig()
    """LLM augmentation stages."""
    retrieval: RetrievalConfig = RetrievalConfig()
    """faiss indexes of the serving bundle (domain-model retrieval and text grounding)."""

    @model_validator(mode="after")
    def _plugins_are_registered(self) -> "Config":
        """Every field that names a plugin names a registered one (the error lists the names)."""
        for key, registry in PLUGIN_FIELDS.items():
            section, _, field = key.rpartition(".")
            value = getattr(_lookup(self, section), field)
            for name in value if isinstance(value, list) else [value]:
                registry.validate(name)
        return self

    @model_validator(mode="after")
    def _select_metric_is_evaluated(self) -> "Config":
        rating = self.model.objective == "rating"
        if rating and "select_metric" not in self.train.model_fields_set:
            self.train.select_metric = "rmse"  # a rating model is chosen by its rating error unless told otherwise
        if self.train.select_metric in RATING_METRIC_NAMES:
            if not rating:
                raise ValueError(f"train.select_metric: {self.train.select_metric!r} is a rating metric and needs "
                                 f"model.objective=rating (got {self.model.objective!r}); pick a ranking metric such as recall@20")
            return self
        name, _, k = self.train.select_metric.partition("@")
        if name not in METRIC_NAMES or not k.isdigit():
            raise ValueError(
                f"train.select_metric: {self.train.select_metric!r} is not <metric>@<K>; "
                f"metrics: {', '.join(METRIC_NAMES)} (e.g. recall@20), or {' / '.join(RATING_METRIC_NAMES)} "
                "under model.objective=rating"
            )
        if int(k) not in self.eval.ks:
            raise ValueError(
                f"train.select_metric: {self.train.select_metric!r} needs K={k} in eval.ks "
                f"(got {self.eval.ks}); add it to eval.ks or pick another train.select_metric"
            )
        return self

    @model_validator(mode="after")
    def _bdlm_phases_fit(self) -> "Config":
        b = self.method.bdlm
        if self.method.name == "bdlm" and b.schedule == "sequential" and b.llm_epochs >= self.train.epochs:
            raise ValueError(f"method.bdlm.llm_epochs: {b.llm_epochs} LLM epochs leave no domain phase in "
                             f"train.epochs={self.train.epochs} (schedule: sequential)")
        return self

    # -- derived paths -------------------------------------------------------------------
    def dataset_dir(self) -> str:
        return self.data.output_dir or os.path.join(self.work_dir, "datasets", self.data.name)

    def tracking_uri(self) -> str:
        if self.tracking.uri:
            return self.tracking.uri
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        return "sqlite:///" + str(Path(self.work_dir).resolve() / "mlflow.db")

    def storage_path(self) -> str:
        return self.train.storage_path or str(Path(self.work_dir).resolve() / "ray_results")

    def resolved_run_name(self) -> str:
        if not self.run_name:  # fixed once, so the trainer and MLflow see the same name
            import time

            self.run_name = f"{self.model.name}-{self.data.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        return self.run_name


# --------------------------------------------------------------------------------------- loading


def _format_validation_error(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        key = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key" + _allowed_keys_hint(e["loc"]))
        elif e["type"] == "value_error" and "error" in e.get("ctx", {}):
            text = str(e["ctx"]["error"])  # our validators' messages name their keys
            lines.append(text if not loc or text.startswith(key.split(".")[0]) else f"{key}: {text}")
        else:
            lines.append(f"{key}: {msg} (got {e.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def _allowed_keys_hint(loc: tuple) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return ""
    return "; allowed keys: " + ", ".join(sorted(model.model_fields))


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: cannot set a sub-key of {p!r}, which is a {type(nxt).__name__}")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: value {raw!r} is not valid YAML: {exc}") from None
        _set_dotted(tree, key, value)
    return tree


def load_config(path: Optional[str | os.PathLike] = None, overrides: Optional[list[str]] = None) -> Config:
    """Load a :class:`Config` from an optional YAML file and ``key=value`` overrides."""
    tree = read_yaml_mapping(path) if path is not None else {}
    apply_overrides(tree, list(overrides or []))
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def with_values(cfg: Config, values: dict[str, Any], source: str = "") -> Config:
    """A copy of ``cfg`` with dotted keys set to already-parsed values (a sweep trial's parameters);
    an invalid key or value is a :class:`ConfigError` naming the key (prefixed with ``source``)."""
    tree = cfg.model_dump(mode="json")
    for key, value in values.items():
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        msg = _format_validation_error(err)
        raise ConfigError(f"{source}: {msg}" if source else msg) from None


def config_docs(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """One line per config key: dotted name, type, default and docstring."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.append(f"{key}: {field.description or ''}")
            out.extend(config_docs(ann, key + "."))
        else:
            tname = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
            desc = " ".join((field.description or "").split())
            if key in PLUGIN_FIELDS:
                desc += f" Registered: {', '.join(PLUGIN_FIELDS[key].names())}."
            out.append(f"{key} ({tname}, default {field.default!r}): {desc}")
    return out
