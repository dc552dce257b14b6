"""Llama4Rec's adaptive aggregation (Luo et al., "Integrating Large Language Models into
Recommendation via Mutual Augmentation and Adaptive Aggregation", arXiv 2401.13870, Sec. 4.4),
as plain numpy: the long-tail coefficient, the per-user weight α_u, the parse of the LLM's
listwise ranking, and the blend of the LLM's and the domain model's utilities.

Formulas (the paper's Eq. 5-7; its PDF text states them in words, the symbols below follow the
reading that matches every sentence of it):

- long-tail coefficient ``ℓ_u = log(N(u) + 1)``, ``N(u)`` the user's TRAINING interactions: a
  lower ℓ_u means fewer interactions, further in the tail;
- ``α_u = α1 · max((ℓ_max − ℓ_u) / (ℓ_max − ℓ_min), α2)``, with ℓ_min and ℓ_max over the
  training users; α1 scales the weight, α2 < 1 is the floor ("cut-off") of the scaled
  position. α_u grows as the user sits further in the tail and lies in [0, α1] ⊆ [0, 1]; the
  paper searches α1, α2 in {0.1, 0.3, 0.5, 0.7, 0.9} on validation;
- utility by rank: an item at position s (1-based) of a ranked candidate list gets ``U = −s·C``
  (C = 1) -- the domain model's top-K' order and the LLM's order alike;
- final utility ``U = α_u · U_LLM + (1 − α_u) · U_domain`` (ratings: the predicted ratings
  themselves are the utilities).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["AlphaRule", "long_tail_coefficient", "parse_ranking", "parse_rating", "complete_ranking",
           "aggregate_ranking", "aggregate_rating"]

GRID = (0.1, 0.3, 0.5, 0.7, 0.9)
"""The paper's search grid for α1 and α2."""


def long_tail_coefficient(n_train: np.ndarray | Sequence[int]) -> np.ndarray:
    """ℓ_u = log(N(u) + 1) of each user's training-interaction count."""
    n = np.asarray(n_train, dtype=np.float64)
    if (n < 0).any():
        raise ValueError("interaction counts must be >= 0")
    return np.log1p(n)


@dataclass(frozen=True)
class AlphaRule:
    """α_u = α1 · max((ℓ_max − ℓ_u) / (ℓ_max − ℓ_min), α2), ℓ_min/ℓ_max fixed from the training users."""

    alpha1: float
    alpha2: float
    ell_min: float
    ell_max: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha1 <= 1.0:
            raise ValueError(f"alpha1 must be in [0, 1], got {self.alpha1}")
        if not 0.0 <= self.alpha2 < 1.0:
            raise ValueError(f"alpha2 must be in [0, 1), got {self.alpha2}")
        if self.ell_max < self.ell_min:
            raise ValueError(f"ell_max {self.ell_max} < ell_min {self.ell_min}")

    @classmethod
    def from_counts(cls, n_train: np.ndarray | Sequence[int], alpha1: float, alpha2: float) -> "AlphaRule":
        """The rule over the users with at least one training interaction."""
        n = np.asarray(n_train)
        ell = long_tail_coefficient(n[n > 0]) if (n > 0).any() else np.zeros(1)
        return cls(alpha1, alpha2, float(ell.min()), float(ell.max()))

    def alpha(self, n_train: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """α_u of users with ``n_train`` training interactions (an unseen count beyond the training
        range is clipped to it, so α_u stays in [0, α1])."""
        ell = long_tail_coefficient(np.atleast_1d(n_train))
        span = self.ell_max - self.ell_min
        scaled = np.clip((self.ell_max - ell) / span, 0.0, 1.0) if span > 0 else np.ones_like(ell)
        return self.alpha1 * np.maximum(scaled, self.alpha2)


_NUMBER = re.compile(r"\d+")


def parse_ranking(text: str, n_candidates: int) -> Optional[list[int]]:
    """The 0-based candidate positions an LLM's ranking answer names, in its order ("3, 1, 2"
    -> [2, 0, 1]): numbers on the first non-empty line, out-of-range and repeated ones skipped.
    None when the answer names no candidate (unparseable)."""
    line = next((ln for ln in str(text).splitlines() if ln.strip()), "")
    order: list[int] = []
    for m in _NUMBER.finditer(line):
        k = int(m.group()) - 1
        if 0 <= k < n_candidates and k not in order:
            order.append(k)
    return order or None


_RATING = re.compile(r"\d+(?:\.\d+)?")


def parse_rating(text: str, low: float, high: float) -> Optional[float]:
    """The rating an LLM's answer gives: the first number on its first non-empty line, if it lies
    in the scale [low, high]; None otherwise (unparseable)."""
    line = next((ln for ln in str(text).splitlines() if ln.strip()), "")
    m = _RATING.search(line)
    if m is None:
        return None
    value = float(m.group())
    return value if low <= value <= high else None


def complete_ranking(order: Optional[Sequence[int]], n_candidates: int) -> list[int]:
    """``order`` followed by the candidates it left out, in their given (domain) order; the
    domain order itself when ``order`` is None."""
    named = list(order or [])
    return named + [k for k in range(n_candidates) if k not in set(named)]


def aggregate_ranking(candidates: Sequence[int], llm_order: Optional[Sequence[int]], alpha: float
                      ) -> tuple[list[int], np.ndarray]:
    """Blend the domain order of ``candidates`` (its top-K', best first) with the LLM's order of
    them (0-based positions into ``candidates``; None = unparseable, the domain order alone):
    ``U = α·(−s_LLM) + (1 − α)·(−s_domain)``. Returns the candidate ids best first and their
    utilities; ties keep the domain order."""
    n = len(candidates)
    s_domain = np.arange(1, n + 1, dtype=np.float64)
    s_llm = np.empty(n)
    s_llm[complete_ranking(llm_order, n)] = np.arange(1, n + 1)
    utility = -(alpha * s_llm + (1.0 - alpha) * s_domain)
    best = np.lexsort((s_domain, -utility))
    return [int(candidates[k]) for k in best], utility[best]


def aggregate_rating(llm: np.ndarray, domain: np.ndarray, alpha: np.ndarray, low: float = 1.0, high: float = 5.0
                     ) -> np.ndarray:
    """α_u · r_LLM + (1 − α_u) · r_domain, clipped to the rating scale [low, high]."""
    return np.clip(alpha * np.asarray(llm, float) + (1.0 - alpha) * np.asarray(domain, float), low, high)
