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

    NESTED = ("rm_scores", "entropy", "response_mask")

    def kv_batch_get(self, keys, partition_id, select_fields):
        out = {f: [self.rows[k][f] for k in keys] for f in select_fields if f not in self.NESTED}
        for f in set(select_fields) & set(self.NESTED):
            out[f] = torch.nested.as_nested_tensor([self.rows[k][f] for k in keys], layout=torch.jagged)
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


def make_buffer(refill_fn=None, **vote_kwargs):
    return MajorityVoteReplayBuffer(
        trainer_mode="sync",
        trainer_config={},
        max_off_policy_threshold=8,
        max_off_policy_strategy="drop",
        sampler_kwargs=vote_kwargs,
        refill_fn=refill_fn,
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


def test_labelled_rows_keep_the_rule_reward_and_the_others_get_the_vote(monkeypatch):
    """use_labels: a group with reward_model.ground_truth keeps the manager's score, the rest is voted."""
    rows, keys = make_rows(GROUPS)
    for session, acc in enumerate([1.0, 0.0, 0.0, 0.0]):  # the manager scored group a against its label "3"
        row = rows[f"a_{session}_0"]
        row["reward_model"] = {"ground_truth": "3"}
        row["rm_scores"] = torch.zeros_like(row["rm_scores"])
        row["rm_scores"][-1] = acc
    fake, _, metrics = run(make_buffer(use_labels=True), rows, keys, monkeypatch)
    assert [float(fake.rows[f"a_{s}_0"]["rm_scores"][-1]) for s in range(4)] == [1.0, 0.0, 0.0, 0.0]
    assert [float(fake.rows[f"b_{s}_0"]["rm_scores"][-1]) for s in range(4)] == vote(GROUPS["b"]).rewards
    assert metrics["mmupt/labelled_share"] == pytest.approx(1 / 4)

    # Without use_labels the same rows are voted (the paper's setting: labels are never read).
    rows, keys = make_rows(GROUPS)
    for session in range(4):
        rows[f"a_{session}_0"]["reward_model"] = {"ground_truth": "3"}
    fake, _, metrics = run(make_buffer(), rows, keys, monkeypatch)
    assert [float(fake.rows[f"a_{s}_0"]["rm_scores"][-1]) for s in range(4)] == vote(GROUPS["a"]).rewards
    assert "mmupt/labelled_share" not in metrics


class FakeTrainer:
    """What the buffer reads from verl's trainer: its config, step budget and the advantage step."""

    def __init__(self, bypass=False):
        from omegaconf import OmegaConf

        self.config = OmegaConf.create({"algorithm": {"rollout_correction": {"bypass_mode": bypass}}})
        self.total_training_steps = 100
        self.advantage_inputs = []

    def _add_prompts_to_generate(self, num_prompts):
        return num_prompts

    def _compute_advantage(self, batch, metrics):
        self.advantage_inputs.append(batch)
        return batch


def test_token_entropy_rewards_are_minus_the_mean_entropy_before_advantages(monkeypatch):
    from verl_ext.trainer import vote_buffer as module

    trainer = FakeTrainer()
    monkeypatch.setattr(module, "trainer_of_sampler", lambda fn: getattr(fn, "__self__", None))
    buffer = make_buffer(refill_fn=trainer._add_prompts_to_generate, reward="token_entropy", use_labels=True)
    rows, keys = make_rows(GROUPS)
    expected = {}
    for i, key in enumerate(keys):
        length = len(rows[key]["rm_scores"])
        entropy = torch.linspace(0.1, 0.1 * (i + 1), length)
        mask = torch.ones(length)
        mask[-1] = 0.0  # a masked token does not count
        rows[key]["entropy"], rows[key]["response_mask"] = entropy, mask
        expected[key] = -float(entropy[:-1].mean())
    for session in range(4):  # group a has a label: it keeps its rule reward
        rows[f"a_{session}_0"]["reward_model"] = {"ground_truth": "3"}
        rows[f"a_{session}_0"]["rm_scores"][-1] = 1.0
    fake, batch, metrics = run(buffer, rows, keys, monkeypatch)
    # The vote did not write training rewards for unlabelled rows: they wait for the entropy.
    assert float(fake.rows["b_0_0"]["rm_scores"][-1]) == 0.0

    # verl reorders and pads the batch before advantages: the hook finds rows by key.
    reordered = KVBatchMeta(partition_id="train", keys=list(reversed(batch.keys)) + ["pad_0_0"],
                            tags=[{} for _ in range(len(batch.keys) + 1)])
    step_metrics = {}
    trainer._compute_advantage(reordered, step_metrics)
    assert trainer.advantage_inputs == [reordered]
    for key in keys:
        got = fake.rows[key]["rm_scores"]
        assert torch.count_nonzero(got[:-1]) == 0
        if key.startswith("a_"):
            assert float(got[-1]) == 1.0
        else:
            assert float(got[-1]) == pytest.approx(expected[key], abs=1e-6)
    unlabelled = [expected[k] for k in keys if not k.startswith("a_")]
    assert step_metrics["mmupt/entropy_reward"] == pytest.approx(sum(unlabelled) / len(unlabelled), abs=1e-6)
    # The vote's metrics still come with the step (the collapse signal reads them).
    assert metrics["mmupt/majority_ratio"] > 0


def test_token_entropy_needs_the_old_log_prob_entropy(monkeypatch):
    from verl_ext.trainer import vote_buffer as module

    monkeypatch.setattr(module, "trainer_of_sampler", lambda fn: getattr(fn, "__self__", None))
    with pytest.raises(ValueError, match="bypass_mode"):
        make_buffer(refill_fn=FakeTrainer(bypass=True)._add_prompts_to_generate, reward="token_entropy")
    with pytest.raises(ValueError, match="v1 trainer"):
        make_buffer(reward="token_entropy")
    with pytest.raises(ValueError, match="reward must be one of"):
        make_buffer(reward="entropy")


def test_collapse_guard_stops_the_run_after_the_next_step(monkeypatch, caplog):
    """A constructed run whose vote saturates: every group agrees more each step."""
    from verl_ext.trainer import vote_buffer as module

    trainer = FakeTrainer()
    monkeypatch.setattr(module, "trainer_of_sampler", lambda fn: getattr(fn, "__self__", None))
    buffer = make_buffer(
        refill_fn=trainer._add_prompts_to_generate, collapse={"window": 2, "baseline_steps": 2, "guard": "stop"}
    )
    answers_per_step = [["1", "2", "3", "4"]] * 2 + [["1", "1", "2", "3"], ["1", "1", "1", "2"], ["1"] * 4]
    fired = []
    for step, answers in enumerate(answers_per_step, start=1):
        rows, keys = make_rows({"a": answers, "b": answers})
        _, _, metrics = run(buffer, rows, keys, monkeypatch)
        metrics.update(buffer.watch_collapse(step, metrics))
        fired.append(metrics["mmupt/collapse/fired"])
    # Baseline: steps 1-2, ratio 0.25. The first trailing window after it, steps 3-4: (0.5 + 0.75) / 2,
    # 0.375 above: fires at step 4, and step 5 becomes verl's last step.
    assert fired == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert metrics["mmupt/collapse/fired_step"] == 4
    assert trainer.total_training_steps == 5
    assert "collapse signal at step 4" in caplog.text


def test_a_blank_ground_truth_is_no_label():
    from verl_ext.trainer.vote_buffer import given_label

    assert given_label({"ground_truth": "  "}) is None and given_label({"ground_truth": None}) is None
    assert given_label({"ground_truth": " 3 "}) == "3" and given_label({"ground_truth": 0}) == "0"


def test_clustering_setting_reaches_the_vote(monkeypatch):
    """trainer.v1.sampler.sampler_kwargs.clustering=exact_string: every group is voted the public MM-UPT way."""
    from omegaconf import OmegaConf

    from verl_ext.rewards.majority_vote import vote_config_from

    config = OmegaConf.create({"trainer": {"v1": {"sampler": {"sampler_kwargs": {"clustering": "exact_string"}}}}})
    assert vote_config_from(config).clustering == "exact_string"

    calls = []

    def spy(answers, **kwargs):
        calls.append(kwargs["clustering"])
        return vote(answers, **kwargs)

    monkeypatch.setattr(vote_buffer, "vote", spy)
    groups = {  # no ties: the outcome does not depend on the order of the batch
        "a": ["3", "3.0", "3", "5"],  # "3" wins; "3.0" is graded equal to it
        "b": ["0.5", "1/2", "\\frac{1}{2}", "2", "2"],  # the equivalent forms split: "2" wins
        "d": [None, None, None, "4"],  # the missing answers vote "None" and win
    }
    rows, keys = make_rows(groups, truths={"a": "3", "b": "0.5", "d": "4"})
    fake, _, metrics = run(make_buffer(clustering="exact_string"), rows, keys, monkeypatch)
    assert calls == ["exact_string"] * len(groups)
    got = {uid: [float(fake.rows[f"{uid}_{s}_0"]["rm_scores"][-1]) for s in range(len(a))] for uid, a in groups.items()}
    assert got == {"a": [1.0, 1.0, 1.0, 0.0], "b": [0.0, 0.0, 0.0, 1.0, 1.0], "d": [1.0, 1.0, 1.0, 0.0]}
    assert metrics["mmupt/no_label_rate"] == 0.0
    assert metrics["mmupt/label_accuracy"] == pytest.approx(1 / 3)  # only a's label is right

    calls.clear()
    run(make_buffer(), *make_rows(groups), monkeypatch)
    assert calls == ["math"] * len(groups)


def test_unknown_clustering_is_a_clear_error():
    with pytest.raises(ValueError, match="clustering must be one of math, exact_string"):
        make_buffer(clustering="strings")
