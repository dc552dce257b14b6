"""Stage contract, registry, cache keys and the resumable sharded Parquet output.

A stage turns the dataset (and possibly other stages' outputs) into one Parquet table under
``<dataset_dir>/augment/<stage>/<key>/`` where ``key`` is a content hash of everything the output
depends on: the dataset's content hash, the stage's name/version and config, the model
fingerprint, prompt version and sampling parameters (LLM stages), the encoder (embedding stages),
the keys of the stages it reads, and the shard size (so resumed shards line up). A directory
with ``meta.json`` is finished and is reused as is.

Work is split into shards of ``augment.shard_rows`` task rows. Each finished shard is written
atomically as ``part-<shard>.parquet`` (temporary file + rename), so an interrupted run resumes
where it stopped: shards already on disk are skipped, only the missing ones are computed, and
``meta.json`` is written last.

Stage life cycle (driver side unless noted):

1. ``tasks()`` -> a small pandas frame of keys, one row per output row, in a fixed order;
2. ``render`` (LLM stages, in Ray Data workers) adds ``prompt``/``prompt_iids``; ``transform``
   (other stages) maps the remaining tasks as a Ray Dataset;
3. ``finish(shard)`` builds the output rows of one complete shard; provenance columns
   (``model``, ``prompt_version``, ``sampling_params``) are added and the shard is written.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, ClassVar, Iterable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bridgerec.augment.registry import STAGES, register_stage
from bridgerec.console import say
from bridgerec.data.dataset import DatasetDir, read_parts
from bridgerec.models.pretrained import load_domain_embeddings, local_model_source

Config = Any
"""The root :class:`bridgerec.config.Config` (not imported: augment sits below the root config)."""

__all__ = [
    "Stage",
    "StageResult",
    "AugmentContext",
    "load_domain_embeddings",
    "local_model_source",
    "STAGES",
    "register_stage",
    "ShardWriter",
    "read_stage_output",
    "PROVENANCE_COLUMNS",
    "META",
]

META = "meta.json"
PROVENANCE_COLUMNS = ("model", "prompt_version", "sampling_params")
"""Columns every stage output carries (null where they do not apply)."""
FORMAT_VERSION = 1


@dataclass
class StageResult:
    """What one stage did in a run (LLM stages that shared one generation pass report its seconds)."""

    stage: str
    path: str
    key: str
    reused: bool
    rows: int
    computed_rows: int
    seconds: float


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class AugmentContext:
    """Shared inputs of a run: config, dataset, catalog, backbone, domain embeddings (all lazy)."""

    def __init__(self, cfg: Config, domain_embeddings: Any = None, log: Callable[[str], None] = say):
        self.cfg = cfg
        self.log = log
        self.dataset = DatasetDir(cfg.dataset_dir())
        self._domain_arg = domain_embeddings
        self._keys: dict[str, str] = {}

    @property
    def output_root(self) -> str:
        return os.path.abspath(self.cfg.augment.output_root or os.path.join(self.dataset.path, "augment"))

    @cached_property
    def catalog(self):
        from bridgerec.augment.catalog import Catalog

        return Catalog.from_dataset(self.dataset)

    @cached_property
    def catalog_ref(self):
        """The catalog in Ray's object store (shared by the workers that render prompts)."""
        import ray

        return ray.put(self.catalog)

    def user_ids(self) -> np.ndarray:
        n = self.dataset.n_users
        return np.arange(min(n, self.cfg.augment.max_users or n), dtype=np.int64)

    def item_ids(self) -> np.ndarray:
        n = self.dataset.n_items
        return np.arange(min(n, self.cfg.augment.max_items or n), dtype=np.int64)

    # -- LLM ----------------------------------------------------------------------------------
    @cached_property
    def backbone(self):
        from bridgerec.llm.backbone import resolve_backbone

        b = resolve_backbone(self.cfg.llm, self.cfg.work_dir, self.dataset)
        if b.built:
            self.log(f"[augment] built the {self.cfg.llm.model} backbone at {b.path}")
        return b

    @cached_property
    def model_path(self) -> str:
        from bridgerec.llm.lora import serving_model_path

        return serving_model_path(self.cfg.llm, self.backbone.path, self.cfg.work_dir)

    @cached_property
    def model_id(self) -> str:
        """Fingerprint of the generating model (backbone, plus the merged adapter if any)."""
        from bridgerec.llm.backbone import model_fingerprint

        if self.model_path == self.backbone.path:
            return self.backbone.fingerprint
        return f"{self.backbone.fingerprint}+{model_fingerprint(self.model_path)}"

    @cached_property
    def tokenizer(self):
        from bridgerec.llm.backbone import load_tokenizer

        return load_tokenizer(self.model_path, self.cfg.llm.revision)

    @cached_property
    def chat(self):
        """The backbone's :class:`~bridgerec.llm.prompts.ChatFormat` (``llm.chat_template``)."""
        from bridgerec.llm.backbone import chat_format

        return chat_format(self.cfg.llm, self.backbone, self.tokenizer)

    # -- domain model ---------------------------------------------------------------------------
    @cached_property
    def domain(self) -> tuple[np.ndarray, np.ndarray]:
        """(user_emb (U, d), item_emb (I, d)) from the run argument or ``augment.prompt_aug.embeddings``
        (see :func:`load_domain_embeddings`)."""
        src = self._domain_arg if self._domain_arg is not None else self.cfg.augment.prompt_aug.embeddings
        if src is None:
            raise ValueError("the prompt_aug stage needs domain-model embeddings: pass domain_embeddings="
                             "(user_emb, item_emb) or set augment.prompt_aug.embeddings to an .npz")
        if isinstance(src, (str, os.PathLike)):
            users, items = load_domain_embeddings(str(src), self.cfg.tracking_uri())
        elif isinstance(src, dict):
            users, items = src["user_emb"], src["item_emb"]
        else:
            users, items = src
        users, items = np.asarray(users, np.float32), np.asarray(items, np.float32)
        if users.shape[0] != self.dataset.n_users or items.shape[0] != self.dataset.n_items:
            raise ValueError(f"domain embeddings cover {users.shape[0]} users / {items.shape[0]} items; "
                             f"the dataset has {self.dataset.n_users} / {self.dataset.n_items}")
        return users, items

    @cached_property
    def domain_fingerprint(self) -> str:
        users, items = self.domain
        h = hashlib.sha256()
        for a in (users, items):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    # -- keys -------------------------------------------------------------------------------------
    def stage(self, name: str) -> "Stage":
        return STAGES[name](self)

    def stage_key(self, name: str) -> str:
        if name not in self._keys:
            st = self.stage(name)
            payload = {
                "format": FORMAT_VERSION,
                "stage": name,
                "version": st.version,
                "data": self.dataset.content_hash,
                "limits": [self.cfg.augment.max_users, self.cfg.augment.max_items],
                "shard_rows": self.cfg.augment.shard_rows,  # part files of a resumed run must line up
                "config": st.key_payload(),
                "deps": {d: self.stage_key(d) for d in st.deps()},
            }
            self._keys[name] = _hash(payload)[:16]
        return self._keys[name]

    def stage_dir(self, name: str) -> str:
        return os.path.join(self.output_root, name, self.stage_key(name))

    def is_done(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.stage_dir(name), META))


