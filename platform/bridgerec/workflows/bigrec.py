"""`bridgerec train` for ``method.name: bigrec``: BIGRec's two steps end to end.

1. Language space: the instruction set (history -> next item title, ``method.bigrec.train_samples``
   windows of the training histories) tunes a LoRA adapter on the backbone (``llm.*``) with Ray
   Train (:func:`bridgerec.training.sft.train_sft`: ``train.num_workers`` workers, DDP or DeepSpeed
   ZeRO from ``train.*``); its validation loss is the next title of validation users.
2. Grounding: the adapter is merged, the engine (``llm.engine``: vLLM, or transformers) writes one
   title per evaluated user from the history known at that split's time (the training items for
   validation; also the validation items for test), and each title is grounded to every item by
   L2 distance (``method.bigrec.ground_with``), reweighted by popularity with gamma chosen on the
   validation split (:func:`~bridgerec.methods.bigrec_core.select_gamma`).

Reported on test: grounding alone (gamma 0) and with the reweighting (the chosen gamma), beside
popularity (``test=False`` stops after validation: a sweep's trials are chosen on it and only the
chosen trial's adapter, passed back as ``adapter_dir``, is tested); known items are masked in the ranking (BIGRec's own scripts rank the history too).
Also reported: generation validity (share of titles that are exactly a catalogue title, and
within ``method.bigrec.valid_distance`` of one) and generation throughput.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from bridgerec.config import Config
from bridgerec.console import say
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult, evaluate_split
from bridgerec.methods.bigrec_core import Validity, generation_validity, next_item_examples, popularity_prior, select_gamma

__all__ = ["BIGRecResult", "run_bigrec", "log_bigrec", "export_bigrec", "summary_lines"]


@dataclass
class BIGRecResult:
    test: Optional[EvalResult]  # with the chosen gamma (None: run with test=False)
    test_grounding: Optional[EvalResult]  # gamma 0: grounding alone
    valid: EvalResult  # the chosen gamma on validation
    gamma: float
    gamma_table: dict[float, float]
    validity: dict[str, Validity]  # per split
    users_per_s: dict[str, float]  # generation throughput per split
    sft: dict  # the adapter's best epoch metrics, history and training time
    adapter_dir: str
    generated: dict[str, list[str]] = field(default_factory=dict)  # split -> parsed titles (in user order)
    generations: dict = field(default_factory=dict)  # split -> (user ids, GeneratedTitles): run_bigrec(generations=...)
    metrics: dict[str, float] = field(default_factory=dict)


def _titles(data: DatasetDir) -> list[str]:
    items = data.items().sort_values("iid")
    return [str(t) for t in items["title"].tolist()]


def _valid_examples(data: DatasetDir, train_hist, history_len: int, limit: int = 256):
    """(train history -> first validation item) of up to ``limit`` validation users: the SFT's validation loss."""
    from bridgerec.methods.bigrec_core import Example
    from bridgerec.models.histories import recent_items

    uids, iids = data.pairs("valid")
    _, first = np.unique(uids, return_index=True)
    indptr, items = train_hist
    out = []
    for j in first[:limit]:
        u = int(uids[j])
        hist = recent_items(indptr, items, u, history_len)
        if len(hist):
            out.append(Example(u, tuple(int(i) for i in hist), int(iids[j])))
    return out


