"""The ``bdlm`` serving strategy: a BDLM run's exported vectors, no LLM call.

A BDLM run exports enriched vectors (:mod:`bridgerec.methods.bdlm`): each user is
``[e_u ; feature(f_u)]`` with the LLM feature of the user's prompt computed once at export, each
item ``[e_i ; down(r_i)]``, so the Retriever's faiss index over items ranks with BDLM's score and
serving runs no LLM. A user the run did not know at export has no LLM feature: the ``domain``
strategy answers (the Retriever embeds the request's history), and the response says so
(``fallback: true`` with the reason).

Not built in (every app would list it, whatever its bundle): an app serving a BDLM run adds it
with ``strategies: {bdlm: "bridgerec.serving.bdlm:BDLM"}`` in its args (``bridgerec serve --args``),
and ``default_strategy: bdlm`` to answer every request with it.
"""

from __future__ import annotations

from bridgerec.serving.strategies import Query, Ranked, Strategy, StrategyContext, domain

__all__ = ["BDLM"]

UNKNOWN_USER = "user unknown at export: no LLM feature, the domain strategy answered"


async def _bdlm(ctx: StrategyContext, q: Query) -> Ranked:
    out = await domain.fn(ctx, q)
    if q.uid is None:
        out.fallback, out.reason = True, UNKNOWN_USER
        return out
    out.strategy = "bdlm"
    return out


BDLM = Strategy(_bdlm)
"""No time budget: the strategy makes no LLM call."""
