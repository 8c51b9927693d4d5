"""The dose-response of ``examples/toy_gap_sweep.sh``: per SFT regime, the vote's gap and what RL made of it.

Each regime is a ``examples/toy_repro.sh`` work directory (``runs/``, ``diag/``). Per regime: the SFT model's
held-out greedy, mean@N and maj@N (its diagnosis) and gap (maj@N - greedy); the held-out greedy-accuracy gain of
supervised GRPO and of MM-UPT (final validation minus the run's own step-0 validation, mean ± std over seeds), the
share of the gap each closes, and how often the vote's pseudo-labels were right during MM-UPT. One plot: gain
against gap, supervised beside MM-UPT.

    python -m verl_ext.toy.sweep_report regimes=[plain=DIR,bars_warm=DIR] out=REPORT_DIR
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from verl_ext.toy.report import Run, held_out, load_runs

logger = logging.getLogger(__name__)

#: The variants the sweep trains, with their labels.
VARIANTS = {"grpo_supervised": "supervised GRPO", "mmupt": "MM-UPT"}


@dataclass
class Regime:
    """One regime's SFT diagnosis and runs."""

    name: str
    sft: dict[str, float]
    runs: list[Run]
    rl_label_accuracy: Optional[float] = None
    """The SFT model's maj@N on the RL questions: the pseudo-labels' accuracy before training."""

    @property
    def gap(self) -> Optional[float]:
        """The SFT model's held-out maj@N minus greedy accuracy."""
        return self.sft["maj"] - self.sft["greedy"] if {"maj", "greedy"} <= set(self.sft) else None

    def gains(self, variant: str) -> list[float]:
        """Per seed, held-out greedy accuracy at the last validated step minus at step 0."""
        out = []
        for run in (r for r in self.runs if r.variant == variant):
            start = run.accuracy(0)
            if start is not None and run.validated:
                out.append(run.validated[-1][1] - start)
        return out

    def label_accuracy(self) -> Optional[float]:
        """Mean over MM-UPT steps and seeds of the share of groups whose pseudo-label was right."""
        values = [m["mmupt/label_accuracy"] for r in self.runs if r.variant == "mmupt"
                  for m in r.steps.values() if "mmupt/label_accuracy" in m]
        return statistics.fmean(values) if values else None


def load_regime(name: str, work_dir: Path) -> Regime:
    """A regime from a ``toy_repro.sh`` work directory."""
    sft = held_out(work_dir / "diag" / "sft.json")
    rl_accuracy = None
    try:
        for path, tasks in json.loads((work_dir / "diag" / "sft.json").read_text())["summary"].items():
            if Path(path).name == "unlabeled.parquet":
                rl_accuracy = tasks["all"]["maj"]
    except (OSError, ValueError, KeyError):
        pass
    return Regime(name, sft, load_runs(work_dir / "runs"), rl_accuracy)


def _pm(values: list[float]) -> str:
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):+.1f} ± {100 * spread:.1f}"


def _closed(values: list[float], gap: Optional[float]) -> str:
    if not values or gap is None:
        return "n/a"
    return "no gap" if gap <= 0 else f"{100 * statistics.fmean(values) / gap:.0f} %"


def table(regimes: list[Regime], n: int = 8) -> str:
    """Markdown table, one row per regime, in the order given."""
    head = (f"| regime | SFT greedy | mean@{n} | maj@{n} | gap | supervised gain | gap closed | MM-UPT gain "
            "| gap closed | pseudo-labels right (SFT / during MM-UPT) | seeds |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for regime in regimes:
        s = regime.sft

        def pct(key: str) -> str:
            return f"{100 * s[key]:.1f}" if key in s else "n/a"

        gap = regime.gap
        sup, upt = regime.gains("grpo_supervised"), regime.gains("mmupt")
        labels = regime.label_accuracy()
        before = f"{100 * regime.rl_label_accuracy:.0f} %" if regime.rl_label_accuracy is not None else "n/a"
        during = f"{100 * labels:.0f} %" if labels is not None else "n/a"
        lines.append(
            f"| {regime.name} | {pct('greedy')} | {pct('mean')} | {pct('maj')} | "
            f"{'n/a' if gap is None else f'{100 * gap:+.1f}'} | {_pm(sup)} | {_closed(sup, gap)} | {_pm(upt)} | "
            f"{_closed(upt, gap)} | {before} / {during} | {len(sup)} / {len(upt)} |"
        )
    return "\n".join(lines)


def plot(regimes: list[Regime], path: Path) -> None:
    """Greedy-accuracy gain against the SFT model's gap, supervised beside MM-UPT (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    gaps = [100 * r.gap for r in regimes if r.gap is not None]
    if gaps:
        low, high = min(gaps + [0.0]) - 5, max(gaps) + 5
        ax.plot([low, high], [low, high], color="0.6", linestyle="--", linewidth=1, label="gain = gap")
        ax.axhline(0, color="0.3", linewidth=0.8)
    for index, (variant, label) in enumerate(VARIANTS.items()):
        xs, ys, errs = [], [], []
        for regime in regimes:
            gains = regime.gains(variant)
            if regime.gap is None or not gains:
                continue
            xs.append(100 * regime.gap + (index - 0.5) * 0.8)  # side by side, not on top of each other
            ys.append(100 * statistics.fmean(gains))
            errs.append(100 * statistics.stdev(gains) if len(gains) > 1 else 0.0)
        ax.errorbar(xs, ys, yerr=errs, fmt="o", capsize=3, color=f"C{index}", label=label)
    for regime in regimes:
        if regime.gap is not None:
            ax.annotate(regime.name, (100 * regime.gap, 0), textcoords="offset points", xytext=(2, -12), fontsize=7)
    ax.set_xlabel("SFT model's held-out maj@8 - greedy (points)")
    ax.set_ylabel("held-out greedy accuracy gain (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class SweepReportCommand:
    """``python -m verl_ext.toy.sweep_report regimes=[NAME=DIR,...] out=DIR [n=8]``."""

    regimes: list[str] = MISSING
    """``NAME=DIR`` per regime, DIR a ``toy_repro.sh`` work directory, in the table's order."""
    out: str = MISSING
    """Where ``sweep.md`` and ``sweep.png`` go."""
    n: int = 8
    """Samples per question of the diagnoses."""


USAGE = "usage: python -m verl_ext.toy.sweep_report regimes=[NAME=DIR,...] out=DIR [n=8]"


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns the exit status (1: no regime has runs, 2: a bad setting)."""
    from verl_ext.config.compose import CLIError, run_command, settings_from_argv

    def command(argv: list[str]) -> int:
        args = settings_from_argv(SweepReportCommand, argv, USAGE)
        regimes = []
        for spec in args.regimes:
            name, sep, directory = str(spec).partition("=")
            if not sep or not name or not Path(directory).is_dir():
                raise CLIError(f"regimes: {spec!r} is not NAME=DIR with an existing directory")
            regimes.append(load_regime(name, Path(directory)))
        if not any(r.runs for r in regimes):
            logger.error("no regime has metric logs under its runs/")
            return 1
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        text = table(regimes, args.n)
        (out / "sweep.md").write_text(text + "\n")
        plot(regimes, out / "sweep.png")
        logger.info("%s\n\nwrote sweep.md and sweep.png to %s", text, out)
        return 0

    return run_command(argv, __doc__, USAGE, command)


if __name__ == "__main__":
    sys.exit(main())
