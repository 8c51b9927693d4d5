#!/usr/bin/env bash
# First SFT, second RL, third UPT, at laptop scale (CPU, about 30 minutes on 2 cores).
#
#   bash examples/toy_repro.sh                 # 3 seeds, the full toy run
#   QUICK=1 bash examples/toy_repro.sh         # 1 seed, few steps (the test suite's version)
#
# Stage 1: SFT of a tiny Qwen2.5-VL on labelled toy visual-math questions (verl's SFT trainer), which
#          also teaches it to write new questions about an image.
# Stage 2: supervised GRPO with the labels (baseline).
# Stage 3: MM-UPT: GRPO with the majority-vote reward on the same questions without labels, and on
#          questions the SFT model synthesized itself (in-context synthesis).
# Then: held-out accuracy per variant, mean ± std over seeds, and per-step curves.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
WORK_DIR=${WORK_DIR:-$PWD/toy_repro}
if [[ "$QUICK" == 1 ]]; then
  SEEDS=${SEEDS:-0}; SFT_STEPS=${SFT_STEPS:-30}; RL_STEPS=${RL_STEPS:-2}
  N_SFT=${N_SFT:-256}; N_RL=${N_RL:-64}; N_TEST=${N_TEST:-32}
else
  SEEDS=${SEEDS:-0 1 2}; SFT_STEPS=${SFT_STEPS:-600}; RL_STEPS=${RL_STEPS:-8}
  N_SFT=${N_SFT:-2048}; N_RL=${N_RL:-512}; N_TEST=${N_TEST:-96}
fi
VARIANTS=${VARIANTS:-grpo_supervised mmupt mmupt_synth}
ROLLOUT_N=${ROLLOUT_N:-8}        # responses per prompt (the vote's group)
BATCH=${BATCH:-16}               # prompts per step
LR=${LR:-2e-4}                   # RL learning rate for the tiny model
TEMPERATURE=${TEMPERATURE:-1.0}  # rollout temperature
# A short in-context synthesis prompt: the long default one makes question-writing SFT rows ~350
# tokens and the SFT stage 3x slower on a CPU.
SYNTH_PROMPT=${SYNTH_PROMPT:-synth_in_context_short}

log() { printf '\n[toy_repro %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
run() { log "$*"; "$@"; }

export HF_HUB_OFFLINE=1
# One BLAS thread per process: on 2 cores, 2 threads per process made SFT steps up to 10x slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$WORK_DIR/runs" "$WORK_DIR/logs"

# The default 64-wide tiny model cannot learn the task; this 4-layer, 128-wide one can (with its
# random vision encoder frozen: recipes/sft_tiny.yaml sets freeze_vision_tower).
BASE_MODEL="$WORK_DIR/tiny-qwen2.5-vl-h128"
run python -m verl_ext.assets.tiny_model --out "$BASE_MODEL" --hidden-size 128 --num-hidden-layers 4 \
  --intermediate-size 256 --vision-hidden-size 64 --vision-intermediate-size 128

log "data: SFT (with question writing), RL questions (labelled and not), held-out test"
run python -m verl_ext.toy.data --out "$WORK_DIR/data" --n-sft "$N_SFT" --n-rl "$N_RL" --n-test "$N_TEST" \
  --prompt "$SYNTH_PROMPT"

SFT_MODEL="$WORK_DIR/sft_model"
if [[ ! -f "$SFT_MODEL/config.json" ]]; then
  log "stage 1: SFT with verl's SFT trainer"
  run torchrun --standalone --nproc_per_node=1 -m verl.trainer.sft_trainer \
    --config-path="$PWD/recipes" --config-name=sft_tiny model.path="$BASE_MODEL" \
    data.train_files="$WORK_DIR/data/sft/train.parquet" data.val_files="$WORK_DIR/data/sft/test.parquet" \
    trainer.total_training_steps="$SFT_STEPS" trainer.default_local_dir="$WORK_DIR/sft_ckpt" \
    data.max_length=192 \
    > "$WORK_DIR/logs/sft.log" 2>&1 || { tail -n 40 "$WORK_DIR/logs/sft.log"; exit 1; }
  run python -m verl.model_merger merge --backend fsdp \
    --local_dir "$WORK_DIR/sft_ckpt/global_step_$SFT_STEPS" --target_dir "$SFT_MODEL"
fi

if [[ " $VARIANTS " == *" mmupt_synth "* ]]; then
  log "in-context synthesis: the SFT model writes new questions about the RL images"
  status=0
  run python -m verl_ext.data.synthesize --strategy in_context --backend hf --prompt "$SYNTH_PROMPT" \
    --seeds "$WORK_DIR/data/rl/unlabeled.parquet" --model "$SFT_MODEL" --out "$WORK_DIR/data/synth" \
    --num-per-seed 1 --max-new-tokens 48 --temperature 1.0 --merge || status=$?
  if [[ $status == 1 ]]; then
    # Exit status 1: the run worked but kept no question (the summary above says why).
    log "no synthesized question survived the filters: the mmupt_synth variant is skipped"
    VARIANTS=${VARIANTS//mmupt_synth/}
  elif [[ $status != 0 ]]; then
    exit "$status"
  fi
fi

train() {  # variant seed recipe train_files
  local variant=$1 seed=$2 recipe=$3 files=$4
  local name="$variant-seed$seed"
  if [[ -s "$WORK_DIR/runs/$name.jsonl" ]] && grep -q "\"step\": $RL_STEPS," "$WORK_DIR/runs/$name.jsonl"; then
    log "$name: done already"; return
  fi
  log "stage 2/3: $name"
  VERL_FILE_LOGGER_PATH="$WORK_DIR/runs/$name.jsonl" run python -m verl.trainer.main config="recipes/$recipe.yaml" \
    actor_rollout_ref.model.path="$SFT_MODEL" \
    data.train_files="$files" data.val_files="$WORK_DIR/data/test.parquet" \
    data.train_batch_size="$BATCH" actor_rollout_ref.actor.ppo_mini_batch_size="$BATCH" \
    actor_rollout_ref.rollout.n="$ROLLOUT_N" actor_rollout_ref.rollout.temperature="$TEMPERATURE" \
    actor_rollout_ref.actor.optim.lr="$LR" \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=64 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=64 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=64 \
    actor_rollout_ref.rollout.val_kwargs.do_sample=false \
    data.seed="$seed" actor_rollout_ref.rollout.seed="$seed" \
    trainer.total_training_steps="$RL_STEPS" trainer.test_freq=1 trainer.val_before_train=true \
    trainer.save_freq=-1 'trainer.logger=[console,file]' \
    trainer.experiment_name="toy_$name" trainer.default_local_dir="$WORK_DIR/ckpt/$name" \
    > "$WORK_DIR/logs/$name.log" 2>&1 || { tail -n 40 "$WORK_DIR/logs/$name.log"; exit 1; }
}

for seed in $SEEDS; do
  for variant in $VARIANTS; do
    case $variant in
      grpo_supervised) train "$variant" "$seed" grpo_supervised "$WORK_DIR/data/rl/labeled.parquet" ;;
      mmupt) train "$variant" "$seed" quickstart "$WORK_DIR/data/rl/unlabeled.parquet" ;;
      mmupt_synth) train "$variant" "$seed" quickstart "$WORK_DIR/data/synth/train.parquet" ;;
    esac
  done
done

log "report"
run python -m verl_ext.toy.report --runs "$WORK_DIR/runs" --out "$WORK_DIR/report"
