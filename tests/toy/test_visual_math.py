"""Tests for the procedurally generated visual-math dataset."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from verl_ext.prompts import FORMAT_INSTRUCTION
from verl_ext.toy.tiny_model import ensure_tiny_model
from verl_ext.toy import visual_math as vm
from verl_ext.toy.visual_math import (
    COLORS,
    DATA_SOURCE,
    MANIFEST_NAME,
    VisualMathConfig,
    ensure_dataset,
    make_example,
    write_dataset,
)

SMALL = VisualMathConfig(n_train=12, n_test=6)
N_CHECK = 90  # examples per pixel-level check: 30 of each task


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as an (n, 2) array of (y, x)."""
    seen = np.zeros_like(mask, dtype=bool)
    height, width = mask.shape
    comps = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, pixels = [(y0, x0)], []
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        comps.append(np.array(pixels))
    return comps


def _classify(component: np.ndarray) -> str:
    """Shape kind from how much of its bounding box a blob fills (square 1.0, circle ~0.77, triangle ~0.52)."""
    h = component[:, 0].max() - component[:, 0].min() + 1
    w = component[:, 1].max() - component[:, 1].min() + 1
    fill = len(component) / (h * w)
    if fill > 0.95:
        return "square"
    if fill > 0.65:
        return "circle"
    return "triangle"


def _shapes_seen(png: bytes) -> Counter:
    """Count (kind, colour) of every blob drawn in one of the palette colours, from pixels alone."""
    pixels = _pixels(png)
    seen: Counter = Counter()
    for name, rgb in COLORS.items():
        for comp in _components((pixels == np.array(rgb)).all(axis=-1)):
            seen[(_classify(comp), name)] += 1
    return seen


def _examples(task: str, n: int, split: str = "train", config: VisualMathConfig = VisualMathConfig()):
    found = []
    index = 0
    while len(found) < n:
        if config.tasks[index % len(config.tasks)] == task:
            found.append(make_example(split, index, config))
        index += 1
    return found


# ------------------------------------------------------------------------------------------------ content


