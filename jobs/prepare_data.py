"""Prepare a dataset directory from a source (Ray Data pipeline).

    python jobs/prepare_data.py --config jobs/configs/mf_movielens.yaml data.source.path=/data/ml-1m
"""

import sys

from bridgerec.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["data", "prepare", *sys.argv[1:]]))
