"""Table and plot of the toy reproduction from verl's metric logs (``RUNS_DIR/<variant>-seed<k>.jsonl``; step 0
validates the SFT model) and :mod:`verl_ext.eval.diagnose` reports (``DIAG_DIR/sft.json``, one per final checkpoint).

"Gap closed": the share of the SFT model's (maj@N - greedy) gap a variant closes on greedy accuracy, and of its
(maj@N - mean@N) gap on sampled accuracy ("no gap" when the vote adds nothing). The "when to stop" table replays
the collapse rule (``verl_ext.voting.collapse``) over each label-free run's majority ratio, beside the peak.

    python -m verl_ext.toy.report runs=RUNS_DIR diag=DIAG_DIR out=REPORT_DIR
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from verl_ext.voting.collapse import CollapseMonitor

logger = logging.getLogger(__name__)

RUN_NAME = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)\.jsonl$")
ACC_KEY = re.compile(r"^val-core/.+/acc/mean@\d+$")
#: Table rows in the paper's order, with their labels.
VARIANTS = {
    "grpo_supervised": "Supervised GRPO (labels)",
    "mmupt": "MM-UPT (unlabeled questions)",
    "mmupt_synth": "MM-UPT (self-synthesized questions)",
    "mmupt_confident": "MM-UPT with a vote threshold (unlabeled questions)",
    "mmupt_soft": "Soft vote (unlabeled questions)",
    "mmupt_entropy": "Token-entropy reward (unlabeled questions)",
    "mmupt_long": "MM-UPT, 3x longer (unlabeled questions)",
    "mmupt_soft_long": "Soft vote, 3x longer (unlabeled questions)",
    "mmupt_entropy_long": "Token-entropy reward, 3x longer (unlabeled questions)",
}


@dataclass
class Run:
    """One training run's per-step metrics, and the diagnosis of its final checkpoint if there is one."""

    variant: str
    seed: int
    steps: dict[int, dict[str, float]]
    final: dict[str, float] = field(default_factory=dict)

    def accuracy(self, step: int) -> Optional[float]:
        """Held-out accuracy validated at ``step`` (0 = before training), if logged."""
        for key, value in self.steps.get(step, {}).items():
            if ACC_KEY.match(key):
                return float(value)
        return None

    @property
    def validated(self) -> list[tuple[int, float]]:
        """``(step, held-out accuracy)`` for every validated step, in order."""
        return [(s, a) for s in sorted(self.steps) if (a := self.accuracy(s)) is not None]

    @property
    def last_step(self) -> int:
        return self.validated[-1][0]

    def collapse_step(self) -> Optional[int]:
        """The step the collapse rule fires on, replayed over the logged majority ratio (None: never)."""
        logged = [(s, {"majority_ratio": m["mmupt/majority_ratio"]}) for s, m in sorted(self.steps.items())
                  if "mmupt/majority_ratio" in m]
        return CollapseMonitor().replay(logged)


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
                metrics = {k: float(v) for k, v in entry["data"].items() if isinstance(v, (int, float))}
                steps[int(entry["step"])].update(metrics)
            except (ValueError, KeyError, TypeError):
                logger.warning("%s:%d: not a metrics line, skipped", path, number)
        runs.append(Run(match["variant"], int(match["seed"]), dict(steps)))
    return runs


def held_out(report_path: Path) -> dict[str, float]:
    """The ``all`` row of a diagnosis report for ``test.parquet`` ({} if absent or unreadable)."""
    try:
        summary = json.loads(report_path.read_text())["summary"]
    except (OSError, ValueError, KeyError):
        return {}
    for path, tasks in summary.items():
        if Path(path).name == "test.parquet":
            return tasks.get("all", {})
    return {}


def attach_diagnoses(runs: list[Run], diag_dir: Optional[Path]) -> dict[str, float]:
    """Fill each run's ``final`` from ``diag_dir``; returns the SFT model's held-out figures ({} if none)."""
    if diag_dir is None:
        return {}
    for run in runs:
        run.final = held_out(diag_dir / f"{run.variant}-seed{run.seed}.json")
    return held_out(diag_dir / "sft.json")


def _mean_spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    mean = 100 * statistics.fmean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {spread:.1f}"


def _share(values: list[float], start: float, ceiling: float) -> str:
    """Share of the gap from ``start`` to ``ceiling`` that the mean of ``values`` closes."""
    if not values:
        return "n/a"
    if ceiling - start <= 0:
        return "no gap"
    return f"{100 * (statistics.fmean(values) - start) / (ceiling - start):+.0f} %"


