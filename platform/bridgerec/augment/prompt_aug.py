"""Llama4Rec prompt augmentation records for the LLM ranker.

For every user: the ``n_similar_users`` most similar users by cosine of the domain model's user
embeddings (the user itself excluded) and their recent TRAINING items, and the domain model's
top-K items by inner-product score with the user's training items excluded. The record keeps the
structured fields and the rendered listwise ranking prompt (candidates: the top-K in a seeded
shuffle; hint: the top-K in the domain model's order), so a ranker and the serving path can
rebuild the same prompt with :func:`bridgerec.llm.prompts.ranking_prompt`.

The history and the similar users' items come from the training split only; the top-K
candidates are the domain model's own ranking and may of course contain held-out items.

Output columns: ``uid``, ``history_iids``, ``similar_uids``, ``similar_iids``, ``topk_iids``,
``topk_scores``, ``candidate_iids``, ``prompt``, ``prompt_iids`` and provenance (``model`` =
``domain-<embedding fingerprint>``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from bridgerec.augment._llm_stage import resolve
from bridgerec.augment.base import Stage
from bridgerec.llm.prompts import ranking_prompt
from bridgerec.methods.llama4rec_data import similar_users, top_n

__all__ = ["PromptAugStage", "similar_users", "domain_topk"]


def domain_topk(user_emb: np.ndarray, item_emb: np.ndarray, uids: np.ndarray, catalog: Any, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(len(uids), k) top items by inner product with training items excluded, and their scores."""
    scores = user_emb[uids] @ item_emb.T  # (B, I)
    for row, uid in enumerate(uids):
        scores[row, catalog.train_items(int(uid))] = -np.inf
    top = top_n(scores, k)
    return top, np.take_along_axis(scores, top, axis=1)


def _records(batch: pd.DataFrame, catalog: Any, user_emb: Any, item_emb: Any, version: str, n_similar: int,
             similar_history: int, top_k: int, max_history: int, seed: int) -> pd.DataFrame:
    catalog, users, items = resolve(catalog), resolve(user_emb), resolve(item_emb)
    uids = batch["uid"].to_numpy(np.int64)
    sim = similar_users(users, uids, n_similar)  # (B, n_similar)
    top, top_scores = domain_topk(users, items, uids, catalog, top_k)  # (B, k)
    out: dict[str, list] = {k: [] for k in ("history_iids", "similar_uids", "similar_iids", "topk_iids", "topk_scores",
                                            "candidate_iids", "prompt", "prompt_iids")}
    for row, uid in enumerate(uids):
        history = catalog.history(int(uid), max_history, with_rating=False)
        similar, seen = [], {h.iid for h in history}
        for v in sim[row]:
            for it in catalog.history(int(v), similar_history, with_rating=False):
                if it.iid not in seen:
                    seen.add(it.iid)
                    similar.append(it)
        hint = [catalog.item(int(i)) for i in top[row]]
        cand = [hint[j] for j in np.random.default_rng([seed, int(uid)]).permutation(len(hint))]
        p = ranking_prompt(history, cand, similar=similar, hint=hint, version=version)
        out["history_iids"].append([h.iid for h in history])
        out["similar_uids"].append(sim[row].tolist())
        out["similar_iids"].append([s.iid for s in similar])
        out["topk_iids"].append(top[row].tolist())
        out["topk_scores"].append(top_scores[row].astype(np.float32).tolist())
        out["candidate_iids"].append([c.iid for c in cand])
        out["prompt"].append(p.text)
        out["prompt_iids"].append(list(p.iids))
    frame = pd.DataFrame({"_row": batch["_row"].to_numpy(), "_shard": batch["_shard"].to_numpy()})
    for k, v in out.items():
        frame[k] = [list(x) for x in v] if k != "prompt" else v
    return frame


class PromptAugStage(Stage):
    name = "prompt_aug"
    list_columns = {
        "history_iids": pa.list_(pa.int64()), "similar_uids": pa.list_(pa.int64()),
        "similar_iids": pa.list_(pa.int64()), "topk_iids": pa.list_(pa.int64()),
        "topk_scores": pa.list_(pa.float32()), "candidate_iids": pa.list_(pa.int64()),
        "prompt_iids": pa.list_(pa.int64()),
    }

    def key_payload(self) -> dict[str, Any]:
        p = self.cfg.augment.prompt_aug.model_dump(exclude={"embeddings"})
        return {"stage": p, "domain": self.ctx.domain_fingerprint, "prompt_version": self.cfg.llm.prompt_version,
                "seed": self.cfg.data.seed}

    def provenance(self) -> dict[str, Any]:
        return {"model": f"domain-{self.ctx.domain_fingerprint}", "prompt_version": self.cfg.llm.prompt_version,
                "sampling_params": None}

    def tasks(self) -> pd.DataFrame:
        return pd.DataFrame({"uid": self.ctx.user_ids()})

    def transform(self, ds):
        import ray

        p = self.cfg.augment.prompt_aug
        users, items = self.ctx.domain
        return ds.map_batches(_records, batch_format="pandas", batch_size=None, fn_kwargs=dict(
            catalog=self.ctx.catalog_ref, user_emb=ray.put(users), item_emb=ray.put(items),
            version=self.cfg.llm.prompt_version, n_similar=p.n_similar_users, similar_history=p.similar_history,
            top_k=p.top_k, max_history=p.max_history, seed=self.cfg.data.seed,
        ))

    def finish(self, shard: pd.DataFrame) -> pd.DataFrame:
        cols = ["uid", *self.list_columns, "prompt"]
        if not len(shard):
            return pd.DataFrame({c: [] for c in cols})
        return shard[cols].astype({"uid": "int64"}).reset_index(drop=True)
