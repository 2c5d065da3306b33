#!/usr/bin/env bash
# RULE on MUSE-Books: RS -> ReBO -> evaluation (VerbMem, KnowMem, PrivLeak) for the MUSE target model.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: bash run_muse.sh [options]        (every option also reads the environment variable in brackets)

  --model PATH        MUSE target model                [MODEL=muse-bench/MUSE-Books_target]
  --data-dir DIR      MUSE-Books folder (knowmem/, verbmem/, privleak/); downloaded when missing [DATA_DIR=data/muse/books]
  --rs-data FILE      RS rows (RULE's reject_target_0.5.json: QA + completion refusals) [RS_DATA=$DATA_DIR/reject_target_0.5.json]
  --rebo-data FILE    ReBO rows {prompt, solution} (RULE's rl_rejection_with_neighbor.json was never
                      released: build one with python3 -m data.synthesis) [REBO_DATA=$DATA_DIR/rl_rejection_with_neighbor.json]
  --out DIR           outputs                          [OUT=log/muse]
  --stages LIST       comma list of rs,rebo,eval       [STAGES=rs,rebo,eval]
  --rs-epochs LIST    RS checkpoints ReBO starts from  [RS_EPOCHS=1,2,3]
  --gpus N            GPUs per node                    [GPUS=4]
  -h, --help          this text

Paper defaults: RS lr 4e-7, 3 epochs, batch 8 (checkpoints 208/416/624); ReBO GRPO n=8, lr 2e-6, KL 1e-2,
reward forget_two_stage_abs, MUSE prompts without chat template in RS and ReBO ("Completion: ..." rows,
10 ICL shots from train_qa_icl before QA rows: RULE's icl_type=train); evaluation follows MUSE's own protocol.
Without a GPU this script stops and points to the CPU demo (python3 -m data.demo).
USAGE
}
MODEL=${MODEL:-muse-bench/MUSE-Books_target}; DATA_DIR=${DATA_DIR:-data/muse/books}; OUT=${OUT:-log/muse}
STAGES=${STAGES:-rs,rebo,eval}; RS_EPOCHS=${RS_EPOCHS:-1,2,3}; GPUS=${GPUS:-4}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
RS_DATA=${RS_DATA:-}; REBO_DATA=${REBO_DATA:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=$2; shift 2;; --data-dir) DATA_DIR=$2; shift 2;; --rs-data) RS_DATA=$2; shift 2;;
    --rebo-data) REBO_DATA=$2; shift 2;; --out) OUT=$2; shift 2;; --stages) STAGES=$2; shift 2;;
    --rs-epochs) RS_EPOCHS=$2; shift 2;; --gpus) GPUS=$2; shift 2;; -h|--help) usage; exit 0;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
RS_DATA=${RS_DATA:-$DATA_DIR/reject_target_0.5.json}; REBO_DATA=${REBO_DATA:-$DATA_DIR/rl_rejection_with_neighbor.json}
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "run_muse.sh needs a GPU (the paper's setting: the Llama-2-7B MUSE target model on 4 GPUs)." >&2
  echo "On a CPU machine run the embedded demo instead: python3 -m data.demo" >&2
  exit 1
fi
[ -d "$DATA_DIR/knowmem" ] || DATA_DIR=$($PY -c "from data.download import fetch_muse_books; print(fetch_muse_books('$OUT/data'))")
if [[ $STAGES == *rs* ]]; then
  [ -f "$RS_DATA" ] || { echo "RS data $RS_DATA not found (see --help)" >&2; exit 2; }
  $PY -m RS.train config=examples/rs_llama3.yaml model.model_path="$MODEL" data.train_files="$RS_DATA" \
    data.apply_chat_template=false data.prompt_format=muse data.icl_file="$DATA_DIR/knowmem/train_qa_icl.json" \
    data.max_length=640 trainer.output_dir="$OUT" trainer.experiment_name=rs \
    trainer.n_gpus_per_node="$GPUS" trainer.backend=ray
fi
for epoch in ${RS_EPOCHS//,/ }; do
  if [[ $STAGES == *rebo* ]]; then
    [ -f "$REBO_DATA" ] || { echo "ReBO data $REBO_DATA not found (see --help)" >&2; exit 2; }
    $PY -m verl.trainer.main config=examples/rebo_llama3.yaml worker.actor.model.model_path="$OUT/rs/epoch_$epoch" \
      data.train_files="$REBO_DATA" data.val_files="$DATA_DIR/rl_rejection_eval_target.json" \
      data.apply_chat_template=false data.prompt_format=muse data.icl_file="$DATA_DIR/knowmem/train_qa_icl.json" \
      worker.reward.reward_function=forget_two_stage_abs \
      evaluator.benchmark=muse evaluator.data_dir="$DATA_DIR" evaluator.suites=[muse_knowmem] \
      trainer.output_dir="$OUT" trainer.experiment_name="rebo_rs$epoch" trainer.n_gpus_per_node="$GPUS"
  fi
  if [[ $STAGES == *eval* ]]; then
    $PY -m verl.eval --model "$OUT/rebo_rs$epoch/final" --benchmark muse --data-dir "$DATA_DIR" \
      --suite muse_verbmem,muse_knowmem,muse_privleak --out "$OUT/eval_rs$epoch"
  fi
done
