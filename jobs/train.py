"""Train a domain model with Ray Train, evaluate it and log it to MLflow.

    python jobs/train.py --config jobs/configs/mf_synthetic.yaml [key=value ...]
    ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/mf_synthetic.yaml
"""

import sys

from bridgerec.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
