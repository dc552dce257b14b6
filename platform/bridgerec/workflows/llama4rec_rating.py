"""`bridgerec train` for Llama4Rec's rating task (``method.llama4rec.task: rating``): the LLM rates
held-out (user, item) pairs from the user's rated history, blended with a rating domain model.

1. Instruction tuning: ``train_samples`` rating examples from the TRAINING split
   (:func:`~bridgerec.methods.llama4rec_rating.rating_examples`: the user's last training rating
   is the answer, the rated items before it the history) tune a LoRA adapter with Ray Train (the
   listwise task's :func:`~bridgerec.workflows.llama4rec.tune_rows`). ``tune: false`` rates with
   the base backbone.
2. Rating: every validation and test event is rated from the history known then (training
   ratings for validation, training and validation ratings for test), greedy; an answer without a
   rating on the scale takes the domain model's rating and is counted.
3. Aggregation: r̂ = α_u · r_LLM + (1 − α_u) · r_domain clipped to the training scale, with
   α_u from the long-tail rule (``adaptive``: α1, α2), one α (``fixed``), 1 (``llm``) or 0
   (``domain``), chosen on validation RMSE (lower is better).

The domain model (``domain_run``) is a rating model: an MF run with ``model.objective: rating``,
whose exported user and item vectors' inner product is its predicted rating
(:class:`~bridgerec.models.mf.MF`), clipped to the training split's scale.

Reported on test: RMSE and MAE of the global mean (the baseline), the domain model, the LLM alone
and the chosen blend, the parse rate, and ratings/s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from bridgerec.config import Config
from bridgerec.console import say
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation.ratings import rating_triples

__all__ = ["Llama4RecRatingResult", "run_llama4rec_rating", "log_llama4rec_rating", "rating_summary_lines",
           "export_llama4rec_rating"]

SPLITS_KNOWN = {"valid": ("train",), "test": ("train", "valid")}
"""The splits whose ratings are known when a split's events are rated."""


@dataclass
class Llama4RecRatingResult:
    ratings: dict[str, dict[str, float]]  # test rows, baseline first: name -> {"rmse", "mae"}
    valid: dict[str, float]  # the chosen blend on validation
    choice: dict
    table: dict[str, float]  # the validation search: setting -> RMSE
    answers: dict  # split -> RatingAnswers
    sft: dict
    adapter_dir: Optional[str]
    n_examples: int = 0
    n_train: Optional[np.ndarray] = None
    test = None  # the rating task ranks nothing: no ranking row


def _ratings_of(data: DatasetDir, splits) -> dict[tuple[int, int], float]:
    out: dict[tuple[int, int], float] = {}
    for s in splits:  # later splits last: a pair rated again keeps its latest rating
        u, i, r = rating_triples(data, s)
        out.update(zip(zip(u.tolist(), i.tolist()), r.tolist()))
    return out


def _check(cfg: Config) -> None:
    from bridgerec.config import ConfigError

    if not cfg.method.llama4rec.domain_run:
        raise ConfigError("method.llama4rec.domain_run is required: a rating model's run (model.objective=rating, "
                          "runs:/<run id>/model) on the same dataset, whose predictions the LLM's are blended with")


def _prompts(cfg: Config, data: DatasetDir, split: str, view, scale):
    from bridgerec.methods.llama4rec_rating import heldout_rating_prompts, render_rating
    from bridgerec.models.histories import histories_for

    c = cfg.method.llama4rec
    known = histories_for(data, SPLITS_KNOWN[split], before=split if split == "test" else None)
    u, i, _ = rating_triples(data, split)
    prompts = heldout_rating_prompts(*known, _ratings_of(data, SPLITS_KNOWN[split]), u, i, history_len=c.history_len)
    return [render_rating(p, view, scale, cfg.llm.prompt_version) for p in prompts]


def _examples(cfg: Config, data: DatasetDir, view, scale):
    from bridgerec.methods.llama4rec_rating import rating_examples, render_rating
    from bridgerec.models.histories import histories_for

    c = cfg.method.llama4rec
    examples = rating_examples(*histories_for(data, ("train",)), _ratings_of(data, ("train",)),
                               samples=c.train_samples, history_len=c.history_len, seed=cfg.train.seed)
    return [render_rating(p, view, scale, cfg.llm.prompt_version) for p in examples]


