"""The ground-truth rule reward: 1.0 when the response's final answer equals the label.

Used by the supervised GRPO baseline (``recipes/grpo_supervised.yaml``) as verl's
``reward.custom_reward_function`` (``path: pkg://verl_ext.rewards.accuracy``,
``name: compute_score``), and to score validation against real labels. Answers are compared with
the voting core's one scorer (:mod:`verl_ext.voting.score`), so the baseline, the vote's
monitoring and evaluation judge answers the same way, multiple choice (``extra_info.choices``) included.
"""

from __future__ import annotations

from typing import Any, Optional

from verl_ext.voting.score import is_correct, read_answer


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Optional[dict] = None,
    answer_style: str = "boxed",
    **kwargs,
) -> dict[str, Any]:
    """Score one response: ``score`` and ``acc`` (1.0/0.0) and ``pred`` (the extracted answer, "" if none).

    A row without a label (``ground_truth`` empty, as in unlabeled training data) scores 0.0: this
    function never invents a label.
    """
    choices = extra_info.get("choices") if isinstance(extra_info, dict) else None
    pred = read_answer(solution_str, answer_style, choices)
    score = 1.0 if is_correct(pred, ground_truth, choices=choices) else 0.0
    return {"score": score, "acc": score, "pred": pred or ""}
