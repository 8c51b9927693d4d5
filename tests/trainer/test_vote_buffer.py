"""MajorityVoteReplayBuffer.vote_batch against an in-memory stand-in for TransferQueue."""

from __future__ import annotations

import random

import pytest
import torch
from transfer_queue import KVBatchMeta

from verl_ext.trainer import vote_buffer
from verl_ext.trainer.vote_buffer import MajorityVoteReplayBuffer
from verl_ext.voting import vote


class FakeTQ:
    """The three TransferQueue calls the buffer makes, over a dict keyed like verl's ({uid}_{session}_{i})."""

    def __init__(self, rows: dict[str, dict]):
        self.rows = rows
        self.cleared: list[str] = []

    def kv_batch_get(self, keys, partition_id, select_fields):
        out = {f: [self.rows[k][f] for k in keys] for f in select_fields if f != "rm_scores"}
        out["rm_scores"] = torch.nested.as_nested_tensor([self.rows[k]["rm_scores"] for k in keys], layout=torch.jagged)
        return out

    def kv_batch_put(self, keys, partition_id, fields):
        for key, scores in zip(keys, fields["rm_scores"].unbind()):
            self.rows[key]["rm_scores"] = scores.clone()
        return KVBatchMeta(partition_id=partition_id, keys=list(keys), tags=[{} for _ in keys])

    def kv_clear(self, partition_id, keys):
        self.cleared.extend(keys)


def make_rows(groups: dict[str, list], truths: dict[str, str] | None = None, seed: int = 0):
    """Rows for each uid's answers, in a shuffled order (the trainer reorders batches)."""
    rows = {}
    rng = random.Random(seed)
    for uid, answers in groups.items():
        for session, answer in enumerate(answers):
            length = rng.randint(3, 9)
            rows[f"{uid}_{session}_0"] = {
                "uid": uid,
                "rm_scores": torch.zeros(length),
                "extra_fields": {"reward_extra_info": {"pred": answer or "", "acc": 0.0}},
                "extra_info": {"answer": (truths or {}).get(uid, "")},
                "reward_model": {"ground_truth": ""},
            }
    keys = list(rows)
    rng.shuffle(keys)
    return rows, keys


def make_buffer(**vote_kwargs):
    return MajorityVoteReplayBuffer(
        trainer_mode="sync",
        trainer_config={},
        max_off_policy_threshold=8,
        max_off_policy_strategy="drop",
        sampler_kwargs=vote_kwargs,
    )


def run(buffer, rows, keys, monkeypatch):
    fake = FakeTQ(rows)
    monkeypatch.setattr(vote_buffer, "tq", fake)
    batch, metrics = buffer.vote_batch(KVBatchMeta(partition_id="train", keys=keys, tags=[{} for _ in keys]))
    return fake, batch, metrics


GROUPS = {
    "a": ["3", "3.0", "5", None],  # 3 wins 2/4
    "b": ["\\frac{1}{2}", "0.5", "1/2", "2"],  # 1/2 wins 3/4
    "c": ["1", "2", None, None],  # tie: no label
    "d": [None, None, None, None],  # nobody answered
}


def test_rewards_follow_vote_per_uid_in_shuffled_batch(monkeypatch):
    rows, keys = make_rows(GROUPS, truths={"a": "3", "b": "0.25", "c": "1"})
    fake, batch, metrics = run(make_buffer(), rows, keys, monkeypatch)
    assert batch.keys == keys
    for uid, answers in GROUPS.items():
        expected = vote(answers).rewards
        got = []
        for session in range(len(answers)):
            scores = fake.rows[f"{uid}_{session}_0"]["rm_scores"]
            # The reward sits on the last response token, as verl's reward loop puts it; zero elsewhere.
            assert torch.count_nonzero(scores[:-1]) == 0
            got.append(float(scores[-1]))
        assert got == expected, uid

    assert metrics["mmupt/majority_ratio"] == pytest.approx((2 / 4 + 3 / 4 + 1 / 4 + 0) / 4)
    assert metrics["mmupt/no_label_rate"] == pytest.approx(2 / 4)  # c (tie) and d (no answers)
    assert metrics["mmupt/no_answer_rate"] == pytest.approx(7 / 16)
    assert metrics["mmupt/labeled_groups"] == 3
    # a's label 3 is right, b's 1/2 is wrong (truth 0.25), c has no label.
    assert metrics["mmupt/label_accuracy"] == pytest.approx(1 / 3)
    # Responses whose vote reward (> 0) matches their true correctness: a all 4; b only the
    # unrewarded wrong "2" (the three rewarded 1/2s are wrong); c all but the unrewarded right "1".
    assert metrics["mmupt/reward_accuracy"] == pytest.approx((4 + 1 + 3) / 12)
    assert metrics["mmupt/votes_per_group"] == 4
    assert metrics["mmupt/vote_time_s"] >= 0


def test_n_train_keeps_a_subset_per_uid_and_clears_the_rest(monkeypatch):
    rows, keys = make_rows(GROUPS)
    fake, batch, metrics = run(make_buffer(n_votes=4, n_train=2), rows, keys, monkeypatch)
    assert metrics["mmupt/votes_per_group"] == 4
    kept_uids = [k.split("_")[0] for k in batch.keys]
    assert sorted(kept_uids) == sorted(["a", "a", "b", "b", "c", "c", "d", "d"])
    assert sorted(batch.keys + fake.cleared) == sorted(keys)
    # Rewards were voted on all four responses before the subset was taken.
    assert float(fake.rows["b_3_0"]["rm_scores"][-1]) == 0.0
    assert float(fake.rows["b_0_0"]["rm_scores"][-1]) == 1.0


def test_missing_pred_names_the_reward_manager(monkeypatch):
    rows, keys = make_rows({"a": ["1", "1"]})
    rows[keys[0]]["extra_fields"] = {"reward_extra_info": {"acc": 1.0}}
    with pytest.raises(KeyError, match="majority_vote"):
        run(make_buffer(), rows, keys, monkeypatch)


def test_unknown_vote_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown majority-vote setting"):
        make_buffer(min_ratoi=0.5)


def test_n_votes_below_n_train_is_rejected():
    with pytest.raises(ValueError, match="n_votes"):
        make_buffer(n_votes=2, n_train=4)
