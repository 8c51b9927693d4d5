#!/usr/bin/env bash
# Dose-response of MM-UPT on the toy: SFT regimes whose vote gap (held-out maj@8 - greedy) runs from negative
# to strongly positive, each diagnosed, then supervised GRPO and MM-UPT, 2 seeds each (examples/toy_repro.sh
# per regime), then one table and one plot: greedy-accuracy gain against the SFT model's gap.
#
#   bash examples/toy_gap_sweep.sh                       # every regime below
#   REGIMES="plain bars_m60" bash examples/toy_gap_sweep.sh
#   POSITIVE_DIR=toy_repro bash examples/toy_gap_sweep.sh  # reuse toy_repro.sh's runs for the bars_m45 regime
#   QUICK=1 bash examples/toy_gap_sweep.sh               # 2 regimes, few steps (the test suite's version)
#
# Regimes (verl_ext.toy.sft_model settings; every one samples at temperature 1.0). The bars regimes differ in
# how often the shortcut is right (its margin), so the greedy answer, which follows the shortcut, is as good
# as the shortcut while the samples, mostly careful, are not:
#   plain     count and bars, one careful phrasing: greedy already returns the modal answer (negative control)
#   bars_m35  bars, the shortcut right on 87 % of scenes: a small gap
#   bars_m45  bars, right on 70 %: the toy reproduction's default (examples/toy_repro.sh)
#   bars_m60  bars, right on 54 %: greedy near chance, the largest gap
#   count_all counting, the shortcut counts every shape of the asked colour: the vote's labels are often wrong
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
SWEEP_DIR=${SWEEP_DIR:-$PWD/toy_gap_sweep}
if [[ "$QUICK" == 1 ]]; then
  REGIMES=${REGIMES:-plain bars_m45}; SEEDS=${SEEDS:-0}
else
  REGIMES=${REGIMES:-plain bars_m35 bars_m45 bars_m60 count_all}; SEEDS=${SEEDS:-0 1}
fi
regime_args() {  # settings on top of verl_ext.toy.sft_model's defaults (bars_m45)
  case $1 in
    plain) echo "n_sft=2048 difficulty.tasks=[count,compare] difficulty.min_bar_gap=20 styles.shortcut=0 styles.careful=1" ;;
    bars_m35) echo "styles.shortcut_margin=35" ;;
    bars_m45) echo "" ;;
    bars_m60) echo "styles.shortcut_margin=60" ;;
    count_all) echo "difficulty.tasks=[count]" ;;
    *) echo "unknown regime $1" >&2; return 2 ;;
  esac
}

start=$(date +%s)
dirs=()
for regime in $REGIMES; do
  args=$(regime_args "$regime")
  dir="$SWEEP_DIR/$regime"
  if [[ "$regime" == bars_m45 && -n "${POSITIVE_DIR:-}" ]]; then
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
