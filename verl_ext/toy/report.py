"""Table and plot of the toy reproduction from verl's metric logs (``RUNS_DIR/<variant>-seed<k>.jsonl``; step 0
validates the SFT model) and :mod:`verl_ext.eval.diagnose` reports (``DIAG_DIR/sft.json``, one per final checkpoint).

"Gap closed": the share of the SFT model's (maj@N - greedy) gap a variant closes on greedy accuracy, and of its
(maj@N - mean@N) gap on sampled accuracy ("no gap" when the vote adds nothing). The "when to stop" table replays
the collapse rule (``verl_ext.voting.collapse``) over each label-free run's majority ratio, beside the peak.
The mechanism table reads verl's rollout dumps (``ROLLOUTS_DIR/<variant>-seed<k>/<step>.jsonl``, written with
``trainer.rollout_data_dir``): the share of each answer style among the sampled responses, first and last step,
beside the pseudo-labels' accuracy.

    python -m verl_ext.toy.report runs=RUNS_DIR diag=DIAG_DIR [rollouts=ROLLOUTS_DIR] out=REPORT_DIR
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

from verl_ext.toy.sft_data import SHORTCUT, STYLES, response_style
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
    styles: dict[int, dict[str, float]] = field(default_factory=dict)
    """Per training step, the share of each answer style among the sampled responses (from the rollout dumps)."""

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
    """The ``all`` row of a diagnosis report for ``test.parquet`` ({} if absent or unreadable), plus
    ``greedy_shortcut`` and ``sampled_shortcut``: the share of greedy and of sampled answers in the shortcut style."""
    try:
        report = json.loads(report_path.read_text())
        summary, questions = report["summary"], report.get("questions", {})
    except (OSError, ValueError, KeyError):
        return {}
    for path, tasks in summary.items():
        if Path(path).name == "test.parquet":
            figures = dict(tasks.get("all", {}))
            graded = questions.get(path) or []
            samples = [text for q in graded for text in q.get("samples", [])]
            if graded and samples:
                figures["greedy_shortcut"] = sum(response_style(q["greedy"]) == SHORTCUT for q in graded) / len(graded)
                figures["sampled_shortcut"] = sum(response_style(t) == SHORTCUT for t in samples) / len(samples)
            return figures
    return {}


def attach_diagnoses(runs: list[Run], diag_dir: Optional[Path]) -> dict[str, float]:
    """Fill each run's ``final`` from ``diag_dir``; returns the SFT model's held-out figures ({} if none)."""
    if diag_dir is None:
        return {}
    for run in runs:
        run.final = held_out(diag_dir / f"{run.variant}-seed{run.seed}.json")
    return held_out(diag_dir / "sft.json")


def style_shares(dump_dir: Path) -> dict[int, dict[str, float]]:
    """Per step, the share of each style (:data:`~verl_ext.toy.sft_data.STYLES`) among the responses verl dumped
    to ``dump_dir/<step>.jsonl``; unreadable lines are skipped."""
    shares = {}
    for path in dump_dir.glob("*.jsonl") if dump_dir.is_dir() else ():
        if not path.stem.isdigit():
            continue
        counts = dict.fromkeys(STYLES, 0)
        for line in path.read_text().splitlines():
            try:
                counts[response_style(str(json.loads(line)["output"]))] += 1
            except (ValueError, KeyError, TypeError):
                continue
        if total := sum(counts.values()):
            shares[int(path.stem)] = {style: n / total for style, n in counts.items()}
    return dict(sorted(shares.items()))


def attach_styles(runs: list[Run], rollouts_dir: Optional[Path]) -> None:
    """Fill each run's ``styles`` from ``rollouts_dir/<variant>-seed<k>/``."""
    if rollouts_dir is not None:
        for run in runs:
            run.styles = style_shares(rollouts_dir / f"{run.variant}-seed{run.seed}")


