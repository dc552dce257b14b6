"""Evaluate a logged MLflow run's model on the test (or valid) split.

    python jobs/evaluate.py --run-id <run id> [--split valid]
"""

import sys

from bridgerec.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["evaluate", *sys.argv[1:]]))
