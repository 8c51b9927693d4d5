"""Table and plot of the toy reproduction from the runs' metric logs.

Each training run writes verl's file logger (one JSON line per step: ``{"step": N, "data": {...}}``)
to ``RUNS_DIR/<variant>-seed<k>.jsonl``. Step 0 is the validation before training, i.e. the SFT
model. The table gives held-out accuracy after the last step, mean and spread over seeds, beside
the SFT model's; the plot shows majority ratio, pseudo-label accuracy and held-out accuracy per step.

    python -m verl_ext.toy.report --runs RUNS_DIR --out REPORT_DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

RUN_NAME = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)\.jsonl$")
ACC_KEY = re.compile(r"^val-core/.+/acc/mean@\d+$")
#: Table rows in the paper's order, with their labels.
VARIANTS = {
    "grpo_supervised": "Supervised GRPO (labels)",
    "mmupt": "MM-UPT (unlabeled questions)",
    "mmupt_synth": "MM-UPT (self-synthesized questions)",
}
PLOTTED = ("mmupt/majority_ratio", "mmupt/label_accuracy")


@dataclass
class Run:
    """One training run's per-step metrics."""

    variant: str
    seed: int
    steps: dict[int, dict[str, float]]

    def accuracy(self, step: int) -> Optional[float]:
        """Held-out accuracy validated at ``step`` (0 = before training), if logged."""
        for key, value in self.steps.get(step, {}).items():
            if ACC_KEY.match(key):
                return float(value)
        return None

    @property
    def last_step(self) -> int:
        return max(s for s in self.steps if self.accuracy(s) is not None)


def load_runs(runs_dir: Path) -> list[Run]:
    """Every ``<variant>-seed<k>.jsonl`` under ``runs_dir``; malformed lines are skipped with a warning."""
    runs = []
    for path in sorted(runs_dir.glob("*.jsonl")):
        match = RUN_NAME.match(path.name)
        if not match:
            continue
        steps: dict[int, dict[str, float]] = defaultdict(dict)
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                entry = json.loads(line)
                steps[int(entry["step"])].update(
                    {k: float(v) for k, v in entry["data"].items() if isinstance(v, (int, float))}
                )
            except (ValueError, KeyError, TypeError):
                logger.warning("%s:%d: not a metrics line, skipped", path, number)
        runs.append(Run(match["variant"], int(match["seed"]), dict(steps)))
    return runs


def _mean_spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    mean = 100 * statistics.fmean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {spread:.1f}"


def table(runs: list[Run]) -> str:
    """Markdown table: held-out accuracy (%) of the SFT model and of each variant, mean ± std over seeds."""
    sft = [r.accuracy(0) for r in runs if r.accuracy(0) is not None]
    lines = ["| model | held-out accuracy (%) | seeds | steps |", "| --- | --- | --- | --- |"]
    # Every run validates its own start, the same SFT checkpoint: their spread is sampling noise only.
    lines.append(f"| SFT model (start of every run) | {_mean_spread(sft)} | {len(sft)} | 0 |")
    for variant, label in VARIANTS.items():
        group = [r for r in runs if r.variant == variant]
        if not group:
            continue
        finals = [r.accuracy(r.last_step) for r in group]
        steps = sorted({r.last_step for r in group})
        lines.append(f"| {label} | {_mean_spread(finals)} | {len(group)} | {'/'.join(map(str, steps))} |")
    return "\n".join(lines)


def plot(runs: list[Run], path: Path) -> None:
    """Per-step curves (mean over seeds) of held-out accuracy, majority ratio and label accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("held-out accuracy", None), ("majority ratio", PLOTTED[0]), ("pseudo-label accuracy", PLOTTED[1])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, key) in zip(axes, panels):
        for index, (variant, label) in enumerate(VARIANTS.items()):
            group = [r for r in runs if r.variant == variant]
            if not group:
                continue
            per_step: dict[int, list[float]] = defaultdict(list)
            for run in group:
                for step, metrics in run.steps.items():
                    value = run.accuracy(step) if key is None else metrics.get(key)
                    if value is not None:
                        per_step[step].append(value)
            if per_step:
                xs = sorted(per_step)
                # One colour per variant in every panel (not matplotlib's per-axis cycle).
                mean = [statistics.fmean(per_step[x]) for x in xs]
                ax.plot(xs, mean, marker="o", label=label, color=f"C{index}")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="directory of <variant>-seed<k>.jsonl metric logs")
    parser.add_argument("--out", type=Path, required=True, help="where table.md and curves.png go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = load_runs(args.runs)
    if not runs:
        logger.error("no <variant>-seed<k>.jsonl metric logs in %s", args.runs)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(runs)
    (args.out / "table.md").write_text(text + "\n")
    plot(runs, args.out / "curves.png")
    logger.info("%s\n\nwrote %s and %s", text, args.out / "table.md", args.out / "curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
