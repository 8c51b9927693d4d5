"""``python -m verl_ext.eval.diagnose``: what a model can do on a question set, and what a vote could add.

For each verl-format parquet file and each ``extra_info.task``: greedy accuracy, mean@N (``n`` answers
sampled at ``temperature``), maj@N (the vote over those answers, clustered and voted as the training vote
does; a group without a pseudo-label counts as wrong), pass@N, the no-label rate and the mean majority
ratio. MM-UPT can at most distil the vote into the single answer, so ``maj@N - greedy`` on the training
questions is about the room the method has (TTRL's ceiling), and ``maj@N - mean@N`` how much the vote
corrects the sampled answers it trains on. The label is ``reward_model.ground_truth``, or the hidden
``extra_info.answer`` of unlabeled files.

Usage (``key=value`` settings, as the training CLI)::

    python -m verl_ext.eval.diagnose model=PATH data=[rl/unlabeled.parquet,test.parquet] n=8 temperature=1.0

Prints a markdown table; ``out=FILE.json`` also writes the table and every question's answers.
Exit status: 0 done, 2 usage error (unknown key, bad value, missing file).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from verl_ext.config.compose import run_command, settings_from_argv
from verl_ext.data.schema import read_rows
from verl_ext.eval.report import md_table
from verl_ext.files import write_json
from verl_ext.generation.base import BackendConfig, GenerationRequest, SamplingSettings
from verl_ext.generation.factory import make_generator
from verl_ext.voting import STYLES, TIE_BREAKS, extract_answer, vote
from verl_ext.voting.score import is_correct

logger = logging.getLogger("verl_ext.eval.diagnose")

USAGE = "usage: python -m verl_ext.eval.diagnose model=PATH data=[FILE.parquet,...] [n=8 temperature=1.0 ...]"


@dataclass
class DiagnoseConfig:
    """Settings of one diagnosis."""

    model: str = MISSING
    """Model directory (transformers format), e.g. a merged SFT checkpoint."""
    data: list[str] = MISSING
    """verl-format parquet files (prompt, images, reward_model, extra_info), each reported on its own."""
    n: int = 8
    """Sampled answers per question (the vote's group size)."""
    temperature: float = 1.0
    """Sampling temperature of the ``n`` answers (set it to the rollout's)."""
    top_p: float = 1.0
    """Nucleus sampling mass of the ``n`` answers."""
    max_new_tokens: int = 32
    """Longest answer in tokens (set it to the rollout's ``response_length``)."""
    answer_style: str = "boxed"
    """How the final answer is read: ``boxed``, ``answer_tag`` or ``choice``."""
    min_ratio: float = 0.0
    """The vote's threshold: a pseudo-label needs at least this share of the group."""
    tie_break: str = "none"
    """The vote's tie rule: ``none`` (no label), ``first`` or ``random``."""
    limit: Optional[int] = None
    """Diagnose only the first ``limit`` questions of each file (None: all)."""
    batch_size: int = 32
    """Questions per generate call."""
    seed: int = 0
    """Sampling seed."""
    out: Optional[str] = None
    """Also write the summary and every question's answers to this JSON file."""

    def __post_init__(self) -> None:
        # settings_from_argv reports a ValueError raised here as one line.
        if not Path(self.model).is_dir():
            raise ValueError(f"model={self.model}: no such model directory")
        if not self.data:
            raise ValueError("data=[]: give at least one parquet file")
        if missing := [path for path in self.data if not Path(path).is_file()]:
            raise ValueError(f"data: {missing[0]}: no such file")
        if self.n < 1:
            raise ValueError(f"n={self.n}: must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: must be > 0 (the greedy answer is measured anyway)")
        if self.answer_style not in STYLES:
            raise ValueError(f"answer_style={self.answer_style}: choose one of {', '.join(STYLES)}")
        if self.tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break={self.tie_break}: choose one of {', '.join(TIE_BREAKS)}")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise ValueError(f"min_ratio={self.min_ratio}: must be in [0, 1]")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit}: must be >= 1 or null")


