"""The ``majority_vote`` reward manager: reads each response's final answer for the group vote.

verl scores each response alone, as it finishes, so a manager never sees the group. This one
extracts the answer (``reward_extra_info["pred"]``) and scores it against the row's label when
there is one (validation); during training ``MajorityVoteReplayBuffer`` then votes per prompt and
replaces every training score with the vote's reward. Training therefore never reads a label, and
a run whose vote is not configured is stopped at start instead of training on labels or on zeros.
"""

from __future__ import annotations

from omegaconf import OmegaConf
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from verl_ext.voting.config import VoteConfig
from verl_ext.voting.score import is_correct, read_answer

NAME = "majority_vote"
SAMPLER_PATH = "pkg://verl_ext.trainer.vote_buffer"
SAMPLER_NAME = "MajorityVoteReplayBuffer"
#: The class attribute (True) by which a replay buffer says it runs the group vote.
GROUP_VOTE = "runs_group_vote"
ENABLE_HINT = (
    f"add the override +mmupt=majority_vote (or set trainer.v1.sampler.custom_sampler.path={SAMPLER_PATH} "
    f"and trainer.v1.sampler.custom_sampler.name={SAMPLER_NAME})"
)


def checked_vote_config(kwargs, config=None) -> VoteConfig:
    """Parse the vote settings ``kwargs`` (a mapping, a DictConfig or None); refuse what ``config``, the
    full verl config when given, cannot honour. The one parse: the CLI, the reward manager and the
    replay buffer all read the settings here."""
    if OmegaConf.is_config(kwargs):
        kwargs = OmegaConf.to_container(kwargs, resolve=True)
    vote = VoteConfig.from_mapping(kwargs)
    bypass = OmegaConf.select(config, "algorithm.rollout_correction.bypass_mode", default=False) if config is not None else False
    if vote.reward == "token_entropy" and bypass:
        raise ValueError(
            "reward=token_entropy reads the entropy verl computes with the old log-probs, which "
            "algorithm.rollout_correction.bypass_mode=true skips: set it to false"
        )
    return vote


def vote_config_from(config) -> VoteConfig:
    """The vote settings of a full verl config (``trainer.v1.sampler.sampler_kwargs``)."""
    return checked_vote_config(OmegaConf.select(config, "trainer.v1.sampler.sampler_kwargs", default=None), config)


def check_vote_enabled(config) -> None:
    """Raise when training would use this manager without the group vote that turns answers into rewards."""
    if not OmegaConf.select(config, "trainer.use_v1", default=True):
        raise ValueError(f"reward manager {NAME!r} needs verl's v1 trainer (trainer.use_v1=true)")
    mode = OmegaConf.select(config, "trainer.v1.trainer_mode", default="sync")
    if mode != "sync":
        raise ValueError(f"reward manager {NAME!r} supports trainer.v1.trainer_mode=sync only, got {mode!r}")
    name = OmegaConf.select(config, "trainer.v1.sampler.custom_sampler.name", default=None)
    if name is None or not str(name).endswith(SAMPLER_NAME):
        from verl.utils.import_utils import load_extern_type

        # A subclass of the vote's buffer declares itself with GROUP_VOTE; checked by name, not by
        # import, so this module does not import the trainer layer above it.
        path = OmegaConf.select(config, "trainer.v1.sampler.custom_sampler.path", default=None)
        cls = load_extern_type(path, name) if path and name else None
        if cls is None or not getattr(cls, GROUP_VOTE, False):
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
        pred = read_answer(text, self.vote_config.answer_style, choices)
        reward_model = item.non_tensor_batch.get("reward_model", None) or {}
        acc = 1.0 if is_correct(pred, reward_model.get("ground_truth"), choices=choices) else 0.0
        return {
            "reward_score": acc,
            # pred "" (not None) for no answer: verl's maj@N needs a pred for every response.
            "reward_extra_info": {"acc": acc, "pred": pred or "", "answered": float(pred is not None)},
        }