def test_count_answers_match_pixels() -> None:
    answers = Counter()
    for ex in _examples("count", N_CHECK // 3) + _examples("count", 10, split="test"):
        scene = ex.scene
        seen = _shapes_seen(ex.png)
        target = (scene.target["kind"], scene.target["color"])
        assert str(seen[target]) == scene.answer, (ex.index, scene.question, seen)
        assert scene.question.startswith(("How many", "Count")) and scene.target["color"] in scene.question
        # Every drawn shape is in the scene description and vice versa.
        assert seen == Counter((s.kind, s.color) for s in scene.shapes)
        answers[scene.answer] += 1
    # Answers spread over the configured range rather than collapsing on one value.
    assert len(answers) >= 4
    assert all(1 <= int(a) <= VisualMathConfig().max_count for a in answers)


def test_compare_answers_match_pixels() -> None:
    answers = Counter()
    for ex in _examples("compare", N_CHECK // 3):
        pixels = _pixels(ex.png)
        lengths = {}
        for bar in ex.scene.bars:
            mask = (pixels == np.array(COLORS[bar.color])).all(axis=-1)
            columns = np.nonzero(mask.any(axis=0))[0]
            lengths[bar.name] = columns.max() - columns.min() + 1
        assert set(lengths) == {"A", "B"}
        longer = max(lengths, key=lengths.get)
        assert abs(lengths["A"] - lengths["B"]) >= VisualMathConfig().min_bar_gap
        assert longer == ex.scene.answer
        answers[ex.scene.answer] += 1
    assert answers["A"] > 0 and answers["B"] > 0


def test_sum_answers_match_drawn_numbers() -> None:
    cfg = VisualMathConfig()
    n_terms = Counter()
    for ex in _examples("sum", N_CHECK // 3):
        labels = ex.scene.labels
        values = [int(label.text) for label in labels]
        assert ex.scene.answer == str(sum(values))
        assert cfg.min_terms <= len(values) <= cfg.max_terms
        assert all(cfg.min_number <= v <= cfg.max_number for v in values)
        n_terms[len(values)] += 1
        ink = _pixels(ex.png).min(axis=-1) < 128
        covered = np.zeros_like(ink)
        for label in labels:
            x0, y0, x1, y1 = label.box
            assert 0 <= x0 <= x1 < cfg.image_size and 0 <= y0 <= y1 < cfg.image_size
            assert ink[y0 : y1 + 1, x0 : x1 + 1].sum() > 5  # the number is actually drawn there
            covered[max(0, y0 - 1) : y1 + 2, max(0, x0 - 1) : x1 + 2] = True
        assert not (ink & ~covered).any()  # and nothing is drawn anywhere else
    assert set(n_terms) == {2, 3}


def test_difficulty_parameters_are_respected() -> None:
    cfg = VisualMathConfig(max_count=2, max_distractors=0, max_number=5, min_terms=3, max_terms=3)
    for ex in _examples("count", 15, config=cfg):
        assert ex.scene.answer in {"1", "2"} and len(ex.scene.shapes) == int(ex.scene.answer)
    for ex in _examples("sum", 15, config=cfg):
        assert len(ex.scene.labels) == 3 and int(ex.scene.answer) <= 15


def test_task_selection() -> None:
    cfg = VisualMathConfig(tasks=("sum",), n_train=5, n_test=0)
    assert {row["extra_info"]["task"] for row in vm.build_rows("train", cfg)} == {"sum"}
    rows = vm.build_rows("train", dataclasses.replace(SMALL, n_train=9))
    assert Counter(row["extra_info"]["task"] for row in rows) == {"count": 3, "sum": 3, "compare": 3}


@pytest.mark.parametrize(
    "bad",
    [
        {"tasks": ("count", "nope")},
        {"tasks": ()},
        {"min_count": 0},
        {"max_count": 12, "max_distractors": 6},
        {"max_shape_size": 30},
        {"min_number": 5, "max_number": 4},
        {"n_train": -1},
    ],
)
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        VisualMathConfig(**bad)


# ------------------------------------------------------------------------------------------------ files


def test_schema(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path, SMALL)
    assert set(paths) == {"train", "test"}
    for split, n in (("train", SMALL.n_train), ("test", SMALL.n_test)):
        table = pq.read_table(paths[split])
        assert table.column_names == ["data_source", "prompt", "images", "ability", "reward_model", "extra_info"]
        rows = table.to_pylist()
        assert len(rows) == n
        for index, row in enumerate(rows):
            assert row["data_source"] == DATA_SOURCE
            assert row["ability"] == "math"
            (message,) = row["prompt"]
            assert message["role"] == "user"
            assert message["content"].startswith("<image>") and message["content"].endswith(FORMAT_INSTRUCTION)
            assert message["content"].count("<image>") == 1
            (image,) = row["images"]
            assert image["path"] is None
            decoded = Image.open(io.BytesIO(image["bytes"]))
            assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == (112, 112)
            assert row["reward_model"] == {"style": "rule", "ground_truth": row["extra_info"]["answer"]}
            info = row["extra_info"]
            assert info["split"] == split and info["index"] == index
            assert info["task"] in vm.TASKS
            assert message["content"] == "<image>" + info["question"] + FORMAT_INSTRUCTION


def test_deterministic_and_splits_disjoint(tmp_path: Path) -> None:
    assert make_example("train", 5).png == make_example("train", 5).png
    a = write_dataset(tmp_path / "a", SMALL)
    b = write_dataset(tmp_path / "b", SMALL)
    c = write_dataset(tmp_path / "c", dataclasses.replace(SMALL, seed=1))
    for split in ("train", "test"):
        assert a[split].read_bytes() == b[split].read_bytes()
        assert a[split].read_bytes() != c[split].read_bytes()
    train = {make_example("train", i).png for i in range(60)}
    test = {make_example("test", i).png for i in range(60)}
    assert len(train) == 60 and len(test) == 60
    assert not train & test


def test_a_repeated_scene_is_replaced_never_fatal() -> None:
    # Bars alone have few distinct scenes: hundreds of examples repeat some (the birthday paradox).
    config = dataclasses.replace(SMALL, tasks=("compare",), n_train=3000, n_test=400)
    first_draws = [repr(vm.sample_scene(s, i, config)) for s, n in (("train", 3000), ("test", 400)) for i in range(n)]
    assert len(set(first_draws)) < len(first_draws)  # the first draws do repeat
    scenes = vm.dataset_scenes(config)
    assert [len(scenes["train"]), len(scenes["test"])] == [3000, 400]  # sizes kept
    everything = [repr(s) for s in scenes["train"] + scenes["test"]]
    assert len(set(everything)) == len(everything)  # nothing repeated, within or across splits
    # Only the repeats were redrawn: every other example keeps its first draw.
    kept = sum(a == b for a, b in zip(first_draws, everything))
    assert len(everything) - kept == len(first_draws) - len(set(first_draws))
    rows = vm.build_rows("test", dataclasses.replace(config, n_train=3000, n_test=400))
    assert [r["extra_info"]["question"] for r in rows] == [s.question for s in scenes["test"]]


def test_too_small_a_scene_space_is_one_clear_error() -> None:
    config = VisualMathConfig(tasks=("compare",), image_size=40, grid=2, min_shape_size=4, max_shape_size=8,
                              max_count=2, max_distractors=2, n_train=5000, n_test=0)  # about 2,000 bar scenes
    with pytest.raises(ValueError, match="too few distinct scenes"):
        vm.dataset_scenes(config)


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet

    real_write = pyarrow.parquet.write_table
    written = []

    def crash_on_second(table, where, *args, **kwargs):
        if written:
            Path(where).write_bytes(b"partial")
            raise OSError("disk full")
        written.append(where)
        return real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(pyarrow.parquet, "write_table", crash_on_second)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(tmp_path, SMALL)
    monkeypatch.undo()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["train.parquet"]  # no temp file, no test.parquet, no manifest
    assert not (tmp_path / vm.MANIFEST_NAME).exists()
    paths = ensure_dataset(tmp_path, SMALL)
    assert pq.read_table(paths["test"]).num_rows == SMALL.n_test


def test_ensure_dataset_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_write = vm.write_dataset

    def counting_write(out_dir, config=VisualMathConfig(), **kwargs):
        calls.append(config)
        return real_write(out_dir, config, **kwargs)

    monkeypatch.setattr(vm, "write_dataset", counting_write)
    paths = ensure_dataset(tmp_path, SMALL)
    mtimes = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    assert ensure_dataset(tmp_path, SMALL) == paths
    assert len(calls) == 1
    assert {k: p.stat().st_mtime_ns for k, p in paths.items()} == mtimes
    bigger = dataclasses.replace(SMALL, n_train=15)
    ensure_dataset(tmp_path, bigger)
    assert len(calls) == 2 and pq.read_table(paths["train"]).num_rows == 15
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["config"]["n_train"] == 15
    paths["test"].unlink()  # a missing file triggers a rewrite even with a manifest present
    ensure_dataset(tmp_path, bigger)
    assert len(calls) == 3 and paths["test"].is_file()


def test_cli(tmp_path: Path) -> None:
    assert vm.main([f"out={tmp_path}", "n_train=4", "n_test=2", "tasks=[count,compare]"]) == 0
    paths = {"train": tmp_path / "train.parquet", "test": tmp_path / "test.parquet"}
    assert pq.read_table(paths["train"]).num_rows == 4
    assert pq.read_table(paths["test"]).num_rows == 2
    assert set(pq.read_table(paths["train"]).column("extra_info").combine_chunks().field("task").to_pylist()) == {
        "count",
        "compare",
    }


# ------------------------------------------------------------------------------------------------ verl


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Same path as in tests/assets so a single pytest session builds the default model once.
    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "tiny_qwen2_5_vl")


def test_rlhf_dataset_loads(tmp_path: Path, tiny_dir: Path, rl_dataset_config) -> None:
    import torch
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
    from verl.utils.tokenizer import build_multimodal_processor_inputs

    paths = write_dataset(tmp_path / "data", SMALL)
    tokenizer = hf_tokenizer(str(tiny_dir))
    processor = hf_processor(str(tiny_dir))
    dataset = RLHFDataset(str(paths["train"]), tokenizer, rl_dataset_config(), processor=processor)
    # The length filter ran the processor on every row; a failure there would have dropped the row.
    assert len(dataset) == SMALL.n_train

    item = dataset[1]
    assert item["data_source"] == DATA_SOURCE
    assert item["extra_info"]["index"] == 1 and item["index"] == 1
    assert item["reward_model"]["ground_truth"] == item["extra_info"]["answer"]
    (message,) = item["raw_prompt"]
    image_part, text_part = message["content"]
    assert image_part["type"] == "image" and isinstance(image_part["image"], Image.Image)
    assert image_part["image"].size == (112, 112)
    assert text_part == {"type": "text", "text": item["extra_info"]["question"] + FORMAT_INSTRUCTION}

    # What verl's agent loop does with raw_prompt before rollout.
    raw_prompt = processor.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=False)
    images, videos, _ = RLHFDataset._process_multi_modal_info(item["raw_prompt"], 14, dataset.config)
    inputs = build_multimodal_processor_inputs(processor, text=[raw_prompt], images=images, videos=videos)
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert int((inputs["input_ids"][0] == processor.image_token_id).sum()) == 16
    assert inputs["input_ids"].shape[1] < 1024

    batch = collate_fn([dataset[i] for i in range(4)])
    assert isinstance(batch["dummy_tensor"], torch.Tensor) and batch["dummy_tensor"].shape == (4, 1)
    assert len(batch["raw_prompt"]) == 4


def test_rlhf_dataset_length_filter_counts_image_tokens(tmp_path: Path, tiny_dir: Path, rl_dataset_config) -> None:
    """With a limit between the text-only and the with-image prompt length, every row is filtered out."""
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    paths = write_dataset(tmp_path / "data", dataclasses.replace(SMALL, tasks=("sum",)))
    tokenizer = hf_tokenizer(str(tiny_dir))
    processor = hf_processor(str(tiny_dir))
    lengths = []
    for row in pq.read_table(paths["train"]).to_pylist():
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["prompt"][0]["content"].replace("<image>", "")}],
            add_generation_prompt=True,
            tokenize=False,
        )
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    # Prompt with image = text + <|vision_start|> + 16 * <|image_pad|> + <|vision_end|>.
    limit = max(lengths) + 5
    kept = RLHFDataset(str(paths["train"]), tokenizer, rl_dataset_config(max_prompt_length=limit), processor)
    assert len(kept) == 0
    kept = RLHFDataset(str(paths["train"]), tokenizer, rl_dataset_config(max_prompt_length=limit + 20), processor)
    assert len(kept) == SMALL.n_train


def test_hub_layout_is_what_prepare_reads(tmp_path: Path) -> None:
    """The hub layout has the public sets' columns; prepare turns it back into the verl rows, label hidden."""
    from verl_ext.data import prepare

    paths = ensure_dataset(tmp_path / "hub", SMALL, layout="hub")
    assert pq.read_table(paths["train"]).column_names == ["images", "problem", "answer", "task"]
    verl_rows = pq.read_table(ensure_dataset(tmp_path / "verl", SMALL)["train"]).to_pylist()
    result = prepare.prepare(prepare.PrepareConfig(dataset=(str(paths["train"]),), out=tmp_path / "prepared"))
    prepared = pq.read_table(result.paths["train"]).to_pylist()
    assert [r["prompt"] for r in prepared] == [r["prompt"] for r in verl_rows]
    assert [r["extra_info"]["answer"] for r in prepared] == [r["reward_model"]["ground_truth"] for r in verl_rows]
    assert all(r["reward_model"]["ground_truth"] == "" for r in prepared)
    with pytest.raises(ValueError, match="layout"):
        write_dataset(tmp_path / "x", SMALL, layout="csv")
