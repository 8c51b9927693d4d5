"""``VotingAgentLoopManager``: sample ``n_votes`` responses per training prompt for the vote.

TTRL-style voting samples more responses than it trains on. verl sizes every training batch by
``rollout.n``, so ``rollout.n`` stays the number trained on, and this manager asks verl's agent
loop for ``n_votes`` sessions per training prompt through the per-row ``__rollout_n__`` column the
agent loop honours. ``MajorityVoteReplayBuffer`` votes on all of them and keeps ``rollout.n``.
Validation batches (marked ``validate``) are left alone.
"""

from __future__ import annotations

import torch
from verl.trainer.ppo.v1 import AgentLoopManagerTQ

from verl_ext.rewards.majority_vote import vote_config_from


class VotingAgentLoopManager(AgentLoopManagerTQ):
    """verl's TransferQueue agent-loop manager, with ``n_votes`` sessions per training prompt."""

    def generate_sequences(self, prompts) -> None:
        n_votes = vote_config_from(self.config).n_votes
        if n_votes is not None and "validate" not in prompts.keys():
            prompts["__rollout_n__"] = torch.full((len(prompts),), int(n_votes), dtype=torch.long)
        super().generate_sequences(prompts)
