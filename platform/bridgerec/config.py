"""Typed configuration tree: YAML files plus ``key=value`` overrides.

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

from bridgerec._config_base import Section
from bridgerec.llm.config import AugmentConfig, EncoderConfig, LLMConfig
from bridgerec.methods.config import MethodConfig

__all__ = [
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
    "load_config",
    "apply_overrides",
    "config_docs",
]


class ConfigError(ValueError):
    """A configuration problem, named by its dotted key."""


_Section = Section


# --------------------------------------------------------------------------------------- data


SyntheticPreset = Literal["tiny", "small", "medium", "large", "xlarge"]


class SyntheticConfig(_Section):
    preset: SyntheticPreset = "small"
    """Size preset of the synthetic world: tiny (~300 users, tests), small (~3k users, ~60k events,
    quickstart), medium (~20k users, ~400k events), large (~50k users, >=1M events), xlarge (>=10M)."""
    n_users: Optional[int] = None
    """Override the preset's number of users."""
    n_items: Optional[int] = None
    """Override the preset's number of items."""
    n_topics: Optional[int] = None
    """Override the preset's number of hidden topics (at most the size of the built-in vocabulary)."""
    cold_item_fraction: float = 0.05
    """Fraction of items released only near the end of the timeline (cold items)."""
    duplicate_fraction: float = 0.01
    """Fraction of extra duplicate events (same user, item) mixed in, to exercise de-duplication."""


class ColumnMapping(_Section):
    user: str = "user_id"
    """Column holding the user id in a generic table."""
    item: str = "item_id"
    """Column holding the item id in a generic table."""
    rating: Optional[str] = "rating"
    """Column holding the rating; None means every row is a positive event with rating 1."""
    timestamp: Optional[str] = "timestamp"
    """Column holding the event time (unix seconds/ms or an ISO-8601 string); None uses the global
    input order (files in listing order, then rows) as the time, recorded in the manifest."""
    title: str = "title"
    """Column holding an item's title in a generic item table."""
    text: Optional[str] = "text"
    """Column holding an item's description in a generic item table."""


SourceKind = Literal["synthetic", "movielens", "amazon", "table"]


class SourceConfig(_Section):
    kind: SourceKind = "synthetic"
    """Where interactions come from: synthetic (embedded seeded world), movielens (a MovieLens
    directory: 100K, 1M or the ratings.csv layouts), amazon (Amazon reviews JSON lines, 2018 or
    2023 layout), table (generic Parquet/CSV/JSON-lines with a column mapping)."""
    path: Optional[str] = None
    """Directory or file of the source (local path or any pyarrow filesystem URI such as s3://)."""
    items_path: Optional[str] = None
    """Item metadata file/dir: Amazon meta JSON lines, or the generic item table."""
    format: Optional[Literal["parquet", "csv", "jsonl"]] = None
    """File format of a generic table; inferred from the extension when None."""
    columns: ColumnMapping = ColumnMapping()
    """Column mapping for generic tables."""
    timestamp_unit: Literal["s", "ms", "us", "ns"] = "s"
    """Unit of numeric timestamps in a generic table (Amazon and MovieLens know their own)."""
    synthetic: SyntheticConfig = SyntheticConfig()
    """Settings of the synthetic world (kind=synthetic)."""

    @model_validator(mode="after")
    def _path_needed(self) -> "SourceConfig":
        if self.kind != "synthetic" and not self.path:
            raise ValueError(f"data.source.path is required when data.source.kind is {self.kind!r}")
        return self


