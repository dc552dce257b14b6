"""Serving strategies used only by the fallback tests: an LLM-backed strategy whose LLM side sleeps
past its budget, and one pointed at an LLM handle the app does not have (so the call raises).
Both must fall back to ``domain``; registered into the test app through ``RecommenderArgs.strategies``.
Also the real ``bigrec`` and ``llama4rec`` strategies routed to an LLM deployment that is down."""

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


class _UnavailableLLM:
    """The app's LLM client as seen after its deployment went away: every generation fails."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    async def complete(self, prompt, params):
        raise ConnectionError("the LLM deployment is unavailable (simulated outage)")


async def _bigrec_llm_down(ctx: StrategyContext, q: Query) -> Ranked:
    from bridgerec.serving.bigrec import BIGREC

    down = StrategyContext({**ctx.handles, "llm": _UnavailableLLM(ctx.handle("llm"))}, ctx.catalog, ctx.args)
    return await BIGREC.fn(down, q)


BIGREC_LLM_DOWN = Strategy(_bigrec_llm_down, budget_s=10.0, needs=("llm", "grounder"))
"""The real ``bigrec`` strategy routed to an LLM that is down (the fallback test of the bigrec strategy)."""


async def _llama4rec_llm_down(ctx: StrategyContext, q: Query) -> Ranked:
    from bridgerec.serving.llama4rec import LLAMA4REC

    down = StrategyContext({**ctx.handles, "llm": _UnavailableLLM(ctx.handle("llm"))}, ctx.catalog, ctx.args)
    return await LLAMA4REC.fn(down, q)


LLAMA4REC_LLM_DOWN = Strategy(_llama4rec_llm_down, budget_s=10.0, needs=("llm", "retriever"))
"""The real ``llama4rec`` strategy routed to an LLM that is down."""
