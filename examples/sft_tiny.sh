#!/usr/bin/env bash
# Stage 1 of "First SFT, Second RL, Third UPT" on CPU: build the SFT data and a tiny Qwen2.5-VL,
# run verl's own SFT trainer (recipes/sft_tiny.yaml) with torchrun, print where the model went.
#
#   examples/sft_tiny.sh [extra Hydra overrides for verl's SFT trainer ...]
#
# Environment: WORK (output directory, default outputs/sft_tiny), PYTHON / TORCHRUN (default: the
# repo's .venv). The transformers-format model is written to
#   $WORK/checkpoints/global_step_<N>/huggingface
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mkdir -p "${WORK:-$REPO/outputs/sft_tiny}" && cd "${WORK:-$REPO/outputs/sft_tiny}" && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
TORCHRUN="${TORCHRUN:-$REPO/.venv/bin/torchrun}"

export HF_HUB_OFFLINE=1
# One intra-op thread: two threads on two busy cores made each step ~10x slower (thread contention).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

# 2048 labelled train / 192 test scenes, generated with another seed than the RL data.
"$PYTHON" -m verl_ext.toy.sft_data out="$WORK/data"

# The default tiny model (2 layers, 64 wide) learns the answer format but not the images;
# 4 layers, 128 wide, a 64-wide vision encoder does both within the 600 steps of the recipe.
MODEL="$WORK/tiny-qwen2.5-vl-h128"
"$PYTHON" -m verl_ext.toy.tiny_model out="$MODEL" \
  hidden_size=128 num_hidden_layers=4 intermediate_size=256 vision_hidden_size=64 vision_intermediate_size=128

CKPT="$WORK/checkpoints"
"$TORCHRUN" --standalone --nproc_per_node=1 -m verl.trainer.sft_trainer \
  --config-path="$REPO/recipes" --config-name=sft_tiny \
  data.train_files="$WORK/data/train.parquet" \
  data.val_files="$WORK/data/test.parquet" \
  model.path="$MODEL" \
  trainer.default_local_dir="$CKPT" \
  "$@"

STEP="$(cat "$CKPT/latest_checkpointed_iteration.txt")"
echo "SFT model (transformers format): $CKPT/global_step_$STEP/huggingface"
