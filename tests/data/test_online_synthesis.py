"""Online synthesis on a stand-in trainer: rounds, the pool, batch mixing, provenance, metrics, resume.

The trainer here has what the component reads from verl's v1 trainer (its composed config, tokenizer,
processor, ``global_steps`` and a ``_next_train_batch`` built like verl's); the question writer is
scripted. The slow e2e test in tests/e2e runs the same component inside verl's real trainer.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf, open_dict

from verl_ext.main import compose
from verl_ext.data.online_synthesis import PREFIX, OnlineSynthesis, OnlineSynthesisConfig, settings_problem
from verl_ext.toy.visual_math import VisualMathConfig, write_dataset

REPO = Path(__file__).resolve().parents[2]


class QuestionWriter:
    """Writes ``<question>`` answers naming the image's seed prompt, so each question is traceable."""

    def __init__(self):
        self.requests = 0

    def generate(self, requests, settings, *, on_batch=None):
        self.requests += len(requests)
        out = [
            [f"<question>How many shapes, case {zlib.crc32(repr(r.messages).encode()) % 10000}-{k}?</question>"
             for k in range(settings.n)]
            for r in requests
        ]
        if on_batch is not None:
            on_batch(0, out)
        return out


class StandInTrainer:
    """The parts of verl's v1 trainer the component uses."""

    def __init__(self, config, tiny_model_dir):
        from verl.trainer.ppo.utils import create_rl_dataset
        from verl.utils import hf_processor, hf_tokenizer

        self.config = config
        self.tokenizer = hf_tokenizer(str(tiny_model_dir))
        self.processor = hf_processor(str(tiny_model_dir))
        self.global_steps = 1
        self.dataset = create_rl_dataset(config.data.train_files, config.data, self.tokenizer, self.processor)
        self.position = 0

    def _next_train_batch(self, num_prompts=None):
        import uuid

        from verl.utils import tensordict_utils as tu
        from verl.utils.dataset.rl_dataset import collate_fn

        n = num_prompts or self.config.data.train_batch_size
        items = [self.dataset[(self.position + i) % len(self.dataset)] for i in range(n)]
        self.position += n
        batch = collate_fn(items)
        batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(n)], dtype=object)
        td = tu.get_tensordict(batch)
        tu.assign_non_tensor_data(td, "global_steps", self.global_steps)
        return td


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("seeds"), VisualMathConfig(n_train=12, n_test=1))["train"]


def make_config(tmp_path, seeds, tiny_model_dir, *overrides):
    cfg = compose(REPO / "recipes" / "grpo_supervised.yaml", [], ["+mmupt=online_synthesis"])
    cfg.data.train_files = str(seeds)
    cfg.data.val_files = str(seeds)
    cfg.actor_rollout_ref.model.path = str(tiny_model_dir)
    cfg.trainer.default_local_dir = str(tmp_path / "ckpt")
    for item in overrides:
        key, _, value = item.partition("=")
        OmegaConf.update(cfg, key, OmegaConf.create({"v": value}).v if not value.isdigit() else int(value))
    return cfg


def texts_of(batch) -> list[str]:
    return [str(messages[-1]["content"]) for messages in batch["raw_prompt"]]


def test_settings_parse_with_one_line_errors(tmp_path, seeds, tiny_model_dir):
    cfg = make_config(tmp_path, seeds, tiny_model_dir)
    assert OnlineSynthesisConfig.from_config(cfg).every == 4
    assert settings_problem(cfg) is None
    assert OnlineSynthesisConfig.from_config(OmegaConf.create({})).every == 0  # absent: off
    with open_dict(cfg):
        cfg.online_synthesis.shares = 0.3
        assert "unknown online_synthesis setting(s) ['shares']" in settings_problem(cfg)
        del cfg.online_synthesis["shares"]
    cfg.online_synthesis.share = 0.0
    assert "share must be in (0, 1]" in settings_problem(cfg)
    cfg.online_synthesis.share = 0.5
    cfg.reward.reward_manager.name = "naive"
    assert "needs the majority vote" in settings_problem(cfg)


