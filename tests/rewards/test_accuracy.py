"""The supervised rule reward grades through the voting core's one scorer."""

from verl_ext.rewards.accuracy import compute_score

OPTIONS = ["3", "5", "0.5"]  # A, B, C


def test_supervised_reward_grades_multiple_choice_as_the_vote_does():
    # Before the one scorer, this reward ignored extra_info.choices: "\boxed{5}" scored 0 against "B".
    out = compute_score("toy", r"the answer is \boxed{5}", "B", extra_info={"choices": OPTIONS})
    assert out == {"score": 1.0, "acc": 1.0, "pred": "B"}
    assert compute_score("toy", r"\boxed{3}", "B", extra_info={"choices": OPTIONS})["score"] == 0.0
    assert compute_score("toy", r"\boxed{3}", "3", extra_info={"choices": []})["score"] == 1.0