def table(runs: list[Run], sft: Optional[dict[str, float]] = None, n: int = 8) -> str:
    """Markdown table: held-out greedy, mean@N, maj@N (%) of the SFT model and of each variant, with gap shares."""
    sft = sft or {}
    head = (
        f"| model | held-out greedy (%) | mean@{n} (%) | maj@{n} (%) | greedy gap closed | mean@{n} gap closed "
        "| seeds | steps |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    starts = [r.accuracy(0) for r in runs if r.accuracy(0) is not None]
    sft_greedy = sft.get("greedy", statistics.fmean(starts) if starts else None)

    def pct(key: str) -> str:
        return f"{100 * sft[key]:.1f}" if key in sft else "n/a"

    # Every run validates its own start, the same SFT checkpoint with greedy decoding: one figure.
    lines.append(f"| SFT model | {pct('greedy')} | {pct('mean')} | {pct('maj')} | | | {len(starts)} | 0 |")
    for variant, label in VARIANTS.items():
        group = [r for r in runs if r.variant == variant]
        if not group:
            continue
        greedy = [r.accuracy(r.last_step) for r in group]
        means = [r.final["mean"] for r in group if "mean" in r.final]
        majs = [r.final["maj"] for r in group if "maj" in r.final]
        steps = sorted({r.last_step for r in group})
        greedy_share = _share(greedy, sft_greedy, sft["maj"]) if sft_greedy is not None and "maj" in sft else "n/a"
        mean_share = _share(means, sft["mean"], sft["maj"]) if {"mean", "maj"} <= set(sft) else "n/a"
        lines.append(
            f"| {label} | {_mean_spread(greedy)} | {_mean_spread(means)} | {_mean_spread(majs)} | {greedy_share} "
            f"| {mean_share} | {len(group)} | {'/'.join(map(str, steps))} |"
        )
    return "\n".join(lines)


def stopping_table(runs: list[Run]) -> str:
    """Markdown table: per label-free run, the held-out peak, the final accuracy and the collapse signal."""
    head = "| run | held-out peak (step: %) | last (step: %) | collapse signal fired at | held-out at the signal |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    order = {v: i for i, v in enumerate(VARIANTS)}
    for run in sorted(runs, key=lambda r: (order.get(r.variant, len(order)), r.seed)):
        if not any("mmupt/majority_ratio" in m for m in run.steps.values()) or not run.validated:
            continue
        peak_step, peak = max(run.validated, key=lambda sa: (sa[1], -sa[0]))  # earliest of equal peaks
        last_step, last = run.validated[-1]
        fired = run.collapse_step()
        after = [(s, a) for s, a in run.validated if fired is not None and s >= fired]
        at_signal = f"{after[0][0]}: {100 * after[0][1]:.1f}" if after else "n/a"
        lines.append(
            f"| {VARIANTS.get(run.variant, run.variant)}, seed {run.seed} | {peak_step}: {100 * peak:.1f} "
            f"| {last_step}: {100 * last:.1f} | {fired if fired is not None else 'never'} | {at_signal} |"
        )
    return "\n".join(lines)


def plot(runs: list[Run], path: Path, sft: Optional[dict[str, float]] = None) -> None:
    """Per-step curves (mean over seeds): held-out greedy accuracy, training reward, majority ratio, label accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sft = sft or {}
    reward = "critic/score/mean"
    panels = [("held-out greedy accuracy", None), ("training reward", reward),
              ("majority ratio", "mmupt/majority_ratio"), ("pseudo-label accuracy", "mmupt/label_accuracy")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4))
    for ax, (title, key) in zip(axes, panels):
        for index, (variant, label) in enumerate(VARIANTS.items()):
            per_step: dict[int, list[float]] = defaultdict(list)
            for run in (r for r in runs if r.variant == variant):
                for step, metrics in run.steps.items():
                    value = run.accuracy(step) if key is None else metrics.get(key)
                    if value is not None:
                        per_step[step].append(value)
            if per_step:
                xs = sorted(per_step)
                # One colour per variant in every panel (not matplotlib's per-axis cycle).
                ax.plot(xs, [statistics.fmean(per_step[x]) for x in xs], marker=".", label=label, color=f"C{index}")
        if key is None:
            for name, style in (("maj", "--"), ("greedy", ":")):
                if name in sft:
                    ax.axhline(sft[name], color="k", linestyle=style, linewidth=1, label=f"SFT model {name}")
        ax.set_title(title)
        ax.set_xlabel("step")
        if key != reward:  # the training reward has its own scale (the entropy reward is negative)
            ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class ReportCommand:
    """``python -m verl_ext.toy.report runs=DIR out=DIR [diag=DIR] [n=8]``: the toy run's table and curves."""

    runs: str = MISSING
    """Directory of ``<variant>-seed<k>.jsonl`` metric logs."""
    out: str = MISSING
    """Where ``table.md``, ``stopping.md`` and ``curves.png`` go."""
    diag: Optional[str] = None
    """Directory of diagnosis reports (``sft.json``, ``<variant>-seed<k>.json``)."""
    n: int = 8
    """Samples per question of the diagnoses."""


USAGE = "usage: python -m verl_ext.toy.report runs=DIR out=DIR [diag=DIR] [n=8]"


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns the exit status (1: no metric logs, 2: a bad setting)."""
    from verl_ext.config.compose import run_command, settings_from_argv

    def command(argv: list[str]) -> int:
        args = settings_from_argv(ReportCommand, argv, USAGE)
        runs = load_runs(Path(args.runs))
        if not runs:
            logger.error("no <variant>-seed<k>.jsonl metric logs in %s", args.runs)
            return 1
        sft = attach_diagnoses(runs, Path(args.diag) if args.diag else None)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        text = table(runs, sft, args.n)
        (out / "table.md").write_text(text + "\n")
        stopping = stopping_table(runs)
        (out / "stopping.md").write_text(stopping + "\n")
        plot(runs, out / "curves.png", sft)
        logger.info("%s\n\n%s\n\nwrote table.md, stopping.md and curves.png to %s", text, stopping, out)
        return 0

    return run_command(argv, __doc__, USAGE, command)


if __name__ == "__main__":
    sys.exit(main())
