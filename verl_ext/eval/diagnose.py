"""``python -m verl_ext.eval.diagnose``: what a model can do on a question set, and what a vote could add.

For each verl-format parquet file (the files training and validation read), it measures:

- ``greedy``: accuracy of one greedy answer per question (what validation with temperature 0 reports);
- ``mean@N``: mean accuracy of ``n`` answers sampled at ``temperature`` (the rollout's setting);
- ``maj@N``: accuracy of the majority vote over those same ``n`` answers, clustered and voted exactly as
  the training vote does (:func:`verl_ext.voting.vote`, with ``min_ratio`` and ``tie_break``); a group
  without a pseudo-label counts as wrong;
- ``pass@N``: share of questions with at least one right answer among the ``n``;
- ``no_label``: share of groups the vote leaves without a pseudo-label; ``majority_ratio``: mean share of
  the largest answer cluster.

MM-UPT can at most distil the vote into the single answer, so ``maj@N - greedy`` on the training
questions is about the room the method has (TTRL's ceiling), and ``maj@N - mean@N`` is how much the vote
corrects the sampled answers it trains on. Figures are given over the whole file and per
``extra_info.task``. The label is ``reward_model.ground_truth``, or the hidden ``extra_info.answer`` of
unlabeled files. Answers are graded with the voting core's extraction and equivalence, as the training
rewards grade them.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from verl_ext.generation.base import BackendConfig, GenerationRequest, SamplingSettings
from verl_ext.voting import STYLES, TIE_BREAKS, extract_answer, vote
from verl_ext.voting.score import is_correct

logger = logging.getLogger("verl_ext.eval.diagnose")

USAGE = "usage: python -m verl_ext.eval.diagnose model=PATH data=[FILE.parquet,...] [n=8 temperature=1.0 ...]"
ALL_TASKS = "all"


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

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if not Path(self.model).is_dir():
            raise ValueError(f"model={self.model}: no such model directory")
        if not self.data:
            raise ValueError("data=[]: give at least one parquet file")
        for path in self.data:
            if not Path(path).is_file():
                raise ValueError(f"data: {path}: no such file")
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


@dataclass
class Question:
    """One question of a data file, with what the model answered."""

    request: GenerationRequest
    label: str
    task: str
    greedy: str = ""
    samples: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """The graded answers to one question."""

    task: str
    greedy: bool
    correct: list[bool]
    majority: Optional[str]
    majority_correct: bool
    majority_ratio: float


# ------------------------------------------------------------------------------------------------ reading


def _label(row: dict[str, Any]) -> str:
    truth = (row.get("reward_model") or {}).get("ground_truth")
    if truth is None or not str(truth).strip():
        truth = (row.get("extra_info") or {}).get("answer")
    return "" if truth is None else str(truth).strip()


def load_questions(path: str, limit: Optional[int] = None) -> list[Question]:
    """The questions of a verl-format parquet file; rows without any label cannot be graded and are an error."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    if limit is not None:
        rows = rows[:limit]
    questions = []
    for index, row in enumerate(rows):
        label = _label(row)
        if not label:
            raise ValueError(f"{path}: row {index} has no label (reward_model.ground_truth or extra_info.answer)")
        request = GenerationRequest(messages=list(row["prompt"]), images=list(row.get("images") or []))
        task = str((row.get("extra_info") or {}).get("task") or "")
        questions.append(Question(request=request, label=label, task=task))
    return questions


# ------------------------------------------------------------------------------------------------ grading


def grade(question: Question, config: DiagnoseConfig) -> Outcome:
    """Grade the greedy answer, each sample, and the vote over the samples, against the label."""

    def answer(text: str) -> Optional[str]:
        return extract_answer(text, style=config.answer_style)

    def right(pred: Optional[str]) -> bool:
        return is_correct(pred, question.label)

    answers = [answer(text) for text in question.samples]
    result = vote(answers, min_ratio=config.min_ratio, tie_break=config.tie_break, seed=config.seed)
    # Equivalent answers share a cluster: grade each cluster once, by its first member.
    cluster_right = {i: right(answers[c[0]]) for c in result.clusters for i in c}
    correct = [cluster_right.get(i, False) for i in range(len(answers))]
    return Outcome(
        task=question.task,
        greedy=right(answer(question.greedy)),
        correct=correct,
        majority=result.label,
        majority_correct=result.label is not None and right(result.label),
        majority_ratio=result.ratio,
    )


