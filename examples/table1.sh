#!/usr/bin/env bash
# Table 1 of MM-UPT (arXiv 2505.22453): Qwen2.5-VL-7B post-trained with MM-UPT (majority-vote self-reward, labels
# hidden) on Geometry3K, GeoQA and MMR1, and with supervised GRPO (rule reward against the labels) on the same
# data; every model evaluated on MathVision, MathVerse, MathVista and We-Math, next to the paper's numbers.
#   bash examples/table1.sh                       # the paper's settings: 8 GPUs, recipes/mmupt.yaml, grpo_supervised_7b.yaml
#   CPU_MODE=1 bash examples/table1.sh            # tiny model, stand-in data, 1 step: the same chain on CPU
# Settings (environment): N_GPUS, WORK_DIR, MODEL, ... in examples/common.sh, and these:
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if cpu_mode; then ALL_DATASETS="geometry3k"; else ALL_DATASETS="geometry3k geoqa mmr1"; fi
DATASETS=${DATASETS:-$ALL_DATASETS}                # MM-UPT rows (CPU mode: one, to keep CI short)
SUPERVISED_DATASETS=${SUPERVISED_DATASETS-$DATASETS}  # supervised GRPO rows (empty: none)
EVAL_BASE=${EVAL_BASE:-1}                          # 1: also evaluate the untrained model (the table's first row)
BASE_LABEL=${BASE_LABEL:-Qwen2.5-VL-7B}

log "Table 1: MM-UPT on ${DATASETS}; supervised GRPO on ${SUPERVISED_DATASETS:-nothing}; model $MODEL; work dir $WORK_DIR"
rows=()
if [[ $EVAL_BASE == 1 ]]; then
  evaluate base "$MODEL" "$BASE_LABEL"
  rows+=("$BASE_LABEL=$(eval_dir base)")
fi
for name in $DATASETS; do
  prepare_dataset "$name"
  train_and_merge "mmupt_$name" "$MMUPT_RECIPE" "$DATA_DIR/$name/train.parquet"
  evaluate "mmupt_$name" "$WORK_DIR/models/mmupt_$name" "MM-UPT ($(title_of "$name"))"
  rows+=("MM-UPT ($(title_of "$name"))=$(eval_dir "mmupt_$name")")
done
for name in $SUPERVISED_DATASETS; do
  prepare_dataset "$name" labels
  train_and_merge "supervised_$name" "$SUPERVISED_RECIPE" "$DATA_DIR/${name}_labels/train.parquet"
  evaluate "supervised_$name" "$WORK_DIR/models/supervised_$name" "GRPO, supervised ($(title_of "$name"))"
  rows+=("GRPO, supervised ($(title_of "$name"))=$(eval_dir "supervised_$name")")
done
print_table 1 "${rows[@]}"
