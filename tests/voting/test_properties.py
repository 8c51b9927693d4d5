"""Property-based tests of the voting core on generated LaTeX-like and hostile strings.

The default profile keeps the fast test set fast (50 examples a test). A longer search:

    VERL_EXT_HYPOTHESIS=long python -m pytest tests/voting/test_properties.py -p no:cacheprovider

(2,000 examples a test: under 2 minutes on 2 cores with another job running.) No example
database is written. The profiles are in ``conftest.py``.
"""

from __future__ import annotations

import random
import time

from hypothesis import given
from hypothesis import strategies as st

from verl_ext.voting import STYLES, cluster_answers, is_equivalent, normalize, read_answer, set_timeouts, vote, warm_up
from verl_ext.voting.normalize import partners
from verl_ext.voting.vote import LATE_NORMALIZE_S

# Pieces of LaTeX answers and responses, with the characters the rules treat specially.
ATOMS = [
    *"0123456789", "x", "y", "a", "B", "Paris", " ", "+", "-", "*", "/", "^", "_", "=", ",", ".", "!", "%", "$", "~",
    "(", ")", "[", "]", "{", "}", "\\{", "\\}", "\\frac", "\\dfrac", "\\sqrt", "\\pi", "\\cdot", "\\times", "\\text{",
    "\\mathrm{", "\\left(", "\\right)", "\\left.", "\\,", "\\!", "^\\circ", "\\boxed{", "\\boxed ", "\\fbox{", "**",
    "<answer>", "</answer>", "answer is", "Answer: ", "\n", "\\", "\u2212", "\u00b0", "\u03c0", "\u00d7", "\u00b7",
    "\u2013", "\u221e", "\uff1a",
]
latex_like = st.lists(st.sampled_from(ATOMS), max_size=40).map("".join)
# Long and deep strings, from a few characters to 300,000: digits past int()'s 4,300-digit limit,
# nesting past the grader's guards, spacing the rules strip.
huge = st.builds(
    lambda piece, count, head, tail: head + piece * count + tail,
    st.sampled_from(["9", "12", "{", "(", "\\frac{1}{", "x^", "\\text{", " ", "1,", "a ", "\\sqrt{", "\\left(", "}"]),
    st.integers(1, 300_000),
    latex_like,
    latex_like,
)
hostile = st.one_of(st.text(max_size=100), huge)
answer = st.one_of(latex_like, latex_like, hostile)
maybe_answer = st.one_of(st.none(), answer)

# Ordinary answers in classes of equal ones; different classes are different answers.
CLASSES = [
    ["0.5", "1/2", r"\frac{1}{2}", r"\dfrac12", "x = 0.5", r"\text{0.5}"],
    ["3", "3.0", "x=3", r"\text{3}", "$3$", "{3}"],
    ["-1/4", "-0.25", r"-\frac{1}{4}"],
    ["Paris", "paris", r"\text{Paris}", "Paris."],
    ["x+1", "1+x", "(x+1)", r"\left(x + 1\right)"],
    [r"\sqrt{2}", r"2^{1/2}", r"\sqrt2"],
    ["(1,2)", r"\left(1,2\right)", "( 1 , 2 )"],
    ["B", "(B)"],
    [r"30^\circ", "30\u00b0"],
    [r"2^{2^{2^{2^{30}}}}"],
    ["x" * 500],
    ["9" * 5000],
]
ordinary_group = st.lists(
    st.one_of(st.none(), st.tuples(st.integers(0, len(CLASSES) - 1), st.integers(0, 5))), max_size=12
).map(lambda draws: [None if d is None else CLASSES[d[0]][d[1] % len(CLASSES[d[0]])] for d in draws])


def _class_of(a: str) -> int:
    return next(i for i, forms in enumerate(CLASSES) if a in forms)


@given(answer)
def test_normalize_never_raises_and_is_bounded(text):
    key = normalize(text)
    assert isinstance(key, str)
    assert key == key.strip() or not key