def summarize(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Greedy, mean@N, maj@N, pass@N, no-label rate and mean majority ratio over ``outcomes``."""
    count = len(outcomes)
    if not count:
        return {}
    return {
        "questions": float(count),
        "greedy": sum(o.greedy for o in outcomes) / count,
        "mean": sum(sum(o.correct) / len(o.correct) for o in outcomes) / count,
        "maj": sum(o.majority_correct for o in outcomes) / count,
        "pass": sum(any(o.correct) for o in outcomes) / count,
        "no_label": sum(o.majority is None for o in outcomes) / count,
        "majority_ratio": sum(o.majority_ratio for o in outcomes) / count,
    }


def by_task(outcomes: Sequence[Outcome]) -> dict[str, dict[str, float]]:
    """:func:`summarize` over all outcomes (key ``all``) and per task (when the file names tasks)."""
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.task:
            groups[outcome.task].append(outcome)
    table = {ALL_TASKS: summarize(outcomes)}
    if len(groups) > 1:
        table.update({task: summarize(groups[task]) for task in sorted(groups)})
    return table


def markdown_table(results: dict[str, dict[str, dict[str, float]]], n: int) -> str:
    """One row per file and task: greedy, mean@N, maj@N, pass@N (%), the two gaps, no-label, ratio."""
    head = (
        f"| data | task | questions | greedy | mean@{n} | maj@{n} | pass@{n} | maj-greedy | maj-mean "
        "| no label | majority ratio |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for name, tasks in results.items():
        for task, s in tasks.items():
            pct = {k: 100 * s[k] for k in ("greedy", "mean", "maj", "pass", "no_label")}
            lines.append(
                f"| {name} | {task} | {int(s['questions'])} | {pct['greedy']:.1f} | {pct['mean']:.1f} "
                f"| {pct['maj']:.1f} | {pct['pass']:.1f} | {pct['maj'] - pct['greedy']:+.1f} "
                f"| {pct['maj'] - pct['mean']:+.1f} | {pct['no_label']:.1f} | {s['majority_ratio']:.2f} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ running


def diagnose(config: DiagnoseConfig, generator: Any = None) -> dict[str, Any]:
    """Generate and grade every file of ``config.data``; returns ``{"summary": ..., "questions": ...}``.

    ``generator`` (anything with the :class:`~verl_ext.generation.base.Generator` interface) defaults to
    one rollout replica of ``config.model`` (closed when done).
    """
    own = generator is None
    if own:
        from verl_ext.generation.factory import make_generator

        generator = make_generator("auto", config.model, BackendConfig(batch_size=config.batch_size))
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=None)
    sampled = SamplingSettings(
        n=config.n,
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,
    )
    summary: dict[str, dict[str, dict[str, float]]] = {}
    details: dict[str, list[dict[str, Any]]] = {}
    try:
        for path in config.data:
            questions = load_questions(path, config.limit)
            requests = [q.request for q in questions]
            name = Path(path).name
            for question, texts in zip(questions, generator.generate(requests, greedy, desc=f"{name}: greedy")):
                question.greedy = texts[0]
            sampled_texts = generator.generate(requests, sampled, desc=f"{name}: {config.n} samples")
            for question, texts in zip(questions, sampled_texts):
                question.samples = list(texts)
            outcomes = [grade(q, config) for q in questions]
            summary[path] = by_task(outcomes)
            details[path] = [
                {
                    "task": q.task,
                    "label": q.label,
                    "greedy": q.greedy,
                    "samples": q.samples,
                    "greedy_correct": o.greedy,
                    "correct": o.correct,
                    "majority": o.majority,
                    "majority_correct": o.majority_correct,
                }
                for q, o in zip(questions, outcomes)
            ]
    finally:
        if own:
            generator.close()
    return {"settings": dataclasses.asdict(config), "summary": summary, "questions": details}


def parse_config(argv: Sequence[str]) -> DiagnoseConfig:
    """The settings ``key=value ...`` describe; ValueError with one line for anything wrong."""
    from verl_ext.config.compose import CLIError, settings_from_argv

    try:
        config = settings_from_argv(DiagnoseConfig, argv, USAGE)
    except CLIError as err:
        raise ValueError(str(err)) from None
    config.validate()
    return config


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        print(f"verl_ext.eval.diagnose: {err}", file=sys.stderr)
        return 2
    report = diagnose(config)
    table = markdown_table({Path(p).name: t for p, t in report["summary"].items()}, config.n)
    print(
        f"model {config.model}: greedy vs {config.n} samples at temperature {config.temperature} "
        f"(vote: min_ratio {config.min_ratio}, ties {config.tie_break})\n{table}"
    )
    if config.out:
        from verl_ext.files import write_json

        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(config.out), report)
        logger.info("wrote %s", config.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