class Stage(abc.ABC):
    """One augmentation stage (see the module docstring for the life cycle)."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    """Bumped when the stage's logic changes (part of the cache key)."""
    uses_llm: ClassVar[bool] = False
    list_columns: ClassVar[dict[str, pa.DataType]] = {}
    """Output columns holding lists, with their Arrow types (so empty shards keep the schema)."""

    def __init__(self, ctx: AugmentContext):
        self.ctx = ctx
        self.cfg = ctx.cfg

    def deps(self) -> list[str]:
        """Stages whose outputs this one reads."""
        return []

    @abc.abstractmethod
    def key_payload(self) -> dict[str, Any]:
        """Everything besides the dataset and dependencies that the output depends on."""

    @abc.abstractmethod
    def tasks(self) -> pd.DataFrame:
        """Key rows, one per output row, in a deterministic order."""

    @abc.abstractmethod
    def finish(self, shard: pd.DataFrame) -> pd.DataFrame:
        """Output rows of one complete shard (``shard`` is sorted by ``_row``)."""

    def provenance(self) -> dict[str, Optional[str]]:
        return {"model": None, "prompt_version": None, "sampling_params": None}

    # LLM stages ------------------------------------------------------------------------------
    def render(self) -> tuple[Callable[..., pd.DataFrame], dict[str, Any]]:
        """(batch function adding ``prompt``, ``prompt_iids_json``, ``sampling_json``; its fn_kwargs)."""
        raise NotImplementedError

    # other stages ----------------------------------------------------------------------------
    def transform(self, ds):
        """Map the remaining task rows (a Ray Dataset) to rows ``finish`` reads (keep ``_row``, ``_shard``)."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- sharded output


def _part_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def _to_table(df: pd.DataFrame, list_columns: dict[str, pa.DataType]) -> pa.Table:
    arrays, names = [], []
    for col in df.columns:
        if col in list_columns:
            values = [None if v is None else [x for x in v] for v in df[col]]
            arrays.append(pa.array(values, type=list_columns[col]))
        else:
            arrays.append(pa.Array.from_pandas(df[col]))
        names.append(col)
    return pa.Table.from_arrays(arrays, names=names)


class ShardWriter:
    """Collects a stage's output rows by shard and writes each shard once it is complete."""

    def __init__(self, stage: Stage, tasks: pd.DataFrame, out_dir: str):
        shard_rows = stage.cfg.augment.shard_rows
        self.stage, self.out_dir = stage, out_dir
        tasks = tasks.reset_index(drop=True)
        tasks["_row"] = np.arange(len(tasks), dtype=np.int64)
        tasks["_shard"] = tasks["_row"] // shard_rows
        self.tasks = tasks
        self.n_shards = int(-(-len(tasks) // shard_rows))
        os.makedirs(out_dir, exist_ok=True)
        done = {s for s in range(self.n_shards) if os.path.exists(os.path.join(out_dir, _part_name(s)))}
        self.remaining = tasks[~tasks["_shard"].isin(done)]
        self.expected = self.remaining.groupby("_shard").size().to_dict()
        self._buffers: dict[int, list[pd.DataFrame]] = defaultdict(list)
        self._counts: dict[int, int] = defaultdict(int)
        self._provenance = stage.provenance()
        self.written = 0

    def add(self, batch: pd.DataFrame) -> None:
        for shard, part in batch.groupby("_shard"):
            shard = int(shard)
            self._buffers[shard].append(part)
            self._counts[shard] += len(part)
            if self._counts[shard] == self.expected[shard]:
                self._write(shard)

    def _write(self, shard: int) -> None:
        got = pd.concat(self._buffers.pop(shard), ignore_index=True).drop(columns=["_shard"])
        keys = self.tasks[self.tasks["_shard"] == shard]
        extra = [c for c in got.columns if c not in keys.columns or c == "_row"]
        merged = keys.merge(got[extra], on="_row", how="left", validate="one_to_one").sort_values("_row")
        self._write_frame(shard, self.stage.finish(merged.reset_index(drop=True)))
        self.written += len(merged)

    def _write_frame(self, shard: int, out: pd.DataFrame) -> None:
        out = out.copy()
        for k, v in self._provenance.items():
            out[k] = pd.Series([v] * len(out), dtype=object)
        path = os.path.join(self.out_dir, _part_name(shard))
        tmp = f"{path}.tmp-{os.getpid()}"
        pq.write_table(_to_table(out, self.stage.list_columns), tmp)
        os.replace(tmp, path)

    def write_empty(self) -> None:
        """No tasks at all: one empty shard keeps the schema readable."""
        empty = self.tasks.iloc[:0].copy()
        self._write_frame(0, self.stage.finish(empty))

    def finalize(self, seconds: float, extra: Optional[dict[str, Any]] = None) -> int:
        missing = [s for s in range(self.n_shards) if not os.path.exists(os.path.join(self.out_dir, _part_name(s)))]
        if missing:
            raise RuntimeError(f"stage {self.stage.name}: shards {missing[:5]} were not produced")
        rows = len(read_stage_output(self.out_dir))
        meta = {
            "stage": self.stage.name,
            "key": os.path.basename(self.out_dir),
            "dataset_content_hash": self.stage.ctx.dataset.content_hash,
            "config": self.stage.key_payload(),
            "deps": {d: self.stage.ctx.stage_key(d) for d in self.stage.deps()},
            "provenance": self._provenance,
            "rows": rows,
            "shards": max(self.n_shards, 1),
            "computed_rows": self.written,
            "seconds": round(seconds, 2),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(extra or {}),
        }
        with open(os.path.join(self.out_dir, META), "w") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True, default=str)
        return rows


read_stage_output = read_parts
"""A stage's output directory as one DataFrame (parts in shard order); see :func:`bridgerec.data.dataset.read_parts`."""