class PreprocessConfig(_Section):
    implicit_threshold: Optional[float] = None
    """Keep only events with rating >= this value (implicit feedback); None keeps every event."""
    kcore_user: int = 5
    """Iterative k-core: drop users with fewer than this many interactions (0 disables)."""
    kcore_item: int = 5
    """Iterative k-core: drop items with fewer than this many interactions (0 disables)."""
    kcore_max_iter: int = 50
    """Upper bound on k-core iterations (it stops earlier once nothing changes). Hitting it leaves
    data that is not k-core: preparation then warns (KCoreNotConvergedWarning and a printed line)
    and the manifest records ``preprocessing.kcore_converged: false``."""
    duplicates: Literal["first", "last", "keep", "error"] = "first"
    """What to do with repeated (user, item) events: keep the first or last by time, keep all,
    or fail naming the first duplicate."""
    bad_rows: Literal["error", "quarantine"] = "error"
    """Invalid rows (null ids, unparsable rating/time): fail naming file, row and column, or write
    them to quarantine/ in the dataset dir and count them in the manifest."""


SplitProtocol = Literal["leave_last_out", "temporal", "random", "random_per_user", "temporal_per_user"]


class SplitConfig(_Section):
    protocol: SplitProtocol = "leave_last_out"
    """How events are split (time order is always ts, then input file, then row):

    - leave_last_out: each user's last event is test, the one before valid (users with 2 events:
      test only; 1 event: train);
    - temporal: a global time cut at the valid/test quantiles of all events;
    - random: each event independently, by a seeded hash, with probability valid/test_fraction;
    - random_per_user: each user's events in a seeded random order, split by ratio
      (train : valid : test = 1-valid_fraction-test_fraction : valid_fraction : test_fraction,
      e.g. 8:1:1), as peer libraries such as RecBole do ("RS" grouped by user, random order);
    - temporal_per_user: the same ratio split of each user's events ordered by time: the
      earliest share train, then valid, then test.

    Rounding of the per-user ratio split (RecBole's rule) for a user with n events:
    valid = floor(n * valid_fraction), test = floor(n * test_fraction), train = the rest; then
    test, and after it valid, takes 1 event from train when its share n * fraction is in (0, 1)
    and train still holds at least 2 events. So at 8:1:1: n=1 -> 1/0/0, n=2 -> 1/0/1,
    n=3 -> 1/1/1, n=10 -> 8/1/1, n=19 -> 17/1/1, n=20 -> 16/2/2; every user keeps at least
    one training event."""
    valid_fraction: float = 0.1
    """Fraction of events for validation (temporal, random and the per-user ratio protocols)."""
    test_fraction: float = 0.1
    """Fraction of events for test (temporal, random and the per-user ratio protocols)."""

    @model_validator(mode="after")
    def _fractions(self) -> "SplitConfig":
        if not (0 <= self.valid_fraction < 1 and 0 < self.test_fraction < 1):
            raise ValueError("data.split.valid_fraction must be in [0,1) and test_fraction in (0,1)")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("data.split.valid_fraction + data.split.test_fraction must be < 1")
        return self

    def describe(self) -> str:
        """One line saying how the split was made (for run summaries and reports)."""
        v, t = self.valid_fraction, self.test_fraction
        ratio = f"{1 - v - t:g}:{v:g}:{t:g}"
        return {
            "leave_last_out": "test = each user's last event, valid = the one before",
            "temporal": f"test = the events after a global time cut ({ratio})",
            "random": f"test = a random sample of events ({ratio}, drawn per event)",
            "random_per_user": f"each user's events split {ratio} in a seeded random order",
            "temporal_per_user": f"each user's events split {ratio} by time (latest = test)",
        }[self.protocol]


class DataConfig(_Section):
    name: str = "synthetic-small"
    """Dataset name; the prepared directory is <work_dir>/datasets/<name> unless output_dir is set."""
    output_dir: Optional[str] = None
    """Where the prepared dataset directory is written."""
    seed: int = 0
    """Seed for the synthetic world, random splits and negative sampling."""
    source: SourceConfig = SourceConfig()
    """Source of the raw interactions."""
    preprocess: PreprocessConfig = PreprocessConfig()
    """Filtering, de-duplication and bad-row handling."""
    split: SplitConfig = SplitConfig()
    """Train/valid/test split protocol."""
    read_batch_rows: int = 100_000
    """Rows per block when reading files (bounds memory per task)."""
    overwrite: bool = False
    """Re-prepare even when the output directory holds a dataset with the same inputs."""


