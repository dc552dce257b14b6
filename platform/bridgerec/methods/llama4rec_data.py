"""Llama4Rec's listwise-ranking data: instruction examples for tuning and the prompts it is
evaluated and served on, built without reading a held-out split.

Every prompt shows (:func:`bridgerec.llm.prompts.ranking_prompt`) the user's most recent items,
with prompt augmentation (``augment=True``) the recent items of the most similar users (cosine of
the domain model's user embeddings; :meth:`~bridgerec.methods.llama4rec_domain.FixedDomain.similar_user_vectors`)
and the domain model's order of the candidates as a hint, then
at most ``n_candidates`` numbered candidates in a seeded shuffle. The answer is the candidate
numbers, best first.

**Instruction examples** (:func:`ranking_examples`) come from the TRAINING histories alone: the
target of a sampled user is the user's last training item, the history the training items before
it; the candidates are the domain model's top items for the user with that history masked (the
target is added at a random place when the domain model left it out, and the list padded with
random items the user has not met), so a validation or test item appears in a training prompt
only as the domain model's own suggestion, never because it is the answer. The domain model
(``method.llama4rec.domain_run``) was itself trained on the training split, so it has seen the
target: its hint ranks training targets higher than it ranks held-out items later (the
tuned LLM may learn to trust the hint more than it should; a domain model refitted without each
user's last item would remove that, at the cost of a second domain-model run).

**Held-out prompts** (:func:`heldout_prompts`) show the history known at that split's time (the
training items for validation, training and validation items for test: the caller passes it);
the candidates are the domain model's top ``n_candidates`` with the known items masked, exactly
what the serving strategy reranks; nothing is inserted, so the held-out item is a candidate only
when the domain model retrieved it.

The domain model is a :mod:`~bridgerec.methods.llama4rec_domain` object: MF/LightGCN vectors, or
a sequence model (SASRec) whose user vector for a prompt embeds exactly the history the prompt
knows (the training items before the target; the history known at the held-out split's time).

Prompts fit a token budget (``max_tokens`` by a ``count(text) -> tokens`` function): the oldest
history and similar-user items are dropped first, then the hint, until the prompt fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from bridgerec.methods.llama4rec_domain import Llama4RecDomain

__all__ = ["RankingPrompt", "similar_users", "nearest_users", "similar_items", "top_n", "domain_order",
           "ranking_examples", "heldout_prompts", "shown_prompt", "render", "answer_order"]


@dataclass(frozen=True)
class RankingPrompt:
    """One listwise prompt: its item ids (oldest first for the lists of past items) and the
    candidates as shown; ``domain`` is the candidates in the domain model's order (the hint and
    the domain side of the aggregation); ``target`` the answer's first item (-1: unknown)."""

    uid: int
    history: tuple[int, ...]
    similar: tuple[int, ...]
    candidates: tuple[int, ...]
    domain: tuple[int, ...]
    target: int = -1
    text: str = ""


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """(B, n) column indices of each row's ``n`` highest scores, best first (ties by index)."""
    n = min(n, scores.shape[1])
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < scores.shape[1] else np.tile(np.arange(n), (len(scores), 1))
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def similar_users(user_emb: np.ndarray, uids: np.ndarray, n: int) -> np.ndarray:
    """(len(uids), n) most similar users by cosine, the user itself excluded (ties by id)."""
    uids = np.asarray(uids, np.int64)
    return nearest_users(user_emb, np.asarray(user_emb, np.float32)[uids], n, uids)


def nearest_users(user_emb: np.ndarray, queries: np.ndarray, n: int, exclude: Optional[np.ndarray] = None) -> np.ndarray:
    """(len(queries), n) users nearest each query vector by cosine (ties by id); ``exclude[row]``
    (a user id, or -1 for none) is left out of that row -- the user asking, when known."""
    u = _normalize(np.asarray(user_emb, np.float32))
    sims = _normalize(np.asarray(queries, np.float32)) @ u.T  # (B, U)
    if exclude is not None:
        rows = np.flatnonzero(np.asarray(exclude) >= 0)
        sims[rows, np.asarray(exclude)[rows]] = -np.inf
    return top_n(sims, n)


