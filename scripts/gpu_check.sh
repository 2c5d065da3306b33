#!/usr/bin/env bash
# GPU check for the engine (one CUDA GPU; needs torch, transformers, peft, accelerate; no network,
# no Ray, vLLM optional). Finishes in a few minutes on one H100. See scripts/gpu_check.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 - <<'PY'
import importlib
missing = [m for m in ("torch", "transformers", "tensordict", "omegaconf", "yaml", "rouge") if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"gpu_check: missing Python packages {missing}: pip install them (or carry wheels)")
PY
timeout 480 python3 scripts/gpu_check.py "$@"
