"""End to end through verl's real trainer, Ray workers and the registered CPU rollout.

Each test runs the user's command, ``python -m verl.trainer.main config=recipes/...``, in a
subprocess and reads what it printed and wrote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from verl_ext.voting import extract_answer, vote

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

STEP_LINE = re.compile(r"step:(\d+) - (.*)$")
DIGEST_LINE = re.compile(r"weights v(\d+) \(global step (\S+)\) sha256=([0-9a-f]{64})")


def run_recipe(recipe: str, overrides: list[str], tmp_path: Path, timeout: int = 900) -> str:
    """Run the CLI like a user; returns its stdout+stderr, failing the test with the tail on error."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "verl.trainer.main", f"config=recipes/{recipe}.yaml", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    (tmp_path / f"{recipe}.log").write_text(out)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-6000:]}"
    return out


def step_metrics(out: str) -> dict[int, dict[str, float]]:
    """The per-step metrics verl's console logger printed: {step: {name: value}}."""
    steps: dict[int, dict[str, float]] = {}
    for line in out.splitlines():
        m = STEP_LINE.search(line)
        if not m:
            continue
        metrics = steps.setdefault(int(m.group(1)), {})
        for item in m.group(2).split(" - "):
            name, _, value = item.partition(":")
            num = re.search(r"-?\d+(\.\d+)?(e-?\d+)?", value)
            if num:
                metrics[name.strip()] = float(num.group(0))
    return steps


def hf_digest(path: Path) -> str:
    from transformers import AutoModelForImageTextToText

    from verl_ext.rollout.hf_server import state_dict_digest

    model = AutoModelForImageTextToText.from_pretrained(path, dtype="float32")
    return state_dict_digest(model.state_dict())


def test_supervised_grpo_updates_actor_and_rollout(tmp_path):
    ckpt = tmp_path / "ckpt"
    out = run_recipe(
        "grpo_supervised",
        [
            f"trainer.default_local_dir={ckpt}",
            f"reward.custom_reward_function.path={REPO / 'tests/e2e/spread_reward.py'}",
            "+actor_rollout_ref.rollout.custom.log_weight_digest=true",
        ],
        tmp_path,
    )
    steps = step_metrics(out)
    assert set(steps) >= {1, 2}, f"expected metrics for steps 1 and 2, got {sorted(steps)}"
    for step in (1, 2):
        assert steps[step]["actor/grad_norm"] > 0, "the reward spread should give a non-zero policy gradient"
        # The rollout's log-probs equal the actor's: the rollout generated with the actor's current weights.
        assert steps[step]["rollout_corr/kl"] < 0.05

    final = ckpt / "global_step_2" / "actor" / "huggingface"
    assert (final / "config.json").is_file(), "no Hugging Face checkpoint written at step 2"
    final_digest = hf_digest(final)
    from verl_ext.toy.resolver import resolve_asset

    assert final_digest != hf_digest(Path(resolve_asset("tiny-qwen2.5-vl"))), "training left the weights unchanged"

    served = [m.groups() for m in DIGEST_LINE.finditer(out)]
    assert len(served) >= 3, f"expected a weight sync at start and after each step, saw {len(served)}"
    assert len({sha for _, _, sha in served}) >= 2, "the rollout kept serving the same weights"
    assert served[-1][2] == final_digest, "the rollout does not serve the weights the actor saved"


