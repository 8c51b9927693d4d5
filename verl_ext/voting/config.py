"""Settings of the majority-vote reward, read from ``trainer.v1.sampler.sampler_kwargs``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from verl_ext.voting.collapse import CollapseConfig
from verl_ext.voting.extract import STYLES
from verl_ext.voting.settings import check_one_of, from_mapping
from verl_ext.voting.vote import check_vote_settings

REWARDS = ("majority_vote", "token_entropy")


@dataclass(frozen=True)
class VoteConfig:
    """How responses are turned into answers, answers into a pseudo-label, and the label into rewards."""

    answer_style: str = "boxed"
    """How the final answer is read from a response: ``boxed``, ``answer_tag`` or ``choice``."""
    min_ratio: float = 0.0
    """A pseudo-label needs at least this share of the group's responses (SRT's self-consistency threshold)."""
    tie_break: str = "none"
    """A tie for the top: ``none`` (no label, no reward), ``first`` or ``random``."""
    soft: bool = False
    """Reward each response with its cluster's frequency instead of 0/1 for the winning cluster."""
    clustering: str = "math"
    """Which answers vote together: ``math`` (equivalent answers are one cluster) or ``exact_string``
    (the public MM-UPT vote: identical strings, a tie to the first seen, a missing answer votes
    ``"None"``, rewards by mathruler against the winning string; see ``verl_ext.voting.vote``)."""
    seed: int = 0
    """Seed for ``tie_break=random`` and for choosing the trained subset when ``n_train`` < the group."""
    n_votes: Optional[int] = None
    """Sample this many responses per training prompt for the vote (TTRL); None votes on ``rollout.n``."""
    n_train: Optional[int] = None
    """Responses per prompt kept for training; the config group sets it to ``rollout.n``."""
    reward: str = "majority_vote"
    """What training rewards: ``majority_vote`` (the vote, hard or ``soft``) or ``token_entropy``
    (minus the mean per-token entropy of the response under the policy, as RENT; the vote still runs
    for the metrics and the collapse signal)."""
    use_labels: bool = False
    """Reward a row that carries ``reward_model.ground_truth`` against it (rule reward) and only the
    rows without one by ``reward`` (SRT's mix of labelled and unlabelled prompts)."""
    collapse: CollapseConfig = CollapseConfig()
    """The label-free collapse signal and its guard (``verl_ext.voting.collapse``)."""

    def __post_init__(self):
        check_one_of("reward", self.reward, REWARDS)
        if not isinstance(self.collapse, CollapseConfig):
            object.__setattr__(self, "collapse", from_mapping(CollapseConfig, self.collapse, "collapse"))
        check_one_of("answer_style", self.answer_style, STYLES)
        check_vote_settings(self.tie_break, self.min_ratio, self.clustering, self.soft)
        for name in ("n_votes", "n_train"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 or null; got {value!r}")
        if self.n_votes is not None and self.n_train is not None and self.n_votes < self.n_train:
            raise ValueError(
                f"n_votes ({self.n_votes}) must be >= the responses trained on per prompt "
                f"(rollout.n = {self.n_train})"
            )

    @classmethod
    def from_mapping(cls, values: Optional[Mapping[str, Any]]) -> "VoteConfig":
        return from_mapping(cls, values, "majority-vote")
