"""``vote(..., clustering="exact_string")``: the vote of the public MM-UPT code, checked against a
re-implementation of its documented behaviour on fixed and generated groups."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mathruler.grader import grade_answer

from verl_ext.voting import Vote, equivalence, set_timeouts, vote, warm_up
from verl_ext.voting.config import VoteConfig
from verl_ext.voting.metrics import GroupOutcome, summarize


def paper_vote(answers: list[str | None]) -> Vote:
    """The documented behaviour: the raw strings ("None" for no answer), Counter's majority (a tie to the
    string seen first), each response graded against it with mathruler. Clusters are the indices of
    one string in order of first appearance; the ratio is the majority string's count / the group."""
    strings = ["None" if a is None else a for a in answers]
    counts = Counter(strings)
    majority = counts.most_common(1)[0][0]
    return Vote(
        label=majority,
        ratio=counts[majority] / len(strings),
        rewards=[1.0 if grade_answer(s, majority) else 0.0 for s in strings],
        clusters=[[i for i, s in enumerate(strings) if s == t] for t in counts],
    )


@pytest.fixture
def generous_timeouts(restore_timeouts):
    """Grading short answers must not time out on a loaded machine: the comparison is exact."""
    set_timeouts(per_pair=30.0, per_vote=120.0)


GROUPS = {
    "tie, first seen wins": ["2", "1", "1", "2"],
    "three-way tie": ["c", "b", "a"],
    "None wins": [None, None, "3"],
    "a missing answer and a written None are one string": [None, "None", "4", "4"],
    "equivalent forms split the vote": ["0.5", "1/2", r"\frac{1}{2}", "3", "3"],
    "equivalent forms are rewarded once the winner is chosen": ["0.5", r"\frac{1}{2}", r"\frac{1}{2}", "1/2", "3"],
    "all None": [None, None, None, None],
    "single answer": ["7"],
    "single None": [None],
    "case splits the vote, grading ignores it": ["Paris", "paris", "London"],
    "none written in lower case is graded equal to None": [None, "none", "none"],
    "surrounding spaces split the vote": ["3", " 3", "3 ", "4"],
    "the empty string is an answer": ["", "", "5"],
    "integers": ["3", "3.0", "3", "4", "4"],
    "tuples": ["(1,2)", "(1, 2)", "(1,2)", "[1,2]"],
    "texts": [r"\text{B}", "B", "B", "(B)"],
}


@pytest.mark.parametrize("answers", GROUPS.values(), ids=GROUPS.keys())
def test_matches_the_documented_vote(generous_timeouts, answers):
    assert vote(answers, clustering="exact_string") == paper_vote(answers)


def test_what_differs_from_the_default_vote(generous_timeouts):
    split = ["0.5", "1/2", r"\frac{1}{2}", "3", "3"]
    ours, paper = vote(split), vote(split, clustering="exact_string")
    assert (ours.label, ours.ratio, ours.rewards) == ("0.5", 3 / 5, [1.0, 1.0, 1.0, 0.0, 0.0])
    assert (paper.label, paper.ratio, paper.rewards) == ("3", 2 / 5, [0.0, 0.0, 0.0, 1.0, 1.0])

    rewarded_after = vote(["0.5", r"\frac{1}{2}", r"\frac{1}{2}", "1/2", "3"], clustering="exact_string")
    assert rewarded_after.label == r"\frac{1}{2}" and rewarded_after.ratio == 2 / 5
    assert rewarded_after.rewards == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert rewarded_after.clusters == [[0], [1, 2], [3], [4]]

    tie = ["2", "1", "1", "2"]
    assert vote(tie).label is None and vote(tie, clustering="exact_string").label == "2"

    no_answers = [None, None, "3"]
    assert vote(no_answers).label == "3"
    paper = vote(no_answers, clustering="exact_string")
    assert (paper.label, paper.ratio, paper.rewards, paper.clusters) == ("None", 2 / 3, [1.0, 1.0, 0.0], [[0, 1], [2]])


def test_empty_group_gives_no_label():
    assert vote([], clustering="exact_string") == Vote(label=None, ratio=0.0, rewards=[], clusters=[])


