#!/usr/bin/env bash
# RULE on MUSE-Books: the model before unlearning, RS -> ReBO, the offline baselines, VerbMem / KnowMem /
# PrivLeak and the MUSE table. With a GPU: the paper's setting (the MUSE target model, downloaded books);
# without: the CPU profile on the embedded book (data/embedded_muse.py), which SmolLM2-135M is taught first.
# The stage logic lives in RS/runner.py; `bash run_muse.sh --help` lists every option.
#   bash run_muse.sh --out log/muse_smollm2
#   bash run_muse.sh --model tiny:/tmp/tiny --out /tmp/muse --smoke
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PY" -m RS.runner muse "$@"
