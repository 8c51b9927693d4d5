"""Diagnostics of the vote per training step: is the pseudo-label any good, is the group converging?

Names avoid "max", "min", "sum" and "total": verl's metric aggregator picks a reduction by
substring of the name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from verl_ext.voting.score import Choices, is_correct
from verl_ext.voting.vote import Vote

PREFIX = "mmupt"


@dataclass(frozen=True)
class GroupOutcome:
    """One prompt's vote, with the hidden label when the dataset carries one (monitoring only)."""

    answers: Sequence[Optional[str]]
    vote: Vote
    truth: Optional[str] = None
    choices: Choices = None
    """The row's options on a multiple-choice question (graded as :func:`~verl_ext.voting.score.is_correct` does)."""


def cluster_correctness(group: GroupOutcome) -> list[bool]:
    """Per response, whether its answer is the truth; graded once per cluster (its members are equivalent)."""
    correct = [False] * len(group.answers)
    for cluster in group.vote.clusters:
        right = is_correct(group.answers[cluster[0]], group.truth, choices=group.choices)
        for i in cluster:
            correct[i] = right
    return correct


def answer_entropy(vote: Vote, n: int) -> float:
    """Entropy (nats) of the answer distribution over clusters, responses without an answer as one more outcome."""
    sizes = [len(c) for c in vote.clusters]
    sizes.append(n - sum(sizes))
    return -sum(s / n * math.log(s / n) for s in sizes if s)


def summarize(groups: Sequence[GroupOutcome], vote_seconds: float = 0.0) -> dict[str, float]:
    """Step metrics over the groups of one batch.

    - ``majority_ratio``: mean share of the largest cluster.
    - ``no_label_rate``: share of groups left without a pseudo-label (tie, no answer, below min_ratio).
    - ``no_answer_rate``: share of responses with no extractable answer.
    - ``answer_entropy``: mean entropy over answer clusters (falls as the model converges).
    - ``distinct_answers``: mean number of distinct answers per group (no answer not counted, except as
      the answer ``"None"`` under ``clustering=exact_string``).
    - ``label_accuracy``: share of labelled groups whose pseudo-label equals the hidden truth.
    - ``reward_accuracy``: share of responses whose vote reward (> 0) agrees with their true correctness.
    - ``labeled_groups``: how many groups carried a hidden truth (the two accuracies' denominators).
    - ``votes_per_group``: mean number of responses voted on per prompt.
    - ``vote_time_s``: wall time spent voting.
    """
    if not groups:
        return {}
    n_groups = len(groups)
    n_responses = sum(len(g.answers) for g in groups)
    metrics = {
        "majority_ratio": sum(g.vote.ratio for g in groups) / n_groups,
        "no_label_rate": sum(g.vote.label is None for g in groups) / n_groups,
        "no_answer_rate": sum(a is None for g in groups for a in g.answers) / max(n_responses, 1),
        "answer_entropy": sum(answer_entropy(g.vote, len(g.answers)) for g in groups) / n_groups,
        "distinct_answers": sum(len(g.vote.clusters) for g in groups) / n_groups,
        "votes_per_group": n_responses / n_groups,
        "vote_time_s": vote_seconds,
    }
    labeled = [g for g in groups if g.truth]
    metrics["labeled_groups"] = float(len(labeled))
    if labeled:
        label_hits = agree = 0
        for g in labeled:
            correct = cluster_correctness(g)
            label = g.vote.label
            # Under clustering=exact_string the label "None" may stand for responses without an answer.
            label_hits += label is not None and label in g.answers and correct[g.answers.index(label)]
            agree += sum((reward > 0) == right for reward, right in zip(g.vote.rewards, correct))
        metrics["label_accuracy"] = label_hits / len(labeled)
        metrics["reward_accuracy"] = agree / sum(len(g.answers) for g in labeled)
    return {f"{PREFIX}/{k}": float(v) for k, v in metrics.items()}
