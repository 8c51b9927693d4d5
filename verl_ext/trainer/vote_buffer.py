"""``MajorityVoteReplayBuffer``: the group vote of MM-UPT inside verl's v1 trainer.

verl's sync trainer samples finished prompt groups from its replay buffer and then computes
advantages from the ``rm_scores`` stored in TransferQueue. This buffer is the point where a whole
group is visible and scored but has no advantages yet: after the usual sampling it groups the
training batch by ``uid``, votes on the answers the ``majority_vote`` reward manager extracted,
writes the vote's rewards back as ``rm_scores`` and returns the vote's metrics with the step's.
Validation batches (partition ``val``) pass through untouched, scored against real labels.

The same buffer carries the other label-free choices of ``VoteConfig``: ``reward=token_entropy``
(minus the mean per-token entropy under the policy, written right before advantages because verl
computes the entropy with the old log-probs; see ``verl_ext.patches``, patch 4), ``use_labels``
(rows with a ground truth get the rule reward) and the collapse signal and guard
(``verl_ext.voting.collapse``), fed from every training step's vote.

Enabled with ``trainer.v1.sampler.custom_sampler.{path,name}`` (``+mmupt=majority_vote`` sets both);
settings in ``trainer.v1.sampler.sampler_kwargs`` (see ``VoteConfig``).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import defaultdict
from typing import Any, Optional

import torch
import transfer_queue as tq
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from verl_ext.patches import run_before_advantages, trainer_of_sampler
from verl_ext.rewards.majority_vote import checked_vote_config
from verl_ext.voting import vote
from verl_ext.voting.collapse import CollapseMonitor
from verl_ext.voting.metrics import PREFIX, GroupOutcome, summarize

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))


def _plain(value: Any) -> Any:
    """TransferQueue hands back non-tensor values wrapped (NonTensorData); unwrap them."""
    return getattr(value, "data", value)


def _nested_rows(tensor) -> list[torch.Tensor]:
    return list(tensor.unbind()) if tensor.is_nested else list(tensor)


def _put_rewards(keys: list[str], partition_id: str, scores: list[torch.Tensor], rewards: list[float]) -> KVBatchMeta:
    """Write one reward per response as its ``rm_scores``: on the last token, where verl puts a response's score."""
    fresh = [torch.zeros_like(score) for score in scores]
    for row, reward in zip(fresh, rewards):
        if row.numel():
            row[-1] = reward
    fields = TensorDict({"rm_scores": torch.nested.as_nested_tensor(fresh, layout=torch.jagged)}, batch_size=len(keys))
    return tq.kv_batch_put(keys=keys, partition_id=partition_id, fields=fields)


def given_label(reward_model: Any) -> Optional[str]:
    """The ground truth a row offers for training (``reward_model.ground_truth``), if any."""
    truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    return None if truth is None else str(truth).strip() or None


def hidden_truth(extra_info: Any, reward_model: Any) -> Optional[str]:
    """The label kept for monitoring only: ``extra_info["answer"]``, else the reward model's ground truth."""
    answer = extra_info.get("answer") if isinstance(extra_info, dict) else None
    return str(answer).strip() if answer not in (None, "") else given_label(reward_model)