def _tune(cfg: Config, data: DatasetDir, backbone, tokenizer, chat, titles, log):
    from bridgerec.models.histories import histories_for
    from bridgerec.training.sft import train_sft

    b = cfg.method.bigrec
    train_hist = histories_for(data, ("train",))
    examples = next_item_examples(*train_hist, history_len=b.history_len, samples=b.train_samples, seed=cfg.train.seed)
    valid = _valid_examples(data, train_hist, b.history_len)
    log(f"[bigrec] step 1: LoRA instruction tuning of {cfg.llm.model} on {len(examples)} examples "
        f"({'all windows' if b.train_samples is None else f'{b.train_samples} sampled users'}), "
        f"{cfg.train.num_workers} worker(s), {cfg.train.strategy}"
        + (f" ZeRO-{cfg.train.zero_stage}" if cfg.train.strategy == "deepspeed" else ""))
    from bridgerec.llm.prompts import ItemView
    from bridgerec.methods.bigrec_core import encode_examples

    view = lambda i: ItemView(int(i), titles[int(i)])  # noqa: E731
    rows = encode_examples(tokenizer, examples, view, chat=chat, max_length=b.max_length)
    valid_rows = encode_examples(tokenizer, valid, view, chat=chat, max_length=b.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    res = train_sft(cfg, backbone.path, rows, valid_rows, pad_id=int(pad))
    for h in res.history:
        log(f"[bigrec] epoch {int(h['epoch'])}/{cfg.train.epochs}: train loss {h['train_loss']:.4f}, valid loss "
            f"{h.get('valid_loss', float('nan')):.4f}, {h['tokens_per_s']:.0f} tokens/s, base weights unchanged: "
            f"{'yes' if h.get('frozen_unchanged') == 1.0 else 'NO'}")
    return res


def _generate(cfg: Config, data: DatasetDir, engine, chat, titles, split: str):
    """The evaluated users of ``split``, their parsed titles and the generation record."""
    from bridgerec.llm.prompts import ItemView
    from bridgerec.methods.bigrec import generate_titles, next_item_prompts
    from bridgerec.models.histories import known_at

    hist = known_at(data, split)
    uids = np.unique(data.pairs(split)[0])
    prompts = next_item_prompts(hist, uids, lambda i: ItemView(i, titles[i]), cfg.method.bigrec.history_len, chat)
    b = cfg.method.bigrec
    return uids, generate_titles(engine, prompts, b.max_new_tokens, b.num_beams)


def _domain_embeddings(cfg: Config, data: DatasetDir, log) -> tuple[np.ndarray, np.ndarray]:
    from bridgerec.workflows.llm_methods import load_domain_run

    users, items = load_domain_run(cfg, data, cfg.method.bigrec.domain_run, "method.bigrec.domain_run")
    log(f"[bigrec] reweighting by the domain model's scores ({cfg.method.bigrec.domain_run}: {users.shape[1]}-d embeddings)")
    return users, items


def _beam_vectors(embed, beams: list[list[str]]) -> np.ndarray:
    """(beams, users, d): every user's beam titles embedded in one call (beam b of user u at [b, u])."""
    width = len(beams[0]) if beams else 1
    flat = [titles[b] for b in range(width) for titles in beams]
    v = np.asarray(embed(flat), np.float32)
    return v.reshape(width, len(beams), -1)


def run_bigrec(cfg: Config, data: DatasetDir, log=say, engine=None, *, test: bool = True,
               adapter_dir: Optional[str] = None, generations: Optional[dict] = None) -> BIGRecResult:
    """Both steps and the evaluation (Ray must be initialised for step 1). ``engine``: an already
    loaded engine to generate with instead of the tuned model (tests share one). ``test=False``:
    validation only (the test split is neither generated for nor scored). ``adapter_dir``: an
    adapter tuned before (a sweep's chosen trial): step 1 is skipped. ``generations``: an earlier
    result's ``generations`` of the same adapter and beams (its splits are not generated again;
    grounding, reweighting and gamma are redone: how the benchmark's variants share one generation)."""
    from bridgerec.llm.backbone import chat_format, load_tokenizer, resolve_backbone
    from bridgerec.llm.engine import build_engine
    from bridgerec.llm.lora import merge_adapter
    from bridgerec.methods import build_method
    from bridgerec.methods.bigrec import grounding_embedder
    from bridgerec.models import build_model_for_dataset
    from bridgerec.retrieval.index import build_index

    b = cfg.method.bigrec
    backbone = resolve_backbone(cfg.llm, cfg.work_dir, data)
    tokenizer = load_tokenizer(backbone.path, padding_side="right")
    chat = chat_format(cfg.llm, backbone, tokenizer)
    titles = _titles(data)
    if adapter_dir is None:
        sft = _tune(cfg, data, backbone, tokenizer, chat, titles, log)
        log(f"[bigrec] adapter: {sft.adapter_dir} (best epoch {sft.best_metrics.get('epoch')}, valid loss "
            f"{sft.best_metrics.get('valid_loss', float('nan')):.4f}, {sft.train_seconds:.0f} s)")
        adapter_dir, sft_record = sft.adapter_dir, {"best": sft.best_metrics, "history": sft.history,
                                                    "seconds": sft.train_seconds}
    else:
        log(f"[bigrec] step 1 done before: adapter {adapter_dir}")
        sft_record = {"best": {}, "history": [], "seconds": 0.0}

    method = build_method(cfg.method, build_model_for_dataset(cfg.model, data), {})
    log(f"[bigrec] step 2: grounding with {b.ground_with}; item vectors of {len(titles)} titles")
    embed = grounding_embedder(b.ground_with, cfg.encoder, backbone.path)  # loaded once for items and both splits
    item_vectors = embed(titles)
    prior = popularity_prior(data.pairs("train")[1], data.n_items) if b.reweight == "popularity" else None
    domain = _domain_embeddings(cfg, data, log) if b.reweight == "domain" else None
    method.set_grounding(item_vectors, prior, domain)

    splits = ("valid", "test") if test else ("valid",)
    gens = {s: generations[s] for s in splits if generations and s in generations}
    todo = [s for s in splits if s not in gens]
    own = engine is None and bool(todo)
    merged = None
    if gens:
        log(f"[bigrec] reusing the earlier generations of {', '.join(gens)}")
    if own:
        merged = tempfile.mkdtemp(prefix="bridgerec-bigrec-merged-")
        merge_adapter(backbone.path, adapter_dir, merged, cfg.llm.backbone_dtype)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # the engine's INFO lines would bury the progress
        engine = build_engine(cfg.llm, merged)
    try:
        gens.update({s: _generate(cfg, data, engine, chat, titles, s) for s in todo})
    finally:
        if own:
            engine.close()
            shutil.rmtree(merged, ignore_errors=True)

    validity, rate, vectors = {}, {}, {}
    index = build_index(item_vectors, "l2", cfg.retrieval)
    for split, (uids, g) in gens.items():
        beams = _beam_vectors(embed, g.beams)  # (beams, users, d), the best beam first
        vectors[split] = beams
        _, neg_sq = index.search(beams[0], 1)  # faiss L2 scores are minus squared distances
        nearest = np.sqrt(np.maximum(-neg_sq[:, 0].astype(np.float64), 0.0))
        validity[split] = generation_validity(g.titles, nearest, titles, b.valid_distance)
        rate[split] = g.per_second
        log(f"[bigrec] {split}: {len(uids)} titles in {g.seconds:.1f} s ({g.per_second:.1f} users/s); "
            f"{validity[split].exact:.1%} exactly a catalogue title, {validity[split].near:.1%} within "
            f"{b.valid_distance:g} of one")

    method.set_generated(gens["valid"][0], vectors["valid"])
    if b.gamma is not None or b.reweight == "none":
        gamma, table = float(b.gamma or 0.0), {}
    else:
        import torch

        choice = select_gamma(lambda u, g: method.scores(torch.as_tensor(u), g), b.gammas, data.n_users, data.n_items,
                              data.pairs("train"), data.pairs("valid"), metric=cfg.train.select_metric, ks=cfg.eval.ks,
                              user_batch_size=cfg.eval.user_batch_size)
        gamma, table = choice.gamma, choice.table
        log(f"[bigrec] gamma {gamma:g} chosen on validation {cfg.train.select_metric} "
            f"({', '.join(f'{g:g}: {v:.4f}' for g, v in table.items())})")
    method.gamma = gamma
    valid = evaluate_split(method.full_scores, data, cfg.eval, "valid")
    tested = grounding_only = None
    if test:
        method.set_generated(gens["test"][0], vectors["test"])
        tested = evaluate_split(method.full_scores, data, cfg.eval, "test")
        method.gamma = 0.0
        grounding_only = evaluate_split(method.full_scores, data, cfg.eval, "test")
        method.gamma = gamma
    return BIGRecResult(tested, grounding_only, valid, gamma, table, validity, rate, sft_record, adapter_dir,
                        {s: g.titles for s, (_, g) in gens.items()}, gens)


def export_bigrec(res: BIGRecResult, cfg: Config, out_dir: str) -> str:
    """The run's serving export in ``out_dir`` (logged as the run's ``bigrec/`` artifacts): the
    adapter (``adapter/``; the serving LLM deployment merges it into the backbone once, the merged
    weights vLLM loads, cached under its work dir), ``bigrec.json`` (gamma and its search, and the
    ``serving`` block :func:`bridgerec.serving.bigrec.apply_bigrec_run` reads: backbone, prompt
    settings, history length, title length, the grounding encoder the item index must match) and
    the generated titles. The item-embedding index and the popularity vector are the domain
    bundle's (its grounding index, built with ``encoder``, and its training counts)."""
    os.makedirs(out_dir, exist_ok=True)
    shutil.copytree(res.adapter_dir, os.path.join(out_dir, "adapter"), dirs_exist_ok=True)
    b = cfg.method.bigrec
    serving = {"backbone": cfg.llm.model, "chat_template": cfg.llm.chat_template, "prompt_version": cfg.llm.prompt_version,
               "history_len": b.history_len, "max_new_tokens": b.max_new_tokens, "num_beams": b.num_beams,
               "ground_with": b.ground_with, "reweight": b.reweight, "encoder": cfg.encoder.model_dump(mode="json")}
    with open(os.path.join(out_dir, "bigrec.json"), "w") as fh:
        json.dump({"gamma": res.gamma, "gamma_table": {str(k): v for k, v in res.gamma_table.items()},
                   "ground_with": b.ground_with, "reweight": b.reweight, "sft_history": res.sft["history"],
                   "serving": serving}, fh, indent=2)
    with open(os.path.join(out_dir, "generated.json"), "w") as fh:
        json.dump(res.generated, fh)
    return out_dir


def log_bigrec(res: BIGRecResult, cfg: Config) -> None:
    """Into the active MLflow run: the metrics of both test rows, the chosen gamma and its search,
    validity and throughput, and the serving export (:func:`export_bigrec`) as ``bigrec/``."""
    from bridgerec.tracking import log_eval
    from bridgerec.workflows.llm_methods import log_tuned_run

    if res.test is not None:
        log_eval(res.test, "test_")
        log_eval(res.test_grounding, "test_grounding_only_")
    log_eval(res.valid, "best_valid_")
    log_tuned_run(res.sft, {
        "bigrec_gamma": res.gamma,
        **{f"generation_{s}_users_per_s": v for s, v in res.users_per_s.items()},
        **{f"validity_{s}_exact": v.exact for s, v in res.validity.items()},
        **{f"validity_{s}_near": v.near for s, v in res.validity.items()},
    }, lambda d: export_bigrec(res, cfg, d), "bigrec")


def summary_lines(res: BIGRecResult, cfg: Config) -> list[str]:
    """What `bridgerec train` prints under the results table for a bigrec run."""
    b = cfg.method.bigrec
    beams = "greedy, one title per user" if b.num_beams == 1 else f"{b.num_beams} beams per user merged by rank"
    lines = [f"bigrec: gamma {res.gamma:g} (chosen on validation {cfg.train.select_metric}); {beams}; "
             f"grounding with {b.ground_with}; protocol: full ranking, known items masked"]
    for s, v in res.validity.items():
        lines.append(f"generated titles ({s}): {v.exact:.1%} exactly a catalogue title, {v.near:.1%} within "
                     f"{v.threshold:g} of one; {res.users_per_s[s]:.1f} users/s")
    lines.append(f"LoRA tuning: {res.sft['seconds']:.0f} s, best epoch {res.sft['best'].get('epoch')}, "
                 f"valid loss {res.sft['best'].get('valid_loss', float('nan')):.4f}")
    return lines
