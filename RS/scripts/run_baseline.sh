#!/usr/bin/env bash
# One runner for the offline unlearning baselines (RWKU single-target protocol): one run per target.
#
# Usage: bash RS/scripts/run_baseline.sh METHOD [--model M] [--targets T] [--data-dir D] [--out O]
#                                               [--retain FILES] [--batch] [key=value ...]
# METHOD (config examples/baselines/<METHOD>.yaml unless noted; training file per target):
#   ga          positive.json   gradient ascent (RWKU GA)
#   ga_passage  passage.json    GA* on Wikipedia passages (ga.yaml, lr 1e-6, 4 epochs, batch 4)
#   gd          positive.json   GA + retain NLL (needs --retain)
#   npo         positive.json   NPO, beta 0.2 (RWKU NPO)
#   npo_gd      positive.json   NPO + retain NLL (npo.yaml; needs --retain)
#   simnpo      positive.json   SimNPO (no reference)
#   dpo         pair.json       DPO: counterfactual (chosen) vs factual (rejected) bios (RWKU DPO)
#   idkdpo      pair.json       DPO with a target-named refusal as chosen
#   rt          reject.json     SFT on generic refusals (RWKU RT)
# Knobs (flag or environment variable; flags win):
#   --model    MODEL     default meta-llama/Meta-Llama-3-8B-Instruct ('smollm2' on CPU)
#   --targets  TARGETS   RWKU targets: ids, ranges or names (default 1-10)
#   --data-dir DATA_DIR  RWKU folder holding Target/<k>_<Name>/ (default data/rwku)
#   --out      OUT       output root; runs go to OUT/<METHOD>/<k>_<Name>/epoch_{k} (default log/baselines)
#   --retain   RETAIN    retain rows for gd / npo_gd (comma-separated files, text or QA rows)
#   --batch    BATCH=1   one run on all targets' files together (batch-target setting)
#   PYTHON               interpreter (default python3)
# Remaining key=value arguments override the config (e.g. optim.lr=1e-6 trainer.n_gpus_per_node=4).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
[[ $# -ge 1 ]] || { usage; exit 2; }
if [[ "$1" == "-h" || "$1" == "--help" ]]; then usage; exit 0; fi
METHOD="$1"; shift
MODEL="${MODEL:-meta-llama/Meta-Llama-3-8B-Instruct}"
TARGETS="${TARGETS:-1-10}"
DATA_DIR="${DATA_DIR:-data/rwku}"
OUT="${OUT:-log/baselines}"
RETAIN="${RETAIN:-}"
BATCH="${BATCH:-0}"
PYTHON="${PYTHON:-python3}"
OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --model) MODEL="$2"; shift 2 ;;
    --targets) TARGETS="$2"; shift 2 ;;
    --data-dir) DATA_DIR="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --retain) RETAIN="$2"; shift 2 ;;
    --batch) BATCH=1; shift ;;
    *=*) OVERRIDES+=("$1"); shift ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
EXTRA=()
case "$METHOD" in
  ga|npo|simnpo) CONFIG="examples/baselines/$METHOD.yaml"; FILE=positive.json ;;
  gd) CONFIG=examples/baselines/gd.yaml; FILE=positive.json ;;
  npo_gd) CONFIG=examples/baselines/npo.yaml; FILE=positive.json; EXTRA=(loss.name=npo_gd) ;;
  ga_passage) CONFIG=examples/baselines/ga.yaml; FILE=passage.json
              EXTRA=(optim.lr=1e-6 trainer.epochs=4 trainer.batch_size=4) ;;
  dpo|idkdpo) CONFIG="examples/baselines/$METHOD.yaml"; FILE=pair.json ;;
  rt) CONFIG=examples/baselines/rt.yaml; FILE=reject.json ;;
  *) echo "unknown METHOD '$METHOD'; choose one of: ga ga_passage gd npo npo_gd simnpo dpo idkdpo rt" >&2; exit 2 ;;
esac
if [[ "$METHOD" == gd || "$METHOD" == npo_gd ]]; then
  [[ -n "$RETAIN" ]] || { echo "$METHOD needs retain rows: --retain FILES (or RETAIN=...)" >&2; exit 2; }
  EXTRA+=("data.retain_files=$RETAIN")
else
  EXTRA+=("data.retain_files=")
fi
cd "$ROOT"
mapfile -t DIRS < <("$PYTHON" -c 'import sys
from verl.utils.rwku_targets import select_targets
for t in select_targets(sys.argv[1], sys.argv[2]):
    print(t.dirname)' "$TARGETS" "$DATA_DIR")

train() {  # $1 = experiment name, $2 = comma-separated training files
  mkdir -p "$OUT/$METHOD/$1"
  "$PYTHON" -m RS.train "config=$CONFIG" "model.model_path=$MODEL" "data.train_files=$2" \
    "trainer.output_dir=$OUT/$METHOD" "trainer.experiment_name=$1" "${EXTRA[@]}" "${OVERRIDES[@]}" \
    2>&1 | tee "$OUT/$METHOD/$1/train.log"
}

if [[ "$BATCH" == "1" ]]; then
  files=""; for d in "${DIRS[@]}"; do files="${files:+$files,}$DATA_DIR/Target/$d/$FILE"; done
  train "batch_${TARGETS//[^A-Za-z0-9-]/_}" "$files"
else
  for d in "${DIRS[@]}"; do echo "$METHOD $d"; train "$d" "$DATA_DIR/Target/$d/$FILE"; done
fi
