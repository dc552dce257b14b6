"""`bridgerec train` for ``method.name: llama4rec``: listwise instruction tuning, LLM reranking of
the domain model's candidates, adaptive aggregation.

1. Instruction tuning: ``method.llama4rec.train_samples`` listwise examples from the TRAINING
   histories (:func:`~bridgerec.methods.llama4rec_data.ranking_examples`: the last training item
   is the target, the candidates are the domain model's top items) tune a LoRA adapter with Ray
   Train (:func:`bridgerec.training.sft.train_sft`; a tenth of the examples measure the
   validation loss). ``method.llama4rec.tune: false`` skips it (the base backbone ranks).
2. Reranking: for every validation and test user the domain model's top ``n_candidates`` (known
   items masked) are shown in a seeded shuffle; the tuned LLM (``llm.engine``: vLLM or
   transformers, greedy) answers with their numbers; an unparseable answer keeps the domain order
   and is counted.
3. Aggregation (``method.llama4rec.aggregation``): α1, α2 (``adaptive``) or α (``fixed``) are
   chosen on validation by ``method.llama4rec.select_metric``; the chosen setting is tested.

The domain model (:func:`load_domain`) is MF or LightGCN (one vector per user: the direct task) or
a sequence model such as SASRec (the sequential task): then every user vector is the model's
embedding of the history known when the prompt is asked (the training items before the target,
the training items for validation, training and validation items for test), in the prompts and in
the evaluated scores alike, so the domain order is the model's own evaluation protocol.

Reported on test beside the chosen setting: the domain model's order alone (α = 0) and the LLM's
order alone (α = 1), so which side carries a gain is visible; the parse rate per split, and the
ranking throughput (prompts/s). Protocol: full ranking with known items masked; only the
candidates' order changes, so metrics at K <= n_candidates measure the reranking.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from bridgerec.config import Config
from bridgerec.console import say
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult, evaluate_split

__all__ = ["Llama4RecResult", "run_llama4rec", "log_llama4rec", "summary_lines", "instruction_prompts", "heldout",
           "export_llama4rec", "load_domain"]


@dataclass
class SplitRankings:
    uids: np.ndarray
    domain: list[tuple[int, ...]]  # each user's candidates in the domain order
    orders: list[Optional[list[int]]]  # the LLM's order as positions into ``domain`` (None: unparseable)
    parse_rate: float
    prompts_per_s: float
    raw: list[str] = field(default_factory=list)


@dataclass
class Llama4RecResult:
    test: Optional[EvalResult]  # the chosen aggregation (None: run with test=False)
    test_domain: Optional[EvalResult]  # α = 0: the domain model's order
    test_llm: Optional[EvalResult]  # α = 1: the LLM's order alone
    valid: EvalResult  # the chosen aggregation on validation
    choice: dict  # {"aggregation", "alpha1", "alpha2"} or {"aggregation", "alpha"}
    table: dict[str, float]  # the validation search: setting -> select metric
    rankings: dict[str, SplitRankings]
    sft: dict
    adapter_dir: Optional[str]
    n_examples: int = 0
    n_train: Optional[np.ndarray] = None  # every user's training-interaction count (α_u's input)


def _check(cfg: Config) -> None:
    from bridgerec.config import ConfigError

    c = cfg.method.llama4rec
    if not c.domain_run:
        raise ConfigError("method.llama4rec.domain_run is required: the trained domain model whose candidates the LLM "
                          "reranks (runs:/<run id>/model of a bridgerec train run on the same dataset, or an .npz)")
    name, _, k = c.select_metric.partition("@")
    if not k.isdigit() or int(k) not in cfg.eval.ks:
        raise ConfigError(f"method.llama4rec.select_metric: {c.select_metric!r} must be <metric>@<K> with K in eval.ks "
                          f"({cfg.eval.ks})")


def load_domain(cfg: Config, data: DatasetDir):
    """The domain side of ``method.llama4rec.domain_run``
    (:mod:`~bridgerec.methods.llama4rec_domain`): MF or LightGCN as their exported vectors; a
    sequence model (SASRec) rebuilt from its bundle, embedding the history each prompt shows."""
    from bridgerec.methods.llama4rec_domain import FixedDomain, HistoryDomain
    from bridgerec.models.histories import histories_for
    from bridgerec.workflows.llm_methods import open_domain_run

    run = open_domain_run(cfg, data, cfg.method.llama4rec.domain_run, "method.llama4rec.domain_run", sequence_ok=True)
    if run.history_model is None:
        return FixedDomain(run.users, run.items)
    return HistoryDomain(run.history_model, histories_for(data, ("train",)))


def instruction_prompts(cfg: Config, data: DatasetDir, domain, view, count=None) -> list:
    """The rendered listwise training examples (read from the TRAINING split only). ``domain``: a
    :func:`load_domain` result or a ``(users, items)`` pair."""
    from bridgerec.methods.llama4rec_data import ranking_examples, render
    from bridgerec.methods.llama4rec_domain import as_domain
    from bridgerec.models.histories import histories_for

    c = cfg.method.llama4rec
    indptr, items = histories_for(data, ("train",))
    examples = ranking_examples(indptr, items, as_domain(domain), samples=c.train_samples, n_candidates=c.n_candidates,
                                history_len=c.history_len, n_similar=c.n_similar, similar_history=c.similar_history,
                                augment=c.prompt_aug, seed=cfg.train.seed)
    return [render(p, view, augment=c.prompt_aug, version=cfg.llm.prompt_version, count=count,
                   max_tokens=c.max_prompt_tokens) for p in examples]


def _tune(cfg: Config, data: DatasetDir, domain, backbone, tokenizer, chat, view, log):
    from bridgerec.methods.llama4rec import encode_ranking_examples, token_counter

    c = cfg.method.llama4rec
    rendered = instruction_prompts(cfg, data, domain, view, token_counter(tokenizer, chat))
    return tune_rows(cfg, backbone, tokenizer, encode_ranking_examples(tokenizer, rendered, chat=chat), log,
                     f"listwise examples ({c.n_candidates} candidates each, prompt augmentation "
                     f"{'on' if c.prompt_aug else 'off'})")


def tune_rows(cfg: Config, backbone, tokenizer, rows: list, log, what: str):
    """LoRA instruction tuning on encoded ``rows`` (a tenth held for the validation loss) with Ray
    Train; returns (the SFT result, the number of rows)."""
    from bridgerec.training.sft import train_sft

    n_valid = max(1, len(rows) // 10) if len(rows) >= 10 else 0
    log(f"[llama4rec] step 1: LoRA instruction tuning of {cfg.llm.model} on {len(rows) - n_valid} {what}, "
        f"{n_valid} held for the validation loss; {cfg.train.num_workers} worker(s), {cfg.train.strategy}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    res = train_sft(cfg, backbone.path, rows[n_valid:], rows[:n_valid], pad_id=int(pad))
    for h in res.history:
        log(f"[llama4rec] epoch {int(h['epoch'])}/{cfg.train.epochs}: train loss {h['train_loss']:.4f}, valid loss "
            f"{h.get('valid_loss', float('nan')):.4f}, {h['tokens_per_s']:.0f} tokens/s, base weights unchanged: "
            f"{'yes' if h.get('frozen_unchanged') == 1.0 else 'NO'}")
    return res, len(rows)


def llm_side(cfg: Config, data: DatasetDir):
    """(the backbone, its tokenizer (right padding, for tuning), its chat format, ``view(iid)`` ->
    the item's :class:`~bridgerec.llm.prompts.ItemView`) of a Llama4Rec run."""
    from bridgerec.llm.backbone import chat_format, load_tokenizer, resolve_backbone
    from bridgerec.llm.prompts import ItemView

    backbone = resolve_backbone(cfg.llm, cfg.work_dir, data)
    tokenizer = load_tokenizer(backbone.path, padding_side="right")
    titles = [str(t) for t in data.items().sort_values("iid")["title"].tolist()]
    return backbone, tokenizer, chat_format(cfg.llm, backbone, tokenizer), lambda i: ItemView(int(i), titles[int(i)])


@contextmanager
def tuned_engine(cfg: Config, backbone, adapter_dir: Optional[str], engine=None):
    """``engine`` when given (the caller's), else an engine (``llm.engine``) of the backbone with
    ``adapter_dir`` merged into a temporary copy, closed and removed on exit."""
    from bridgerec.llm.engine import build_engine
    from bridgerec.llm.lora import merge_adapter

    if engine is not None:
        yield engine
        return
    merged, path = None, backbone.path
    if adapter_dir is not None:
        merged = path = tempfile.mkdtemp(prefix="bridgerec-llama4rec-merged-")
        merge_adapter(backbone.path, adapter_dir, merged, cfg.llm.backbone_dtype)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    own = build_engine(cfg.llm, path)
    try:
        yield own
    finally:
        own.close()
        if merged:
            shutil.rmtree(merged, ignore_errors=True)


def heldout(cfg: Config, data: DatasetDir, domain, split: str):
    """The unrendered prompts of every user of ``split`` at that split's time (``domain`` as in
    :func:`instruction_prompts`)."""
    from bridgerec.methods.llama4rec_data import heldout_prompts
    from bridgerec.methods.llama4rec_domain import as_domain
    from bridgerec.models.histories import histories_for, known_at

    c = cfg.method.llama4rec
    train = histories_for(data, ("train",))
    known = known_at(data, split)
    uids = np.unique(data.pairs(split)[0])
    return heldout_prompts(*known, *train, as_domain(domain), uids, n_candidates=c.n_candidates, history_len=c.history_len,
                           n_similar=c.n_similar, similar_history=c.similar_history, augment=c.prompt_aug,
                           seed=cfg.train.seed)


def _rank(cfg: Config, data: DatasetDir, domain, engine, tokenizer, chat, view, split: str) -> SplitRankings:
    from bridgerec.methods.llama4rec import generate_rankings, to_domain_positions, token_counter
    from bridgerec.methods.llama4rec_data import render

    c = cfg.method.llama4rec
    count = token_counter(tokenizer, chat)
    prompts = [render(p, view, augment=c.prompt_aug, version=cfg.llm.prompt_version, count=count,
                      max_tokens=c.max_prompt_tokens) for p in heldout(cfg, data, domain, split)]
    r = generate_rankings(engine, prompts, chat, c.max_new_tokens)
    orders = [to_domain_positions(p, o) for p, o in zip(prompts, r.orders)]
    return SplitRankings(np.asarray([p.uid for p in prompts], np.int64), [p.domain for p in prompts], orders,
                         r.parse_rate, r.per_second, r.raw)


def alpha_settings(c) -> list[dict]:
    if c.aggregation == "adaptive":
        return [{"aggregation": "adaptive", "alpha1": a1, "alpha2": a2} for a1 in c.alpha_grid for a2 in c.alpha_grid]
    if c.aggregation == "fixed":
        return [{"aggregation": "fixed", "alpha": a} for a in c.alpha_grid]
    return [{"aggregation": c.aggregation, "alpha": 1.0 if c.aggregation == "llm" else 0.0}]


def alphas_for(setting: dict, uids: np.ndarray, n_train: np.ndarray) -> np.ndarray:
    """Each user's α under ``setting`` (adaptive: the long-tail rule over the training counts)."""
    from bridgerec.methods.llama4rec_core import AlphaRule

    if setting["aggregation"] != "adaptive":
        return np.full(len(uids), float(setting["alpha"]))
    rule = AlphaRule.from_counts(n_train, setting["alpha1"], setting["alpha2"])
    return rule.alpha(n_train[uids])


def alpha_label(setting: dict) -> str:
    if setting["aggregation"] == "adaptive":
        return f"alpha1={setting['alpha1']:g} alpha2={setting['alpha2']:g}"
    return f"alpha={setting['alpha']:g}"


def _score_at(method, domain, data: DatasetDir, split: str) -> None:
    """Give ``method`` the domain model's scores at ``split``'s time: a sequence model's user
    vectors embed the history known then (what its own evaluation conditions on), so the domain
    order below and beside the candidates is the domain model's own."""
    from bridgerec.models.histories import known_at

    method.set_domain(domain.user_table(*known_at(data, split)), domain.item_emb)


def _evaluate(method, data, cfg, split: str, r: SplitRankings, setting: dict, n_train) -> EvalResult:
    method.set_rankings(r.uids, r.domain, r.orders, alphas_for(setting, r.uids, n_train))
    return evaluate_split(method.full_scores, data, cfg.eval, split)


def run_llama4rec(cfg: Config, data: DatasetDir, log=say, engine=None, *, test: bool = True,
                  adapter_dir: Optional[str] = None, rankings: Optional[dict] = None) -> Llama4RecResult:
    """The three steps (Ray must be initialised for step 1). ``engine``: an already loaded engine
    to rank with instead of the tuned model (tests share one). ``adapter_dir``: an adapter tuned
    before (step 1 skipped). ``rankings``: an earlier result's ``rankings`` of the same adapter
    (not generated again; the aggregation is redone)."""
    from bridgerec.methods import build_method
    from bridgerec.models import build_model_for_dataset

    _check(cfg)
    c = cfg.method.llama4rec
    domain = load_domain(cfg, data)
    log(f"[llama4rec] domain model {c.domain_run}: {domain.item_emb.shape[1]}-d embeddings"
        + ("; a sequence model: each prompt's user vector embeds the history it shows" if domain.conditions_on_history
           else ""))
    backbone, tokenizer, chat, view = llm_side(cfg, data)

    sft_record, n_examples = {"best": {}, "history": [], "seconds": 0.0}, 0
    if adapter_dir is None and c.tune and not rankings:
        sft, n_examples = _tune(cfg, data, domain, backbone, tokenizer, chat, view, log)
        adapter_dir = sft.adapter_dir
        sft_record = {"best": sft.best_metrics, "history": sft.history, "seconds": sft.train_seconds}
        log(f"[llama4rec] adapter: {adapter_dir} (best epoch {sft.best_metrics.get('epoch')}, {sft.train_seconds:.0f} s)")

    splits = ("valid", "test") if test else ("valid",)
    ranked = {s: rankings[s] for s in splits if rankings and s in rankings}
    todo = [s for s in splits if s not in ranked]
    if todo:
        with tuned_engine(cfg, backbone, adapter_dir, engine) as eng:
            for s in todo:
                ranked[s] = _rank(cfg, data, domain, eng, tokenizer, chat, view, s)
                log(f"[llama4rec] {s}: {len(ranked[s].uids)} rankings, {ranked[s].prompts_per_s:.1f} prompts/s, "
                    f"{ranked[s].parse_rate:.1%} parsed (the rest keep the domain order)")

    method = build_method(cfg.method, build_model_for_dataset(cfg.model, data), {})
    _score_at(method, domain, data, "valid")
    n_train = np.bincount(data.pairs("train")[0], minlength=data.n_users)
    table, best, best_setting = {}, None, None
    for setting in alpha_settings(c):
        res = _evaluate(method, data, cfg, "valid", ranked["valid"], setting, n_train)
        table[alpha_label(setting)] = res.overall[c.select_metric]
        if best is None or table[alpha_label(setting)] > best.overall[c.select_metric]:
            best, best_setting = res, setting
    log(f"[llama4rec] {c.aggregation} aggregation: {alpha_label(best_setting)} chosen on validation {c.select_metric} "
        f"({best.overall[c.select_metric]:.4f}; {len(table)} settings searched)")
    tested = t_domain = t_llm = None
    if test:
        _score_at(method, domain, data, "test")
        t_domain = _evaluate(method, data, cfg, "test", ranked["test"], {"aggregation": "domain", "alpha": 0.0}, n_train)
        t_llm = _evaluate(method, data, cfg, "test", ranked["test"], {"aggregation": "llm", "alpha": 1.0}, n_train)
        tested = _evaluate(method, data, cfg, "test", ranked["test"], best_setting, n_train)
    return Llama4RecResult(tested, t_domain, t_llm, best, best_setting, table, ranked, sft_record, adapter_dir, n_examples,
                           n_train)


def export_llama4rec(res: Llama4RecResult, cfg: Config, out_dir: str) -> str:
    """The run's export in ``out_dir`` (logged as the run's ``llama4rec/`` artifacts): the adapter
    (``adapter/``, when one was tuned) and ``llama4rec.json``: the chosen aggregation, its
    validation search, the training counts' long-tail range (α_u of any user follows from them) and
    the prompt settings a serving path needs to rebuild the same prompts."""
    import json

    from bridgerec.methods.llama4rec_core import AlphaRule

    os.makedirs(out_dir, exist_ok=True)
    if res.adapter_dir:
        shutil.copytree(res.adapter_dir, os.path.join(out_dir, "adapter"), dirs_exist_ok=True)
    c = cfg.method.llama4rec
    rule = None
    if res.choice["aggregation"] == "adaptive" and res.n_train is not None:
        r = AlphaRule.from_counts(res.n_train, res.choice["alpha1"], res.choice["alpha2"])
        rule = {"alpha1": r.alpha1, "alpha2": r.alpha2, "ell_min": r.ell_min, "ell_max": r.ell_max}
    with open(os.path.join(out_dir, "llama4rec.json"), "w") as fh:
        json.dump({"choice": res.choice, "table": res.table, "alpha_rule": rule, "sft_history": res.sft["history"],
                   "serving": {"backbone": cfg.llm.model, "chat_template": cfg.llm.chat_template,
                               "prompt_version": cfg.llm.prompt_version, "domain_run": c.domain_run,
                               "seed": cfg.train.seed,
                               **c.model_dump(include={"n_candidates", "history_len", "prompt_aug", "n_similar",
                                                       "similar_history", "max_prompt_tokens", "max_new_tokens"})}},
                  fh, indent=2)
    return out_dir


def log_llama4rec(res: Llama4RecResult, cfg: Config) -> None:
    """Into the active MLflow run: the three test rows, the chosen α setting, parse rates and
    throughput, and the export (:func:`export_llama4rec`) as ``llama4rec/``."""
    import mlflow

    from bridgerec.tracking import log_eval
    from bridgerec.workflows.llm_methods import log_tuned_run

    if res.test is not None:
        log_eval(res.test, "test_")
        log_eval(res.test_domain, "test_domain_order_")
        log_eval(res.test_llm, "test_llm_order_")
    log_eval(res.valid, "best_valid_")
    mlflow.log_params({f"llama4rec_chosen_{k}": v for k, v in res.choice.items()})
    log_tuned_run(res.sft, {
        **{f"ranking_{s}_parse_rate": r.parse_rate for s, r in res.rankings.items()},
        **{f"ranking_{s}_prompts_per_s": r.prompts_per_s for s, r in res.rankings.items()},
    }, lambda d: export_llama4rec(res, cfg, d), "llama4rec")


def summary_lines(res: Llama4RecResult, cfg: Config) -> list[str]:
    """What `bridgerec train` prints under the results table for a llama4rec run."""
    c = cfg.method.llama4rec
    lines = [f"llama4rec: {c.aggregation} aggregation, {alpha_label(res.choice)} (chosen on validation {c.select_metric}); "
             f"the LLM reranks the domain model's top {c.n_candidates}; protocol: full ranking, known items masked"]
    for s, r in res.rankings.items():
        lines.append(f"rankings ({s}): {r.parse_rate:.1%} parsed, {r.prompts_per_s:.1f} prompts/s")
    if res.sft["history"]:
        lines.append(f"LoRA tuning: {res.sft['seconds']:.0f} s on {res.n_examples} examples, best epoch "
                     f"{res.sft['best'].get('epoch')}, valid loss {res.sft['best'].get('valid_loss', float('nan')):.4f}")
    return lines
