#!/usr/bin/env bash
# Two Ray "nodes" on one machine (a head and a worker), for trying multi-node placement locally:
#   bash cluster/local-multinode.sh start   |   bash cluster/local-multinode.sh stop
# Then: RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 -- python jobs/train.py ...
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export RAY_AUTH_MODE=token
case "${1:-start}" in
  start)
    ray get-auth-token --generate >/dev/null
    ray start --head --port=6379 --dashboard-host=127.0.0.1 --dashboard-port=8265 --num-cpus=4 --disable-usage-stats
    ray start --address=127.0.0.1:6379 --num-cpus=4 --disable-usage-stats
    ray status ;;
  stop)
    ray stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
