"""The vote's time bound end to end, and what happens to answers past a cap or the budget.

A sampled response is untrusted input to a training step: ``vote()`` must return within its
per-vote budget plus a small constant whatever the strings are. The two groups below were measured
before the bound covered normalisation: 1,000 distinct ~280-character LaTeX answers took 10.4 s and
10 answers that are 10^6-digit integers 43-69 s.
"""

import importlib
import logging
import random
import time

import pytest

from verl_ext.voting import equivalence, is_equivalent, normalize, set_timeouts, vote, warm_up
from verl_ext.voting.grader import Deadline
from verl_ext.voting.normalize import MAX_ANSWER_LEN, MAX_GRADER_LEN

vote_module = importlib.import_module("verl_ext.voting.vote")

# What the vote may take past its budget: the 0.2 s in which late answers are still normalised,
# one answer's normalisation, and hashing the rest. Asserted as is, with no extra margin for load:
# past the budget the work is bounded by the clock, and what is not is milliseconds.
SLACK = 0.5


def long_latex_answers(count: int, seed: int = 0) -> list[str]:
    """Distinct ~280-character LaTeX sums that the numeric probe cannot evaluate (``\\sin``), so each
    pair goes to the symbolic grader and the budget runs out."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        terms: list[str] = []
        while len("+".join(terms)) < 270:
            terms.append(rf"\frac{{{rng.randint(1, 99)}}}{{{rng.randint(1, 99)}}}\sin(x)^{{{rng.randint(1, 9)}}}")
        out.append("+".join(terms))
    return out


def huge_integers(count: int, digits: int = 10**6, seed: int = 0) -> list[str]:
    """``count`` distinct integers of ``digits`` digits each."""
    rng = random.Random(seed)
    block = "".join(rng.choices("0123456789", k=10_000))
    body = (block * (digits // len(block) + 1))[: digits - 3]
    return [f"{i + 101}{body}" for i in range(count)]


def test_a_thousand_long_latex_answers_vote_within_the_budget(restore_timeouts, caplog):
    warm_up()  # the grader's first start in a process is not counted against a vote
    per_pair, per_vote = set_timeouts(per_pair=1.0, per_vote=2.0)
    answers = long_latex_answers(1000)
    assert len(set(answers)) == 1000 and all(270 <= len(a) <= MAX_GRADER_LEN for a in answers)
    with caplog.at_level(logging.DEBUG, logger="verl_ext.voting.vote"):
        start = time.perf_counter()
        result = vote(answers)
        elapsed = time.perf_counter() - start
    assert elapsed < per_vote + SLACK, elapsed
    assert len(result.clusters) == 1000 and result.label is None  # all different: a 1000-way tie
    assert any("per-vote budget" in r.getMessage() for r in caplog.records)  # the budget did run out


def test_ten_integers_of_a_million_digits_vote_within_the_budget():
    answers = huge_integers(10)
    assert all(len(a) == 10**6 for a in answers)
    start = time.perf_counter()
    result = vote(answers)
    elapsed = time.perf_counter() - start
    assert elapsed < equivalence.get_timeouts()[1] + SLACK, elapsed
    assert elapsed < 0.5, elapsed  # over MAX_ANSWER_LEN: no normalisation at all, only hashing
    assert len(result.clusters) == 10 and result.label is None


def test_huge_numbers_are_compared_as_exact_text():
    big, other = huge_integers(2)
    answers = [big, other, big, " " + big + "\n", "0" + big, big + ".0", big]
    start = time.perf_counter()
    result = vote(answers)
    assert time.perf_counter() - start < 0.5
    # The same text (surrounding whitespace aside) is one answer; another spelling of the same value is not.
    assert result.clusters == [[0, 2, 3, 6], [1], [4], [5]]
    assert result.label == big and result.ratio == pytest.approx(4 / 7)
    assert is_equivalent(big, big + " ")
    assert not is_equivalent(big, "0" + big)


def test_answers_over_the_length_cap_are_not_normalised():
    padded = r"\left(" + " " * MAX_ANSWER_LEN + r"x+1\right)"
    assert normalize(padded) == padded  # over the cap: stripped, otherwise as written
    assert normalize("  " + padded + "  ") == padded
    assert normalize(r"\left(" + " " * (MAX_ANSWER_LEN - 20) + r"x+1\right)") == "x+1"  # under it: normalised
    assert not is_equivalent(padded, "x+1")


def test_numbers_over_the_grader_cap_are_exact_strings(grader_calls):
    long_number = "1" * (MAX_GRADER_LEN + 1)
    assert equivalence.kind(normalize(long_number)) == equivalence.STRING
    assert equivalence.kind(normalize("1" * MAX_GRADER_LEN)) == equivalence.NUMBER
    assert not is_equivalent(long_number, r"\frac{10^{301}-1}{9}")  # equal in value, but never checked
    assert grader_calls == []


def test_numbers_over_the_number_cap_are_kept_as_written():
    long_decimal = "1" * 100 + ".0"  # 102 characters: not turned into a fraction
    assert normalize(long_decimal) == long_decimal
    assert normalize("1" * 98 + ".0") == "1" * 98
    # Not reduced, but under the grader's cap it is an expression: the grader may still show it equal.
    assert equivalence.kind(normalize(long_decimal)) == equivalence.EXPR
    assert is_equivalent(long_decimal, "1" * 100)


class _Clock:
    """A fake per-vote clock: each normalisation uses one second of it."""

    def __init__(self, remaining: float) -> None:
        self.remaining = remaining


def test_what_happens_past_the_budget(monkeypatch):
    clock = _Clock(1.5)

    class FakeDeadline(Deadline):
        def remaining(self) -> float:
            return clock.remaining

    def normalize_one_second(text: str) -> str:
        clock.remaining -= 1.0
        return normalize(text)

    monkeypatch.setattr(vote_module, "Deadline", FakeDeadline)
    monkeypatch.setattr(vote_module, "normalize", normalize_one_second)
    monkeypatch.setattr(vote_module, "LATE_NORMALIZE_S", 1.0)
    answers = [
        "1/2",  # 1.5 s left: normalised and checked
        "0.5",  # 0.5 s left: the same normalised form
        r"\frac{1}{2}",  # 0.5 s past the budget: still normalised, matched by that form only
        "1+x",  # 1.5 s past: exact text only (its own cluster)
        "0.5",  # a repeat of an earlier answer's text joins its cluster whenever it comes
        " 1+x ",  # the same text, surrounding whitespace aside
        "x+1",  # equivalent to 1+x, but past the budget: its own cluster
        "   ",  # only whitespace: left out
        "$0.5$",  # equal once normalised, but past the budget: its own cluster
        None,
    ]
    result = vote(answers)
    assert result.clusters == [[0, 1, 2, 4], [3, 5], [6], [8]]
    assert result.label == "1/2"
    assert clock.remaining == pytest.approx(-1.5)  # three answers were normalised, no more


def test_late_answers_still_normalised_join_by_normalised_form(monkeypatch):
    """Just past the budget an answer is matched by its normalised form, not checked for equivalence."""
    clock = _Clock(-0.1)

    class FakeDeadline(Deadline):
        def remaining(self) -> float:
            return clock.remaining

    monkeypatch.setattr(vote_module, "Deadline", FakeDeadline)
    result = vote(["x+1", "(x+1)", "1+x", "3", "3.0", "x = 3"])
    assert result.clusters == [[0, 1], [2], [3, 4, 5]]


@pytest.fixture
def grader_calls(monkeypatch):
    calls = []
    real = equivalence._grader.check
    monkeypatch.setattr(equivalence._grader, "check", lambda pairs, **kw: calls.append(list(pairs)) or real(pairs, **kw))
    return calls
