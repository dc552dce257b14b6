"""Text-encoder embeddings of item texts and of the LLM profiles.

Rows: ``item_text`` for every item (title + description), and with
``augment.text_embeddings.profiles`` one ``user_profile`` / ``item_profile`` row per profile
summary of the profiles stage (which then runs first). Encoding runs in a Ray Data actor pool of
:class:`~bridgerec.llm.encoder.TextEncoder` (``encoder.concurrency`` replicas).

Output columns: ``kind``, ``id``, ``text``, ``embedding`` (list<float32>) and provenance
(``model`` = the encoder fingerprint); :func:`embedding_matrix` turns one kind into an (n, d) array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from bridgerec.augment.base import Stage, read_stage_output
from bridgerec.llm.config import EncoderConfig
from bridgerec.llm.encoder import encoder_fingerprint, item_text

__all__ = ["TextEmbeddingsStage", "embedding_matrix", "item_text"]

KINDS = ("item_text", "user_profile", "item_profile")


class _Encode:
    """Ray Data actor: the text encoder on one batch."""

    def __init__(self, cfg_json: str):
        from bridgerec.llm.encoder import TextEncoder

        self.encoder = TextEncoder(EncoderConfig.model_validate_json(cfg_json))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        emb = self.encoder.encode(batch["text"].tolist(), progress=False)  # (B, d)
        return pd.DataFrame({"_row": batch["_row"].to_numpy(), "_shard": batch["_shard"].to_numpy(),
                             "embedding": list(emb)})


def embedding_matrix(embeddings: pd.DataFrame, kind: str, n: int) -> np.ndarray:
    """(n, d) float32 rows of ``kind`` by id; ids without a row stay zero."""
    part = embeddings[embeddings["kind"] == kind]
    if part.empty:
        raise ValueError(f"no {kind!r} embeddings in this output (kinds: {sorted(set(embeddings['kind']))})")
    d = len(part["embedding"].iloc[0])
    out = np.zeros((n, d), dtype=np.float32)
    out[part["id"].to_numpy(np.int64)] = np.stack([np.asarray(v, np.float32) for v in part["embedding"]])
    return out


class TextEmbeddingsStage(Stage):
    name = "text_embeddings"
    list_columns = {"embedding": pa.list_(pa.float32())}

    def deps(self) -> list[str]:
        return ["profiles"] if self.cfg.augment.text_embeddings.profiles else []

    def key_payload(self) -> dict[str, Any]:
        return {"stage": self.cfg.augment.text_embeddings.model_dump(), "encoder": encoder_fingerprint(self.cfg.encoder)}

    def provenance(self) -> dict[str, Any]:
        return {"model": encoder_fingerprint(self.cfg.encoder), "prompt_version": None, "sampling_params": None}

    def tasks(self) -> pd.DataFrame:
        frames = []
        if self.cfg.augment.text_embeddings.items:
            items = self.ctx.dataset.items()
            items = items[items["iid"].isin(self.ctx.item_ids())]
            texts = [item_text(t, x) for t, x in zip(items["title"].astype(str), items["text"].fillna("").astype(str))]
            frames.append(pd.DataFrame({"kind": "item_text", "id": items["iid"].to_numpy(np.int64), "text": texts}))
        if self.cfg.augment.text_embeddings.profiles:
            prof = read_stage_output(self.ctx.stage_dir("profiles"), columns=["kind", "id", "summary"])
            if len(prof):
                frames.append(pd.DataFrame({"kind": prof["kind"].astype(str) + "_profile",
                                            "id": prof["id"].to_numpy(np.int64), "text": prof["summary"].astype(str)}))
        if not frames:
            return pd.DataFrame({"kind": pd.Series(dtype=str), "id": pd.Series(dtype="int64"), "text": pd.Series(dtype=str)})
        return pd.concat(frames, ignore_index=True)

    def transform(self, ds):
        from ray.data import ActorPoolStrategy

        enc = self.cfg.encoder
        return ds.select_columns(["_row", "_shard", "text"]).map_batches(
            _Encode, fn_constructor_kwargs=dict(cfg_json=enc.model_dump_json()), batch_size=enc.batch_size,
            batch_format="pandas", compute=ActorPoolStrategy(size=enc.concurrency),
        )

    def finish(self, shard: pd.DataFrame) -> pd.DataFrame:
        emb = [np.asarray(v, np.float32).tolist() for v in shard["embedding"]] if len(shard) else []
        return pd.DataFrame({
            "kind": shard["kind"].astype(str).tolist(),
            "id": shard["id"].astype("int64").tolist(),
            "text": shard["text"].astype(str).tolist(),
            "embedding": emb,
        })
