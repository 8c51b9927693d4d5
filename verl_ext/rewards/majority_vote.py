"""The ``majority_vote`` reward manager: reads each response's final answer for the group vote.

verl scores each response alone, as it finishes, so a manager never sees the group. This one
extracts the answer (``reward_extra_info["pred"]``) and scores it against the row's label when
there is one (validation); during training ``MajorityVoteReplayBuffer`` then votes per prompt and
replaces every training score with the vote's reward. Training therefore never reads a label, and
a run whose vote is not configured is stopped at start instead of training on labels or on zeros.
"""

from __future__ import annotations

import logging

from omegaconf import OmegaConf
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from verl_ext.voting import extract_answer, is_equivalent
from verl_ext.voting.config import VoteConfig

logger = logging.getLogger(__name__)

NAME = "majority_vote"
SAMPLER_PATH = "pkg://verl_ext.trainer.vote_buffer"
SAMPLER_NAME = "MajorityVoteReplayBuffer"
ENABLE_HINT = (
    f"add the override +mmupt=majority_vote (or set trainer.v1.sampler.custom_sampler.path={SAMPLER_PATH} "
    f"and trainer.v1.sampler.custom_sampler.name={SAMPLER_NAME})"
)


def vote_config_from(config) -> VoteConfig:
    """The vote settings of a full verl config (``trainer.v1.sampler.sampler_kwargs``)."""
    kwargs = OmegaConf.select(config, "trainer.v1.sampler.sampler_kwargs", default=None)
    return VoteConfig.from_mapping(OmegaConf.to_container(kwargs, resolve=True) if kwargs is not None else {})


def check_vote_enabled(config) -> None:
    """Raise when training would use this manager without the group vote that turns answers into rewards."""
    if not OmegaConf.select(config, "trainer.use_v1", default=True):
        raise ValueError(f"reward manager {NAME!r} needs verl's v1 trainer (trainer.use_v1=true)")
    mode = OmegaConf.select(config, "trainer.v1.trainer_mode", default="sync")
    if mode != "sync":
        raise ValueError(f"reward manager {NAME!r} supports trainer.v1.trainer_mode=sync only, got {mode!r}")
    name = OmegaConf.select(config, "trainer.v1.sampler.custom_sampler.name", default=None)
    if name is None or not str(name).endswith(SAMPLER_NAME):
        from verl_ext.trainer.vote_buffer import MajorityVoteReplayBuffer
        from verl.utils.import_utils import load_extern_type

        path = OmegaConf.select(config, "trainer.v1.sampler.custom_sampler.path", default=None)
        cls = load_extern_type(path, name) if path and name else None
        if cls is None or not issubclass(cls, MajorityVoteReplayBuffer):
            raise ValueError(f"reward manager {NAME!r} needs the group vote in the trainer: {ENABLE_HINT}")


@register(NAME)
class MajorityVoteRewardManager(RewardManagerBase):
    """Extracts answers for the vote; scores against the label only where a row has one."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        check_vote_enabled(config)
        self.vote_config = vote_config_from(config)

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1:][0]
        responses = item.batch["responses"]
        length = int(item.batch["attention_mask"][-responses.shape[-1] :].sum())
        text = await self.loop.run_in_executor(
            None, lambda: self.tokenizer.decode(responses[:length], skip_special_tokens=True)
        )
        extra_info = item.non_tensor_batch.get("extra_info", None) or {}
        choices = extra_info.get("choices") if isinstance(extra_info, dict) else None
        pred = extract_answer(text, style=self.vote_config.answer_style, choices=choices)
        reward_model = item.non_tensor_batch.get("reward_model", None) or {}
        truth = str(reward_model.get("ground_truth") or "").strip()
        acc = 1.0 if pred is not None and truth and is_equivalent(pred, truth) else 0.0
        return {
            "reward_score": acc,
            # pred "" (not None) for no answer: verl's maj@N needs a pred for every response.
            "reward_extra_info": {"acc": acc, "pred": pred or "", "answered": float(pred is not None)},
        }
