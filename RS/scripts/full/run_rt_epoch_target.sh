#!/usr/bin/env bash
# Rejection Steering (RULE stage 1) over a list of RWKU targets, one run per target, as the original
# RS/scripts/full/run_rt_epoch_target.sh (LLaMA-Factory --stage rt on <k>_<Name>/reject_target.json).
#
# Usage: bash RS/scripts/full/run_rt_epoch_target.sh [--model M] [--targets T] [--data-dir D] [--out O]
#                                                    [--config C] [--batch] [key=value ...]
# Knobs (flag or environment variable; flags win):
#   --model    MODEL     model to steer (default meta-llama/Meta-Llama-3-8B-Instruct; 'smollm2' on CPU)
#   --targets  TARGETS   RWKU targets: ids, ranges or names, e.g. 1-10, "1,3", "Stephen King" (default 1-10)
#   --data-dir DATA_DIR  RWKU folder holding Target/<k>_<Name>/ (default data/rwku)
#   --out      OUT       output root; target k goes to OUT/<k>_<Name>/epoch_{1,2,3} (default log/rs)
#   --config   CONFIG    base config (default examples/rs_llama3.yaml)
#   --batch    BATCH=1   one run on all targets' rows together (OUT/batch_<targets>) instead of one per target
#   PYTHON               interpreter (default python3)
# Remaining key=value arguments override the config (e.g. trainer.epochs=2 trainer.n_gpus_per_node=4).
# A target whose OUT/<k>_<Name>/epoch_<epochs> exists is skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
MODEL="${MODEL:-meta-llama/Meta-Llama-3-8B-Instruct}"
TARGETS="${TARGETS:-1-10}"
DATA_DIR="${DATA_DIR:-data/rwku}"
OUT="${OUT:-log/rs}"
CONFIG="${CONFIG:-examples/rs_llama3.yaml}"
BATCH="${BATCH:-0}"
PYTHON="${PYTHON:-python3}"
OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    --model) MODEL="$2"; shift 2 ;;
    --targets) TARGETS="$2"; shift 2 ;;
    --data-dir) DATA_DIR="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --batch) BATCH=1; shift ;;
    *=*) OVERRIDES+=("$1"); shift ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$ROOT"
# one Python call: the config's epoch count (to skip finished targets), then the target folder names
mapfile -t INFO < <("$PYTHON" - "$TARGETS" "$DATA_DIR" "config=$CONFIG" "model.model_path=$MODEL" \
  "data.train_files=unused.json" "${OVERRIDES[@]}" <<'PY'
import sys
from RS.config import RSConfig
from verl.utils.config import load_config
from verl.utils.rwku_targets import select_targets
print(load_config(RSConfig, sys.argv[3:]).trainer.epochs)
for target in select_targets(sys.argv[1], sys.argv[2]):
    print(target.dirname)
PY
)
[[ ${#INFO[@]} -ge 2 ]] || { echo "could not resolve targets '$TARGETS' under $DATA_DIR" >&2; exit 2; }
EPOCHS="${INFO[0]}"
DIRS=("${INFO[@]:1}")

train() {  # $1 = experiment name, $2 = comma-separated reject_target.json files
  if [[ -d "$OUT/$1/epoch_$EPOCHS" ]]; then echo "$1 already done, skipping"; return; fi
  mkdir -p "$OUT/$1"
  "$PYTHON" -m RS.train "config=$CONFIG" "model.model_path=$MODEL" "data.train_files=$2" \
    "trainer.output_dir=$OUT" "trainer.experiment_name=$1" "${OVERRIDES[@]}" 2>&1 | tee "$OUT/$1/train.log"
}

if [[ "$BATCH" == "1" ]]; then
  files=""; for d in "${DIRS[@]}"; do files="${files:+$files,}$DATA_DIR/Target/$d/reject_target.json"; done
  train "batch_${TARGETS//[^A-Za-z0-9-]/_}" "$files"
else
  for d in "${DIRS[@]}"; do echo "$d"; train "$d" "$DATA_DIR/Target/$d/reject_target.json"; done
fi
