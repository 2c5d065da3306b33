#!/usr/bin/env bash
# RULE on RWKU: for each target, RS -> ReBO -> evaluation (the paper's main setting by default).
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: bash run_rwku.sh [options]        (every option also reads the environment variable in brackets)

  --model PATH        base instruct model             [MODEL=meta-llama/Meta-Llama-3-8B-Instruct]
  --targets SPEC      RWKU targets: ids, ranges, names [TARGETS=1-10]
  --data-dir DIR      RWKU folder holding Target/ (downloaded when missing) [DATA_DIR=data/rwku]
  --out DIR           outputs: RS/ReBO runs and evaluation JSONs [OUT=log/rwku]
  --stages LIST       comma list of rs,rebo,eval       [STAGES=rs,rebo,eval]
  --rs-epochs LIST    RS checkpoints ReBO starts from  [RS_EPOCHS=2,3]
  --rebo-config YAML  ReBO config                      [REBO_CONFIG=examples/rebo_llama3.yaml]
  --rs-config YAML    RS config                        [RS_CONFIG=examples/rs_llama3.yaml]
  --gpus N            GPUs per node                    [GPUS=4]
  --batch             one batch-target run over all targets instead of one run per target [BATCH=0]
  --suites LIST       evaluation suites                [SUITES=forget,neighbor,mia,utility,naturalness]
  -h, --help          this text

Paper defaults (RULE, Llama-3-8B-Instruct): RS lr 4e-7, 3 epochs, batch 8, checkpoints at epochs 2 and 3;
ReBO GRPO n=8, 32 prompts/step, lr 2e-6, low_var_kl loss 1e-2, 20 steps. Without a GPU this script stops
and points to the CPU demo (python3 -m data.demo).
USAGE
}
MODEL=${MODEL:-meta-llama/Meta-Llama-3-8B-Instruct}; TARGETS=${TARGETS:-1-10}; DATA_DIR=${DATA_DIR:-data/rwku}
OUT=${OUT:-log/rwku}; STAGES=${STAGES:-rs,rebo,eval}; RS_EPOCHS=${RS_EPOCHS:-2,3}; GPUS=${GPUS:-4}; BATCH=${BATCH:-0}
REBO_CONFIG=${REBO_CONFIG:-examples/rebo_llama3.yaml}; RS_CONFIG=${RS_CONFIG:-examples/rs_llama3.yaml}
SUITES=${SUITES:-forget,neighbor,mia,utility,naturalness}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=$2; shift 2;; --targets) TARGETS=$2; shift 2;; --data-dir) DATA_DIR=$2; shift 2;;
    --out) OUT=$2; shift 2;; --stages) STAGES=$2; shift 2;; --rs-epochs) RS_EPOCHS=$2; shift 2;;
    --rebo-config) REBO_CONFIG=$2; shift 2;; --rs-config) RS_CONFIG=$2; shift 2;; --gpus) GPUS=$2; shift 2;;
    --batch) BATCH=1; shift;; --suites) SUITES=$2; shift 2;; -h|--help) usage; exit 0;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
# A wrong target name fails here, with the list of valid ones (no GPU needed for that check).
if [ -d "$DATA_DIR/Target" ]; then $PY -m data.runner_targets "$TARGETS" "$DATA_DIR" >/dev/null || exit 2; fi
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "run_rwku.sh needs a GPU (the paper's setting: Llama-3-8B-Instruct on 4 GPUs)." >&2
  echo "On a CPU machine run the embedded demo instead: python3 -m data.demo" >&2
  exit 1
fi
mapfile -t LINES < <($PY -m data.runner_targets "$TARGETS" "$DATA_DIR" --fetch --cache-dir "$OUT/data") || exit 2
DATA_DIR=${LINES[0]#ROOT=}; DIRS=("${LINES[@]:1}")
run_target() {  # $1 = run name, $2 = target folder name(s) (comma-joined for batch runs), $3 = eval targets
  local name=$1 files evaltargets=$3
  files=$(for d in ${2//,/ }; do printf '%s,' "$DATA_DIR/Target/$d"; done)
  files=${files%,}
  if [[ $STAGES == *rs* ]]; then
    $PY -m RS.train config="$RS_CONFIG" model.model_path="$MODEL" \
      data.train_files="$(echo "$files" | sed 's|\([^,]*\)|\1/reject_target.json|g')" \
      trainer.output_dir="$OUT/$name" trainer.experiment_name=rs trainer.n_gpus_per_node="$GPUS"
  fi
  for epoch in ${RS_EPOCHS//,/ }; do
    if [[ $STAGES == *rebo* ]]; then
      $PY -m verl.trainer.main config="$REBO_CONFIG" worker.actor.model.model_path="$OUT/$name/rs/epoch_$epoch" \
        data.train_files="$(echo "$files" | sed 's|\([^,]*\)|\1/rl_rejection_with_fb_neighbor_target.json|g')" \
        data.val_files="$(echo "$files" | sed 's|\([^,]*\)|\1/rl_rejection_eval_target.json|g')" \
        evaluator.data_dir="$DATA_DIR" evaluator.targets="$evaltargets" \
        trainer.output_dir="$OUT/$name" trainer.experiment_name="rebo_rs$epoch" trainer.n_gpus_per_node="$GPUS"
    fi
    if [[ $STAGES == *eval* ]]; then
      $PY -m verl.eval --model "$OUT/$name/rebo_rs$epoch/final" --benchmark rwku --targets "$evaltargets" \
        --data-dir "$DATA_DIR" --suite "$SUITES" --out "$OUT/$name/eval_rs$epoch"
    fi
  done
}
if [ "$BATCH" = 1 ]; then
  run_target "batch_${TARGETS//[^0-9A-Za-z]/_}" "$(IFS=,; echo "${DIRS[*]}")" "$TARGETS"
else
  for dir in "${DIRS[@]}"; do run_target "$dir" "$dir" "$dir"; done
fi