# --------------------------------------------------------------------------------------- model


class ModelConfig(_Section):
    name: str = "mf"
    """Domain model from the registry (see `bridgerec models`)."""
    dim: int = 64
    """Embedding dimension."""
    init_std: float = 0.1
    """Standard deviation of the normal initialisation of embeddings."""
    l2: float = 1e-4
    """L2 penalty on the embeddings used in a batch (BPR regulariser), per example."""
    n_layers: int = 2
    """LightGCN: propagation layers; SASRec: self-attention blocks."""
    n_heads: int = 2
    """SASRec: attention heads (must divide dim)."""
    max_seq_len: int = 50
    """SASRec: the most recent items of a user's history that the encoder sees."""
    dropout: float = 0.2
    """SASRec: dropout on embeddings and attention blocks."""
    seq_loss: Literal["ce", "bpr"] = "ce"
    """SASRec: full-softmax cross-entropy over items, or BPR against the sampled negatives."""

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "ModelConfig":
        if self.dim % self.n_heads:
            raise ValueError(f"model.n_heads ({self.n_heads}) must divide model.dim ({self.dim})")
        return self


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
    """Validation metric that picks the best checkpoint and drives early stopping."""
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


class EvalConfig(_Section):
    ks: list[int] = [10, 20]
    """Cut-offs K for Recall/NDCG/HR/MRR/Precision@K."""
    user_batch_size: int = 1024
    """Users scored at once in full-ranking evaluation (bounds memory)."""
    sampled_negatives: int = 99
    """Negatives per positive in the sampled mode (for LLM rankers)."""
    long_tail_user_quantile: float = 0.2
    """Users whose training count is in the lowest quantile form the long-tail slice."""
    head_item_fraction: float = 0.2
    """The most popular fraction of items forms the head-item slice; the rest is the tail."""
    cold_item_max_train: int = 5
    """Test items with at most this many training interactions count as cold."""


class TrackingConfig(_Section):
    uri: Optional[str] = None
    """MLflow tracking URI; default MLFLOW_TRACKING_URI, else sqlite:///<work_dir>/mlflow.db."""
    experiment: str = "bridgerec"
    """MLflow experiment name."""
    enabled: bool = True
    """Log to MLflow at all."""
    registered_model: Optional[str] = None
    """Register the pyfunc recommender under this name in the model registry; None logs it unregistered."""
    alias: Optional[str] = "champion"
    """Alias set on the new registered version (models:/<name>@<alias>)."""
    recommend_k: int = 10
    """Default k of the logged pyfunc recommender."""


class RayConfig(_Section):
    address: Optional[str] = None
    """Ray cluster address; default RAY_ADDRESS, else a local Ray started by the command."""
    num_cpus: Optional[int] = None
    """Logical CPUs of a locally started Ray (default: max(8, cores) so small actors schedule)."""


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

    @model_validator(mode="after")
    def _select_metric_is_evaluated(self) -> "Config":
        from bridgerec.evaluation.metrics import METRIC_NAMES  # numpy only

        name, _, k = self.train.select_metric.partition("@")
        if name not in METRIC_NAMES or not k.isdigit():
            raise ValueError(
                f"train.select_metric: {self.train.select_metric!r} is not <metric>@<K>; "
                f"metrics: {', '.join(METRIC_NAMES)} (e.g. recall@20)"
            )
        if int(k) not in self.eval.ks:
            raise ValueError(
                f"train.select_metric: {self.train.select_metric!r} needs K={k} in eval.ks "
                f"(got {self.eval.ks}); add it to eval.ks or pick another train.select_metric"
            )
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
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        tree = loaded
    apply_overrides(tree, list(overrides or []))
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


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
            out.append(f"{key} ({tname}, default {field.default!r}): {desc}")
    return out
