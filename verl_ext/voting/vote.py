"""Majority vote over a group of sampled answers: the self-rewarding signal of MM-UPT."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from verl_ext.voting.equivalence import Deadline, Representatives, get_timeouts
from verl_ext.voting.normalize import normalize
from verl_ext.voting.settings import check_one_of

TIE_BREAKS = ("none", "first", "random")
# Slack for comparing a ratio like 3/10 with a min_ratio typed as 0.3.
_RATIO_EPS = 1e-12
# How long past the per-vote budget new answers are still normalised (and matched by that form only).
LATE_NORMALIZE_S = 0.2
_LEFT_OUT = -1  # the cluster of an answer left out of the vote (empty)
_late_warned = False

logger = logging.getLogger(__name__)


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
    answers that normalise to an empty string are left out.

    The ``per_vote`` budget of :func:`~verl_ext.voting.set_timeouts` bounds the whole call:
    normalisation, the cheap checks and the symbolic ones. Once it has passed, a new answer meets
    no equivalence check: for ``LATE_NORMALIZE_S`` (0.2 s) more it is still normalised and joins an
    earlier answer's cluster only when their normalised forms are the same string; after that it
    is matched by its exact text only (surrounding whitespace stripped), and one that is only
    whitespace is left out. Either way a new answer that matches nothing starts its own cluster.
    Repeats of an earlier answer's exact text always join its cluster at the cost of a hash. So a
    vote returns within its budget + 0.2 s + one answer's normalisation (at most
    ``MAX_ANSWER_LEN`` characters: milliseconds) + a hash of each remaining answer.
    """
    if isinstance(answers, (str, bytes)):
        raise TypeError("answers must be a sequence of answers (str or None), not one string")
    deadline = Deadline(get_timeouts()[1])
    by_text: dict[str, int] = {}  # stripped answer -> its cluster, or _LEFT_OUT
    cluster_of: dict[str, int] = {}  # normalised answer -> its cluster
    representatives = Representatives()
    clusters: list[list[int]] = []
    late = 0
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        if not isinstance(answer, str):
            raise TypeError(f"answers must be str or None, got {type(answer).__name__} at index {i}")
        text = answer.strip()
        c = by_text.get(text)
        if c is None:
            if not text:
                c = _LEFT_OUT
            elif (remaining := deadline.remaining()) > 0:
                c = _cluster_of_key(normalize(text), cluster_of, representatives, clusters, deadline)
            elif remaining > -LATE_NORMALIZE_S:  # past the budget: the exact normalised form only
                late += 1
                c = _cluster_of_key(normalize(text), cluster_of, representatives, clusters, None)
            else:  # and then the exact text only
                late += 1
                c = representatives.add(text, indexed=False)
                clusters.append([])
            by_text[text] = c
        if c != _LEFT_OUT:
            clusters[c].append(i)
    if late:
        _log_late(late, len(answers))
    return clusters



def _cluster_of_key(
    key: str,
    cluster_of: dict[str, int],
    representatives: Representatives,
    clusters: list[list[int]],
    deadline: Deadline | None,
) -> int:
    """The cluster of a normalised answer ``key``, or ``_LEFT_OUT`` for an empty one: the cluster of
    the same key, else (with a ``deadline``) the first equivalent one, else a new one."""
    if not key:
        return _LEFT_OUT
    c = cluster_of.get(key)
    if c is None:
        c = None if deadline is None else representatives.find(key, deadline=deadline)
        if c is None:
            c = representatives.add(key, indexed=deadline is not None)
            clusters.append([])
        cluster_of[key] = c
    return c


def _log_late(late: int, total: int) -> None:
    global _late_warned
    level = logging.DEBUG if _late_warned else logging.WARNING
    _late_warned = True
    logger.log(
        level,
        "the vote ran out of its per-vote budget (%.2fs); %d new answer(s) of %d matched without "
        "equivalence checks, by their exact normalised form or text "
        "(further occurrences are logged at DEBUG)",
        get_timeouts()[1],
        late,
        total,
    )


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
