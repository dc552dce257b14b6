"""``python jobs/bench/methods.py --suite llama4rec``: Llama4Rec beside its domain model: the
direct-recommendation task (``--llama4rec-tasks ranking``) and rating prediction (``rating``).

LightGCN trains on ``--seeds`` seeds (``jobs/configs/lightgcn_synthetic.yaml``); each seed's
exported embeddings are the domain model of a Llama4Rec run with each backbone of ``--llama4rec``
(``jobs/configs/llama4rec_<backbone>_synthetic.yaml``; the first backbone on every seed, the others
on seed 0). On seed 0 of the first backbone the ablations follow: the LLM's order alone (α = 1,
"instruction tuning alone", from the same run), one α for every user ("without adaptive
aggregation": the same rankings, α chosen on validation), and without prompt augmentation (tuned
and ranked again). Throughput: prompts/s of the seed-0 adapter ranking the same validation prompts
through vLLM and through transformers, one engine after the other.

Columns: HR@3/5 and NDCG@3/5 (the paper's metrics), Recall/NDCG@20, HR@3 and NDCG@5 of long-tail
users, parse rate of the rankings on test, tuning seconds and prompts/s in the run. Protocol: test
split, full ranking with known items masked; Llama4Rec reorders the domain model's top
``n_candidates`` (beyond them its ranking is the domain model's).
"""

from __future__ import annotations

import os
import platform

import numpy as np

from bridgerec.benchmarking import write_report
from bridgerec.config import load_config
from bridgerec.workflows import prepare

CONFIGS = {"tiny": "llama4rec_tiny_synthetic.yaml", "smollm2": "llama4rec_smollm2_synthetic.yaml"}
KS = (3, 5, 10, 20)
COLUMNS = [("HR@3", None, "hr@3"), ("HR@5", None, "hr@5"), ("N@3", None, "ndcg@3"), ("N@5", None, "ndcg@5"),
           ("R@20", None, "recall@20"), ("N@20", None, "ndcg@20"), ("tail HR@3", "long_tail_users", "hr@3"),
           ("tail N@5", "long_tail_users", "ndcg@5")]


def _value(res, slice_name, metric) -> float:
    source = res.overall if slice_name is None else res.slices.get(slice_name, {})
    return float(source.get(metric, float("nan")))


