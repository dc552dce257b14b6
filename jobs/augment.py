"""Run LLM augmentation stages (profiles, text embeddings, pairs, attributes, prompt_aug) for a
prepared dataset directory.

    python jobs/augment.py --config jobs/configs/augment_tiny.yaml [key=value ...]
    ray job submit --working-dir . -- python jobs/augment.py --config jobs/configs/augment_tiny.yaml

Stages come from ``augment.stages`` (override e.g. ``augment.stages=[profiles,pairs]``); finished
stages are reused and interrupted ones resume (see bridgerec.augment).
"""

from __future__ import annotations

import argparse

from bridgerec.augment import run_augmentations
from bridgerec.config import load_config
from bridgerec.runtime import init_ray


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    init_ray(cfg.ray)
    run_augmentations(cfg, cfg.augment.stages)


if __name__ == "__main__":  # vLLM starts engine processes with spawn: keep the guard
    main()