def _metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    from bridgerec.evaluation.metrics import rating_metrics

    return rating_metrics(pred, true)


def run_llama4rec_rating(cfg: Config, data: DatasetDir, log=say, engine=None, *, test: bool = True,
                         adapter_dir: Optional[str] = None, rankings=None) -> Llama4RecRatingResult:
    """The three steps (Ray must be initialised for step 1). ``engine``: an already loaded engine to
    rate with; ``adapter_dir``: an adapter tuned before (step 1 skipped); ``rankings``: an earlier
    result's ``answers`` (not generated again)."""
    from bridgerec.methods.llama4rec_core import aggregate_rating
    from bridgerec.methods.llama4rec_rating import encode_rating_examples, generate_ratings
    from bridgerec.workflows.llama4rec import alpha_label, alpha_settings, alphas_for, llm_side, tune_rows, tuned_engine
    from bridgerec.workflows.llm_methods import load_domain_run

    _check(cfg)
    c = cfg.method.llama4rec
    users, items = load_domain_run(cfg, data, c.domain_run, "method.llama4rec.domain_run")
    train_r = rating_triples(data, "train")[2]
    scale = (float(train_r.min()), float(train_r.max()))
    log(f"[llama4rec] rating task: domain model {c.domain_run}, ratings on [{scale[0]:g}, {scale[1]:g}]")
    backbone, tokenizer, chat, view = llm_side(cfg, data)

    sft_record, n_examples = {"best": {}, "history": [], "seconds": 0.0}, 0
    if adapter_dir is None and c.tune and not rankings:
        rows = encode_rating_examples(tokenizer, _examples(cfg, data, view, scale), chat=chat)
        sft, n_examples = tune_rows(cfg, backbone, tokenizer, rows, log, "rating examples")
        adapter_dir = sft.adapter_dir
        sft_record = {"best": sft.best_metrics, "history": sft.history, "seconds": sft.train_seconds}

    splits = ("valid", "test") if test else ("valid",)
    answers = {s: rankings[s] for s in splits if rankings and s in rankings}
    todo = [s for s in splits if s not in answers]
    if todo:
        with tuned_engine(cfg, backbone, adapter_dir, engine) as eng:
            for s in todo:
                answers[s] = generate_ratings(eng, _prompts(cfg, data, s, view, scale), scale, chat)
                log(f"[llama4rec] {s}: {len(answers[s].values)} ratings, {answers[s].per_second:.1f} prompts/s, "
                    f"{answers[s].parse_rate:.1%} parsed (the rest take the domain model's rating)")

    n_train = np.bincount(data.pairs("train")[0], minlength=data.n_users)
    sides = {}  # split -> (uids, true ratings, domain ratings, LLM ratings): read once, blended per setting
    for split in answers:
        u, i, true = rating_triples(data, split)
        dom = np.clip(np.einsum("nd,nd->n", users[u], items[i]).astype(np.float64), *scale)
        sides[split] = (u, true, dom, np.where(np.isfinite(answers[split].values), answers[split].values, dom))

    def predict(split: str, setting: dict) -> tuple[np.ndarray, np.ndarray]:
        u, true, dom, llm = sides[split]
        return aggregate_rating(llm, dom, alphas_for(setting, u, n_train), *scale), true

    table, best_setting = {}, None
    for setting in alpha_settings(c):
        table[alpha_label(setting)] = _metrics(*predict("valid", setting))["rmse"]
        if best_setting is None or table[alpha_label(setting)] < table[alpha_label(best_setting)]:
            best_setting = setting
    valid = _metrics(*predict("valid", best_setting))
    log(f"[llama4rec] {c.aggregation} aggregation: {alpha_label(best_setting)} chosen on validation RMSE "
        f"({valid['rmse']:.4f}; {len(table)} settings searched)")
    rows: dict[str, dict[str, float]] = {}
    if test:
        true = sides["test"][1]
        rows[f"global mean ({train_r.mean():.2f})"] = _metrics(np.full(len(true), train_r.mean()), true)
        rows["domain rating model (alpha 0)"] = _metrics(*predict("test", {"aggregation": "domain", "alpha": 0.0}))
        rows["LLM alone (alpha 1)"] = _metrics(*predict("test", {"aggregation": "llm", "alpha": 1.0}))
        rows[f"llama4rec ({alpha_label(best_setting)})"] = _metrics(*predict("test", best_setting))
    return Llama4RecRatingResult(rows, valid, best_setting, table, answers, sft_record, adapter_dir, n_examples, n_train)