def test_majority_vote_rewards_match_vote(tmp_path):
    """The quickstart as a new user runs it: the toy SFT model is built on first use, and its vote agrees."""
    dump = tmp_path / "rollouts"
    out = run_recipe(
        "quickstart",
        [
            f"trainer.default_local_dir={tmp_path / 'ckpt'}",
            f"trainer.rollout_data_dir={dump}",
        ],
        tmp_path,
        timeout=1400,  # the first run trains the toy SFT model (~5 minutes alone, more beside other tests)
    )
    steps = step_metrics(out)
    assert set(steps) >= {1, 2}
    for name in ("majority_ratio", "no_label_rate", "no_answer_rate", "answer_entropy", "vote_time_s",
                 "label_accuracy", "reward_accuracy"):
        assert f"mmupt/{name}" in steps[2], f"mmupt/{name} missing from the step metrics"
    # The quickstart's model already answers: its groups agree on something, and the hidden labels grade the vote.
    for step in (1, 2):
        assert steps[step]["mmupt/majority_ratio"] > 0.25, steps[step]
        assert steps[step]["mmupt/no_answer_rate"] < 0.5, steps[step]
        assert 0.0 <= steps[step]["mmupt/label_accuracy"] <= 1.0

    for step in (1, 2):
        rows = [json.loads(line) for line in (dump / f"{step}.jsonl").read_text().splitlines()]
        groups: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            groups[row["uid"].rsplit("_", 2)[0]].append(row)
        assert len(groups) == 4 and all(len(g) == 4 for g in groups.values())
        for group in groups.values():
            expected = vote([extract_answer(r["output"]) for r in group]).rewards
            assert [r["score"] for r in group] == pytest.approx(expected)


def test_existing_grpo_workflow_switches_with_one_override(tmp_path):
    """verl's own entry point, a supervised GRPO recipe, and the single override the README gives.

    It also votes TTRL-style on 6 responses per prompt while training on rollout.n=4.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes'}",
        "--config-name=grpo_supervised", "+mmupt=majority_vote",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'hydra'}",
        "trainer.v1.sampler.sampler_kwargs.n_votes=6",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    steps = step_metrics(out)
    assert set(steps) >= {1, 2}
    assert "mmupt/majority_ratio" in steps[2] and "mmupt/no_answer_rate" in steps[2]
    assert steps[2]["mmupt/votes_per_group"] == 6
    assert (tmp_path / "ckpt" / "global_step_2").is_dir()


def _dumped_groups(dump: Path, step: int) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for line in (dump / f"{step}.jsonl").read_text().splitlines():
        row = json.loads(line)
        groups[row["uid"].rsplit("_", 2)[0]].append(row)
    return groups


def test_token_entropy_reward_switches_on_with_one_override(tmp_path):
    """verl's entry point, a stock GRPO recipe and ``+mmupt=token_entropy``: rewards are minus the entropy."""
    dump = tmp_path / "rollouts"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes'}",
        "--config-name=grpo_supervised", "+mmupt=token_entropy",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'hydra'}",
        f"trainer.rollout_data_dir={dump}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    steps = step_metrics(out)
    assert set(steps) >= {1, 2}
    for step in (1, 2):
        scores = [r["score"] for g in _dumped_groups(dump, step).values() for r in g]
        # Every response's training reward is minus its mean token entropy: negative, and on average minus
        # verl's own actor/entropy (a token mean where ours is a mean per response: close, not equal). A
        # random model's entropies are all near log(vocab), so the rewards need not differ here.
        assert all(s < 0 for s in scores), scores
        assert sum(scores) / len(scores) == pytest.approx(steps[step]["mmupt/entropy_reward"], abs=1e-4)
        assert -steps[step]["mmupt/entropy_reward"] == pytest.approx(steps[step]["actor/entropy"], abs=0.1)
        assert steps[step]["critic/score/mean"] == pytest.approx(steps[step]["mmupt/entropy_reward"], abs=1e-4)
        # The vote still runs beside it, for its metrics and the collapse signal.
        assert "mmupt/majority_ratio" in steps[step] and steps[step]["mmupt/collapse/fired"] == 0.0


