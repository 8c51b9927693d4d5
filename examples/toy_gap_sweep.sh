#!/usr/bin/env bash
# Dose-response of MM-UPT on the toy: SFT regimes whose vote gap (held-out maj@8 - greedy) runs from negative
# to strongly positive, each diagnosed, then supervised GRPO and MM-UPT, 2 seeds each (examples/toy_repro.sh
# per regime), then one table and one plot: greedy-accuracy gain against the SFT model's gap.
#
#   bash examples/toy_gap_sweep.sh                       # every regime below
#   REGIMES="plain bars_all" bash examples/toy_gap_sweep.sh
#   POSITIVE_DIR=toy_repro bash examples/toy_gap_sweep.sh  # reuse toy_repro.sh's runs for the bars_warm regime
#   QUICK=1 bash examples/toy_gap_sweep.sh               # 2 regimes, few steps (the test suite's version)
#
# Regimes (verl_ext.toy.sft_model settings; every one samples at temperature 1.0):
#   plain       count and bars, one careful phrasing: greedy already returns the modal answer (negative control)
#   bars_careful bars, three careful phrasings, no shortcut: no gap to close
#   bars_two    bars, a shortcut on scenes whose bar A is red or yellow (1 colour in 3)
#   bars_warm   bars, a shortcut on warm-coloured scenes (half): the toy reproduction's default
#   bars_all    bars, a shortcut on every scene: greedy at chance
#   count_warm  counting, a shortcut on warm-coloured scenes: the vote's labels are often wrong
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
SWEEP_DIR=${SWEEP_DIR:-$PWD/toy_gap_sweep}
if [[ "$QUICK" == 1 ]]; then
  REGIMES=${REGIMES:-plain bars_warm}; SEEDS=${SEEDS:-0}
else
  REGIMES=${REGIMES:-plain bars_careful bars_two bars_warm bars_all count_warm}; SEEDS=${SEEDS:-0 1}
fi
STYLED="styles.careful=3 styles.shortcut=0.4"

regime_args() {
  case $1 in
    plain) echo "n_sft=2048 difficulty.tasks=[count,compare] styles.shortcut=0 styles.careful=1" ;;
    bars_careful) echo "styles.careful=3 styles.shortcut=0" ;;
    bars_two) echo "$STYLED styles.tempting_colors=[red,yellow]" ;;
    bars_warm) echo "$STYLED styles.tempting_colors=[orange,red,yellow]" ;;
    bars_all) echo "$STYLED styles.tempting_colors=[blue,green,orange,purple,red,yellow]" ;;
    count_warm) echo "difficulty.tasks=[count] $STYLED styles.tempting_colors=[orange,red,yellow]" ;;
    *) echo "unknown regime $1" >&2; return 2 ;;
  esac
}

start=$(date +%s)
dirs=()
for regime in $REGIMES; do
  args=$(regime_args "$regime")
  dir="$SWEEP_DIR/$regime"
  if [[ "$regime" == bars_warm && -n "${POSITIVE_DIR:-}" ]]; then
    dir=$(cd "$POSITIVE_DIR" && pwd)
  else
    printf '\n[toy_gap_sweep %s] regime %s: %s\n' "$(date +%H:%M:%S)" "$regime" "$args"
    WORK_DIR="$dir" SFT_ARGS="$args" TEMPERATURE=1.0 SEEDS="$SEEDS" VARIANTS="grpo_supervised mmupt" \
      LONG_STEPS=0 bash examples/toy_repro.sh
  fi
  dirs+=("$regime=$dir")
done

python -m verl_ext.toy.sweep_report "regimes=[$(IFS=,; echo "${dirs[*]}")]" out="$SWEEP_DIR/report"
awk -v s="$(( $(date +%s) - start ))" 'BEGIN { printf "\n[toy_gap_sweep] wall time %.1f min\n", s / 60 }'