def mechanism_table(runs: list[Run], sft: Optional[dict[str, float]] = None) -> str:
    """Markdown table: per variant (mean over seeds), the style shares of the sampled responses at the first
    and the last step, the pseudo-labels' accuracy over the first and the last three steps, and the share of
    held-out greedy answers in the shortcut style (SFT model, then each final checkpoint)."""
    head = "| run | " + " | ".join(f"{style} first -> last" for style in STYLES) + \
        " | pseudo-label accuracy first 3 -> last 3 steps | held-out greedy answers in the shortcut style |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    if sft and "greedy_shortcut" in sft:
        lines.append("| SFT model | " + " | " * len(STYLES) + f" | {100 * sft['greedy_shortcut']:.0f} % |")
    for variant, label in VARIANTS.items():
        group = [r for r in runs if r.variant == variant and r.styles]
        if not group:
            continue
        cells = []
        for style in STYLES:
            first = statistics.fmean(r.styles[min(r.styles)][style] for r in group)
            last = statistics.fmean(r.styles[max(r.styles)][style] for r in group)
            cells.append(f"{100 * first:.0f} -> {100 * last:.0f} %")
        accuracy = [[m["mmupt/label_accuracy"] for _, m in sorted(r.steps.items()) if "mmupt/label_accuracy" in m]
                    for r in group]
        if all(accuracy):
            early = statistics.fmean(statistics.fmean(a[:3]) for a in accuracy)
            late = statistics.fmean(statistics.fmean(a[-3:]) for a in accuracy)
            cells.append(f"{100 * early:.0f} -> {100 * late:.0f} %")
        else:  # supervised runs read the labels; synthesized questions carry no hidden answer to grade against
            cells.append("labels read" if variant == "grpo_supervised" else "n/a")
        finals = [r.final["greedy_shortcut"] for r in group if "greedy_shortcut" in r.final]
        cells.append(_mean_spread(finals) + " %" if finals else "n/a")
        lines.append(f"| {label} ({len(group)} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    if any(run.styles for run in runs):
        panels.append(("shortcut-style share of samples", SHORTCUT))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4))
    for ax, (title, key) in zip(axes, panels):
        for index, (variant, label) in enumerate(VARIANTS.items()):
            per_step: dict[int, list[float]] = defaultdict(list)
            for run in (r for r in runs if r.variant == variant):
                if key == SHORTCUT:
                    for step, shares in run.styles.items():
                        per_step[step].append(shares[SHORTCUT])
                    continue
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
    """``python -m verl_ext.toy.report runs=DIR out=DIR [diag=DIR] [rollouts=DIR] [n=8]``: the toy run's tables
    and curves."""

    runs: str = MISSING
    """Directory of ``<variant>-seed<k>.jsonl`` metric logs."""
    out: str = MISSING
    """Where ``table.md``, ``stopping.md`` and ``curves.png`` go."""
    diag: Optional[str] = None
    """Directory of diagnosis reports (``sft.json``, ``<variant>-seed<k>.json``)."""
    rollouts: Optional[str] = None
    """Directory of verl's rollout dumps, one sub-directory ``<variant>-seed<k>`` per run (the mechanism table)."""
    n: int = 8
    """Samples per question of the diagnoses."""


USAGE = "usage: python -m verl_ext.toy.report runs=DIR out=DIR [diag=DIR] [rollouts=DIR] [n=8]"


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
        attach_styles(runs, Path(args.rollouts) if args.rollouts else None)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        text = table(runs, sft, args.n)
        (out / "table.md").write_text(text + "\n")
        stopping = stopping_table(runs)
        (out / "stopping.md").write_text(stopping + "\n")
        mechanism = mechanism_table(runs, sft)
        (out / "mechanism.md").write_text(mechanism + "\n")
        plot(runs, out / "curves.png", sft)
        logger.info("%s\n\n%s\n\n%s\n\nwrote table.md, stopping.md, mechanism.md and curves.png to %s", text,
                    stopping, mechanism, out)
        return 0

    return run_command(argv, __doc__, USAGE, command)


if __name__ == "__main__":
    sys.exit(main())
