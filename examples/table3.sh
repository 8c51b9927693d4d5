#!/usr/bin/env bash
# Table 3 of MM-UPT (arXiv 2505.22453): MM-UPT on unlabeled Geometry3K applied to other backbones
# (Qwen2.5-VL-3B, MM-Eureka-7B, ThinkLite-VL-7B); each evaluated before and after on the four benchmarks, next to
# the paper's numbers.
#   bash examples/table3.sh                       # the paper's settings: 8 GPUs, recipes/mmupt.yaml
#   CPU_MODE=1 bash examples/table3.sh            # the tiny model stands in for each backbone: the same chain on CPU
# Settings (environment): N_GPUS, WORK_DIR, ... in examples/common.sh, and these:
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if cpu_mode; then ALL_BACKBONES="qwen2.5-vl-3b"; else ALL_BACKBONES="qwen2.5-vl-3b mm-eureka-7b thinklite-vl-7b"; fi
BACKBONES=${BACKBONES:-$ALL_BACKBONES}             # backbones (CPU mode: one, to keep CI short)
TRAIN_DATASET=${TRAIN_DATASET:-geometry3k}         # the paper: Geometry3K without labels
MODEL_QWEN2_5_VL_3B=${MODEL_QWEN2_5_VL_3B:-Qwen/Qwen2.5-VL-3B-Instruct}
MODEL_MM_EUREKA_7B=${MODEL_MM_EUREKA_7B:-FanqingM/MM-Eureka-Qwen-7B}
MODEL_THINKLITE_VL_7B=${MODEL_THINKLITE_VL_7B:-russwang/ThinkLite-VL-7B}

backbone_model() {  # hub id or directory of a backbone (CPU mode: the tiny model for every one)
  if cpu_mode; then echo "$MODEL"; return; fi
  case "$1" in
    qwen2.5-vl-3b) echo "$MODEL_QWEN2_5_VL_3B" ;;
    mm-eureka-7b) echo "$MODEL_MM_EUREKA_7B" ;;
    thinklite-vl-7b) echo "$MODEL_THINKLITE_VL_7B" ;;
    *) log "unknown backbone $1 (known: qwen2.5-vl-3b mm-eureka-7b thinklite-vl-7b)" >&2; exit 2 ;;
  esac
}
backbone_label() {
  case "$1" in qwen2.5-vl-3b) echo Qwen2.5-VL-3B ;; mm-eureka-7b) echo MM-Eureka-7B ;; thinklite-vl-7b) echo ThinkLite-VL-7B ;; esac
}

log "Table 3: MM-UPT on $TRAIN_DATASET for ${BACKBONES}; work dir $WORK_DIR"
prepare_dataset "$TRAIN_DATASET"
rows=()
for backbone in $BACKBONES; do
  model=$(backbone_model "$backbone")
  label=$(backbone_label "$backbone")
  evaluate "base_$backbone" "$model" "$label"
  rows+=("$label=$(eval_dir "base_$backbone")")
  TRAIN_MODEL=$model train_and_merge "mmupt_${TRAIN_DATASET}_$backbone" "$MMUPT_RECIPE" \
    "$DATA_DIR/$TRAIN_DATASET/train.parquet"
  evaluate "mmupt_${TRAIN_DATASET}_$backbone" "$WORK_DIR/models/mmupt_${TRAIN_DATASET}_$backbone" "$label + MM-UPT"
  rows+=("$label + MM-UPT=$(eval_dir "mmupt_${TRAIN_DATASET}_$backbone")")
done
print_table 3 "${rows[@]}"
