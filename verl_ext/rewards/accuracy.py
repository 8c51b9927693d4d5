"""The ground-truth rule reward: 1.0 when the response's final answer equals the label.

Used by the supervised GRPO baseline (``recipes/grpo_supervised.yaml``) as verl's
``reward.custom_reward_function`` (``path: pkg://verl_ext.rewards.accuracy``,
``name: compute_score``), and to score validation against real labels. Answers are compared with
the voting core's equivalence, so the baseline and the vote judge answers the same way.
"""

from __future__ import annotations

from typing import Any, Optional

from verl_ext.voting import extract_answer, is_equivalent


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
    pred = extract_answer(solution_str, style=answer_style)
    label = "" if ground_truth is None else str(ground_truth).strip()
    correct = bool(pred is not None and label and is_equivalent(pred, label))
    score = 1.0 if correct else 0.0
    return {"score": score, "acc": score, "pred": pred or ""}
