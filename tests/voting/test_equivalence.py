import logging
import os
import threading
import time

import pytest

from verl_ext.voting import equivalence, is_equivalent, normalize, set_timeouts, vote
from verl_ext.voting.grader import Deadline, Verdict
from verl_ext.voting.numeric import numerically_different

HOSTILE = [
    r"\frac{1}{2}^{9^{9^{9^{9}}}}",
    r"2^{2^{2^{2^{30}}}}",
    "2**2**2**30",
    "1000000000!",
    "10^{10}^{10}",
    "x+" * 2500 + "1",  # 5000 characters
    "(" * 40 + "x" + ")" * 40 + "^2",  # nesting deeper than the guard allows
]


@pytest.fixture
def grader_calls(monkeypatch):
    """Record every batch sent to the symbolic grader (the real grader still answers)."""
    calls = []
    real = equivalence._grader.check

    def counting(pairs, **kwargs):
        calls.append(list(pairs))
        return real(pairs, **kwargs)

    equivalence.clear_cache()
    monkeypatch.setattr(equivalence._grader, "check", counting)
    return calls


@pytest.mark.parametrize(
    ("forms", "canonical"),
    [
        ([r"\frac{1}{2}", "0.5", "1/2", r"\dfrac12", r"\tfrac{1}{2}", ".5", "0.50", r"$\frac12$"], "1/2"),
        (["3", "3.0", "x=3", "x = 3", "3.", r"\text{3}", "{3}", "+3", "$3$"], "3"),
        (["-0.25", r"-\frac{1}{4}", r"\frac{-1}{4}", r"\frac{1}{-4}", "\u22121/4"], "-1/4"),
        (["1000", "1,000", r"1\,000", "1000.00"], "1000"),
        ([r"30^\circ", r"30^{\circ}", "30\u00b0", r"30\%", "30 cm", r"30 \text{ cm}", "30 meters", "30cm"], "30"),
        ([r"\left( 1, 2 \right)", "(1,2)", "( 1 , 2 )", r"(1,\!2)"], "(1,2)"),
        ([r"\text{Paris}", r"\textbf{Paris}", "Paris."], "Paris"),
        (["B", "(B)", r"\text{(B)}", "B."], "B"),
        (["(x+1)", "((x+1))", r"\left(x + 1\right)", "x+1"], "x+1"),
        ([r"\sqrt2", r"\sqrt{2}", r"\sqrt {2}"], r"\sqrt{2}"),
        ([r"y = 2x + 1", "2x+1", r"\displaystyle 2x+1"], "2x+1"),
    ],
)
def test_normalize_merges_equivalent_forms(forms, canonical):
    assert {normalize(f) for f in forms} == {canonical}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("2x", "2"),
        ("5m", "5"),
        ("x=3", "x=4"),
        ("1/2", "2"),
        ("(1,2)", "[1,2]"),
        ("New York", "NewYork"),
        ("a=b=3", "3"),
        ("7 3/4", "73/4"),  # a mixed number, not 73/4
    ],
)
def test_normalize_keeps_different_answers_apart(a, b):
    assert normalize(a) != normalize(b)


def test_normalize_is_fast_on_pathological_strings():
    start = time.perf_counter()
    for s in HOSTILE + ["{" * 5000 + "1" + "}" * 5000, r"\text{" * 3000 + "x" + "}" * 3000, "\\" * 5000]:
        normalize(s)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (r"\frac{1}{2}", "0.5"),
        ("1/2", r"\dfrac12"),
        ("3", "3.0"),
        ("x=3", "3"),
        ("Paris", "paris"),
        (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"),
        ("(x+1)^2", "x^2+2x+1"),
        ("x+1", "1+x"),
    ],
)
def test_equivalent(a, b):
    assert is_equivalent(a, b)
    assert is_equivalent(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [("3", "5"), ("1/3", "0.333"), ("x+1", "2x"), ("Paris", "London"), ("3", "three"), (None, "3"), ("", "")],
)
def test_not_equivalent(a, b):
    assert not is_equivalent(a, b)