def test_questions_written_after_step_k_are_trained_on_from_step_k_plus_1(tmp_path, seeds, tiny_model_dir):
    cfg = make_config(
        tmp_path, seeds, tiny_model_dir, "online_synthesis.every=2", "online_synthesis.seeds_per_round=3",
        "data.train_batch_size=4",
    )
    trainer = StandInTrainer(cfg, tiny_model_dir)
    synthesis = OnlineSynthesis(trainer, OnlineSynthesisConfig.from_config(cfg))
    writer = QuestionWriter()
    synthesis.generator = writer

    batches = {}
    for step in (1, 2, 3, 4):
        trainer.global_steps = step
        batches[step] = synthesis.next_train_batch(trainer._next_train_batch, None)
        metrics = synthesis.metrics()
        if step < 3:
            # No round before step 2 is done: the dataloader's rows only.
            assert writer.requests == 0 and metrics[f"{PREFIX}pool_size"] == 0
            assert metrics[f"{PREFIX}batch_from_pool"] == 0 and f"{PREFIX}kept" not in metrics
        if step == 3:
            # The round after step 2 wrote one question per seed of the first window and kept all three.
            assert writer.requests == 3
            assert metrics[f"{PREFIX}round_step"] == 2 and metrics[f"{PREFIX}written"] == 3
            assert metrics[f"{PREFIX}kept"] == 3 and metrics[f"{PREFIX}pool_size"] == 3
            assert metrics[f"{PREFIX}batch_from_pool"] == 2  # share 0.5 of 4 prompts
        if step == 4:
            assert writer.requests == 3 and f"{PREFIX}kept" not in metrics  # next round after step 4

    round_file = Path(cfg.trainer.default_local_dir) / "online_synthesis" / "round-2" / "train.parquet"
    rows = pq.read_table(round_file).to_pylist()
    assert len(rows) == 3
    for row in rows:
        info = row["extra_info"]
        assert info["synthesis_step"] == 2 and info["strategy"] == "in_context"
        assert info["seed_file"] == str(seeds) and info["seed_row"] in (0, 1, 2)
    written = {r["extra_info"]["question"] for r in rows}
    for step in (1, 2):
        assert not any(q in t for q in written for t in texts_of(batches[step]))
    for step in (3, 4):
        texts = texts_of(batches[step])
        assert len(texts) == 4
        from_pool = [t for t in texts if any(q in t for q in written)]
        assert len(from_pool) == 2 and all(t in texts[2:] for t in from_pool)  # they replace the last rows
    # Pool rows are processed like every prompt: images and all tensors the rollout needs.
    assert len(batches[3]["uid"]) == 4 and len(set(batches[3]["uid"])) == 4


def test_a_resumed_run_reloads_earlier_rounds_and_does_not_redo_them(tmp_path, seeds, tiny_model_dir):
    cfg = make_config(tmp_path, seeds, tiny_model_dir, "online_synthesis.every=1", "online_synthesis.seeds_per_round=2")
    trainer = StandInTrainer(cfg, tiny_model_dir)
    first = OnlineSynthesis(trainer, OnlineSynthesisConfig.from_config(cfg))
    first.generator = QuestionWriter()
    for step in (1, 2, 3):
        trainer.global_steps = step
        first.next_train_batch(trainer._next_train_batch, None)
    assert first.rounds_done == {1, 2} and len(first.pool) == 4

    trainer.global_steps = 3  # resumed from the checkpoint of step 2: step 3 runs again
    again = OnlineSynthesis(trainer, OnlineSynthesisConfig.from_config(cfg))
    writer = QuestionWriter()
    again.generator = writer
    again.next_train_batch(trainer._next_train_batch, None)
    assert again.rounds_done == {1, 2} and len(again.pool) == 4
    # The round after step 2 finished before the restart: it is in the pool again, nothing is generated.
    assert writer.requests == 0
    # Round 2 took the second window of seeds.
    rows = pq.read_table(Path(cfg.trainer.default_local_dir) / "online_synthesis" / "round-2" / "train.parquet").to_pylist()
    assert sorted(r["extra_info"]["seed_row"] for r in rows) == [2, 3]


class BrokenWriter:
    def generate(self, requests, settings, *, on_batch=None):
        raise RuntimeError("server gone")


def test_a_failed_round_is_reported_and_training_goes_on(tmp_path, seeds, tiny_model_dir):
    cfg = make_config(tmp_path, seeds, tiny_model_dir, "online_synthesis.every=1", "online_synthesis.seeds_per_round=2")
    trainer = StandInTrainer(cfg, tiny_model_dir)
    synthesis = OnlineSynthesis(trainer, OnlineSynthesisConfig.from_config(cfg))
    synthesis.generator = BrokenWriter()
    trainer.global_steps = 2
    batch = synthesis.next_train_batch(trainer._next_train_batch, None)
    metrics = synthesis.metrics()
    assert len(batch["uid"]) == cfg.data.train_batch_size and metrics[f"{PREFIX}failed"] == 1.0
    assert metrics[f"{PREFIX}kept"] == 0 and synthesis.pool == [] and 1 not in synthesis.rounds_done


def test_pool_rows_take_the_training_files_columns(tmp_path, seeds, tiny_model_dir):
    """Training files with a column synthesized rows lack still mix (the column is empty on pool rows)."""
    import pyarrow as pa

    table = pq.read_table(seeds)
    wider = tmp_path / "wider.parquet"
    pq.write_table(table.append_column("difficulty", pa.array(["easy"] * len(table))), wider)
    cfg = make_config(tmp_path, wider, tiny_model_dir, "online_synthesis.every=1", "online_synthesis.seeds_per_round=2")
    trainer = StandInTrainer(cfg, tiny_model_dir)
    synthesis = OnlineSynthesis(trainer, OnlineSynthesisConfig.from_config(cfg))
    synthesis.generator = QuestionWriter()
    trainer.global_steps = 2
    batch = synthesis.next_train_batch(trainer._next_train_batch, None)
    assert list(batch["difficulty"])[:2] == ["easy", "easy"] and list(batch["difficulty"])[2:] == [None, None]