def load_questions(path: str, limit: Optional[int] = None) -> list[dict[str, Any]]:
    """The questions of a verl-format parquet file (request, label, task); a row without a label is an error."""
    questions = []
    for index, row in enumerate(read_rows(path)[:limit]):
        label = (row.get("reward_model") or {}).get("ground_truth")
        if label is None or not str(label).strip():
            label = (row.get("extra_info") or {}).get("answer")
        if label is None or not str(label).strip():
            raise ValueError(f"{path}: row {index} has no label (reward_model.ground_truth or extra_info.answer)")
        request = GenerationRequest(messages=list(row["prompt"]), images=list(row.get("images") or []))
        task = str((row.get("extra_info") or {}).get("task") or "")
        questions.append({"request": request, "label": str(label).strip(), "task": task})
    return questions


def grade(label: str, greedy: str, samples: Sequence[str], config: DiagnoseConfig) -> dict[str, Any]:
    """The greedy answer, each sample and the vote over the samples, graded against ``label``."""
    answers = [extract_answer(text, style=config.answer_style) for text in samples]
    result = vote(answers, min_ratio=config.min_ratio, tie_break=config.tie_break, seed=config.seed)
    # Equivalent answers share a cluster: grade each cluster once, by its first member.
    cluster_right = {i: is_correct(answers[c[0]], label) for c in result.clusters for i in c}
    return {
        "greedy_correct": is_correct(extract_answer(greedy, style=config.answer_style), label),
        "correct": [cluster_right.get(i, False) for i in range(len(answers))],
        "majority": result.label,
        "majority_correct": result.label is not None and is_correct(result.label, label),
        "majority_ratio": result.ratio,
    }


