#!/usr/bin/env bash
# RULE on RWKU: the model before unlearning, RS -> ReBO, the offline baselines, evaluation and the paper's
# tables, per target (or one batch-target run with --batch). With a GPU: the paper's setting; without: the
# CPU profile (SmolLM2-135M). The stage logic lives in RS/runner.py; `bash run_rwku.sh --help` lists every option.
#   bash run_rwku.sh --targets 1 --data-dir ../shared/data/rwku --out log/rwku_smollm2
#   bash run_rwku.sh --model tiny:/tmp/tiny --targets 1 --data-dir ../shared/data/rwku --out /tmp/rwku --smoke
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PY" -m RS.runner rwku "$@"
