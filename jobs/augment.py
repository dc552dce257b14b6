"""Run LLM augmentation stages (profiles, text embeddings, pairs, attributes, prompt_aug) for a
prepared dataset directory.

    python jobs/augment.py --config jobs/configs/augment_tiny.yaml [key=value ...]
    ray job submit --working-dir . -- python jobs/augment.py --config jobs/configs/augment_tiny.yaml

Stages come from ``augment.stages`` (override e.g. ``augment.stages=[profiles,pairs]``); finished
stages are reused and interrupted ones resume (see bridgerec.augment). Same as ``bridgerec augment``.
"""

import sys

from bridgerec.cli import main

if __name__ == "__main__":  # vLLM starts engine processes with spawn: keep the guard
    raise SystemExit(main(["augment", *sys.argv[1:]]))
