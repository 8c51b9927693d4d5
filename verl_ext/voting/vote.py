"""Majority vote over a group of sampled answers: the self-rewarding signal of MM-UPT."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from verl_ext.voting.equivalence import Deadline, Representatives, get_timeouts, grade_against
from verl_ext.voting.normalize import normalize
from verl_ext.voting.settings import check_one_of

TIE_BREAKS = ("none", "first", "random")
# math: equivalent answers are one cluster (this package's vote); exact_string: the public MM-UPT vote.
CLUSTERINGS = ("math", "exact_string")
# What a response without an answer votes under clustering=exact_string (the public code's placeholder).
NO_ANSWER = "None"
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

    With ``clustering="exact_string"`` a ``None`` answer is the string ``"None"``, a cluster is
    the indices of one string, ``label`` is the most common string (``"None"`` included) and
    ``ratio`` its count / ``len(answers)``; see :func:`vote`.
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


def check_vote_settings(tie_break: str, min_ratio: float, clustering: str = "math", soft: bool = False) -> None:
    check_one_of("tie_break", tie_break, TIE_BREAKS)
    if not 0.0 <= float(min_ratio) <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1]; got {min_ratio!r}")
    check_one_of("clustering", clustering, CLUSTERINGS)
    if clustering == "exact_string":
        unused = [
            text
            for text, used in (
                ("min_ratio > 0", float(min_ratio) > 0.0),
                ("tie_break=random", tie_break == "random"),
                ("soft", bool(soft)),
            )
            if used
        ]
        if unused:
            raise ValueError(
                f"clustering=exact_string is the public MM-UPT vote (no threshold, a tie goes to the answer "
                f"seen first, 0/1 rewards): drop {', '.join(unused)}"
            )


def vote(
    answers: Sequence[str | None],
    *,
    min_ratio: float = 0.0,
    tie_break: str = "none",
    seed: int = 0,
    soft: bool = False,
    clustering: str = "math",
) -> Vote:
    """Majority vote over ``answers``; members of the winning cluster earn reward 1.0.

    A tie for the top is resolved by ``tie_break``: ``"none"`` gives no label, ``"first"``
    picks the cluster whose first member comes first, ``"random"`` picks one with
    ``random.Random(seed)``. A winner whose ratio is below ``min_ratio`` gives no label.
    Without a label every reward is 0.0, with ``soft`` too: there is no pseudo-label to
    agree with, and a soft reward for a tie would reward disagreement. With a label and
    ``soft=True``, each answer gets its own cluster's size / ``len(answers)`` instead of
    0/1. ``None`` answers never vote and always get 0.0.

    ``clustering="exact_string"`` is the vote of the public MM-UPT code instead: a ``None``
    answer is the string ``"None"``; the label is the most common string as written (equivalent
    forms split the vote; a tie goes to the string seen first; ``"None"`` can win); each answer's
    reward is mathruler's ``grade_answer(answer, label)``, 1.0 or 0.0, so equivalent forms of the
    label are rewarded too. ``tie_break`` is not used (``random`` is refused, as are ``min_ratio``
    > 0 and ``soft``). The grading runs in the grader processes under :func:`set_timeouts`'s
    limits; a pair they cut short earns 0.0. An empty group gives no label.
    """
    check_vote_settings(tie_break, min_ratio, clustering, soft)
    if isinstance(answers, (str, bytes)):
        raise TypeError("answers must be a sequence of answers (str or None), not one string")
    if clustering == "exact_string":
        return _exact_string_vote(answers)
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


def _exact_string_vote(answers: Sequence[str | None]) -> Vote:
    """The public MM-UPT vote: ``Counter(strings).most_common(1)``, then ``grade_answer`` against it."""
    deadline = Deadline(get_timeouts()[1])
    by_string: dict[str, list[int]] = {}  # insertion order: a tie goes to the string seen first
    for i, answer in enumerate(answers):
        if answer is not None and not isinstance(answer, str):
            raise TypeError(f"answers must be str or None, got {type(answer).__name__} at index {i}")
        by_string.setdefault(NO_ANSWER if answer is None else answer, []).append(i)
    if not by_string:
        return Vote(label=None, ratio=0.0, rewards=[], clusters=[])
    strings = list(by_string)
    label = max(strings, key=lambda s: len(by_string[s]))  # the first of the most common
    rewards = [0.0] * len(answers)
    for string, accepted in zip(strings, grade_against(strings, label, deadline=deadline)):
        if accepted:
            for i in by_string[string]:
                rewards[i] = 1.0
    clusters = list(by_string.values())
    return Vote(label=label, ratio=len(by_string[label]) / len(answers), rewards=rewards, clusters=clusters)
