"""Llama4Rec's rating-prediction task: the instruction examples, the held-out prompts, and the
LLM's ratings of them.

A prompt (:func:`bridgerec.llm.prompts.rating_prompt`) shows the user's most recent rated items
(oldest first, each with its rating) and asks for the rating of one item on the training split's
scale; the answer is the rating (" 4").

**Instruction examples** (:func:`rating_examples`) read the TRAINING split only: for each sampled
user with at least two training ratings the target is the user's last training rating, the
history the rated items before it. **Held-out prompts** (:func:`heldout_rating_prompts`) rate each
event of a split from the history known at that split's time (training ratings for validation,
training and validation ratings for test: the caller passes it), so no prompt shows the rating it
asks for.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

__all__ = ["RatingPrompt", "rating_examples", "heldout_rating_prompts", "render_rating", "encode_rating_examples",
           "RatingAnswers", "generate_ratings"]


@dataclass(frozen=True)
class RatingPrompt:
    """One rating prompt: the user, the item to rate, the rated history shown (oldest first) and,
    for a training example, the answer."""

    uid: int
    iid: int
    history: tuple[int, ...]
    ratings: tuple[float, ...]
    target: float = math.nan
    text: str = ""


def _rated(u: int, seq: np.ndarray, rating_of: Mapping[tuple[int, int], float], history_len: int
           ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    shown = [int(i) for i in seq[-history_len:]] if history_len > 0 else []
    return tuple(shown), tuple(float(rating_of[(u, i)]) for i in shown)


def rating_examples(indptr: np.ndarray, items: np.ndarray, rating_of: Mapping[tuple[int, int], float], *,
                    samples: Optional[int], history_len: int = 10, seed: int = 0) -> list[RatingPrompt]:
    """Examples from the time-ordered TRAINING histories (CSR ``indptr``/``items``) and their
    ratings (``rating_of[(uid, iid)]``): ``samples`` users with >= 2 training items (every one when
    None), each rating its last training item from the items before it."""
    indptr, items = np.asarray(indptr, np.int64), np.asarray(items, np.int64)
    rng = np.random.default_rng(seed)
    eligible = np.flatnonzero(np.diff(indptr) >= 2)
    users = np.sort(rng.choice(eligible, size=samples, replace=False)) if samples and samples < len(eligible) else eligible
    out = []
    for u in users.tolist():
        seq = items[indptr[u]:indptr[u + 1]]
        target = int(seq[-1])
        out.append(RatingPrompt(u, target, *_rated(u, seq[:-1], rating_of, history_len), float(rating_of[(u, target)])))
    return out


def heldout_rating_prompts(indptr: np.ndarray, items: np.ndarray, rating_of: Mapping[tuple[int, int], float],
                           uids: Sequence[int], iids: Sequence[int], *, history_len: int = 10) -> list[RatingPrompt]:
    """One prompt per held-out event ``(uids[k], iids[k])`` from the history known at that split's
    time (CSR ``indptr``/``items`` with ``rating_of``)."""
    indptr, items = np.asarray(indptr, np.int64), np.asarray(items, np.int64)
    return [RatingPrompt(int(u), int(i), *_rated(int(u), items[indptr[u]:indptr[u + 1]], rating_of, history_len))
            for u, i in zip(np.asarray(uids).tolist(), np.asarray(iids).tolist())]


def render_rating(p: RatingPrompt, view: Callable[[int], Any], scale: tuple[float, float], version: str = "v1"
                  ) -> RatingPrompt:
    """``p`` with its text; ``view(iid)`` gives an :class:`~bridgerec.llm.prompts.ItemView`."""
    from bridgerec.llm.prompts import rating_prompt

    history = [replace(view(i), rating=r) for i, r in zip(p.history, p.ratings)]
    return replace(p, text=rating_prompt(history, view(p.iid), scale=scale, version=version).text)


def encode_rating_examples(tokenizer: Any, prompts: Sequence[RatingPrompt], *, chat: Any = None
                           ) -> list[dict[str, list[int]]]:
    """Rendered training prompts with their answers as supervised examples."""
    from bridgerec.llm.prompts import PLAIN, encode_example, rating_target

    return [encode_example(tokenizer, p.text, rating_target(p.target), chat=chat or PLAIN) for p in prompts]


@dataclass
class RatingAnswers:
    """The LLM's ratings of a list of prompts (NaN: unparseable), the raw text and the time taken."""

    values: np.ndarray
    raw: list[str]
    seconds: float

    @property
    def parse_rate(self) -> float:
        return float(np.isfinite(self.values).mean()) if len(self.values) else 0.0

    @property
    def per_second(self) -> float:
        return len(self.values) / max(self.seconds, 1e-9)


def generate_ratings(engine: Any, prompts: Sequence[RatingPrompt], scale: tuple[float, float], chat: Any = None,
                     max_new_tokens: int = 4) -> RatingAnswers:
    """Greedy ratings of rendered prompts through ``engine`` (one line each), parsed on ``scale``."""
    from bridgerec.llm.engine import GenerationParams
    from bridgerec.llm.prompts import PLAIN, engine_text
    from bridgerec.methods.llama4rec_core import parse_rating

    texts = [engine_text(p.text, chat or PLAIN) for p in prompts]
    t0 = time.time()
    gens = engine.generate(texts, GenerationParams(max_tokens=max_new_tokens, temperature=0.0, stop=("\n",)))
    seconds = time.time() - t0
    raw = [g.text for g in gens]
    values = np.asarray([parse_rating(t, *scale) for t in raw], dtype=object)
    return RatingAnswers(np.asarray([math.nan if v is None else float(v) for v in values], np.float64), raw, seconds)