def test_labelled_rows_get_the_rule_reward_and_the_others_the_vote(tmp_path):
    """SRT's mix: half the toy RL questions keep their label (use_labels=true), half are unlabelled."""
    import pyarrow.parquet as pq

    from verl_ext.toy.resolver import resolve_asset
    from verl_ext.rewards.accuracy import compute_score

    table = pq.read_table(resolve_asset("toy-sft/data/rl/labeled.parquet")).to_pylist()
    for i, row in enumerate(table):
        if i % 2:
            row["reward_model"] = {**row["reward_model"], "ground_truth": ""}
    mixed = tmp_path / "mixed.parquet"
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table), mixed)
    dump = tmp_path / "rollouts"
    out = run_recipe(
        "quickstart",
        [
            f"data.train_files={mixed}",
            "trainer.v1.sampler.sampler_kwargs.use_labels=true",
            f"trainer.default_local_dir={tmp_path / 'ckpt'}",
            f"trainer.rollout_data_dir={dump}",
        ],
        tmp_path,
        timeout=1400,  # builds the toy SFT model when run alone
    )
    steps = step_metrics(out)
    seen = {"labelled": 0, "unlabelled": 0}
    for step in (1, 2):
        groups = _dumped_groups(dump, step)
        labelled = [g for g in groups.values() if g[0]["gts"]]
        assert steps[step]["mmupt/labelled_share"] == pytest.approx(len(labelled) / len(groups))
        for group in groups.values():
            if group[0]["gts"]:
                seen["labelled"] += 1
                expected = [compute_score("", r["output"], r["gts"])["score"] for r in group]
            else:
                seen["unlabelled"] += 1
                expected = vote([extract_answer(r["output"]) for r in group]).rewards
            assert [r["score"] for r in group] == pytest.approx(expected)
    assert seen["labelled"] and seen["unlabelled"], seen


def test_online_synthesis_questions_are_trained_on_after_their_round(tmp_path):
    """The quickstart with ``mmupt=online_synthesis``: the policy writes questions after step 1, steps 2-3 train on them."""
    import pyarrow.parquet as pq

    dump, ckpt = tmp_path / "rollouts", tmp_path / "ckpt"
    out = run_recipe(
        "quickstart",
        [
            "mmupt=online_synthesis",
            "data.train_files=${verl_ext_asset:toy-sft/data/rl/labeled.parquet}",
            f"trainer.default_local_dir={ckpt}",
            f"trainer.rollout_data_dir={dump}",
            "trainer.total_training_steps=3",
            "trainer.save_freq=-1",
            "online_synthesis.every=1",
            "online_synthesis.seeds_per_round=4",
            "online_synthesis.prompt=synth_in_context_short",  # the template the toy SFT data taught
            "online_synthesis.max_new_tokens=48",
        ],
        tmp_path,
        timeout=1400,
    )
    steps = step_metrics(out)
    assert set(steps) >= {1, 2, 3}
    assert "mmupt/synth/kept" not in steps[1] and steps[1]["mmupt/synth/pool_size"] == 0
    assert steps[1]["mmupt/synth/batch_from_pool"] == 0

    first_round = pq.read_table(ckpt / "online_synthesis" / "round-1" / "train.parquet").to_pylist()
    kept = len(first_round)
    assert kept >= 1, "the toy SFT model wrote no usable question"
    assert all(r["extra_info"]["synthesis_step"] == 1 for r in first_round)
    assert all(r["extra_info"]["strategy"] == "in_context" for r in first_round)
    # Counted in the metrics of the step that follows the round.
    assert steps[2]["mmupt/synth/round_step"] == 1 and steps[2]["mmupt/synth/written"] == 4
    assert steps[2]["mmupt/synth/kept"] == kept and steps[2]["mmupt/synth/pool_size"] == kept
    assert steps[2]["mmupt/synth/batch_from_pool"] == min(kept, 2)  # share 0.5 of 4 prompts
    assert steps[3]["mmupt/synth/round_step"] == 2

    def prompts_without_label(step: int) -> dict[str, str]:
        # The training rows carry labels (never read: use_labels is off); synthesized rows have none.
        rows = [json.loads(line) for line in (dump / f"{step}.jsonl").read_text().splitlines()]
        return {r["uid"].rsplit("_", 2)[0]: r["input"] for r in rows if r["gts"] in ("", None)}

    questions = {r["extra_info"]["question"] for r in first_round}
    assert prompts_without_label(1) == {}
    synthesized = prompts_without_label(2)
    assert len(synthesized) == min(kept, 2)
    assert all(any(q in text for q in questions) for text in synthesized.values())