class MajorityVoteReplayBuffer(ReplayBuffer):
    """verl's sync replay buffer, plus the per-prompt majority vote on training batches."""

    runs_group_vote = True  # what the reward manager checks (majority_vote.GROUP_VOTE)

    def __init__(self, *args, sampler_kwargs=None, **kwargs):
        super().__init__(*args, sampler_kwargs=sampler_kwargs, **kwargs)
        self.trainer = trainer_of_sampler(kwargs.get("refill_fn"))
        self.vote_config = checked_vote_config(sampler_kwargs, self.trainer.config if self.trainer else None)
        self._votes = 0
        self.collapse = CollapseMonitor(self.vote_config.collapse)
        self._entropy_keys: set[str] = set()
        if self.vote_config.reward == "token_entropy":
            if self.trainer is None:
                raise ValueError("reward=token_entropy needs verl's v1 trainer (it builds this sampler)")
            run_before_advantages(self.trainer, self.entropy_rewards)

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[KVBatchMeta, dict]:
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id == "val" or not batch.keys:
            return batch, metrics
        batch, vote_metrics = self.vote_batch(batch)
        vote_metrics.update(self.watch_collapse(global_steps, vote_metrics))
        metrics.update(vote_metrics)
        return batch, metrics

    def watch_collapse(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """Feed the collapse signal; on firing, warn or (guard=stop) make the next step verl's last."""
        indicators = {k[len(PREFIX) + 1 :]: v for k, v in metrics.items() if k.startswith(PREFIX + "/")}
        before = self.collapse.fired_at
        out = {f"{PREFIX}/collapse/{k}": v for k, v in self.collapse.update(step, indicators).items()}
        guard = self.vote_config.collapse.guard
        if before is None and self.collapse.fired_at is not None and guard != "off":
            rise = out[f"{PREFIX}/collapse/majority_ratio_trend"]
            logger.warning(
                "collapse signal at step %d: the majority ratio's trailing mean is %.3f above the run's start",
                step, rise,
            )
            if guard == "stop":
                if self.trainer is None:
                    raise RuntimeError("collapse.guard=stop needs verl's v1 trainer (it builds this sampler)")
                # verl treats the step with global_steps == total_training_steps as the last one: it saves
                # a checkpoint (trainer.save_freq > 0), validates (trainer.test_freq > 0) and returns.
                self.trainer.total_training_steps = min(self.trainer.total_training_steps, step + 1)
                logger.warning("collapse.guard=stop: step %d will be the last", step + 1)
        return out

    def vote_batch(self, batch: KVBatchMeta) -> tuple[KVBatchMeta, dict[str, float]]:
        """Vote per uid, write the rewards to ``rm_scores``, keep ``n_train`` responses per prompt.

        With ``n_votes`` > ``rollout.n`` (see ``vote_rollout``) a group holds more responses than verl
        trains on; a random ``n_train`` of them stay in the batch, so verl's batch sizing holds.
        """
        start = time.perf_counter()
        data = tq.kv_batch_get(
            keys=batch.keys,
            partition_id=batch.partition_id,
            select_fields=["uid", "rm_scores", "extra_fields", "extra_info", "reward_model"],
        )
        uids = [str(_plain(u)) for u in data["uid"]]
        scores = _nested_rows(data["rm_scores"])
        answers: list[Optional[str]] = []
        for extra in data["extra_fields"]:
            info = (_plain(extra) or {}).get("reward_extra_info", {})
            if "pred" not in info:
                raise KeyError(
                    "a training response has no 'pred' in reward_extra_info: the group vote needs "
                    "reward.reward_manager.name=majority_vote"
                )
            answers.append(info["pred"] or None)
        truths = [hidden_truth(_plain(e), _plain(r)) for e, r in zip(data["extra_info"], data["reward_model"])]
        choices = [(_plain(e) or {}).get("choices") if isinstance(_plain(e), dict) else None for e in data["extra_info"]]
        labels = [given_label(_plain(r)) for r in data["reward_model"]]

        groups: dict[str, list[int]] = defaultdict(list)
        for i, uid in enumerate(uids):
            groups[uid].append(i)
        cfg = self.vote_config
        rewards = [0.0] * len(uids)
        outcomes = []
        keep: list[int] = []
        labelled_groups = 0
        self._entropy_keys = set()
        rng = random.Random(cfg.seed + self._votes)
        for g, (uid, members) in enumerate(groups.items()):
            group_answers = [answers[i] for i in members]
            result = vote(
                group_answers,
                min_ratio=cfg.min_ratio,
                tie_break=cfg.tie_break,
                seed=cfg.seed + g,
                soft=cfg.soft,
                clustering=cfg.clustering,
            )
            if cfg.use_labels and labels[members[0]] is not None:
                # The reward manager already scored this row against its label: keep that rule reward.
                labelled_groups += 1
                for i in members:
                    rewards[i] = float(scores[i].sum())
            elif cfg.reward == "token_entropy":
                self._entropy_keys.update(batch.keys[i] for i in members)
            else:
                for i, r in zip(members, result.rewards):
                    rewards[i] = r
            outcomes.append(GroupOutcome(group_answers, result, truths[members[0]], choices[members[0]]))
            if cfg.n_train is None or len(members) <= cfg.n_train:
                keep.extend(members)
            else:
                keep.extend(sorted(rng.sample(members, cfg.n_train)))
        self._votes += 1

        batch = _put_rewards(batch.keys, batch.partition_id, scores, rewards)
        if len(keep) < len(uids):
            batch = self._keep(batch, sorted(keep))
        metrics = summarize(outcomes, vote_seconds=time.perf_counter() - start)
        metrics[f"{PREFIX}/response_length"] = sum(len(score) for score in scores) / max(len(scores), 1)
        if cfg.use_labels:
            metrics[f"{PREFIX}/labelled_share"] = labelled_groups / max(len(groups), 1)
        return batch, metrics

    def entropy_rewards(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        """``reward=token_entropy``: each unlabelled response's reward is minus its mean per-token entropy.

        Runs right before verl's advantages (after ``_balance_batch`` reordered and padded the batch, so
        rows are found by key); the entropy is the one verl stored with the old log-probs.
        """
        rows = [i for i, key in enumerate(batch.keys) if key in self._entropy_keys]
        if not rows:
            return batch
        keys = [batch.keys[i] for i in rows]
        data = tq.kv_batch_get(
            keys=keys, partition_id=batch.partition_id, select_fields=["entropy", "response_mask", "rm_scores"]
        )
        values = []
        for entropy, mask in zip(_nested_rows(data["entropy"]), _nested_rows(data["response_mask"])):
            mask = mask.to(entropy.dtype)
            values.append(-float((entropy * mask).sum() / mask.sum().clamp(min=1.0)))
        _put_rewards(keys, batch.partition_id, _nested_rows(data["rm_scores"]), values)
        metrics[f"{PREFIX}/entropy_reward"] = sum(values) / len(values)
        return batch

    @staticmethod
    def _keep(batch: KVBatchMeta, indices: list[int]) -> KVBatchMeta:
        """Drop the responses that only voted: clear them from TransferQueue and from the batch."""
        kept = set(indices)
        dropped = [k for i, k in enumerate(batch.keys) if i not in kept]
        tq.kv_clear(partition_id=batch.partition_id, keys=dropped)
        return KVBatchMeta(
            partition_id=batch.partition_id,
            keys=[batch.keys[i] for i in indices],
            tags=[batch.tags[i] for i in indices],
        )
