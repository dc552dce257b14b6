"""Ray Tune sweep of a method's weights (one trial = one Ray Train run), logged as MLflow child runs.

    python jobs/tune.py --config jobs/configs/rlmrec_con_lightgcn_synthetic.yaml --space jobs/spaces/rlmrec-con.yaml [key=value ...]
    ray job submit --working-dir . -- python jobs/tune.py --config ... --space ... [--resume NAME]
"""

import sys

from bridgerec.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["tune", *sys.argv[1:]]))