def test_the_settings_it_does_not_have_are_refused():
    with pytest.raises(ValueError, match="clustering must be one of math, exact_string"):
        vote(["1"], clustering="strings")
    for refused in ({"min_ratio": 0.5}, {"soft": True}, {"tie_break": "random"}):
        with pytest.raises(ValueError, match="public MM-UPT vote"):
            vote(["1"], clustering="exact_string", **refused)
    for tie_break in ("none", "first"):  # a tie always goes to the string seen first
        assert vote(["2", "1"], clustering="exact_string", tie_break=tie_break).label == "2"
    with pytest.raises(TypeError):
        vote(["1", 2], clustering="exact_string")
    with pytest.raises(TypeError):
        vote("12", clustering="exact_string")


def test_vote_config_reads_and_checks_the_setting():
    assert VoteConfig().clustering == "math"
    assert VoteConfig.from_mapping({"clustering": "exact_string"}).clustering == "exact_string"
    with pytest.raises(ValueError, match="clustering must be one of math, exact_string; got 'exact'"):
        VoteConfig.from_mapping({"clustering": "exact"})
    with pytest.raises(ValueError, match="drop min_ratio > 0, soft"):
        VoteConfig.from_mapping({"clustering": "exact_string", "min_ratio": 0.3, "soft": True})


def test_each_distinct_string_is_graded_once_against_the_label(monkeypatch):
    calls = []
    check = equivalence._grader.check

    def spy(pairs, **kwargs):
        calls.append((list(pairs), kwargs["one_way"]))
        return check(pairs, **kwargs)

    monkeypatch.setattr(equivalence._grader, "check", spy)
    result = vote(["0.5", "2", "0.5", "1/2", "2", "0.5"], clustering="exact_string")
    assert result.rewards == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    # The label itself needs no check; each other string once, graded as the given answer, one way.
    assert calls == [([("2", "0.5"), ("1/2", "0.5")], True)]
    calls.clear()
    assert vote(["0.5", "2", "0.5", "1/2"], clustering="exact_string").rewards == [1.0, 0.0, 1.0, 1.0]
    assert calls == []  # verdicts are cached


def test_a_hostile_answer_does_not_stall_the_vote(restore_timeouts):
    warm_up()
    _, per_vote = set_timeouts(per_pair=0.3, per_vote=1.0)
    # sympy evaluates 10**10**k when mathruler compares it with x: each pair runs into its timeout.
    answers = ["x", "x", *(f"10**10**{k}" for k in range(10, 20)), "2*x/2"]
    start = time.perf_counter()
    result = vote(answers, clustering="exact_string")
    assert time.perf_counter() - start < per_vote + 0.5
    assert result.label == "x" and result.ratio == 2 / len(answers)
    assert result.rewards[:2] == [1.0, 1.0] and result.rewards[2:-1] == [0.0] * 10
    assert len(result.clusters) == len(answers) - 1


def test_metrics_accept_the_label_None():
    answers = [None, None, "3"]
    outcome = GroupOutcome(answers, vote(answers, clustering="exact_string"), truth="3")
    metrics = summarize([outcome])
    assert metrics["mmupt/label_accuracy"] == 0.0
    assert metrics["mmupt/reward_accuracy"] == 0.0  # the two unanswered are rewarded, the right "3" is not
    assert metrics["mmupt/majority_ratio"] == pytest.approx(2 / 3)
    assert metrics["mmupt/distinct_answers"] == 2  # "None" is an answer in this vote


SHORT = ["0", "1", "2", "3", "3.0", "0.5", "1/2", r"\frac{1}{2}", r"\frac12", "x", "2x", "x+1", "1+x", "(1,2)",
         "[1,2]", "Paris", "paris", "None", "none", "", " ", " 1", r"\text{1}", r"\sqrt{2}", r"2^{1/2}", "10\\%", "0.1"]
short_answer = st.one_of(st.none(), st.sampled_from(SHORT), st.text(alphabet="0123456789.-/x ", max_size=3))


@given(st.lists(short_answer, min_size=1, max_size=8))
def test_matches_the_documented_vote_on_generated_groups(generous_timeouts, answers):
    assert vote(answers, clustering="exact_string") == paper_vote(answers)
