"""LLM throughput: the same prompts through vLLM and transformers ``generate`` in one run, plus the
text encoder's embeddings/s.

    python jobs/bench/llm_throughput.py --model smollm2-135m [--config jobs/configs/augment_tiny.yaml]
        [--prompts 256] [--max-tokens 64] [key=value ...]

``--model`` sets ``llm.model`` (default: the config's, ``tiny``). The dataset (``cfg.dataset_dir()``)
is prepared when missing. Prompts are user-profile prompts rendered from the training histories,
in the backbone's chat format (:func:`bridgerec.llm.prompts.engine_text`); decoding is greedy with
``--max-tokens`` new tokens, and both engines must produce the same number of tokens (the ratio is
printed with both counts). Engine start-up and a short warm-up are excluded from the timings.
Prints one line per engine, the vLLM/HF ratio, the 1-minute load average before and after (other
work on the machine lowers both engines' figures) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from bridgerec.augment import Catalog, item_text
from bridgerec.config import load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.llm.backbone import chat_format, load_tokenizer, resolve_backbone
from bridgerec.llm.encoder import TextEncoder
from bridgerec.llm.engine import GenerationParams, build_engine
from bridgerec.llm.prompts import engine_text, user_profile_prompt
from bridgerec.workflows import prepare


def _time_engine(name: str, cfg, model_path: str, prompts: list[str], params: GenerationParams) -> dict:
    t0 = time.perf_counter()
    engine = build_engine(cfg.llm, model_path, engine=name)
    startup = time.perf_counter() - t0
    engine.generate(prompts[:4], params)  # warm-up
    t0 = time.perf_counter()
    gens = engine.generate(prompts, params)
    secs = time.perf_counter() - t0
    engine.close()
    tokens = sum(g.num_tokens for g in gens)
    return {"engine": name, "prompts": len(prompts), "generated_tokens": tokens, "seconds": round(secs, 3),
            "tokens_per_s": round(tokens / secs, 1), "prompts_per_s": round(len(prompts) / secs, 2),
            "startup_s": round(startup, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (default: the embedded defaults)")
    parser.add_argument("--model", help="llm.model: tiny, smollm2-135m or a model path")
    parser.add_argument("--prompts", type=int, default=256, help="number of prompts")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per prompt")
    parser.add_argument("--history", type=int, default=10, help="training items shown per profile prompt (prompt length)")
    parser.add_argument("--texts", type=int, default=2048, help="texts for the encoder benchmark")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, [*args.overrides, *([f"llm.model={args.model}"] if args.model else [])])

    dataset = DatasetDir(cfg.dataset_dir()) if os.path.exists(cfg.dataset_dir()) else prepare(cfg, log=lambda m: None)
    backbone = resolve_backbone(cfg.llm, cfg.work_dir, dataset)
    tok = load_tokenizer(backbone.path, cfg.llm.revision)
    chat = chat_format(cfg.llm, backbone, tok)
    catalog = Catalog.from_dataset(dataset)
    users = [u for u in range(dataset.n_users) if catalog.n_train(u)]
    prompts = [engine_text(user_profile_prompt(catalog.history(users[k % len(users)], args.history),
                                               version=cfg.llm.prompt_version), chat) for k in range(args.prompts)]
    load_before = os.getloadavg()[0]
    prompt_tokens = sum(len(tok(p)["input_ids"]) for p in prompts) / len(prompts)
    params = GenerationParams.from_config(cfg.llm.generation, max_tokens=args.max_tokens, temperature=0.0)

    rows = [_time_engine(name, cfg, backbone.path, prompts, params) for name in ("vllm", "hf")]
    for r in rows:
        print(f"{r['engine']:>5}: {r['tokens_per_s']:>9.1f} generated tokens/s  {r['prompts_per_s']:>8.2f} prompts/s  "
              f"({r['generated_tokens']} tokens, {r['prompts']} prompts in {r['seconds']} s; start-up {r['startup_s']} s)")
    ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    load_after = os.getloadavg()[0]
    print(f"vLLM / transformers generated tokens/s: {ratio:.2f}x (tokens: vLLM {rows[0]['generated_tokens']}, "
          f"transformers {rows[1]['generated_tokens']}); model {backbone.fingerprint}, chat template "
          f"{'off' if chat.is_plain else 'on'}, {prompt_tokens:.0f} prompt tokens on average, transformers batch "
          f"{cfg.llm.hf_batch_size}, dtype {cfg.llm.dtype}; load average (1 min) {load_before:.2f} before, {load_after:.2f} after")

    items = dataset.items()
    texts = [item_text(t, x) for t, x in zip(items["title"], items["text"].fillna(""))]
    texts = [texts[k % len(texts)] for k in range(args.texts)]
    encoder = TextEncoder(cfg.encoder)
    encoder.encode(texts[:16], progress=False)  # warm-up
    t0 = time.perf_counter()
    emb = encoder.encode(texts, progress=False)
    secs = time.perf_counter() - t0
    print(f"encoder: {len(texts) / secs:.1f} embeddings/s ({len(texts)} texts, dim {emb.shape[1]}, {secs:.2f} s, "
          f"batch {cfg.encoder.batch_size}, device {encoder.device})")
    print(json.dumps({"model": backbone.fingerprint, "engines": rows, "vllm_over_hf": round(ratio, 2),
                      "loadavg_1m": [round(load_before, 2), round(load_after, 2)], "mean_prompt_tokens": round(prompt_tokens, 1),
                      "encoder_embeddings_per_s": round(len(texts) / secs, 1)}))


if __name__ == "__main__":  # vLLM starts engine processes with spawn: keep the guard
    main()
