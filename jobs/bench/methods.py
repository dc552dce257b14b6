"""Run: python jobs/bench/methods.py [--preset small] [--seeds 3] [--epochs N] [--sources item_text,profiles] [--out bench_results/methods.md] [--override k=v ...]
     python jobs/bench/methods.py --suite bigrec [--bigrec tiny,smollm2] [--bigrec-seeds 3] [--out bench_results/bigrec.md]
     python jobs/bench/methods.py --suite bdlm [--bdlm tiny,smollm2] [--bdlm-domains lightgcn,mf] [--seeds 3] [--out bench_results/bdlm.md]
     python jobs/bench/methods.py --suite llama4rec [--llama4rec tiny,smollm2] [--seeds 3] [--out bench_results/llama4rec.md]

Benchmark of the representation-alignment methods against the domain model alone, on LightGCN.

``base``, ``rlmrec-con``, ``rlmrec-gen`` and ``darec`` train on the same prepared synthetic
dataset (``--preset``) with the same seeds (``train.seed`` = 0 .. seeds-1) on 2 Ray Train workers,
from the shipped configs (``jobs/configs/lightgcn_synthetic.yaml`` for ``base``,
``jobs/configs/<method>_lightgcn_synthetic.yaml`` for the others: same data, model and train
blocks, each method's own section and loss weights). Each run's best-validation checkpoint is
evaluated on the test split (full ranking, training and validation items masked).

Printed and written as markdown to ``--out``: Recall@10/20 and NDCG@10/20 over all test users and
on the long-tail-user slice, Recall@20 on the cold-item slice, each mean ± std over seeds with the
relative change of the mean against ``base``, and the wall time per run (training + test
evaluation; the semantic inputs are computed once, before the clock, and cached on disk).

``--sources`` runs every alignment method once per semantic source (``method.semantic.source``):
``item_text`` (MiniLM embeddings of the item texts; a user is the mean of their training items)
and ``profiles`` (MiniLM embeddings of LLM profiles, which must have been generated first on the
same work dir, e.g. with SmolLM2:
``bridgerec augment --config jobs/configs/augment_smollm2_synthetic.yaml``). A ``profiles`` row's
relative change is against the same method on ``item_text``.

``--suite bigrec`` is the generative suite: BIGRec (``jobs/configs/bigrec_<backbone>_synthetic.yaml``:
the ``tiny`` backbone on every window of the training histories, SmolLM2-135M few-shot on the
config's ``train_samples`` users) beside popularity, base LightGCN and SASRec (``--seeds``), each
BIGRec run giving two rows: grounding alone (gamma 0) and with popularity reweighting (gamma
chosen on validation). Columns: NDCG@K and HR@K at K = 1, 5, 10, 20, overall and on long-tail
users, training wall time, and generation throughput of the tuned model (users/s through vLLM,
and through transformers on the first ``--throughput-users`` validation users, in the same
run). Protocol: full ranking, known items masked (BIGRec's own scripts do not mask the history).

``--suite bdlm``: each domain model of ``--bdlm-domains`` alone (its shipped config; the first on
``--seeds`` seeds, the others on seed 0), then BDLM preloaded from that seed's trained domain
model with each backbone of ``--bdlm`` (the first on every seed of its domain, the tiny one with
every event's prompt through the LLM unless ``--bdlm-tiny-samples``; the others on seed 0 as their
config sizes them), then the
ablations of the main configuration on seed 0 (``--bdlm-ablation-rows`` picks some): no entity
tokens (ids as text), random entity init, sequential (LLM then domain model), no LLM feature in the
domain model, no mutual learning, nothing pre-trained, and the title task instead of next item.
Columns: HR@1/5/10, NDCG@10/20, Recall@20, tail
HR@10 and NDCG@20, cold-item Recall@20, seconds per training epoch, samples/s and peak memory per
Ray Train worker. Same protocol (test split, full ranking, known items masked).

``--suite llama4rec``: Llama4Rec reranking LightGCN's candidates, with its ablations; see
``jobs/bench/methods_llama4rec.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from bridgerec.benchmarking import write_report
from bridgerec.config import Config, load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult
from bridgerec.methods.inputs import load_method_inputs
from bridgerec.training import train
from bridgerec.workflows import evaluate_model, prepare

METHODS = {
    "base": "lightgcn_synthetic.yaml",
    "rlmrec-con": "rlmrec_con_lightgcn_synthetic.yaml",
    "rlmrec-gen": "rlmrec_gen_lightgcn_synthetic.yaml",
    "darec": "darec_lightgcn_synthetic.yaml",
}
COLUMNS = [  # (header, slice or None for all users, metric)
    ("R@10", None, "recall@10"), ("R@20", None, "recall@20"), ("N@10", None, "ndcg@10"), ("N@20", None, "ndcg@20"),
    ("tail R@10", "long_tail_users", "recall@10"), ("tail R@20", "long_tail_users", "recall@20"),
    ("tail N@10", "long_tail_users", "ndcg@10"), ("tail N@20", "long_tail_users", "ndcg@20"),
    ("cold R@20", "cold_items", "recall@20"),
]


def bench_config(args: argparse.Namespace, method: str, seed: int, stamp: str, source: str | None = None) -> Config:
    # the run name carries everything that makes a run different: a run started under the name of a
    # finished one resumes it (restores its last checkpoint and trains no further)
    name = f"bench-methods-{method}-{args.preset}-s{seed}" + (f"-{source}" if source else "") + f"-{stamp}"
    overrides = [
        f"work_dir={args.work_dir}", f"data.name=synthetic-{args.preset}", f"data.source.synthetic.preset={args.preset}",
        f"train.seed={seed}", "tracking.enabled=false", f"run_name={name}",
    ]
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    overrides += args.override
    return load_config(os.path.join(args.configs, METHODS[method]), overrides)


def fit_batch_size(cfg: Config, data: DatasetDir) -> None:
    """Small presets: lower the batch so that every worker runs at least 4 steps per epoch."""
    n_train = int(data.manifest["counts"]["train"])
    most = max(32, n_train // (cfg.train.num_workers * 4))
    if cfg.train.batch_size > most:
        print(f"[bench] train.batch_size {cfg.train.batch_size} -> {most} ({n_train} training events)")
        cfg.train.batch_size = most


def run(cfg: Config, data: DatasetDir, keep: dict | None = None) -> tuple[EvalResult, float, tuple[int, int]]:
    """(test result, wall seconds, (best epoch, last epoch run)); ``keep["model"]`` gets the trained model."""
    load_method_inputs(cfg, data)  # semantic inputs: computed and cached before the clock
    t0 = time.perf_counter()
    res = train(cfg, data)
    if keep is not None:
        keep["model"], keep["history"] = res.model, res.history
    test = evaluate_model(res.model, data, cfg.eval, "test")  # sequence models: + validation history
    epochs = (int(res.best_metrics.get("epoch", 0)), int(res.history[-1]["epoch"]) if res.history else 0)
    return test, time.perf_counter() - t0, epochs


def save_domain_npz(model, path: str) -> str:
    """A trained model's exported (user, item) embeddings as the .npz a method's domain_run reads."""
    users, items = (t.detach().cpu().numpy() for t in model.export_embeddings())
    np.savez(path, user_emb=users, item_emb=items)
    return path


def _value(res: EvalResult, slice_name: str | None, metric: str) -> float:
    source = res.overall if slice_name is None else res.slices.get(slice_name, {})
    return float(source.get(metric, float("nan")))


def table(results: dict[str, list[tuple[EvalResult, float, tuple[int, int]]]]) -> str:
    """Markdown: one row per method, ``mean ± std (relative change of the mean vs base)``."""
    def stats(values: list[float]) -> tuple[float, float]:
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    means = {row: {h: stats([_value(r, s, m) for r, *_ in runs])[0] for h, s, m in COLUMNS}
             for row, runs in results.items()}
    head = ["method", *[h for h, _, _ in COLUMNS], "best / last epoch", "wall s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for method, runs in results.items():
        ref = means.get(method.replace(" (profiles)", " (item_text)") if method.endswith("(profiles)") else "base", {})
        cells = [method]
        for h, s, m in COLUMNS:
            mean, std = stats([_value(r, s, m) for r, *_ in runs])
            rel = "" if method == "base" or not ref.get(h) else f" ({100 * (mean / ref[h] - 1):+.1f}%)"
            cells.append(f"{mean:.4f} ± {std:.4f}{rel}")
        cells.append(" ".join(f"{b}/{last}" for *_, (b, last) in runs))  # per seed: early stopping at work
        wall, wall_std = stats([w for _, w, _ in runs])
        cells.append(f"{wall:.1f} ± {wall_std:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


BIGREC_CONFIGS = {"tiny": "bigrec_tiny_synthetic.yaml", "smollm2": "bigrec_smollm2_synthetic.yaml"}
GEN_KS = (1, 5, 10, 20)
GEN_COLUMNS = [*((f"N@{k}", None, f"ndcg@{k}") for k in GEN_KS), *((f"HR@{k}", None, f"hr@{k}") for k in GEN_KS),
               *((f"tail N@{k}", "long_tail_users", f"ndcg@{k}") for k in GEN_KS),
               *((f"tail HR@{k}", "long_tail_users", f"hr@{k}") for k in GEN_KS)]


def _gen_table(rows: dict[str, list[tuple[EvalResult, dict]]]) -> str:
    """Markdown for the generative suite: mean ± std over seeds, relative change vs base LightGCN."""
    def mean_std(values):
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    ref = {h: mean_std([_value(r, s, m) for r, _ in rows["lightgcn"]])[0] for h, s, m in GEN_COLUMNS} if "lightgcn" in rows else {}
    head = ["row", "seeds", *[h for h, _, _ in GEN_COLUMNS], "train s", "users/s in the run (vLLM)",
            "users/s vLLM, same users", "users/s transformers, same users"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, runs in rows.items():
        cells = [name, str(len(runs))]
        for h, s, m in GEN_COLUMNS:
            mean, std = mean_std([_value(r, s, m) for r, _ in runs])
            rel = f" ({100 * (mean / ref[h] - 1):+.0f}%)" if name != "lightgcn" and ref.get(h) else ""
            cells.append(f"{mean:.4f}" + (f" ± {std:.4f}" if len(runs) > 1 else "") + rel)
        for key in ("train_s", "run_users_s", "vllm_users_s", "hf_users_s"):
            vals = [x[key] for _, x in runs if x.get(key) is not None]
            cells.append(f"{np.mean(vals):.1f}" if vals else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _throughput(cfg: Config, data: DatasetDir, adapter_dir: str, n_users: int) -> dict[str, float]:
    """Users/s of the tuned model writing titles for the first ``n_users`` validation users, through
    vLLM and through transformers (the same prompts, greedy, one engine after the other)."""
    import shutil
    import tempfile

    from bridgerec.llm.backbone import chat_format, load_tokenizer, resolve_backbone
    from bridgerec.llm.engine import build_engine
    from bridgerec.llm.lora import merge_adapter
    from bridgerec.llm.prompts import ItemView
    from bridgerec.methods.bigrec import generate_titles, next_item_prompts
    from bridgerec.models.histories import histories_for

    backbone = resolve_backbone(cfg.llm, cfg.work_dir, data)
    chat = chat_format(cfg.llm, backbone, load_tokenizer(backbone.path))
    titles = data.items().sort_values("iid")["title"].astype(str).tolist()
    uids = np.unique(data.pairs("valid")[0])[:n_users]
    prompts = next_item_prompts(histories_for(data, ("train",)), uids, lambda i: ItemView(i, titles[i]),
                                cfg.method.bigrec.history_len, chat)
    merged = tempfile.mkdtemp(prefix="bench-bigrec-merged-")
    out = {}
    try:
        merge_adapter(backbone.path, adapter_dir, merged, cfg.llm.backbone_dtype)
        for name in ("vllm", "hf"):
            with build_engine(cfg.llm, merged, engine=name) as engine:
                generate_titles(engine, prompts[:4], cfg.method.bigrec.max_new_tokens)  # warm-up
                out[f"{name}_users_s"] = generate_titles(engine, prompts, cfg.method.bigrec.max_new_tokens).per_second
    finally:
        shutil.rmtree(merged, ignore_errors=True)
    return out


VARIANTS = ("beams", "llm_hidden", "lightgcn")


def _variants(args, cfg: Config, data: DatasetDir, res, backbone: str, domain_npz: str, rows: dict, sizes: list) -> None:
    """The seed-0 adapter of ``backbone`` again (no retraining), each of ``--variants``: ``beams``
    (``--beams`` beams per user merged by rank, popularity reweighting; generates again),
    ``llm_hidden`` (grounding with the LLM's last hidden state, the paper's choice, instead of the
    text encoder) and ``lightgcn`` (reweighting by LightGCN's scores instead of popularity); the
    last two reuse the seed-0 run's greedy titles. Each picks its own gamma on validation."""
    from bridgerec.workflows.bigrec import run_bigrec

    variants = {"beams": (f"bigrec {backbone}, {args.beams} beams + popularity", {"num_beams": args.beams}),
                "llm_hidden": (f"bigrec {backbone}, llm_hidden grounding + popularity", {"ground_with": "llm_hidden"}),
                "lightgcn": (f"bigrec {backbone} + lightgcn scores", {"reweight": "domain", "domain_run": domain_npz})}
    for key in args.variants:
        row, changes = variants[key]
        if key == "lightgcn" and not os.path.exists(domain_npz):
            print(f"[bench] {row}: skipped (needs --baselines lightgcn)", flush=True)
            continue
        v = cfg.model_copy(deep=True)
        v.method.bigrec = v.method.bigrec.model_validate({**v.method.bigrec.model_dump(), **changes})
        print(f"[bench] {row} (the seed-0 adapter)", flush=True)
        out = run_bigrec(v, data, log=print, adapter_dir=res.adapter_dir,
                         generations=None if key == "beams" else res.generations)
        rows.setdefault(row, []).append((out.test, {"run_users_s": out.users_per_s["test"]}))
        sizes.append(f"{row}: gamma chosen on validation {out.gamma:g}; the seed-0 adapter"
                     + ("" if key == "beams" else ", its greedy titles"))


def _adapter(args, backbone: str, seed: int) -> tuple[str | None, dict]:
    """With ``--adapters STAMP``: the adapter an earlier run of this suite tuned for (backbone, seed)
    and its training record (seconds); else (None, {}): tune here."""
    from bridgerec.training.sft import read_training_record

    if not args.adapters:
        return None, {}
    path = os.path.join(os.path.abspath(args.work_dir), "models", "adapters",
                        f"bench-gen-bigrec-{backbone}-{args.preset}-s{seed}-{args.adapters}")
    if not os.path.isdir(path):
        raise SystemExit(f"--adapters {args.adapters}: no adapter {path} (tuned by an earlier run of this suite)")
    return path, read_training_record(path) or {}


def bigrec_suite(args: argparse.Namespace, stamp: str) -> None:
    from bridgerec.workflows.bigrec import run_bigrec
    from bridgerec.workflows.evaluate import popularity_baseline

    ks = "eval.ks=[1,5,10,20]"
    args.override = [*args.override, ks]
    data = prepare(bench_config(args, "base", 0, stamp), log=lambda m: None)
    counts = data.manifest["counts"]
    rows: dict[str, list[tuple[EvalResult, dict]]] = {}
    cfg0 = bench_config(args, "base", 0, stamp)
    rows["popularity"] = [(popularity_baseline(data, cfg0.eval, "test"), {})]
    domain_npz = os.path.join(os.path.abspath(args.work_dir), f"bench-bigrec-lightgcn-{stamp}.npz")
    for name, file in (("lightgcn", "lightgcn_synthetic.yaml"), ("sasrec", "sasrec_synthetic.yaml")):
        if name not in args.baselines:
            continue
        for seed in range(args.seeds):
            cfg = load_config(os.path.join(args.configs, file), [
                f"work_dir={args.work_dir}", f"data.name=synthetic-{args.preset}", f"data.source.synthetic.preset={args.preset}",
                f"train.seed={seed}", "tracking.enabled=false", f"run_name=bench-gen-{name}-{args.preset}-s{seed}-{stamp}",
                *args.override])
            fit_batch_size(cfg, data)
            print(f"[bench] {name} seed {seed}", flush=True)
            keep: dict = {}
            test, wall, _ = run(cfg, data, keep)
            rows.setdefault(name, []).append((test, {"train_s": wall}))
            if name == "lightgcn" and seed == 0:  # the domain model of the "+ lightgcn scores" variant
                save_domain_npz(keep["model"], domain_npz)
    sizes = []
    for backbone in args.bigrec:
        runs = []
        for seed in range(args.bigrec_seeds if backbone == args.bigrec[0] else 1):
            cfg = load_config(os.path.join(args.configs, BIGREC_CONFIGS[backbone]), [
                f"work_dir={args.work_dir}", f"data.name=synthetic-{args.preset}", f"data.source.synthetic.preset={args.preset}",
                f"train.seed={seed}", "tracking.enabled=false", f"run_name=bench-gen-bigrec-{backbone}-{args.preset}-s{seed}-{stamp}",
                *args.override])
            print(f"[bench] bigrec {backbone} seed {seed}", flush=True)
            adapter, record = _adapter(args, backbone, seed)
            res = run_bigrec(cfg, data, log=print, adapter_dir=adapter)
            runs.append(res)
            extra = {"train_s": res.sft["seconds"] if adapter is None else record.get("seconds"),
                     "run_users_s": res.users_per_s["test"]}
            if seed == 0 and args.throughput_users:
                extra.update(_throughput(cfg, data, res.adapter_dir, args.throughput_users))
            rows.setdefault(f"bigrec {backbone} (gamma 0)", []).append((res.test_grounding, extra))
            rows.setdefault(f"bigrec {backbone} + popularity", []).append((res.test, extra))
            if seed == 0 and args.variants:
                _variants(args, cfg, data, res, backbone, domain_npz, rows, sizes)
        b = cfg.method.bigrec
        per_seed = "" if len(runs) == 1 else " (per seed)"
        gammas = ", ".join(f"{r.gamma:g}" for r in runs)
        exact = ", ".join(f"{r.validity['test'].exact:.1%}" for r in runs)
        near = ", ".join(f"{r.validity['test'].near:.1%}" for r in runs)
        sizes.append(f"bigrec {backbone}: {cfg.llm.model}, {b.train_samples or 'all'} "
                     f"{'users drawn with train.seed' if b.train_samples else 'windows'}, {cfg.train.epochs} epoch(s), "
                     f"batch {cfg.train.batch_size} x {cfg.train.num_workers} workers, prompts <= {b.max_length} tokens, "
                     f"grounding {b.ground_with}; gamma chosen on validation {gammas}{per_seed}; "
                     f"validity (test) {exact} exact titles, "
                     f"{near} within {b.valid_distance:g}{per_seed}")
    header = (f"# BIGRec beside popularity, LightGCN and SASRec, synthetic `{args.preset}` "
              f"({counts['users']} users, {counts['items']} items, {counts['train']} training events)\n\n"
              f"Test split, full ranking with known items masked (BIGRec's own scripts do not mask the history); "
              f"mean ± std over seeds; (relative change vs LightGCN); tail = long-tail users; "
              f"{os.cpu_count()} CPU cores, {platform.machine()}. users/s: titles generated per second by the tuned model "
              + (f"(in the run: vLLM on every test user, mean over seeds; same users: both engines, one after the other, on "
                 f"the first {args.throughput_users} validation users with the seed-0 adapter)" if args.throughput_users
                 else "(in the run: vLLM on every test user, mean over seeds; the same-users comparison was not run)")
              + (f". Adapters tuned by the earlier run {args.adapters} and reused here (train s: that run's tuning time)"
                 if args.adapters else "") + ".\n\n"
              + "".join(f"- {line}\n" for line in sizes) + "\n")
    write_report(header + _gen_table(rows) + "\n", args.out)

BDLM_BACKBONES = {"tiny": "tiny", "smollm2": "smollm2-135m"}
BDLM_KS = (1, 5, 10, 20)
BDLM_COLUMNS = [("HR@1", None, "hr@1"), ("HR@5", None, "hr@5"), ("HR@10", None, "hr@10"), ("N@10", None, "ndcg@10"),
                ("N@20", None, "ndcg@20"), ("R@20", None, "recall@20"), ("tail HR@10", "long_tail_users", "hr@10"),
                ("tail N@20", "long_tail_users", "ndcg@20"), ("cold R@20", "cold_items", "recall@20")]
BDLM_ABLATIONS = {  # row suffix -> overrides of the main configuration (one seed)
    "no entity tokens (ids as text)": ["method.bdlm.entity_ids=text"],
    "random entity init": ["llm.entity_tokens.init=random"],
    "sequential (LLM then domain model)": ["method.bdlm.schedule=sequential", "method.bdlm.llm_epochs=1"],
    "no LLM feature in the domain model": ["method.bdlm.llm_feature=false"],
    "no mutual learning (gamma 0)": ["method.bdlm.gamma=0"],
    "nothing pre-trained": ["method.bdlm.domain_run=null", "method.bdlm.domain_init=fresh"],
    "title task": ["method.bdlm.llm_task=title"],  # not an ablation: the other llm task
}


def _bdlm_row(args, file: str, seed: int, name: str, extra: list[str], data: DatasetDir, rows: dict, sizes: list) -> dict:
    """Train and test-evaluate one run of ``file`` (base or bdlm); appends its row, returns the run's record."""
    cfg = load_config(os.path.join(args.configs, file), [
        f"work_dir={args.work_dir}", f"data.name=synthetic-{args.preset}", f"data.source.synthetic.preset={args.preset}",
        f"train.seed={seed}", "tracking.enabled=false", f"run_name=bench-bdlm-{name.replace(' ', '_')}-s{seed}-{args.stamp}",
        f"eval.ks=[{','.join(map(str, BDLM_KS))}]", *extra, *args.override])
    fit_batch_size(cfg, data)
    print(f"[bench] {name} seed {seed}", flush=True)
    keep: dict = {}
    test, wall, (best, last) = run(cfg, data, keep)
    hist = keep["history"]
    record = {"wall_s": wall, "s_per_epoch": sum(h.get("epoch_s", 0.0) for h in hist) / max(len(hist), 1),
              "samples_s": float(np.mean([h["samples_per_s"] for h in hist])) if hist else float("nan"),
              "peak_mib": max((h.get("peak_rss_mib_per_worker", 0.0) for h in hist), default=float("nan")),
              "epochs": f"{best}/{last}", "model": keep["model"]}
    rows.setdefault(name, []).append((test, record))
    if cfg.method.name == "bdlm" and seed == 0:
        b = cfg.method.bdlm
        sizes.append(f"{name}: {cfg.llm.model}, {cfg.train.epochs} epoch(s), batch {cfg.train.batch_size} x "
                     f"{cfg.train.num_workers} workers ({cfg.train.strategy}"
                     + (f" ZeRO-{cfg.train.zero_stage}" if cfg.train.strategy == "deepspeed" else "") + "), "
                     + (f"{b.llm_samples} prompt(s) per step" if b.llm_samples else "every event's prompt") + " through the LLM, "
                     f"prompts <= {b.max_length} tokens "
                     f"(history {b.history_len}), gamma {b.gamma:g}, llm_lr {b.llm_lr}, lr {cfg.train.lr}")
    return record


def _bdlm_table(rows: dict) -> str:
    def mean_std(values):
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    head = ["row", "seeds", *[h for h, _, _ in BDLM_COLUMNS], "s / epoch", "samples/s", "peak MiB / worker",
            "best / last epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, runs in rows.items():
        domain = name.split(" + ")[-1].split(",")[0] if name.startswith("bdlm") else None
        ref = rows.get(domain)
        cells = [name, str(len(runs))]
        for h, s, m in BDLM_COLUMNS:
            mean, std = mean_std([_value(r, s, m) for r, _ in runs])
            base = mean_std([_value(r, s, m) for r, _ in ref])[0] if ref else 0.0
            rel = f" ({100 * (mean / base - 1):+.1f}%)" if ref and base else ""
            cells.append(f"{mean:.4f}" + (f" ± {std:.4f}" if len(runs) > 1 else "") + rel)
        for key, fmt in (("s_per_epoch", "{:.1f}"), ("samples_s", "{:.0f}"), ("peak_mib", "{:.0f}")):
            cells.append(fmt.format(np.mean([x[key] for _, x in runs])))
        cells.append(" ".join(x["epochs"] for _, x in runs))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bdlm_suite(args: argparse.Namespace, stamp: str) -> None:
    """Each domain model (``--bdlm-domains``; the first on ``--seeds`` seeds, the others on seed 0)
    trained alone from its shipped config, then BDLM on it (``jobs/configs/bdlm_<domain>_synthetic.yaml``,
    preloaded from that seed's trained domain model) with each backbone of ``--bdlm`` (the first on
    every seed of its domain, the others on seed 0), then the ablations of the main configuration
    (the first domain and backbone, seed 0)."""
    args.stamp = stamp
    data = prepare(bench_config(args, "base", 0, stamp), log=lambda m: None)
    counts = data.manifest["counts"]
    rows: dict[str, list] = {}
    sizes: list[str] = []
    main = None
    for d, domain in enumerate(args.bdlm_domains):
        for seed in range(args.seeds if d == 0 else 1):
            rec = _bdlm_row(args, f"{domain}_synthetic.yaml", seed, domain, [], data, rows, sizes)
            npz = save_domain_npz(rec.pop("model"), os.path.join(os.path.abspath(args.work_dir),
                                                                  f"bench-bdlm-{domain}-s{seed}-{stamp}.npz"))
            for i, backbone in enumerate(args.bdlm):
                if seed > 0 and i > 0:
                    continue
                extra = [f"method.bdlm.domain_run={npz}", f"llm.model={BDLM_BACKBONES[backbone]}"]
                if backbone == "tiny":  # every event's prompt through the tiny LLM (full size) unless told
                    extra.append(f"method.bdlm.llm_samples={args.bdlm_tiny_samples or 'null'}")
                name = f"bdlm {backbone} + {domain}"
                _bdlm_row(args, f"bdlm_{domain}_synthetic.yaml", seed, name, extra, data, rows, sizes)
                if main is None:
                    main = (domain, backbone, extra)
        for name in list(rows):
            for _, rec in rows[name]:
                rec.pop("model", None)
    if main and args.bdlm_ablations:
        domain, backbone, extra = main
        for suffix, changes in BDLM_ABLATIONS.items():
            if args.bdlm_ablation_rows and suffix not in args.bdlm_ablation_rows:
                continue
            _bdlm_row(args, f"bdlm_{domain}_synthetic.yaml", 0, f"bdlm {backbone} + {domain}, {suffix}",
                      [*extra, *changes], data, rows, sizes)
            rows[f"bdlm {backbone} + {domain}, {suffix}"][-1][1].pop("model", None)
    header = (f"# BDLM beside its domain models, synthetic `{args.preset}` "
              f"({counts['users']} users, {counts['items']} items, {counts['train']} training events)\n\n"
              f"Test split, full ranking with training and validation items masked; mean ± std over seeds; "
              f"(relative change vs the domain model alone, same seeds); tail = long-tail users, cold = cold items; "
              f"{os.cpu_count()} CPU cores, {platform.machine()}. Each BDLM run is preloaded from (and its domain "
              f"model starts from) the domain-model run of the same seed in this table. s / epoch and samples/s: "
              f"training only (BDLM's epoch includes the LLM-feature pass over every user); peak MiB: the largest "
              f"resident memory of any Ray Train worker.\n\n" + "".join(f"- {line}\n" for line in sizes) + "\n")
    write_report(header + _bdlm_table(rows) + "\n", args.out)



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help="synthetic size preset (default: small)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method (default: 3)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs of the shipped configs")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="methods to run (default: all)")
    p.add_argument("--configs", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"),
                   help="directory of the shipped configs (default: jobs/configs beside this script)")
    p.add_argument("--sources", default="item_text", help="comma-separated method.semantic.source values for the "
                   "alignment methods: item_text, profiles (default: item_text)")
    p.add_argument("--work-dir", default="bridgerec_work", help="work dir (datasets, Ray results)")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every run (e.g. train.strategy=deepspeed)")
    p.add_argument("--out", default="bench_results/methods.md", help="markdown output path")
    p.add_argument("--suite", choices=("alignment", "bigrec", "bdlm", "llama4rec"), default="alignment",
                   help="alignment: the representation-alignment methods (default); bigrec: the generative suite; "
                        "bdlm: BDLM beside its domain models, with ablations; llama4rec: Llama4Rec on LightGCN, with ablations")
    p.add_argument("--llama4rec", type=lambda v: v.split(","), default=["tiny", "smollm2"],
                   help="llama4rec suite: backbones, comma-separated (tiny, smollm2; the first gets --seeds, the others one)")
    p.add_argument("--llama4rec-ablations", action=argparse.BooleanOptionalAction, default=True,
                   help="llama4rec suite: run the ablation rows (default: yes)")
    p.add_argument("--llama4rec-tasks", type=lambda v: v.split(","), default=["ranking", "rating"],
                   help="llama4rec suite: tasks, comma-separated (ranking: direct recommendation on LightGCN; rating: "
                        "rating prediction on biased MF, one seed, the first backbone)")
    p.add_argument("--bdlm", type=lambda v: v.split(","), default=["tiny", "smollm2"],
                   help="bdlm suite: backbones, comma-separated (tiny, smollm2; the first gets --seeds, the others one)")
    p.add_argument("--bdlm-domains", type=lambda v: v.split(","), default=["lightgcn", "mf"],
                   help="bdlm suite: domain models, comma-separated (lightgcn, mf; the first is the ablations' main one)")
    p.add_argument("--bdlm-tiny-samples", type=int, default=None,
                   help="bdlm suite: prompts per step through the tiny backbone (default: every event of the batch)")
    p.add_argument("--bdlm-ablations", action=argparse.BooleanOptionalAction, default=True,
                   help="bdlm suite: run the ablation rows (default: yes)")
    p.add_argument("--bdlm-ablation-rows", type=lambda v: v.split(","), default=None, metavar="ROW,ROW",
                   help=f"bdlm suite: only these ablation rows (default: all: {', '.join(BDLM_ABLATIONS)})")
    p.add_argument("--bigrec", type=lambda v: v.split(","), default=["smollm2", "tiny"],
                   help="bigrec suite: backbones, comma-separated (tiny, smollm2; the first gets --bigrec-seeds)")
    p.add_argument("--bigrec-seeds", type=int, default=1, help="bigrec suite: seeds of the first backbone's row (default 1)")
    p.add_argument("--baselines", type=lambda v: v.split(","), default=["lightgcn", "sasrec"],
                   help="bigrec suite: domain-model rows, comma-separated (lightgcn, sasrec; default both)")
    p.add_argument("--adapters", default=None, metavar="STAMP",
                   help="bigrec suite: reuse the adapters an earlier run tuned (its stamp, as in "
                        "<work-dir>/models/adapters/bench-gen-bigrec-<backbone>-<preset>-s<seed>-STAMP): no tuning here")
    p.add_argument("--variants", nargs="?", const=",".join(VARIANTS), default="", type=lambda v: [x for x in v.split(",") if x],
                   help="bigrec suite: also rerun each backbone's seed-0 adapter as these variants, comma-separated "
                        f"({', '.join(VARIANTS)}; bare --variants: all): --beams beams per user, llm_hidden grounding, "
                        "LightGCN's scores instead of popularity")
    p.add_argument("--beams", type=int, default=4, help="bigrec suite: beams per user of the --variants row (default 4)")
    p.add_argument("--throughput-users", type=int, default=200,
                   help="bigrec and llama4rec suites: validation users for the vLLM vs transformers throughput (0: skip)")
    args = p.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.suite == "bigrec":
        if args.out == p.get_default("out"):
            args.out = "bench_results/bigrec.md"
        bad = [b for b in args.bigrec if b not in BIGREC_CONFIGS]
        if bad:
            p.error(f"--bigrec: unknown backbone(s) {bad}; choose from {sorted(BIGREC_CONFIGS)}")
        bad = [v for v in args.variants if v not in VARIANTS]
        if bad:
            p.error(f"--variants: unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
        bigrec_suite(args, stamp)
        return
    if args.suite == "bdlm":
        if args.out == p.get_default("out"):
            args.out = "bench_results/bdlm.md"
        bad = [b for b in args.bdlm if b not in BDLM_BACKBONES] + [d for d in args.bdlm_domains if d not in ("mf", "lightgcn")]
        if bad:
            p.error(f"--bdlm / --bdlm-domains: unknown {bad}; backbones {sorted(BDLM_BACKBONES)}, domains lightgcn, mf")
        bdlm_suite(args, stamp)
        return
    if args.suite == "llama4rec":
        from methods_llama4rec import CONFIGS as L4R_CONFIGS, llama4rec_suite  # (beside this script)

        if args.out == p.get_default("out"):
            args.out = "bench_results/llama4rec.md"
        bad = [b for b in args.llama4rec if b not in L4R_CONFIGS]
        if bad:
            p.error(f"--llama4rec: unknown backbone(s) {bad}; choose from {sorted(L4R_CONFIGS)}")
        llama4rec_suite(args, stamp)
        return
    data = prepare(bench_config(args, "base", 0, stamp), log=lambda m: None)
    counts = data.manifest["counts"]
    results: dict[str, list[tuple[EvalResult, float, tuple[int, int]]]] = {}
    sources = args.sources.split(",")
    for method in args.methods:
        for source in ([None] if method == "base" else sources):
            row = method if source is None or len(sources) == 1 else f"{method} ({source})"
            for seed in range(args.seeds):
                cfg = bench_config(args, method, seed, stamp, source)
                if source is not None:
                    cfg.method.semantic.source = source
                fit_batch_size(cfg, data)
                print(f"[bench] {row} seed {seed}: {cfg.train.epochs} epochs", flush=True)
                results.setdefault(row, []).append(run(cfg, data))
    cfg = bench_config(args, "base", 0, stamp)
    header = (f"# Alignment methods on LightGCN, synthetic `{args.preset}` "
              f"({counts['users']} users, {counts['items']} items, {counts['train']} training events)\n\n"
              f"seeds 0..{args.seeds - 1}, epochs {args.epochs or cfg.train.epochs} (best validation {cfg.train.select_metric}), "
              f"{cfg.train.num_workers} Ray Train workers ({cfg.train.strategy}), {os.cpu_count()} CPU cores, "
              f"{platform.machine()}; semantic source {args.sources}; mean ± std over seeds, (relative change of the mean "
              f"vs base; a `(profiles)` row vs the same method on `(item_text)`); "
              f"tail = long-tail users, cold = cold items.\n\n")
    text = header + table(results) + "\n"
    write_report(text, args.out)


if __name__ == "__main__":
    main()