def test_identical_after_normalisation_never_calls_the_grader(grader_calls):
    assert is_equivalent(r"\frac{1}{2}", "0.5")
    assert is_equivalent(r"\left(x+1\right)^2", "(x + 1)^2")
    assert not is_equivalent("3", "7")  # two different plain numbers need no sympy either
    result = vote([r"\dfrac12", "1/2", "0.5", r"\frac{1}{2}", "x = 0.5", r"\text{0.5}", "2", None])
    assert result.clusters == [[0, 1, 2, 3, 4, 5], [6]]
    assert grader_calls == []
    # The counter does see the grader: a pair that needs sympy goes through it.
    assert is_equivalent("x+1", "1+x")
    assert len(grader_calls) == 1


def test_symbolic_verdicts_are_cached_both_ways(grader_calls):
    # With a variable the numeric probe cannot prove equality: the grader decides, once.
    assert is_equivalent(r"x^2-1", r"(x-1)(x+1)")
    assert is_equivalent(r"(x-1)(x+1)", r"x^2-1")
    assert not is_equivalent(r"\sin(x)", r"\cos(x)")  # outside the numeric probe: needs the grader
    assert not is_equivalent(r"\cos (x)", r"\sin(x)")
    assert len(grader_calls) == 2


@pytest.mark.parametrize(
    ("a", "b", "different"),
    [
        (r"\frac{3\sqrt{3}}{7}", r"\sqrt{3}", True),
        ("(x+3)^2", "x^2+9", True),
        ("-x^2", "x^2", True),
        (r"\frac{a+b}{c}", r"a+\frac{b}{c}", True),
        (r"\pi", "3.14", True),
        ("e^2", "7.389", True),
        # Equal values: no verdict, the grader decides.
        (r"\frac{3}{7}\sqrt{3}", r"\frac{3\sqrt{3}}{7}", False),
        ("(x+3)^2", "x^2+6x+9", False),
        (r"x\cdot y", r"y \times x", False),
        ("x^{1/2}", r"\sqrt{x}", False),
        ("3.1415926535", r"\pi", False),  # closer than the tolerance
        # Outside the subset or the domain: no verdict either.
        (r"7\frac{3}{4}", "1", False),  # mathruler reads a mixed number
        ("7 3/4", "1", False),
        ("5 apples", "1", False),
        ("xy", "1", False),
        ("X", "1", False),
        (r"\sin x", "1", False),
        ("(1,2)", "(1,3)", False),
        (r"\frac{1}{0}", "1", False),
        (r"\sqrt{-1}", "1", False),
        ("(-8)^{1/3}", "1", False),
        ("2^{100}", "1", False),
    ],
)
def test_numerically_different(a, b, different):
    assert numerically_different(normalize(a), normalize(b)) is different


def test_numeric_probe_settles_different_expressions_without_the_grader(grader_calls):
    result = vote([r"\frac{3\sqrt{3}}{7}", r"\sqrt{3}", "(x+3)^2", "x^2+9", r"\frac{3\sqrt{3}}{7}"])
    assert result.clusters == [[0, 4], [1], [2], [3]]
    assert grader_calls == []


@pytest.mark.parametrize("hostile", HOSTILE)
def test_sympy_hostile_answers_are_refused_without_the_grader(hostile, grader_calls):
    start = time.perf_counter()
    assert not is_equivalent(hostile, r"\sqrt{3}")
    assert not is_equivalent(hostile, "x")
    assert is_equivalent(hostile, hostile)
    assert time.perf_counter() - start < 0.2
    assert grader_calls == []


def test_vote_with_hostile_answers_returns_quickly_and_correctly():
    answers = [r"2^{2^{2^{2^{30}}}}", "x+1", r"2^{2^{2^{2^{30}}}}", "2**2**2**30", "1+x", "x + 1", "x" * 5000]
    start = time.perf_counter()
    result = vote(answers)
    assert time.perf_counter() - start < 2.0
    assert result.label == "x+1"
    assert result.clusters == [[0, 2], [1, 4, 5], [3], [6]]


