# Shared by examples/table{1,2,3}.sh: settings and the pipeline steps (prepare data, synthesize questions,
# train with a recipe, merge the checkpoint to Hugging Face format, evaluate, print a paper table).
# Sourced, not run. Every setting below can be set from the environment, e.g.
#   N_GPUS=4 WORK_DIR=/scratch/mmupt bash examples/table1.sh
#   CPU_MODE=1 WORK_DIR=/tmp/mmupt bash examples/table1.sh     # the whole chain on CPU in a few minutes
#
# CPU_MODE=1 swaps in stand-ins so the same code path runs on a laptop, offline: the tiny random-init
# Qwen2.5-VL (built locally by verl_ext's asset resolver), the CPU recipes (recipes/quickstart.yaml,
# recipes/grpo_supervised.yaml), a small visual-math set drawn by verl_ext.toy.visual_math for each
# public training set (run through verl_ext.data.prepare as a local file), benchmark fixture files in the
# real schemas (verl_ext.toy.fixtures) for the four benchmarks, 1 training step and a few questions each.
# The numbers it prints prove that the chain runs, not the method.

set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---------------------------------------------------------------------------------------------- settings
CPU_MODE=${CPU_MODE:-0}                        # 1: tiny model, stand-in data, 1 step (see above)
WORK_DIR=${WORK_DIR:-$REPO_DIR/outputs/examples}  # everything is written under here
case "$WORK_DIR" in /*) ;; *) WORK_DIR=$PWD/$WORK_DIR ;; esac
PYTHON=${PYTHON:-python}                       # the interpreter with verl-ext installed
FORCE=${FORCE:-0}                              # 1: redo steps whose outputs exist (default: skip them, and let
                                               # training, synthesis and evaluation resume an interrupted run)
VERBOSE=${VERBOSE:-0}                          # 1: stream each step's output too (always in its log file)

if [[ $CPU_MODE == 1 ]]; then
  N_GPUS=${N_GPUS:-1}                          # one FSDP worker on verl-ext's CPU platform
  NNODES=${NNODES:-1}
  MODEL=${MODEL:-}                             # empty: the tiny model, resolved below
  MMUPT_RECIPE=${MMUPT_RECIPE:-$REPO_DIR/recipes/quickstart.yaml}
  SUPERVISED_RECIPE=${SUPERVISED_RECIPE:-$REPO_DIR/recipes/grpo_supervised.yaml}
  TRAIN_STEPS=${TRAIN_STEPS:-1}                # empty: the recipe's epochs
  SAVE_FREQ=${SAVE_FREQ:-1}
  TRAIN_LOGGER=${TRAIN_LOGGER:-[console]}
  # One agent-loop worker: verl starts 8 by default, each importing verl on the first step (~1 min on 2 cores).
  EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS-actor_rollout_ref.rollout.agent.num_workers=1}
  STANDIN_ROWS=${STANDIN_ROWS:-8}              # visual-math training rows per stand-in data set
  EVAL_MAX_SAMPLES=${EVAL_MAX_SAMPLES:-2}      # questions per benchmark
  BENCH_DATA_DIR=${BENCH_DATA_DIR:-$WORK_DIR/benchmarks}  # fixture files, written by the first evaluation
  # One hf replica (verl-ext's CPU rollout), short completions, tiny images.
  EVAL_ARGS=${EVAL_ARGS:-actor_rollout_ref.rollout.name=hf eval.batch_size=8 eval.max_new_tokens=16 eval.min_pixels=3136 eval.max_pixels=12544 eval.show_progress=false}
  SYNTH_ARGS=${SYNTH_ARGS:-actor_rollout_ref.rollout.name=hf actor_rollout_ref.rollout.tensor_model_parallel_size=1 synth.batch_size=8 synth.max_new_tokens=16 synth.min_pixels=3136 synth.max_pixels=12544}
  export HF_HUB_OFFLINE=1                      # nothing in CPU mode comes from the hub
else
  N_GPUS=${N_GPUS:-8}                          # GPUs per node (the paper: 8)
  NNODES=${NNODES:-1}
  MODEL=${MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}  # hub id or local directory
  MMUPT_RECIPE=${MMUPT_RECIPE:-$REPO_DIR/recipes/mmupt.yaml}
  SUPERVISED_RECIPE=${SUPERVISED_RECIPE:-$REPO_DIR/recipes/grpo_supervised_7b.yaml}
  TRAIN_STEPS=${TRAIN_STEPS:-}                 # empty: the recipe's 15 episodes
  SAVE_FREQ=${SAVE_FREQ:-}                     # empty: the recipe's (the last step is always saved)
  TRAIN_LOGGER=${TRAIN_LOGGER:-[console]}      # '[console,wandb]' to log to Weights & Biases as the paper
  STANDIN_ROWS=${STANDIN_ROWS:-}
  EVAL_MAX_SAMPLES=${EVAL_MAX_SAMPLES:-}       # empty: every question
  BENCH_DATA_DIR=${BENCH_DATA_DIR:-}           # empty: the benchmarks from the hub; or local snapshots
  EVAL_ARGS=${EVAL_ARGS:-}                     # key=value overrides of recipes/eval/paper.yaml (vLLM, the paper's protocol)
  SYNTH_ARGS=${SYNTH_ARGS:-}                   # key=value overrides of recipes/synth/<strategy>.yaml (vLLM, tensor parallel 2)
fi
DATA_DIR=${DATA_DIR:-$WORK_DIR/data}           # prepared training data
VAL_DATASET=${VAL_DATASET:-geometry3k}         # validation during training: its labelled test split (as the paper)
EVAL_BENCHMARKS=${EVAL_BENCHMARKS:-mathvision,mathverse,mathvista,wemath}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}         # more key=value overrides for every training run (space-separated)
PREPARE_ARGS=${PREPARE_ARGS:-}                 # more options of verl_ext.data.prepare (key=value, e.g. max_rows=1000)
CPU_NOTE="CPU mode: a tiny random-init Qwen2.5-VL, visual-math stand-ins for the training sets, \
${EVAL_MAX_SAMPLES:-all} fixture question(s) per benchmark, ${TRAIN_STEPS:-all} training step(s). \
Row labels name the runs they stand in for; the numbers prove the chain runs, not the method."

mkdir -p "$WORK_DIR/logs"
cd "$WORK_DIR"
STEP_NO=$(find "$WORK_DIR/logs" -maxdepth 1 -name '*.log' | wc -l)

if [[ $CPU_MODE == 1 && -z $MODEL ]]; then
  MODEL=$("$PYTHON" -c "from verl_ext.toy.resolver import resolve_asset; print(resolve_asset('tiny-qwen2.5-vl'))" | tail -n 1)
fi

# ---------------------------------------------------------------------------------------------- logging
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

cpu_mode() { [[ $CPU_MODE == 1 ]]; }

# run NAME CMD...: log the step and its command, run it with its output in WORK_DIR/logs/NN-NAME.log;
# on failure print the log's tail and exit with the command's status.
run() {
  local name=$1 status=0 start=$SECONDS log
  shift
  STEP_NO=$((STEP_NO + 1))
  log=$(printf '%s/logs/%02d-%s.log' "$WORK_DIR" "$STEP_NO" "$name")
  log "step $STEP_NO: $name"
  printf '  $ %s\n  log: %s\n' "$(printf '%q ' "$@")" "$log"
  printf '$ %s\n\n' "$(printf '%q ' "$@")" >"$log"
  if [[ $VERBOSE == 1 ]]; then
    "$@" 2>&1 | tee -a "$log" || status=$?
  else
    "$@" >>"$log" 2>&1 || status=$?
  fi
  if ((status != 0)); then
    log "step $STEP_NO: $name FAILED (exit $status); the end of $log:"
    tail -n 60 "$log" | sed 's/^/  | /'
    exit "$status"
  fi
  log "step $STEP_NO: $name done in $((SECONDS - start))s"
}

MADE=$'\n'  # outputs made (or reused) by this run, one per line

# done_already PATH: true when this run made PATH already, or when PATH exists and FORCE is not 1 (logged).
done_already() {
  local path=$1
  [[ $MADE == *$'\n'"$path"$'\n'* ]] && return 0
  if [[ -e $path && $FORCE != 1 ]]; then
    log "skip: $path exists (FORCE=1 redoes it)"
    made "$path"
    return 0
  fi
  return 1
}

made() { MADE+="$1"$'\n'; }

# fresh DIR...: with FORCE=1, remove a step's earlier outputs (only ever under WORK_DIR). Without it they stay, so
# verl resumes from its checkpoints, synthesis from its finished shards and evaluation from its answered questions.
fresh() {
  local dir
  [[ $FORCE == 1 ]] || return 0
  for dir in "$@"; do
    case "$dir" in "$WORK_DIR"/?*) rm -rf -- "$dir" ;; *) log "refusing to remove $dir (outside $WORK_DIR)"; exit 2 ;; esac
  done
}

title_of() {  # a data set's name as the paper writes it
  case "$1" in geometry3k) echo Geometry3K ;; geoqa) echo GeoQA ;; mmr1) echo MMR1 ;; *) echo "$1" ;; esac
}

# ---------------------------------------------------------------------------------------------- data

# CPU mode: a visual-math set in the hub layout of the public sets (images, problem, answer), one seed per name.
write_standin() {
  local name=$1 seed dir=$WORK_DIR/standin/$1
  case "$name" in geometry3k) seed=0 ;; geoqa) seed=1 ;; mmr1) seed=2 ;; *) seed=3 ;; esac
  done_already "$dir/train.parquet" && return 0
  fresh "$dir"
  run "standin-$name" "$PYTHON" -m verl_ext.toy.visual_math out="$dir" layout=hub \
    n_train="$STANDIN_ROWS" n_test=4 seed="$seed"
  made "$dir/train.parquet"
}

# prepare_dataset NAME [labels]: DATA_DIR/NAME (labels hidden: MM-UPT) or DATA_DIR/NAME_labels (keep_labels=true:
# supervised GRPO). The validation set (VAL_DATASET) also gets its labelled test split.
prepare_dataset() {
  local name=$1 labels=${2:-} out=$DATA_DIR/$1 args=()
  if [[ $labels == labels ]]; then out=${out}_labels; args+=(keep_labels=true); fi
  done_already "$out/train.parquet" && return 0
  fresh "$out"
  if cpu_mode; then
    write_standin "$name"
    args=("dataset=$WORK_DIR/standin/$name/train.parquet" "${args[@]}")
    [[ $name == "$VAL_DATASET" ]] && args+=("val_split=$WORK_DIR/standin/$name/test.parquet")
  else
    args=("dataset=$name" "${args[@]}")
    [[ $name == "$VAL_DATASET" ]] && args+=(val_split=test)
  fi
  local extra=()
  read -r -a extra <<<"$PREPARE_ARGS"
  run "prepare-$(basename "$out")" "$PYTHON" -m verl_ext.data.prepare "${args[@]}" "out=$out" ${extra[@]+"${extra[@]}"}
  made "$out/train.parquet"
}

# synthesize SEED STRATEGY: new questions written by MODEL from SEED's prepared rows -> WORK_DIR/synth/SEED/STRATEGY.
synthesize() {
  local seed=$1 strategy=$2 out=$WORK_DIR/synth/$1/$2 cmd extra=()
  done_already "$out/train.parquet" && return 0
  fresh "$out"
  prepare_dataset "$seed"
  read -r -a extra <<<"$SYNTH_ARGS"
  cmd=("$PYTHON" -m verl_ext.data.synthesize)
  # The random-init tiny model never writes the <question> tags: in CPU mode its completions are put in them.
  cpu_mode && cmd=("$PYTHON" -m verl_ext.toy.standin_synthesis)
  run "synthesize-$seed-$strategy" "${cmd[@]}" "config=$REPO_DIR/recipes/synth/$strategy.yaml" \
    "synth.seeds=[$DATA_DIR/$seed/train.parquet]" "actor_rollout_ref.model.path=$MODEL" "synth.out=$out" \
    synth.merge=true "trainer.n_gpus_per_node=$N_GPUS" "trainer.nnodes=$NNODES" ${extra[@]+"${extra[@]}"}
  made "$out/train.parquet"
}

# ---------------------------------------------------------------------------------------------- train, merge

# train_and_merge RUN RECIPE TRAIN_FILE [key=value...]: train TRAIN_MODEL (default MODEL) with the recipe into
# WORK_DIR/checkpoints/RUN, then merge its last checkpoint with verl's model merger into WORK_DIR/models/RUN
# (a Hugging Face model directory).
train_and_merge() {
  local run_name=$1 recipe=$2 train_file=$3
  shift 3
  local ckpt=$WORK_DIR/checkpoints/$run_name model_dir=$WORK_DIR/models/$run_name extra=() args=()
  local val=$DATA_DIR/$VAL_DATASET/test.parquet
  done_already "$model_dir/config.json" && return 0
  fresh "$ckpt" "$model_dir"
  prepare_dataset "$VAL_DATASET"
  read -r -a extra <<<"$EXTRA_TRAIN_ARGS"
  args=(
    "config=$recipe"
    "data.train_files=$train_file"
    "data.val_files=$val"
    "actor_rollout_ref.model.path=${TRAIN_MODEL:-$MODEL}"
    "trainer.default_local_dir=$ckpt"
    "trainer.experiment_name=$run_name"
    "trainer.n_gpus_per_node=$N_GPUS"
    "trainer.nnodes=$NNODES"
    "trainer.logger=$TRAIN_LOGGER"
  )
  [[ -n $TRAIN_STEPS ]] && args+=("trainer.total_training_steps=$TRAIN_STEPS")
  [[ -n $SAVE_FREQ ]] && args+=("trainer.save_freq=$SAVE_FREQ")
  run "train-$run_name" env RAY_DEDUP_LOGS=0 PYTHONUNBUFFERED=1 "$PYTHON" -m verl.trainer.main "${args[@]}" "$@" \
    ${extra[@]+"${extra[@]}"}
  local step
  step=$(cat "$ckpt/latest_checkpointed_iteration.txt")
  run "merge-$run_name" "$PYTHON" -m verl.model_merger merge --backend fsdp \
    --local_dir "$ckpt/global_step_$step/actor" --target_dir "$model_dir"
  made "$model_dir/config.json"
}

# ---------------------------------------------------------------------------------------------- evaluate

# evaluate RUN MODEL LABEL: python -m verl_ext.eval on EVAL_BENCHMARKS -> WORK_DIR/eval/RUN/results.json.
evaluate() {
  local run_name=$1 model=$2 label=$3 out=$WORK_DIR/eval/$1 args=() extra=()
  done_already "$out/results.json" && return 0
  fresh "$out"
  if cpu_mode && [[ ! -d $BENCH_DATA_DIR ]]; then
    run "benchmark-fixtures" "$PYTHON" -m verl_ext.toy.fixtures "out=$BENCH_DATA_DIR" \
      "per_benchmark=${EVAL_MAX_SAMPLES:-4}"
  fi
  args=("config=$REPO_DIR/recipes/eval/paper.yaml" "actor_rollout_ref.model.path=$model" "eval.benchmarks=[$EVAL_BENCHMARKS]"
        "eval.output_dir=$out" "eval.label=$label" "trainer.n_gpus_per_node=$N_GPUS" "trainer.nnodes=$NNODES")
  [[ -n $BENCH_DATA_DIR ]] && args+=("eval.data_dir=$BENCH_DATA_DIR")
  [[ -n $EVAL_MAX_SAMPLES ]] && args+=("eval.max_samples=$EVAL_MAX_SAMPLES")
  read -r -a extra <<<"$EVAL_ARGS"
  run "eval-$run_name" "$PYTHON" -m verl_ext.eval "${args[@]}" ${extra[@]+"${extra[@]}"}
  made "$out/results.json"
}

eval_dir() { echo "$WORK_DIR/eval/$1"; }

# ---------------------------------------------------------------------------------------------- table

# print_table N "LABEL=DIR"...: the paper's Table N with our rows -> stdout and WORK_DIR/tableN.md.
print_table() {
  local table=$1 row args=()
  shift
  for row in "$@"; do args+=(--row "$row"); done
  cpu_mode && args+=(--note "$CPU_NOTE")
  run "table$table" "$PYTHON" -m verl_ext.eval.compare --paper-table "$table" --out "$WORK_DIR/table$table.md" "${args[@]}"
  echo
  cat "$WORK_DIR/table$table.md"
}
