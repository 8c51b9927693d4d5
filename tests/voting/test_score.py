"""The one scorer: every grader (supervised reward, vote monitoring, evaluation) agrees on multiple choice."""

import pytest

from verl_ext.voting import Vote, vote
from verl_ext.voting.metrics import GroupOutcome, cluster_correctness, summarize
from verl_ext.voting.score import is_correct, read_answer

OPTIONS = ["3", "5", "0.5"]  # A, B, C


@pytest.mark.parametrize(
    "response, expected",
    [
        (r"so \boxed{B}", "B"),
        (r"so \boxed{(B)}", "B"),
        (r"so \boxed{5}", "B"),  # the option's text
        (r"so \boxed{1/2}", "C"),  # equal to an option's text, written differently
        (r"so \boxed{7}", "7"),  # no option: the answer as written
        ("B", None),  # boxed style: no box, no answer
    ],
)
def test_read_answer_maps_options_to_letters(response, expected):
    assert read_answer(response, "boxed", OPTIONS) == expected


def test_read_answer_without_options_is_the_extraction():
    assert read_answer(r"\boxed{5}", "boxed", []) == "5"
    assert read_answer(r"\boxed{5}", "boxed", None) == "5"
    assert read_answer("<answer>B</answer>", "choice", None) == "B"


@pytest.mark.parametrize(
    "answer, label, right",
    [
        ("B", "B", True),
        ("B", "5", True),  # the label given as the option's text
        ("C", "5", False),
        ("5", "B", True),  # an unmapped answer against the gold option's text
        ("A", "B", False),
        (None, "B", False),
        ("B", "", False),
        ("B", None, False),
    ],
)
def test_is_correct_on_multiple_choice(answer, label, right):
    assert is_correct(answer, label, choices=OPTIONS) is right


def test_multiple_choice_without_options_compares_single_letters_only():
    assert is_correct("B", "B", answer_type="choice")
    assert not is_correct("A", "B", answer_type="choice")


def test_is_correct_free_form_float_and_list():
    assert is_correct("0.50", "1/2")
    assert not is_correct("0.51", "1/2")
    assert is_correct("1.454", "1.45", answer_type="float", precision=2)
    assert not is_correct("1.46", "1.45", answer_type="float", precision=2)
    assert is_correct("(1, 2)", "[1,2]", answer_type="list")
    assert not is_correct("(2, 1)", "[1,2]", answer_type="list")
    assert is_correct(r"\$1.45", "1.45")  # MathVista's escaped dollar signs


def test_monitoring_grades_each_cluster_once(monkeypatch):
    import verl_ext.voting.metrics as metrics

    answers = ["4", "4.0", "5", None, "4"]
    result = vote(answers)
    calls = []

    def counting(answer, label, **kwargs):
        calls.append(answer)
        return is_correct(answer, label, **kwargs)

    monkeypatch.setattr(metrics, "is_correct", counting)
    group = GroupOutcome(answers, result, truth="4")
    assert cluster_correctness(group) == [True, True, False, False, True]
    assert len(calls) == len(result.clusters) == 2
    out = summarize([group])
    assert out["mmupt/label_accuracy"] == 1.0
    assert out["mmupt/reward_accuracy"] == 1.0  # rewarded exactly the correct responses


def test_monitoring_uses_the_options():
    answers = ["B", "B", "A"]
    out = summarize([GroupOutcome(answers, vote(answers), truth="5", choices=OPTIONS)])
    assert out["mmupt/label_accuracy"] == 1.0
    no_label = Vote(label=None, ratio=0.5, rewards=[0.0, 0.0], clusters=[[0], [1]])
    out = summarize([GroupOutcome(["A", "B"], no_label, truth="B", choices=OPTIONS)])
    assert out["mmupt/label_accuracy"] == 0.0
    assert out["mmupt/reward_accuracy"] == 0.5  # the wrong answer is rightly unrewarded, the right one not