def domain_order(user_emb: np.ndarray, item_emb: np.ndarray, uid: int, masked: Sequence[int], n: int) -> np.ndarray:
    """The domain model's top ``n`` items for ``uid`` (inner product), ``masked`` left out."""
    return _order(np.asarray(user_emb[uid], np.float32), item_emb, masked, n)


def _order(vector: np.ndarray, item_emb: np.ndarray, masked: Sequence[int], n: int) -> np.ndarray:
    """The top ``n`` items by inner product with the user ``vector`` (d,), ``masked`` left out."""
    scores = (vector @ np.asarray(item_emb, np.float32).T)[None]
    if len(masked):
        scores[0, np.asarray(masked, np.int64)] = -np.inf
    return top_n(scores, n)[0]


def similar_items(indptr: np.ndarray, items: np.ndarray, sim_row: Sequence[int], per_user: int, own: set[int]) -> list[int]:
    """The ``per_user`` most recent items of each similar user (CSR ``indptr``/``items``, oldest
    first), in that order, without repeats or the user's ``own`` items."""
    out: list[int] = []
    seen = set(own)
    for v in np.asarray(sim_row, np.int64).tolist():
        for i in items[max(indptr[v], indptr[v + 1] - per_user):indptr[v + 1]].tolist():
            if i not in seen:
                seen.add(i)
                out.append(int(i))
    return out


def _candidates(domain: np.ndarray, target: int, n: int, known: set[int], n_items: int, rng) -> list[int]:
    """Training candidates: the domain top ``n`` (the target in place of the last one when it is
    missing), padded with random items outside ``known`` when the catalogue is short of them."""
    cands = [int(i) for i in domain[:n]]
    if target not in cands:
        cands[len(cands) - 1 if len(cands) >= n else len(cands):] = [target]
    pool = [i for i in range(n_items) if i not in known and i not in set(cands)] if len(cands) < n else []
    if pool:
        cands += [int(i) for i in rng.choice(pool, size=min(n - len(cands), len(pool)), replace=False)]
    return cands


def ranking_examples(indptr: np.ndarray, items: np.ndarray, domain: Llama4RecDomain, *,
                     samples: Optional[int], n_candidates: int = 10, history_len: int = 10, n_similar: int = 2,
                     similar_history: int = 3, augment: bool = True, seed: int = 0) -> list[RankingPrompt]:
    """Instruction examples from the time-ordered TRAINING histories (CSR ``indptr``, ``items``):
    ``samples`` users with at least two training items (all of them when None), each with the
    last training item as the target (module docstring). The answer order is the target, then
    the other candidates in the domain model's order (:func:`answer_order`). The user vector is
    ``domain``'s for the history before the target (a sequence model embeds that history)."""
    indptr, items = np.asarray(indptr, np.int64), np.asarray(items, np.int64)
    item_emb = domain.item_emb
    n_items = int(item_emb.shape[0])
    rng = np.random.default_rng(seed)
    eligible = np.flatnonzero(np.diff(indptr) >= 2)
    users = np.sort(rng.choice(eligible, size=samples, replace=False)) if samples and samples < len(eligible) else eligible
    sims = (similar_users(domain.similar_user_vectors(), users, n_similar) if augment and n_similar > 0
            else np.zeros((len(users), 0), np.int64))
    vectors = domain.user_vectors(users, [items[indptr[u]:indptr[u + 1] - 1] for u in users.tolist()])  # (B, d)
    out = []
    for row, u in enumerate(users.tolist()):
        seq = items[indptr[u]:indptr[u + 1]]
        target, before = int(seq[-1]), seq[:-1]
        known = set(before.tolist())
        top = _order(vectors[row], item_emb, before, n_candidates + 1)
        cands = _candidates(top, target, n_candidates, known, n_items, rng)
        # the candidates in the domain model's order (the target where its score puts it)
        scores = np.asarray(item_emb, np.float32)[cands] @ vectors[row]
        dom = tuple(cands[k] for k in np.lexsort((np.arange(len(cands)), -scores)))
        shown = tuple(cands[k] for k in rng.permutation(len(cands)))
        similar = similar_items(indptr, items, sims[row], similar_history, known | {target}) if augment else []
        out.append(RankingPrompt(u, tuple(int(i) for i in before[-history_len:]), tuple(similar), shown, dom, target))
    return out