def _table(rows: dict) -> str:
    def ref(n: int) -> dict:  # LightGCN over the same seeds (0..n-1) as the row
        base = rows.get("lightgcn", [])[:n]
        return {h: np.mean([_value(r, s, m) for r, _ in base]) for h, s, m in COLUMNS} if base else {}

    head = ["row", "seeds", *[h for h, _, _ in COLUMNS], "parse rate (test)", "train s", "prompts/s (run)",
            "prompts/s vLLM, same prompts", "prompts/s transformers, same prompts"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, runs in rows.items():
        cells, same = [name, str(len(runs))], ref(len(runs))
        for h, s, m in COLUMNS:
            vals = [_value(r, s, m) for r, _ in runs]
            mean = float(np.mean(vals))
            std = f" ± {np.std(vals, ddof=1):.4f}" if len(vals) > 1 else ""
            rel = f" ({100 * (mean / same[h] - 1):+.1f}%)" if name != "lightgcn" and same.get(h) else ""
            cells.append(f"{mean:.4f}{std}{rel}")
        for key, fmt in (("parse", "{:.1%}"), ("train_s", "{:.0f}"), ("run_ps", "{:.1f}"), ("vllm_ps", "{:.1f}"),
                         ("hf_ps", "{:.1f}")):
            vals = [x[key] for _, x in runs if x.get(key) is not None]
            cells.append(fmt.format(np.mean(vals)) if vals else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _throughput(cfg, data, res, n: int) -> dict:
    """Prompts/s of the run's adapter on the first ``n`` validation prompts, vLLM then transformers."""
    import shutil
    import tempfile

    from bridgerec.llm.backbone import chat_format, load_tokenizer, resolve_backbone
    from bridgerec.llm.engine import build_engine
    from bridgerec.llm.lora import merge_adapter
    from bridgerec.llm.prompts import ItemView, encode_prompt, engine_text
    from bridgerec.methods.llama4rec import generate_rankings
    from bridgerec.methods.llama4rec_data import render
    from bridgerec.workflows.llama4rec import heldout

    c = cfg.method.llama4rec
    backbone = resolve_backbone(cfg.llm, cfg.work_dir, data)
    tok = load_tokenizer(backbone.path)
    chat = chat_format(cfg.llm, backbone, tok)
    titles = data.items().sort_values("iid")["title"].astype(str).tolist()
    view = lambda i: ItemView(int(i), titles[int(i)])  # noqa: E731
    count = lambda t: len(encode_prompt(tok, engine_text(t, chat)))  # noqa: E731
    domain = tuple(np.load(c.domain_run)[k] for k in ("user_emb", "item_emb"))
    prompts = [render(p, view, augment=c.prompt_aug, version=cfg.llm.prompt_version, count=count,
                      max_tokens=c.max_prompt_tokens) for p in heldout(cfg, data, domain, "valid")[:n]]
    merged = tempfile.mkdtemp(prefix="bench-llama4rec-merged-")
    out = {}
    try:
        merge_adapter(backbone.path, res.adapter_dir, merged, cfg.llm.backbone_dtype)
        for name in ("vllm", "hf"):
            with build_engine(cfg.llm, merged, engine=name) as engine:
                generate_rankings(engine, prompts[:4], chat, c.max_new_tokens)  # warm-up
                out[f"{name}_ps"] = generate_rankings(engine, prompts, chat, c.max_new_tokens).per_second
    finally:
        shutil.rmtree(merged, ignore_errors=True)
    return out


def _extra(res) -> dict:
    return {"parse": res.rankings["test"].parse_rate, "train_s": res.sft["seconds"] or None,
            "run_ps": res.rankings["test"].prompts_per_s}


RATING_CONFIGS = {"tiny": "llama4rec_rating_tiny_synthetic.yaml"}


def _rating_section(args, config, data, stamp: str) -> str:
    """The rating task on seed 0: biased MF (``mf_rating_synthetic.yaml``) and Llama4Rec's rating
    workflow with the first backbone that has a rating config; RMSE/MAE rows and the fixed-alpha
    ablation (the same ratings, one alpha)."""
    from methods import run, save_domain_npz  # (beside this script)

    from bridgerec.workflows.llama4rec_rating import run_llama4rec_rating

    backbone = next((b for b in args.llama4rec if b in RATING_CONFIGS), None)
    if backbone is None:
        return f"Rating task: no rating config for {args.llama4rec} (have {sorted(RATING_CONFIGS)}).\n"
    keep: dict = {}
    print("[bench] mf rating model seed 0", flush=True)
    run(config("mf_rating_synthetic.yaml", 0, "mf-rating"), data, keep)
    npz = save_domain_npz(keep.pop("model"), os.path.join(os.path.abspath(args.work_dir), f"bench-l4r-mf-rating-{stamp}.npz"))
    lcfg = config(RATING_CONFIGS[backbone], 0, f"{backbone}-rating", [f"method.llama4rec.domain_run={npz}"])
    print(f"[bench] llama4rec {backbone} rating task", flush=True)
    res = run_llama4rec_rating(lcfg, data, log=print)
    rows = dict(res.ratings)
    if args.llama4rec_ablations:
        fixed = lcfg.model_copy(deep=True)
        fixed.method.llama4rec.aggregation = "fixed"
        out = run_llama4rec_rating(fixed, data, log=print, adapter_dir=res.adapter_dir, rankings=res.answers)
        rows[f"fixed alpha {out.choice['alpha']:g} (no adaptive aggregation)"] = list(out.ratings.values())[-1]
    c = lcfg.method.llama4rec
    a = res.answers["test"]
    lines = [f"## Rating prediction (seed 0)\n",
             f"Test split: every test event rated from the ratings known before it (training and validation). "
             f"Domain model: biased MF with a squared loss (`mf_rating_synthetic.yaml`). LLM: {lcfg.llm.model}, "
             f"LoRA-tuned on {res.n_examples} rating examples ({c.train_samples or 'every'} user's last training "
             f"rating, history {c.history_len}), {lcfg.train.epochs} epoch(s); alpha chosen on validation RMSE: "
             f"{res.choice}. Parse rate on test {a.parse_rate:.1%}, {a.per_second:.1f} prompts/s in the run, "
             f"tuning {res.sft['seconds']:.0f} s.\n",
             "| row | RMSE | MAE | RMSE vs global mean |", "|---|---:|---:|---:|"]
    base = next(iter(rows.values()))["rmse"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['rmse']:.4f} | {m['mae']:.4f} | {100 * (m['rmse'] / base - 1):+.1f}% |")
    return "\n".join(lines) + "\n"


def llama4rec_suite(args, stamp: str) -> None:
    from methods import fit_batch_size, run, save_domain_npz  # the suite's shared helpers (beside this script)

    from bridgerec.workflows.evaluate import popularity_baseline
    from bridgerec.workflows.llama4rec import run_llama4rec

    def config(file: str, seed: int, name: str, extra=()):
        return load_config(os.path.join(args.configs, file), [
            f"work_dir={args.work_dir}", f"data.name=synthetic-{args.preset}", f"data.source.synthetic.preset={args.preset}",
            f"train.seed={seed}", "tracking.enabled=false", f"run_name=bench-l4r-{name}-{args.preset}-s{seed}-{stamp}",
            f"eval.ks=[{','.join(map(str, KS))}]", *extra, *args.override])

    data = prepare(config("lightgcn_synthetic.yaml", 0, "prep"), log=lambda m: None)
    counts = data.manifest["counts"]
    rows: dict[str, list] = {"popularity": [(popularity_baseline(data, config("lightgcn_synthetic.yaml", 0, "p").eval,
                                                                  "test"), {})]}
    sizes: list[str] = []
    tasks = getattr(args, "llama4rec_tasks", ["ranking", "rating"])
    for seed in range(args.seeds if "ranking" in tasks else 0):
        cfg = config("lightgcn_synthetic.yaml", seed, "lightgcn")
        fit_batch_size(cfg, data)
        print(f"[bench] lightgcn seed {seed}", flush=True)
        keep: dict = {}
        test, wall, _ = run(cfg, data, keep)
        rows.setdefault("lightgcn", []).append((test, {"train_s": wall}))
        npz = save_domain_npz(keep.pop("model"), os.path.join(os.path.abspath(args.work_dir),
                                                              f"bench-l4r-lightgcn-s{seed}-{stamp}.npz"))
        for i, backbone in enumerate(args.llama4rec):
            if seed > 0 and i > 0:
                continue
            name = f"llama4rec {backbone} + lightgcn"
            lcfg = config(CONFIGS[backbone], seed, backbone, [f"method.llama4rec.domain_run={npz}"])
            print(f"[bench] {name} seed {seed}", flush=True)
            res = run_llama4rec(lcfg, data, log=print)
            extra = _extra(res)
            if seed == 0 and i == 0 and args.throughput_users:
                extra.update(_throughput(lcfg, data, res, args.throughput_users))
            rows.setdefault(name, []).append((res.test, extra))
            if seed == 0:
                c = lcfg.method.llama4rec
                sizes.append(f"{name}: {lcfg.llm.model}, {c.train_samples or 'every'} users' last training item as the "
                             f"target, {c.n_candidates} candidates, prompts <= {c.max_prompt_tokens} tokens, "
                             f"{lcfg.train.epochs} epoch(s), batch {lcfg.train.batch_size} x {lcfg.train.num_workers} "
                             f"workers, LoRA r={lcfg.llm.lora.r} on {', '.join(lcfg.llm.lora.target_modules)}; "
                             f"chosen on validation: {res.choice}")
            if seed == 0 and i == 0 and args.llama4rec_ablations:
                rows.setdefault(f"{name}, LLM order alone (instruction tuning alone)", []).append((res.test_llm, extra))
                fixed = lcfg.model_copy(deep=True)
                fixed.method.llama4rec.aggregation = "fixed"
                out = run_llama4rec(fixed, data, log=print, adapter_dir=res.adapter_dir, rankings=res.rankings)
                rows.setdefault(f"{name}, fixed alpha (no adaptive aggregation)", []).append((out.test, _extra(res)))
                sizes.append(f"{name}, fixed alpha: the seed-0 rankings, alpha {out.choice['alpha']:g} chosen on validation")
                plain = config(CONFIGS[backbone], seed, f"{backbone}-noaug",
                               [f"method.llama4rec.domain_run={npz}", "method.llama4rec.prompt_aug=false"])
                print(f"[bench] {name} without prompt augmentation", flush=True)
                out = run_llama4rec(plain, data, log=print)
                rows.setdefault(f"{name}, no prompt augmentation", []).append((out.test, _extra(out)))
                sizes.append(f"{name}, no prompt augmentation: tuned and ranked again; chosen {out.choice}")
    world = (f"synthetic `{args.preset}` ({counts['users']} users, {counts['items']} items, {counts['train']} training "
             "events)")
    if "ranking" not in tasks:
        write_report(f"# Llama4Rec, rating task, {world}\n\n" + _rating_section(args, config, data, stamp), args.out)
        return
    header = (f"# Llama4Rec beside LightGCN, {world}\n\n"
              f"Direct recommendation. Test split, full ranking with known items masked; Llama4Rec reorders LightGCN's "
              f"top candidates of the same seed (cut-offs beyond them equal LightGCN's); mean ± std over seeds; "
              f"(relative change vs LightGCN on the same seeds: a one-seed row against seed 0); tail = long-tail users; {os.cpu_count()} CPU cores, {platform.machine()}. "
              f"Not in this table: the sequential task and the data-augmentation ablation (not built yet); the rating "
              f"task is the section below it. "
              f"prompts/s same prompts: the seed-0 adapter on the first {args.throughput_users} validation prompts.\n\n"
              + "".join(f"- {line}\n" for line in sizes) + "\n")
    rating = _rating_section(args, config, data, stamp) if "rating" in tasks else ""
    write_report(header + (_table(rows) + "\n" if "ranking" in tasks else "") + ("\n" + rating if rating else ""), args.out)