def summarize(outcomes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Greedy, mean@N, maj@N, pass@N, no-label rate and mean majority ratio over graded questions."""
    if not outcomes:
        return {}
    figures = {
        "greedy": lambda o: o["greedy_correct"],
        "mean": lambda o: sum(o["correct"]) / len(o["correct"]),
        "maj": lambda o: o["majority_correct"],
        "pass": lambda o: any(o["correct"]),
        "no_label": lambda o: o["majority"] is None,
        "majority_ratio": lambda o: o["majority_ratio"],
    }
    return {"questions": float(len(outcomes)), **{k: sum(map(f, outcomes)) / len(outcomes) for k, f in figures.items()}}


def by_task(outcomes: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """:func:`summarize` over all outcomes (key ``all``) and per task (when the file names several)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for outcome in outcomes:
        if outcome["task"]:
            groups[outcome["task"]].append(outcome)
    table = {"all": summarize(outcomes)}
    if len(groups) > 1:
        table.update({task: summarize(groups[task]) for task in sorted(groups)})
    return table


def markdown_table(results: dict[str, dict[str, dict[str, float]]], n: int) -> str:
    """One row per file and task: greedy, mean@N, maj@N, pass@N (%), the two gaps, no-label, ratio."""
    header = ["data", "task", "questions", "greedy", f"mean@{n}", f"maj@{n}", f"pass@{n}", "maj-greedy", "maj-mean"]
    rows = []
    for name, tasks in results.items():
        for task, s in tasks.items():
            pct = {k: 100 * s[k] for k in ("greedy", "mean", "maj", "pass", "no_label")}
            rows.append(
                [name, task, int(s["questions"])]
                + [f"{pct[k]:.1f}" for k in ("greedy", "mean", "maj", "pass")]
                + [f"{pct['maj'] - pct['greedy']:+.1f}", f"{pct['maj'] - pct['mean']:+.1f}"]
                + [f"{pct['no_label']:.1f}", f"{s['majority_ratio']:.2f}"]
            )
    return md_table(header + ["no label", "majority ratio"], rows, left=2)


NO_ROOM = 0.02
"""A vote at most this far above greedy accuracy has nothing to distil into the greedy answer."""
LABELS_RIGHT = 0.70
"""Below this maj@N, the vote's pseudo-labels are wrong on more than 30 % of the questions."""


def reading(figures: dict[str, float], n: int) -> str:
    """What a file's figures mean for MM-UPT, in words: the room (maj@N - greedy) and the pseudo-labels' quality
    (maj@N), read against the toy dose-response (docs/toy.md)."""
    gap, maj = figures["maj"] - figures["greedy"], figures["maj"]
    room = f"maj@{n} {100 * maj:.1f} vs greedy {100 * figures['greedy']:.1f} ({100 * gap:+.1f} points)"
    if gap <= NO_ROOM:
        return (f"{room}: the vote is not better than the greedy answer, so MM-UPT has nothing to distil into it; "
                "on the toy, no regime with such a gap gained greedy accuracy (a higher temperature or more "
                "samples per vote can open a gap; diagnose again).")
    if maj < LABELS_RIGHT:
        return (f"{room}: room to gain, but the vote's labels are right on only {100 * maj:.0f} % of the "
                "questions, so MM-UPT also rewards wrong answers; on the plain toy's counting, labels right about "
                "60 % of the time taught wrong counts (a vote threshold, min_ratio, trades labels for coverage).")
    return (f"{room}: room to gain, with labels right on {100 * maj:.0f} % of the questions; on the toy's positive "
            "control (gap +23, labels 95 % right), MM-UPT closed the whole gap within 12 steps.")


def diagnose(config: DiagnoseConfig, generator: Any = None) -> dict[str, Any]:
    """Generate and grade every file of ``config.data``; returns ``{"settings", "summary", "questions"}``.

    ``generator`` (anything with the :class:`~verl_ext.generation.base.Generator` interface) defaults to
    one rollout replica of ``config.model`` (closed when done).
    """
    own = generator is None
    if own:
        generator = make_generator("auto", config.model, BackendConfig(batch_size=config.batch_size))
    tokens = config.max_new_tokens
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=tokens, seed=None)
    sampled = SamplingSettings(
        n=config.n, temperature=config.temperature, top_p=config.top_p, max_new_tokens=tokens, seed=config.seed
    )
    details: dict[str, list[dict[str, Any]]] = {}
    try:
        for path in config.data:
            questions = load_questions(path, config.limit)
            requests = [q.pop("request") for q in questions]
            name = Path(path).name
            greedy_texts = generator.generate(requests, greedy, desc=f"{name}: greedy")
            sampled_texts = generator.generate(requests, sampled, desc=f"{name}: {config.n} samples")
            details[path] = [
                {**q, "greedy": g[0], "samples": list(texts), **grade(q["label"], g[0], texts, config)}
                for q, g, texts in zip(questions, greedy_texts, sampled_texts)
            ]
    finally:
        if own:
            generator.close()
    summary = {path: by_task(outcomes) for path, outcomes in details.items()}
    return {"settings": dataclasses.asdict(config), "summary": summary, "questions": details}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    def command(argv: list[str]) -> int:
        config = settings_from_argv(DiagnoseConfig, argv, USAGE)
        report = diagnose(config)
        table = markdown_table({Path(p).name: t for p, t in report["summary"].items()}, config.n)
        readings = "\n".join(f"- {Path(path).name}: {reading(tasks['all'], config.n)}"
                             for path, tasks in report["summary"].items() if tasks)
        print(
            f"model {config.model}: greedy vs {config.n} samples at temperature {config.temperature} "
            f"(vote: min_ratio {config.min_ratio}, ties {config.tie_break})\n{table}\n\nWhat it means for MM-UPT:\n"
            f"{readings}"
        )
        if config.out:
            write_json(config.out, report)  # its folder made if needed
            logger.info("wrote %s", config.out)
        return 0

    return run_command(argv, __doc__, USAGE, command)


if __name__ == "__main__":
    sys.exit(main())
