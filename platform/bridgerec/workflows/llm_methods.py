"""The workflows of the methods that tune the LLM (``trains_llm``), by method name: what `bridgerec
train` and `bridgerec tune` call instead of the domain-model trainer.

Each entry gives the run (``run(cfg, data, log, *, test=..., adapter_dir=...)``), its MLflow
logging, the lines printed under the results table, the extra test rows of the table, the values a
sweep's trial reports beside its validation metric, how the chosen trial's settings are fixed
before it is tested, and the MLflow path of the run's adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["LLMWorkflow", "llm_workflow"]


@dataclass(frozen=True)
class LLMWorkflow:
    run: Callable[..., Any]
    log: Callable[[Any, Any], None]
    summary_lines: Callable[[Any, Any], list[str]]
    test_rows: Callable[[Any], dict]
    trial_report: Callable[[Any], dict]
    """Extra values a sweep trial reports (read back by :attr:`fix_choice`)."""
    fix_choice: Callable[[Any, dict], None]
    """``(cfg, best trial's reported metrics)``: fix what the trial chose on validation."""
    test_logs: Callable[[Any], dict]
    """MLflow prefix -> EvalResult of the test rows logged for a sweep's chosen trial."""
    adapter_artifact: str


def _bigrec() -> LLMWorkflow:
    from bridgerec.workflows import bigrec as wf

    def fix(cfg, metrics):
        cfg.method.bigrec.gamma = float(metrics.get("bigrec_gamma", 0.0))

    return LLMWorkflow(wf.run_bigrec, wf.log_bigrec, wf.summary_lines,
                       lambda res: {"bigrec gamma 0": res.test_grounding},
                       lambda res: {"bigrec_gamma": res.gamma}, fix,
                       lambda res: {"test_": res.test, "test_grounding_only_": res.test_grounding}, "bigrec/adapter")


def _llama4rec() -> LLMWorkflow:
    from bridgerec.workflows import llama4rec as wf

    # the trial's validation choice is made again, identically, when the chosen adapter is tested
    # (greedy rankings of the same prompts): nothing to fix
    return LLMWorkflow(wf.run_llama4rec, wf.log_llama4rec, wf.summary_lines,
                       lambda res: {"domain order (alpha 0)": res.test_domain, "LLM order (alpha 1)": res.test_llm},
                       lambda res: {f"llama4rec_{k}": float(v) for k, v in res.choice.items() if k != "aggregation"},
                       lambda cfg, metrics: None,
                       lambda res: {"test_": res.test, "test_domain_order_": res.test_domain,
                                    "test_llm_order_": res.test_llm}, "llama4rec/adapter")


_WORKFLOWS = {"bigrec": _bigrec, "llama4rec": _llama4rec}


def llm_workflow(name: str) -> LLMWorkflow:
    try:
        return _WORKFLOWS[name]()
    except KeyError:
        raise ValueError(f"method {name!r} tunes the LLM but has no workflow; known: {', '.join(_WORKFLOWS)}") from None