def test_grader_timeout_is_enforced_off_the_main_thread(monkeypatch, caplog, restore_timeouts):
    # Let a hostile pair through the guards so that only the wall-clock timeout can stop it.
    monkeypatch.setattr(equivalence, "grader_safe", lambda _: True)
    equivalence.clear_cache()
    set_timeouts(per_pair=0.5, per_vote=3.0)
    results = {}

    def work():
        start = time.perf_counter()
        results["hostile"] = is_equivalent("2**2**2**30", r"\sqrt{3}")
        results["elapsed"] = time.perf_counter() - start
        start = time.perf_counter()
        results["after"] = is_equivalent("x+1", "1+x")  # a fresh warm worker answers at once
        results["after_elapsed"] = time.perf_counter() - start
        start = time.perf_counter()
        results["again"] = is_equivalent("2**2**2**30", r"\sqrt{3}")  # cached: no second stall
        results["again_elapsed"] = time.perf_counter() - start

    with caplog.at_level(logging.WARNING, logger="verl_ext.voting.equivalence"):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert results["hostile"] is False
    assert results["elapsed"] < 2.0
    assert results["after"] is True and results["after_elapsed"] < 1.0
    assert results["again"] is False and results["again_elapsed"] < 0.1
    warnings = [r for r in caplog.records if "exceeded" in r.getMessage()]
    assert len(warnings) == 1


def test_pairs_cut_by_the_vote_budget_are_not_cached(monkeypatch, restore_timeouts):
    monkeypatch.setattr(equivalence, "grader_safe", lambda _: True)
    equivalence.clear_cache()
    set_timeouts(per_pair=5.0, per_vote=0.3)
    start = time.perf_counter()
    assert not is_equivalent("10**10**10", "x+1")
    assert time.perf_counter() - start < 1.5
    assert equivalence._cache.get("10**10**10", "x+1") is None


def test_grader_skips_what_the_deadline_leaves_out():
    grader = equivalence._grader
    grader.start()
    pairs = [("x+1", "1+x"), ("2**2**2**30", r"\sqrt{3}"), ("x", "x")]
    start = time.perf_counter()
    verdicts = grader.check(pairs, timeout=5.0, deadline=Deadline(0.3))
    assert time.perf_counter() - start < 1.0
    assert verdicts == [Verdict.EQUAL, Verdict.SKIPPED, Verdict.SKIPPED]
    assert grader.check([("a", "b")], timeout=1.0, deadline=Deadline(0.0)) == [Verdict.SKIPPED]


def test_set_timeouts_validates(restore_timeouts):
    assert set_timeouts(per_pair=0.25) == (0.25, equivalence.get_timeouts()[1])
    with pytest.raises(ValueError):
        set_timeouts(per_pair=0)
    with pytest.raises(ValueError):
        set_timeouts(per_vote=-1.0)


def test_a_forked_process_gets_its_own_grader():
    assert is_equivalent("x+1", "1+x")  # the parent's grader is running
    equivalence.clear_cache()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child process
        os._exit(0 if is_equivalent("x+2", "2+x") and not is_equivalent("x+2", r"\sin(x)") else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert is_equivalent("x+3", "3+x")  # and the parent's grader still answers


def test_escaped_dollar_sign_is_dropped_like_a_plain_one():
    from verl_ext.voting import normalize

    assert normalize(r"\$5") == normalize("$5") == normalize("5")


def test_equal_constants_need_no_grader(grader_calls):
    """Radicals and powers of the same value are one answer, decided by evaluation alone."""
    assert is_equivalent(r"\sqrt{2}", r"2^{1/2}")
    assert is_equivalent(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}")
    assert grader_calls == []
    assert not is_equivalent(r"\sqrt{2}", "1.4142136")  # a rounded decimal is another answer


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("10%", "10", True),  # the percent sign is dropped ...
        ("10%", "0.1", False),  # ... so a percentage is not its fraction
        ("2,3", "3,2", False),  # tuples and coordinates are ordered
        ("(2,3)", "(3,2)", False),
        (r"\{3,2\}", r"\{2,3\}", True),  # a set written as one is not
        (r"\{3,\frac{1}{2}\}", r"\{0.5,3\}", True),
        (r"\sqrt{2}", r"2^{1/2}", True),  # equivalent radicals are one answer
        (r"\sqrt{8}", r"2\sqrt{2}", True),
        (r"\{2,2,3\}", r"\{3,2\}", True),  # a set: repeats do not count either
        (r"10^{13}", "10000000000001", False),  # too large for float64 at 1e-12: left to the grader
    ],
)
def test_deliberate_decisions(a, b, same):
    assert is_equivalent(a, b) is same
