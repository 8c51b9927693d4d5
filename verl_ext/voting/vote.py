"""Majority vote over a group of sampled answers: the self-rewarding signal of MM-UPT."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from verl_ext.voting.equivalence import Deadline, Representatives, get_timeouts
from verl_ext.voting.normalize import normalize
from verl_ext.voting.settings import check_one_of

TIE_BREAKS = ("none", "first", "random")
# Slack for comparing a ratio like 3/10 with a min_ratio typed as 0.3.
_RATIO_EPS = 1e-12


@dataclass(frozen=True)
class Vote:
    """Result of :func:`vote`.

    ``label``: the winning answer as written by its first voter, or ``None``.
    ``ratio``: size of the largest cluster / ``len(answers)`` (``None`` answers count in the
    denominator; ``0.0`` when nobody answered). It is reported even when ties or
    ``min_ratio`` leave no label, so callers can log how strong the consensus was.
    ``rewards``: one float per answer. ``clusters``: indices of equivalent answers, in
    order of first appearance; ``None`` answers are in no cluster.
    """

    label: str | None
    ratio: float
    rewards: list[float]
    clusters: list[list[int]]


def cluster_answers(answers: Sequence[str | None]) -> list[list[int]]:
    """Group indices of equivalent answers, clusters in order of first appearance.

    Each new answer joins the first cluster whose first answer is equivalent to it
    (see :func:`~verl_ext.voting.is_equivalent`), else starts a cluster. ``None`` and
    answers that normalise to an empty string are left out. The ``per_vote`` budget of
    :func:`~verl_ext.voting.set_timeouts` bounds the symbolic checks.
    """
    if isinstance(answers, (str, bytes)):
        raise TypeError("answers must be a sequence of answers (str or None), not one string")
    deadline = Deadline(get_timeouts()[1])
    cluster_of: dict[str, int] = {}
    representatives = Representatives()
    clusters: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        if not isinstance(answer, str):
            raise TypeError(f"answers must be str or None, got {type(answer).__name__} at index {i}")
        key = normalize(answer)
        if not key:
            continue
        c = cluster_of.get(key)
        if c is None:
            c = representatives.find(key, deadline=deadline)
            if c is None:
                c = representatives.add(key)
                clusters.append([])
            cluster_of[key] = c
        clusters[c].append(i)
    return clusters


def check_vote_settings(tie_break: str, min_ratio: float) -> None:
    check_one_of("tie_break", tie_break, TIE_BREAKS)
    if not 0.0 <= float(min_ratio) <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1]; got {min_ratio!r}")


def vote(
    answers: Sequence[str | None], *, min_ratio: float = 0.0, tie_break: str = "none", seed: int = 0, soft: bool = False
) -> Vote:
    """Majority vote over ``answers``; members of the winning cluster earn reward 1.0.

    A tie for the top is resolved by ``tie_break``: ``"none"`` gives no label, ``"first"``
    picks the cluster whose first member comes first, ``"random"`` picks one with
    ``random.Random(seed)``. A winner whose ratio is below ``min_ratio`` gives no label.
    Without a label every reward is 0.0, with ``soft`` too: there is no pseudo-label to
    agree with, and a soft reward for a tie would reward disagreement. With a label and
    ``soft=True``, each answer gets its own cluster's size / ``len(answers)`` instead of
    0/1. ``None`` answers never vote and always get 0.0.
    """
    check_vote_settings(tie_break, min_ratio)
    clusters = cluster_answers(answers)
    n = len(answers)
    top = max(map(len, clusters), default=0)
    ratio = top / n if top else 0.0
    leaders = [c for c in clusters if len(c) == top]
    if len(leaders) > 1 and tie_break != "first":
        leaders = [random.Random(seed).choice(leaders)] if tie_break == "random" else []
    rewards = [0.0] * n
    if not leaders or ratio + _RATIO_EPS < min_ratio:
        return Vote(label=None, ratio=ratio, rewards=rewards, clusters=clusters)
    winner = leaders[0]
    for cluster in clusters if soft else [winner]:
        value = len(cluster) / n if soft else 1.0
        for i in cluster:
            rewards[i] = value
    return Vote(label=answers[winner[0]], ratio=ratio, rewards=rewards, clusters=clusters)
