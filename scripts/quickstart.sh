#!/usr/bin/env bash
# Install (if needed) and run the quickstart job on the embedded synthetic defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/bridgerec quickstart "$@"