def heldout_prompts(indptr: np.ndarray, items: np.ndarray, train_indptr: np.ndarray, train_items: np.ndarray,
                    domain: Llama4RecDomain, uids: Sequence[int], *, n_candidates: int = 10,
                    history_len: int = 10, n_similar: int = 2, similar_history: int = 3, augment: bool = True,
                    seed: int = 0) -> list[RankingPrompt]:
    """Prompts of ``uids`` at a held-out split's time: ``indptr``/``items`` the history known then
    (masked from the candidates, and what a sequence model embeds: ``domain.user_table``), the
    similar users' items from the TRAINING histories."""
    indptr, items = np.asarray(indptr, np.int64), np.asarray(items, np.int64)
    uids = np.asarray(uids, np.int64)
    user_emb, item_emb = domain.user_table(indptr, items), domain.item_emb  # (U, d), (I, d)
    sims = (similar_users(domain.similar_user_vectors(), uids, n_similar) if augment and n_similar > 0
            else np.zeros((len(uids), 0), np.int64))
    out = []
    for row, u in enumerate(uids.tolist()):
        seq = items[indptr[u]:indptr[u + 1]]
        dom = [int(i) for i in domain_order(user_emb, item_emb, u, seq, n_candidates)]
        similar = similar_items(train_indptr, train_items, sims[row], similar_history, set(seq.tolist())) if augment else []
        out.append(shown_prompt(u, [u], seq[-history_len:], similar, dom, seed))
    return out


def shown_prompt(uid: int, key: Sequence[int], history: Sequence[int], similar: Sequence[int], domain: Sequence[int],
                 seed: int = 0) -> RankingPrompt:
    """An unrendered prompt whose candidates are ``domain`` (the domain model's order, best first)
    shown in the shuffle seeded by ``(seed, *key)``: evaluation and serving key a known user by
    their id, so a user sees the same list in both."""
    rng = np.random.default_rng([int(seed), *[int(k) for k in key]])
    dom = tuple(int(i) for i in domain)
    shown = tuple(dom[k] for k in rng.permutation(len(dom)))
    return RankingPrompt(int(uid), tuple(int(i) for i in history), tuple(int(i) for i in similar), shown, dom)


def answer_order(p: RankingPrompt) -> list[int]:
    """The 1-based candidate numbers of a training example's answer: the target, then the other
    candidates in the domain model's order."""
    pos = {iid: k + 1 for k, iid in enumerate(p.candidates)}
    return [pos[p.target]] + [pos[i] for i in p.domain if i != p.target]


def render(p: RankingPrompt, view: Callable[[int], object], *, augment: bool = True, version: str = "v1",
           count: Optional[Callable[[str], int]] = None, max_tokens: Optional[int] = None) -> RankingPrompt:
    """``p`` with its text (:func:`~bridgerec.llm.prompts.ranking_prompt`); within ``max_tokens``
    by ``count`` the oldest history and similar-user items go first, then the hint; what was
    dropped is dropped from the returned prompt's lists too (so its item ids are what it shows)."""
    from bridgerec.llm.prompts import ranking_prompt

    history, similar, hint = list(p.history), list(p.similar), augment

    def text() -> str:
        return ranking_prompt([view(i) for i in history], [view(i) for i in p.candidates],
                              similar=[view(i) for i in similar], hint=[view(i) for i in p.domain] if hint else (),
                              version=version).text

    t = text()
    while count is not None and max_tokens is not None and count(t) > max_tokens:
        if similar:
            similar.pop(0)
        elif len(history) > 1:
            history.pop(0)
        elif hint:
            hint = False
        else:
            break  # the candidates alone exceed the budget: kept whole (the engine cuts nothing)
        t = text()
    return RankingPrompt(p.uid, tuple(history), tuple(similar), p.candidates, p.domain, p.target, t)
