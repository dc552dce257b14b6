"""Llama4Rec data augmentation: preference pairs for sparse users.

For every user with at most ``augment.pairs.sparse_max_train`` training interactions, sample
``pairs_per_user`` pairs of catalog items outside the user's TRAINING items, show the user's
training history and ask the LLM which of the two the user prefers. The candidates know nothing
of the validation and test splits: excluding the held-out items (as this stage once did) would
tell the domain model that every synthetic negative is not a test item, and including them on
purpose would leak them; sampled from the training-visible catalog, a held-out item is a
candidate exactly as often as any other unseen item. Decoding is restricted to the answer tokens ``A``/``B``
(``allowed_token_ids``), so every generation is a valid answer with either engine.

Output columns: ``uid``, ``pos_iid`` (the preferred item), ``neg_iid``, ``answer``, ``prompt``,
``prompt_iids``, token counts and provenance; :func:`synthetic_triples` gives the extra training
triples ``(uid, pos_iid, neg_iid)``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from bridgerec.augment._llm_stage import LLMStage, llm_output_columns
from bridgerec.llm.engine import GenerationParams
from bridgerec.llm.prompts import PAIR_CHOICES, Prompt, pair_preference_prompt

__all__ = ["PairsStage", "synthetic_triples", "choice_token_ids"]


def choice_token_ids(tokenizer: Any, choices=PAIR_CHOICES) -> tuple[int, ...]:
    """The single token id of each answer; a tokenizer that splits an answer is rejected."""
    ids = []
    for c in choices:
        enc = tokenizer(c, add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise ValueError(f"answer {c!r} is {len(enc)} tokens in this tokenizer; the pair prompt needs one")
        ids.append(int(enc[0]))
    return tuple(ids)


def _pair_prompt(row: Any, catalog: Any, version: str, max_history: int) -> Prompt:
    return pair_preference_prompt(catalog.history(int(row.uid), max_history), catalog.item(int(row.item_a)),
                                  catalog.item(int(row.item_b)), version=version)


def synthetic_triples(pairs: pd.DataFrame) -> pd.DataFrame:
    """``(uid, pos_iid, neg_iid)`` int64 rows of a pairs output (rows without an answer dropped)."""
    ok = pairs["pos_iid"].notna() if len(pairs) else pd.Series(dtype=bool)
    return pairs.loc[ok, ["uid", "pos_iid", "neg_iid"]].astype("int64").reset_index(drop=True)


class PairsStage(LLMStage):
    name = "pairs"

    def stage_config(self) -> dict[str, Any]:
        return self.cfg.augment.pairs.model_dump()

    def params(self) -> GenerationParams:
        return GenerationParams.from_config(self.cfg.llm.generation, max_tokens=1, temperature=0.0,
                                            allowed_token_ids=choice_token_ids(self.ctx.tokenizer))

    def row_prompt(self) -> tuple[Callable[..., Prompt], dict[str, Any]]:
        return _pair_prompt, dict(max_history=self.cfg.augment.pairs.max_history)

    def tasks(self) -> pd.DataFrame:
        p, cat = self.cfg.augment.pairs, self.ctx.catalog
        pool = self.ctx.item_ids()
        rows = []
        for uid in self.ctx.user_ids():
            n = cat.n_train(int(uid))
            if n == 0 or n > p.sparse_max_train:
                continue
            free = np.setdiff1d(pool, cat.train_items(int(uid)), assume_unique=False)
            if len(free) < 2:
                continue
            for j in range(p.pairs_per_user):
                a, b = np.random.default_rng([p.seed, int(uid), j]).choice(free, 2, replace=False)
                rows.append((int(uid), j, int(a), int(b)))
        return pd.DataFrame(rows, columns=["uid", "pair", "item_a", "item_b"]).astype("int64")

    def finish(self, shard: pd.DataFrame) -> pd.DataFrame:
        answers = [str(t).strip()[:1] for t in shard["generated_text"].fillna("")] if len(shard) else []
        a, b = shard["item_a"].to_numpy(), shard["item_b"].to_numpy()
        pos = [int(x) if ans == PAIR_CHOICES[0] else int(y) if ans == PAIR_CHOICES[1] else None
               for ans, x, y in zip(answers, a, b)]
        neg = [None if p is None else int(y if p == x else x) for p, x, y in zip(pos, a, b)]
        return pd.DataFrame({
            "uid": shard["uid"].astype("int64").tolist(),
            "pos_iid": pd.array(pos, dtype="Int64"),
            "neg_iid": pd.array(neg, dtype="Int64"),
            "answer": answers,
            **llm_output_columns(shard),
        })
