#!/usr/bin/env bash
# Table 2 of MM-UPT (arXiv 2505.22453): MM-UPT on questions the model writes itself from each seed set
# (Geometry3K, GeoQA, MMR1), by in-context synthesizing (the seed's image, question and answer shown) and by direct
# synthesizing (the image only); each trained model evaluated on the four benchmarks, next to the paper's numbers.
#   bash examples/table2.sh                       # the paper's settings: 8 GPUs, vLLM synthesis, recipes/mmupt.yaml
#   CPU_MODE=1 bash examples/table2.sh            # tiny model, stand-in seeds, 1 step: the same chain on CPU
# Settings (environment): N_GPUS, WORK_DIR, MODEL, SYNTH_ARGS, ... in examples/common.sh, and these:
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if cpu_mode; then ALL_SEEDS="geometry3k"; else ALL_SEEDS="geometry3k geoqa mmr1"; fi
SEEDS=${SEEDS:-$ALL_SEEDS}                         # seed sets (CPU mode: one, to keep CI short)
STRATEGIES=${STRATEGIES:-in_context direct}        # verl_ext.data.synthesize --strategy
EVAL_BASE=${EVAL_BASE:-1}                          # 1: also evaluate the untrained model
BASE_LABEL=${BASE_LABEL:-Qwen2.5-VL-7B}

strategy_title() { case "$1" in in_context) echo "In-context synthesis" ;; direct) echo "Direct synthesis" ;; *) echo "$1" ;; esac; }

log "Table 2: synthesis ${STRATEGIES} from ${SEEDS}; model $MODEL; work dir $WORK_DIR"
rows=()
if [[ $EVAL_BASE == 1 ]]; then
  evaluate base "$MODEL" "$BASE_LABEL"
  rows+=("$BASE_LABEL=$(eval_dir base)")
fi
for seed in $SEEDS; do
  for strategy in $STRATEGIES; do
    run_name="synth_${strategy}_$seed"
    label="$(strategy_title "$strategy") ($(title_of "$seed"))"
    synthesize "$seed" "$strategy"
    train_and_merge "$run_name" "$MMUPT_RECIPE" "$WORK_DIR/synth/$seed/$strategy/train.parquet"
    evaluate "$run_name" "$WORK_DIR/models/$run_name" "$label"
    rows+=("$label=$(eval_dir "$run_name")")
  done
done
print_table 2 "${rows[@]}"
