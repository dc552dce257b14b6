"""Does the LLM's augmentation carry signal? Backbones compared on the synthetic world, whose hidden
topics are known.

    python jobs/bench/llm_augment_quality.py [--models tiny,smollm2-135m] [--preset small]
        [--users 150] [--pairs 200] [--items 150] [--out bench_results/llm_augment_quality.md] [key=value ...]

Every prompt is the augmentation stage's own (the renderers of :mod:`bridgerec.llm.prompts` in the
backbone's chat format), decoded greedily by the offline vLLM engine with the stage's sampling
parameters. A user's hidden topic is the most frequent hidden topic of their training items.

- **pairs** (Llama4Rec): for a user, one unseen item of the user's topic and one unseen item of a
  topic absent from their history, in random A/B order. *agreement* = share of answers picking the
  item of the user's topic (chance 50%); *answer A* = share answering A (position bias). Constrained
  as the stage runs it (``allowed_token_ids`` = A/B, one token); *parse* = share of unconstrained
  8-token answers that start with A or B.
- **attributes** (Llama4Rec): the item's ``topic`` is asked for from its title and description
  (``attribute_prompt``, the stage's stop at a newline). *match* = share whose answer's MiniLM
  embedding is closest to the item's hidden topic name among all topic names (chance 1/topics);
  *parse* = share of non-empty answers.
- **profiles** (RLMRec): user profiles from the training history; *parse* = share whose JSON parses
  with a ``summarization`` key. *same/different* = mean MiniLM cosine of two users' profile
  summaries for pairs of users who share a hidden topic over pairs who do not (higher = the
  profiles separate tastes). The *item-text baseline* is the same ratio for the users' item-text
  embeddings (the mean of their training items' MiniLM embeddings, `method.semantic.source:
  item_text`).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter

import numpy as np

from bridgerec.augment import Catalog, item_text
from bridgerec.augment.pairs import choice_token_ids
from bridgerec.augment.profiles import parse_profile, parses_as_profile
from bridgerec.benchmarking import write_report
from bridgerec.config import load_config
from bridgerec.data.synthetic import SyntheticWorld
from bridgerec.llm.backbone import chat_format, load_tokenizer, resolve_backbone
from bridgerec.llm.encoder import TextEncoder
from bridgerec.llm.engine import GenerationParams, build_engine
from bridgerec.llm.prompts import PAIR_CHOICES, attribute_prompt, engine_text, pair_preference_prompt, user_profile_prompt
from bridgerec.workflows import prepare


def item_topics(cfg, dataset) -> tuple[np.ndarray, list[str]]:
    """(I,) hidden topic index of every item, from the seeded world the dataset was prepared from."""
    world = SyntheticWorld(cfg.data.source.synthetic, cfg.data.seed)
    world_items = world.items()
    truth = dict(zip(world_items["item_id"], world_items["topic"]))
    items = dataset.items()
    names = world.topic_names
    return np.array([names.index(truth[i]) for i in items["item_id"]]), names


def user_topics(catalog: Catalog, topics: np.ndarray, uids) -> dict[int, tuple[int, set[int]]]:
    """uid -> (majority hidden topic of the training items, every topic in them)."""
    out = {}
    for u in uids:
        t = topics[catalog.train_items(int(u))]
        if len(t):
            out[int(u)] = (Counter(t.tolist()).most_common(1)[0][0], set(t.tolist()))
    return out


def pair_tasks(catalog, topics, utop, n, seed):
    rng = np.random.default_rng(seed)
    by_topic = {k: np.flatnonzero(topics == k) for k in np.unique(topics)}
    rows = []
    users = [u for u, (_, seen_topics) in utop.items() if catalog.n_train(u) >= 3 and len(seen_topics) < len(by_topic)]
    for u in rng.permutation(users)[:n]:
        top, seen_topics = utop[int(u)]
        seen = set(catalog.train_items(int(u)).tolist())  # the training-visible catalog only, like the pairs stage
        good = [i for i in by_topic[top] if i not in seen]
        other = rng.choice([k for k in by_topic if k not in seen_topics])
        if not good:
            continue
        a, b = int(rng.choice(good)), int(rng.choice(by_topic[other]))
        flip = bool(rng.random() < 0.5)
        rows.append((int(u), (b, a) if flip else (a, b), 1 if flip else 0))  # index of the right answer
    return rows


def run_pairs(engine, chat, tok, catalog, rows, cfg):
    prompts = [engine_text(pair_preference_prompt(catalog.history(u, cfg.augment.pairs.max_history),
                                                  catalog.item(ab[0]), catalog.item(ab[1])), chat) for u, ab, _ in rows]
    allowed = choice_token_ids(tok)
    gens = engine.generate(prompts, GenerationParams(max_tokens=1, allowed_token_ids=allowed))
    answers = [g.text.strip()[:1] for g in gens]
    free = engine.generate(prompts, GenerationParams(max_tokens=8))
    parsed = [g.text.strip()[:1] in PAIR_CHOICES for g in free]
    right = [PAIR_CHOICES[r] for _, _, r in rows]
    return {"pairs n": len(rows), "pairs agreement": np.mean([a == r for a, r in zip(answers, right)]),
            "pairs answer A": np.mean([a == "A" for a in answers]), "pairs parse (unconstrained)": np.mean(parsed)}


def run_attributes(engine, chat, catalog, iids, topics, names, encoder, cfg):
    prompts = [engine_text(attribute_prompt(catalog.item(i), "topic", {"text": catalog.item(i).text}), chat)
               for i in iids]
    gens = engine.generate(prompts, GenerationParams(max_tokens=cfg.augment.attributes.max_tokens, stop=("\n",)))
    values = [g.text.strip() for g in gens]
    emb = encoder.encode([v or "(none)" for v in values], progress=False)
    centres = encoder.encode(names, progress=False)
    guess = (emb @ centres.T).argmax(axis=1)
    return {"attributes n": len(iids), "attributes match": float(np.mean(guess == topics[iids])),
            "attributes chance": 1 / len(names), "attributes parse": float(np.mean([bool(v) for v in values])),
            "_attribute_examples": values[:3]}


def same_over_different(emb: np.ndarray, labels: np.ndarray) -> float:
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    iu = np.triu_indices(len(labels), 1)
    same = (labels[:, None] == labels[None, :])[iu]
    return float(sim[iu][same].mean() / sim[iu][~same].mean())


def run_profiles(engine, chat, catalog, uids, utop, encoder, cfg):
    p = cfg.augment.profiles
    prompts = [engine_text(user_profile_prompt(catalog.history(u, p.max_history), max_text_chars=p.max_text_chars), chat)
               for u in uids]
    gens = engine.generate(prompts, GenerationParams(max_tokens=p.max_tokens))
    summaries = [parse_profile(g.text)[0] or "(none)" for g in gens]
    parsed = [parses_as_profile(g.text) for g in gens]
    labels = np.array([utop[u][0] for u in uids])
    ratio = same_over_different(encoder.encode(summaries, progress=False), labels)
    return {"profiles n": len(uids), "profiles parse (JSON)": float(np.mean(parsed)), "profiles same/different": ratio,
            "_profile_examples": summaries[:2]}


def item_text_ratio(catalog, uids, utop, encoder, dataset) -> float:
    items = dataset.items()
    texts = [item_text(t, x) for t, x in zip(items["title"], items["text"].fillna(""))]
    emb = encoder.encode(texts, progress=False)
    users = np.stack([emb[catalog.train_items(u)].mean(axis=0) for u in uids])
    return same_over_different(users, np.array([utop[u][0] for u in uids]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,smollm2-135m", help="comma-separated llm.model values")
    ap.add_argument("--preset", default="small", help="synthetic preset")
    ap.add_argument("--users", type=int, default=150, help="users profiled")
    ap.add_argument("--pairs", type=int, default=200, help="pair questions")
    ap.add_argument("--items", type=int, default=150, help="items whose topic is filled")
    ap.add_argument("--work-dir", default="bridgerec_work")
    ap.add_argument("--out", default="bench_results/llm_augment_quality.md")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)
    base = [f"work_dir={args.work_dir}", f"data.name=synthetic-{args.preset}", f"data.source.synthetic.preset={args.preset}",
            "llm.dtype=float32", *args.overrides]
    cfg = load_config(None, base)
    dataset = prepare(cfg, log=lambda m: None)
    catalog = Catalog.from_dataset(dataset)
    topics, names = item_topics(cfg, dataset)
    utop = user_topics(catalog, topics, range(dataset.n_users))
    rng = np.random.default_rng(0)
    prof_users = [int(u) for u in rng.permutation(sorted(utop))[:args.users]]
    attr_items = rng.permutation(dataset.n_items)[:args.items]
    pairs = pair_tasks(catalog, topics, utop, args.pairs, seed=1)
    encoder = TextEncoder(cfg.encoder)
    results = {}
    for model in args.models.split(","):
        mcfg = load_config(None, [*base, f"llm.model={model}"])
        t0 = time.perf_counter()
        backbone = resolve_backbone(mcfg.llm, mcfg.work_dir, dataset)
        tok = load_tokenizer(backbone.path)
        chat = chat_format(mcfg.llm, backbone, tok)
        with build_engine(mcfg.llm, backbone.path, engine="vllm") as engine:
            r = {**run_pairs(engine, chat, tok, catalog, pairs, mcfg),
                 **run_attributes(engine, chat, catalog, attr_items, topics, names, encoder, mcfg),
                 **run_profiles(engine, chat, catalog, prof_users, utop, encoder, mcfg)}
        r["seconds"] = time.perf_counter() - t0
        results[model] = r
        print(f"[bench] {model}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items() if not k.startswith("_")), flush=True)
    baseline = item_text_ratio(catalog, prof_users, utop, encoder, dataset)
    write_report(report(args, dataset, names, results, baseline), args.out)


def report(args, dataset, names, results, baseline) -> str:
    models = list(results)
    rows = [("pairs agreement with the hidden topic (constrained A/B)", "pairs agreement", "0.500"),
            ("pairs answering A", "pairs answer A", "–"),
            ("pairs parse without constraint", "pairs parse (unconstrained)", "–"),
            ("attribute `topic` matches the hidden topic", "attributes match", f"{1 / len(names):.3f}"),
            ("attribute non-empty", "attributes parse", "–"),
            ("profiles parse as JSON", "profiles parse (JSON)", "–"),
            ("profiles: cosine same-topic / different-topic users", "profiles same/different", f"item text {baseline:.3f}"),
            ("wall seconds (build + engine + all prompts)", "seconds", "–")]
    lines = [f"# LLM augmentation quality on synthetic `{args.preset}` ({dataset.n_users} users, {dataset.n_items} items, "
             f"{len(names)} hidden topics)", "",
             f"`python jobs/bench/llm_augment_quality.py --models {args.models} --preset {args.preset} --users {args.users} "
             f"--pairs {args.pairs} --items {args.items}`; vLLM offline engine, greedy, float32, {os.cpu_count()} CPU cores, "
             f"{platform.machine()}. {results[models[0]]['pairs n']} pair questions, {results[models[0]]['attributes n']} "
             f"items, {results[models[0]]['profiles n']} users (the same for every model).", "",
             "| measure | " + " | ".join(f"`{m}`" for m in models) + " | chance / baseline |",
             "|---|" + "---:|" * len(models) + "---:|"]
    for label, key, ref in rows:
        lines.append(f"| {label} | " + " | ".join(f"{results[m][key]:.3f}" if key != "seconds" else f"{results[m][key]:.0f}"
                                                  for m in models) + f" | {ref} |")
    lines += ["", "Examples (first items / users):", ""]
    for m in models:
        lines.append(f"- `{m}` attribute answers: " + "; ".join(repr(v[:60]) for v in results[m]["_attribute_examples"]))
        lines.append(f"- `{m}` profile summaries: " + "; ".join(repr(v[:160]) for v in results[m]["_profile_examples"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # vLLM starts engine processes with spawn: keep the guard
    main()