@given(st.one_of(st.none(), answer), st.sampled_from(STYLES), st.one_of(st.none(), st.lists(latex_like, max_size=5)))
def test_read_answer_never_raises(text, style, choices):
    result = read_answer(text, style, choices)
    assert result is None or (isinstance(result, str) and result == result.strip() and result)
    if style == "choice" and result is not None:
        assert len(result) == 1 and "A" <= result <= "Z"


@given(maybe_answer)
def test_equivalence_is_reflexive(a):
    # Reflexive on every answer with a non-empty normal form; None and empty ones equal nothing.
    assert is_equivalent(a, a) is bool(a and normalize(a))


@given(maybe_answer, maybe_answer)
def test_equivalence_is_symmetric(a, b):
    assert is_equivalent(a, b) is is_equivalent(b, a)


@given(st.lists(maybe_answer, max_size=12))
def test_vote_never_raises_and_is_consistent(answers):
    result = vote(answers)
    members = sorted(i for cluster in result.clusters for i in cluster)
    assert members == sorted(set(members))  # a partition
    assert all(answers[i] is not None and normalize(answers[i]) for i in members)
    assert len(result.rewards) == len(answers) and 0.0 <= result.ratio <= 1.0
    assert result.label is None or result.label in answers


@given(st.lists(maybe_answer, max_size=30))
def test_vote_returns_within_its_budget(restore_timeouts, answers):
    warm_up()
    _, per_vote = set_timeouts(per_pair=0.2, per_vote=0.3)
    start = time.perf_counter()
    vote(answers)
    # The budget, the late normalisation, then a margin for one answer's normalisation and the hashing.
    assert time.perf_counter() - start < per_vote + LATE_NORMALIZE_S + 0.3


@given(ordinary_group, st.randoms(use_true_random=False))
def test_vote_groups_ordinary_answers_by_class_whatever_their_order(answers, rnd: random.Random):
    """Equal answers form one cluster, different ones separate; the clusters and the winning cluster
    do not depend on the order of the group."""
    result = vote(answers)
    by_class: dict[int, set[int]] = {}
    for i, a in enumerate(answers):
        if a is not None:
            by_class.setdefault(_class_of(a), set()).add(i)
    assert sorted(map(sorted, by_class.values())) == sorted(map(sorted, result.clusters))

    order = list(range(len(answers)))
    rnd.shuffle(order)
    shuffled = vote([answers[i] for i in order])
    as_original = lambda cluster: frozenset(order[j] for j in cluster)  # noqa: E731
    assert {as_original(c) for c in shuffled.clusters} == {frozenset(c) for c in result.clusters}
    winners = {frozenset(i for i, r in enumerate(result.rewards) if r)}
    assert {frozenset(order[j] for j, r in enumerate(shuffled.rewards) if r)} == winners
    assert shuffled.ratio == result.ratio and (shuffled.label is None) == (result.label is None)


@given(st.lists(st.sampled_from([a for forms in CLASSES for a in forms]), max_size=8))
def test_cluster_answers_matches_pairwise_equivalence(answers):
    clusters = cluster_answers(answers)
    for cluster in clusters:
        assert all(is_equivalent(answers[cluster[0]], answers[i]) for i in cluster)
    firsts = [answers[c[0]] for c in clusters]
    assert not any(is_equivalent(a, b) for k, a in enumerate(firsts) for b in firsts[k + 1 :])


def _partners_reference(text: str, opening: str, closing: str) -> dict[int, int]:
    """The character-by-character scan that partners() replaced."""
    found: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == opening:
            stack.append(i)
        elif ch == closing and stack:
            found[stack.pop()] = i
        i += 1
    return found


@given(st.lists(st.sampled_from(["{", "}", "(", ")", "\\", "\\{", "\\}", "x", "1", "\n", " "]), max_size=60).map("".join))
def test_partners_matches_a_character_scan(text):
    for opening, closing in (("{", "}"), ("(", ")")):
        assert partners(text, opening, closing) == _partners_reference(text, opening, closing)
