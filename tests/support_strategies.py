"""Serving strategies used only by the fallback tests: an LLM-backed strategy whose LLM side sleeps
past its budget, and one pointed at an LLM handle the app does not have (so the call raises).
Both must fall back to ``domain``; registered into the test app through ``RecommenderArgs.strategies``."""

from __future__ import annotations

import asyncio

from bridgerec.serving.strategies import Query, Ranked, Strategy, StrategyContext


async def _sleeps(ctx: StrategyContext, q: Query) -> Ranked:
    await asyncio.sleep(30)
    raise AssertionError("unreachable: the budget ends first")


async def _no_llm(ctx: StrategyContext, q: Query) -> Ranked:
    ctx.handle("llm")  # this app has no LLM deployment: LookupError
    raise AssertionError("unreachable")


SLOW = Strategy(_sleeps, budget_s=0.5, needs=("llm",))
BROKEN = Strategy(_no_llm, budget_s=5.0, needs=("llm",))