def export_llama4rec_rating(res: Llama4RecRatingResult, cfg: Config, out_dir: str) -> str:
    """The adapter (when tuned) and ``llama4rec.json`` (task, the chosen α, its validation search,
    the α rule's long-tail range, prompt settings) in ``out_dir``."""
    import json
    import shutil

    from bridgerec.methods.llama4rec_core import AlphaRule

    os.makedirs(out_dir, exist_ok=True)
    if res.adapter_dir:
        shutil.copytree(res.adapter_dir, os.path.join(out_dir, "adapter"), dirs_exist_ok=True)
    rule = None
    if res.choice["aggregation"] == "adaptive" and res.n_train is not None:
        r = AlphaRule.from_counts(res.n_train, res.choice["alpha1"], res.choice["alpha2"])
        rule = {"alpha1": r.alpha1, "alpha2": r.alpha2, "ell_min": r.ell_min, "ell_max": r.ell_max}
    c = cfg.method.llama4rec
    with open(os.path.join(out_dir, "llama4rec.json"), "w") as fh:
        json.dump({"task": "rating", "choice": res.choice, "table": res.table, "alpha_rule": rule,
                   "sft_history": res.sft["history"],
                   "settings": {"backbone": cfg.llm.model, "chat_template": cfg.llm.chat_template,
                                "prompt_version": cfg.llm.prompt_version, "domain_run": c.domain_run,
                                "history_len": c.history_len, "seed": cfg.train.seed}}, fh, indent=2)
    return out_dir


def log_llama4rec_rating(res: Llama4RecRatingResult, cfg: Config) -> None:
    """Into the active MLflow run: each test row's RMSE/MAE (``test_*`` the chosen blend,
    ``test_domain_*``, ``test_llm_*``, ``baseline_global_mean_test_*``), the chosen α, parse
    rates and throughput, and the export as ``llama4rec/``."""
    import mlflow

    from bridgerec.workflows.llm_methods import log_tuned_run

    metrics = {f"best_valid_{k}": v for k, v in res.valid.items()}
    if res.ratings:
        (_, base), (_, dom), (_, llm), (_, blend) = res.ratings.items()
        for prefix, row in (("baseline_global_mean_test_", base), ("test_domain_", dom), ("test_llm_", llm),
                            ("test_", blend)):
            metrics.update({f"{prefix}{k}": v for k, v in row.items()})
    metrics.update({f"rating_{s}_parse_rate": a.parse_rate for s, a in res.answers.items()})
    metrics.update({f"rating_{s}_prompts_per_s": a.per_second for s, a in res.answers.items()})
    mlflow.log_params({f"llama4rec_chosen_{k}": v for k, v in res.choice.items()})
    log_tuned_run(res.sft, metrics, lambda d: export_llama4rec_rating(res, cfg, d), "llama4rec")


def rating_summary_lines(res: Llama4RecRatingResult, cfg: Config) -> list[str]:
    """What `bridgerec train` prints under the rating table of a rating-task run."""
    c = cfg.method.llama4rec
    lines = [f"llama4rec rating task: {c.aggregation} aggregation chosen on validation RMSE; protocol: every "
             "test event rated from the ratings known before it"]
    for s, a in res.answers.items():
        lines.append(f"ratings ({s}): {a.parse_rate:.1%} parsed, {a.per_second:.1f} prompts/s")
    if res.sft["history"]:
        lines.append(f"LoRA tuning: {res.sft['seconds']:.0f} s on {res.n_examples} examples")
    return lines
