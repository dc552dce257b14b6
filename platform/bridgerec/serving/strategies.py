"""Serving strategies: named async functions over the app's deployment handles.

A strategy turns a validated :class:`Query` into a ranked :class:`Ranked` list. ``domain`` (the
domain model's retrieval) and ``generate-ground`` (the LLM names the next item's title, the
Grounder maps it to items; :mod:`bridgerec.serving.llm`) are built in; a method adds its own (``bigrec``, ``llama4rec``, ``bdlm``)
with ``STRATEGIES.register(name, Strategy(fn, budget_s=...))`` or, from a deployment's config,
as a ``"module:attribute"`` path in ``RecommenderArgs.strategies``. No endpoint code changes.

Any strategy with a time budget (every LLM-backed one) runs under :func:`run_strategy`: when it
exceeds its budget or raises, the request is answered by ``domain`` and the response says so
(``fallback: true`` and the reason). ``domain`` itself has no fallback.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

from bridgerec._registry import Registry

__all__ = ["Query", "Ranked", "Strategy", "StrategyContext", "STRATEGIES", "run_strategy", "domain"]


@dataclass
class Query:
    """A validated recommendation request, in dense ids."""

    uid: Optional[int]  # None: a user unknown to the model, described by ``history``
    history: list[int]  # dense item ids (the request's history, else empty)
    k: int
    exclude: list[int] = field(default_factory=list)  # items never returned (seen items unless asked otherwise)
    text: Optional[str] = None  # free text for strategies that use it


@dataclass
class Ranked:
    """Dense item ids with scores, best first; ``fallback`` says a budgeted strategy gave way."""

    iids: list[int]
    scores: list[float]
    strategy: str
    fallback: bool = False
    reason: Optional[str] = None
    generated: Optional[str] = None  # what an LLM strategy generated (e.g. the title it grounded)
    details: Optional[dict[str, Any]] = None  # a strategy's own figures (llama4rec: alpha_u, the LLM's order)


@dataclass
class StrategyContext:
    """What a strategy may call: deployment handles by name (``retriever``, ``grounder``, and
    ``llm``, an :class:`~bridgerec.serving.llm.LLMClient`), and the bundle's catalog (titles,
    time-ordered histories)."""

    handles: dict[str, Any]
    catalog: Any = None
    args: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Settings of the strategies by name (``RecommenderArgs.strategy_args``, e.g. ``{"bigrec": {"gamma": 4.0}}``)."""

    def settings(self, name: str) -> dict[str, Any]:
        return dict(self.args.get(name) or {})

    def handle(self, name: str) -> Any:
        if name not in self.handles or self.handles[name] is None:
            raise LookupError(f"this app has no {name} deployment")
        return self.handles[name]

    def missing(self, strategy: "Strategy") -> list[str]:
        """The deployments ``strategy`` needs that this app lacks."""
        return [n for n in strategy.needs if self.handles.get(n) is None]


StrategyFn = Callable[[StrategyContext, Query], Awaitable[Ranked]]


@dataclass(frozen=True)
class Strategy:
    fn: StrategyFn
    budget_s: Optional[float] = None  # None: no time budget, no fallback
    needs: tuple[str, ...] = ("retriever",)


def _check(name: str, obj: Any) -> None:
    if not isinstance(obj, Strategy):
        raise TypeError(f"serving strategy {name!r} must be a Strategy, got {type(obj).__name__}")


STRATEGIES: Registry[Strategy] = Registry("serving strategy", "strategy", check=_check,
                                          lazy={"generate-ground": "bridgerec.serving.llm:GENERATE_GROUND",
                                                "bigrec": "bridgerec.serving.bigrec:BIGREC"})


async def _domain(ctx: StrategyContext, q: Query) -> Ranked:
    iids, scores = await ctx.handle("retriever").topk.remote(q.uid, q.history, q.k, q.exclude)
    return Ranked(list(iids), list(scores), "domain")


domain = STRATEGIES.register("domain", Strategy(_domain))


async def run_strategy(name: str, ctx: StrategyContext, q: Query, budget_s: Optional[float] = None) -> Ranked:
    """Run strategy ``name``; a budgeted one that times out or fails is answered by ``domain``."""
    strategy = STRATEGIES.get_plugin(name)
    budget = budget_s if budget_s is not None else strategy.budget_s
    if budget is None:
        return await strategy.fn(ctx, q)
    try:
        return await asyncio.wait_for(strategy.fn(ctx, q), timeout=budget)
    except asyncio.TimeoutError:
        reason = f"{name} exceeded its {budget:g} s budget"
    except Exception as exc:  # noqa: BLE001 - any failure of the LLM side falls back
        reason = f"{name} failed: {type(exc).__name__}: {str(exc)[:200]}"
    out = await domain.fn(ctx, q)
    out.fallback, out.reason, out.strategy = True, reason, "domain"
    return out
