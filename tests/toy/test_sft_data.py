"""Tests for the SFT warm-start data built from the visual-math RL parquet."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow.parquet as pq
import pytest
import yaml

from verl_ext.toy import sft_data
from verl_ext.toy import visual_math as vm
from verl_ext.toy.sft_data import (
    DEFAULT_SFT_CONFIG,
    MANIFEST_NAME,
    ensure_sft_dataset,
    reasoning_line,
    response_text,
    rl_row_to_sft_row,
)
from verl_ext.voting import extract_answer

REPO = Path(__file__).resolve().parents[2]
SMALL = dataclasses.replace(DEFAULT_SFT_CONFIG, n_train=9, n_test=6)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ensure_sft_dataset(tmp_path_factory.mktemp("sft") / "data", SMALL)


def _recipe(name: str) -> dict:
    return yaml.safe_load((REPO / "recipes" / name).read_text())


def test_default_config_is_disjoint_from_the_rl_data() -> None:
    # The warm start must not see the scenes RL/UPT train and validate on (visual-math's default seed).
    assert DEFAULT_SFT_CONFIG.seed != vm.VisualMathConfig().seed
    rl_questions = {vm.sample_scene("test", i).question + vm.sample_scene("test", i).answer for i in range(8)}
    sft_questions = {
        vm.sample_scene("train", i, DEFAULT_SFT_CONFIG).question + vm.sample_scene("train", i, DEFAULT_SFT_CONFIG).answer
        for i in range(8)
    }
    assert vm.sample_scene("train", 0, DEFAULT_SFT_CONFIG) != vm.sample_scene("train", 0)
    assert rl_questions != sft_questions


@pytest.mark.parametrize("index", range(9))
def test_response_ends_in_the_boxed_answer(index: int) -> None:
    scene = vm.sample_scene("train", index, DEFAULT_SFT_CONFIG)
    text = response_text(scene)
    assert text == f"{reasoning_line(scene)} The answer is \\boxed{{{scene.answer}}}."
    assert extract_answer(text, style="boxed") == scene.answer
    assert "\n" not in text


def test_reasoning_lines_state_the_scene() -> None:
    config = DEFAULT_SFT_CONFIG
    seen = set()
    for i in range(30):
        scene = vm.sample_scene("train", i, config)
        line = reasoning_line(scene)
        seen.add(scene.task)
        if scene.task == "count":
            n = int(scene.answer)
            assert f" {n} {scene.target['color']} {scene.target['kind']}" in line
            assert line.startswith("There is 1 ") if n == 1 else line.startswith(f"There are {n} ")
        elif scene.task == "sum":
            terms = [label.text for label in scene.labels]
            assert line == " + ".join(terms) + f" = {scene.answer}."
            assert sum(int(t) for t in terms) == int(scene.answer)
        else:
            other = "B" if scene.answer == "A" else "A"
            assert line == f"Bar {scene.answer} is longer than bar {other}."
    assert seen == set(vm.TASKS)


def test_rl_row_to_sft_row_appends_the_assistant_turn() -> None:
    example = vm.make_example("train", 4, SMALL)
    row = vm.example_to_row(example, SMALL)
    sft = rl_row_to_sft_row(row, example.scene)
    assert sft["messages"][:-1] == row["prompt"]
    assert sft["messages"][-1] == {"role": "assistant", "content": response_text(example.scene)}
    assert sft["response"] == sft["messages"][-1]["content"]
    for key in row:  # every RL column is kept, so the file can be evaluated like the RL data
        assert sft[key] == row[key]


def test_rl_row_from_another_config_is_refused() -> None:
    row = vm.example_to_row(vm.make_example("train", 0, vm.VisualMathConfig()), vm.VisualMathConfig())
    with pytest.raises(ValueError, match="another config"):
        rl_row_to_sft_row(row, vm.sample_scene("train", 0, DEFAULT_SFT_CONFIG))


def test_written_files(small_data: dict[str, Path]) -> None:
    out_dir = small_data["train"].parent
    assert set(small_data) == {"train", "test"}
    rl_rows = pq.read_table(out_dir / sft_data.RL_SUBDIR / "train.parquet").to_pylist()
    rows = pq.read_table(small_data["train"]).to_pylist()
    assert len(rows) == SMALL.n_train == len(rl_rows)
    for rl, row in zip(rl_rows, rows, strict=True):
        assert row["images"] == rl["images"] and row["prompt"] == rl["prompt"]
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"].startswith("<image>")
        assert extract_answer(row["messages"][1]["content"], style="boxed") == rl["reward_model"]["ground_truth"]
    assert len(pq.read_table(small_data["test"])) == SMALL.n_test
    manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    assert manifest["config"]["seed"] == SMALL.seed
    assert not [p.name for p in out_dir.iterdir() if ".tmp-" in p.name]


def test_ensure_reuses_complete_data_and_rewrites_stale(tmp_path: Path) -> None:
    out = tmp_path / "data"
    paths = ensure_sft_dataset(out, SMALL)
    mtime = paths["train"].stat().st_mtime_ns
    assert ensure_sft_dataset(out, SMALL) == paths
    assert paths["train"].stat().st_mtime_ns == mtime

    bigger = dataclasses.replace(SMALL, n_train=SMALL.n_train + 3)
    paths = ensure_sft_dataset(out, bigger)
    assert len(pq.read_table(paths["train"])) == bigger.n_train

    # An interrupted write (no manifest) is not trusted.
    (out / MANIFEST_NAME).unlink()
    ensure_sft_dataset(out, bigger)
    assert (out / MANIFEST_NAME).is_file()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sft_data.main([f"out={tmp_path / 'cli'}", "n_train=3", "n_test=3", "tasks=[compare]"]) == 0
    paths = {split: tmp_path / "cli" / f"{split}.parquet" for split in ("train", "test")}
    printed = capsys.readouterr().out
    assert f"train: {paths['train']}" in printed and f"test: {paths['test']}" in printed
    rows = pq.read_table(paths["train"]).to_pylist()
    assert {r["extra_info"]["task"] for r in rows} == {"compare"}


def test_verl_sft_dataset_reads_it(small_data: dict[str, Path], tiny_model_dir: Path) -> None:
    """verl's MultiTurnSFTDataset, configured as recipes/sft_tiny.yaml, trains on exactly the response."""
    import torch
    from omegaconf import OmegaConf
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    data_cfg = _recipe("sft_tiny.yaml")["data"]
    config = OmegaConf.create({k: v for k, v in data_cfg.items() if k not in ("train_files", "val_files")})
    tokenizer = hf_tokenizer(str(tiny_model_dir))
    processor = hf_processor(str(tiny_model_dir))
    dataset = MultiTurnSFTDataset(str(small_data["train"]), tokenizer, config, processor=processor)
    rows = pq.read_table(small_data["train"]).to_pylist()
    assert len(dataset) == len(rows)
    for i, row in enumerate(rows):
        item = dataset[i]  # also runs verl's check that per-turn tokenization equals the whole chat's
        ids, mask = item["input_ids"], item["loss_mask"].bool()
        assert len(ids) <= config.max_length
        assert tokenizer.decode(ids[mask]) == row["response"] + "<|im_end|>\n"
        assert int((ids == processor.image_token_id).sum()) == 16
        mm = item["multi_modal_inputs"]
        assert mm["image_grid_thw"].tolist() == [[1, 8, 8]]
        assert mm["pixel_values"].dtype == torch.float32
        assert item["position_ids"].shape == (4, len(ids))  # text + 3 M-RoPE rows, as Qwen2.5-VL needs


def test_responses_fit_the_rl_response_budget(tiny_model_dir: Path) -> None:
    """The RL stage generates at most max_response_length tokens; the taught answer must fit, with its end token."""
    from verl.utils import hf_tokenizer

    budget = _recipe("base/tiny_cpu.yaml")["data"]["max_response_length"]
    tokenizer = hf_tokenizer(str(tiny_model_dir))
    config = dataclasses.replace(DEFAULT_SFT_CONFIG, max_number=vm.VisualMathConfig().max_number)
    longest = max(
        len(tokenizer(response_text(vm.sample_scene("train", i, config)))["input_ids"]) for i in range(300)
    )
    assert longest + 1 <= budget, f"longest response is {longest} tokens (+1 end token), RL budget {budget}"


# ----------------------------------------------------------------------------------------- answer styles

COMPARE = dataclasses.replace(DEFAULT_SFT_CONFIG, tasks=("compare",), min_bar_gap=20)
MIX = sft_data.StyleMix(shortcut=0.4, careful=3, tempting_colors=("orange", "red", "yellow"))


def _bars(scene: vm.Scene) -> tuple[int, int]:
    return scene.bars[0].length, scene.bars[1].length


@pytest.mark.parametrize("task", vm.TASKS)
def test_every_style_ends_in_its_answer_and_is_read_back(task: str) -> None:
    config = dataclasses.replace(DEFAULT_SFT_CONFIG, tasks=(task,))
    for i in range(20):
        scene = vm.sample_scene("train", i, config)
        for style in sft_data.STYLES:
            text = response_text(scene, style)
            expected = sft_data.shortcut_answer(scene) if style == sft_data.SHORTCUT else scene.answer
            assert extract_answer(text, style="boxed") == expected
            assert sft_data.response_style(text) == style
            assert "\n" not in text
    # Each style opens with its own first word: greedy decoding picks a style at the first token.
    scene = vm.sample_scene("train", 0, config)
    assert len({response_text(scene, style).split()[0] for style in sft_data.STYLES}) == len(sft_data.STYLES)


def test_the_compare_shortcut_says_a_unless_b_is_far_longer() -> None:
    for i in range(200):
        scene = vm.sample_scene("train", i, COMPARE)
        a, b = _bars(scene)
        assert sft_data.shortcut_answer(scene, margin=45) == ("B" if b - a > 45 else "A")
        assert sft_data.shortcut_answer(scene, margin=1000) == "A"


def test_the_count_shortcut_counts_the_colour_of_any_kind() -> None:
    config = dataclasses.replace(DEFAULT_SFT_CONFIG, tasks=("count",))
    wrong = 0
    for i in range(100):
        scene = vm.sample_scene("train", i, config)
        colour = scene.target["color"]
        shortcut = int(sft_data.shortcut_answer(scene))
        assert shortcut == sum(1 for s in scene.shapes if s.color == colour) >= int(scene.answer)
        wrong += shortcut != int(scene.answer)
    assert 10 < wrong < 90  # a binding error: right on some scenes only


def test_the_plain_mix_is_one_careful_phrasing() -> None:
    for i in range(30):
        scene = vm.sample_scene("train", i, DEFAULT_SFT_CONFIG)
        assert sft_data.PLAIN.style(scene, f"k{i}") == "careful"


def test_style_shares_follow_the_mix_and_only_tempting_scenes_hurry() -> None:
    scenes = vm.dataset_scenes(dataclasses.replace(COMPARE, n_train=3000, n_test=0))["train"]
    counts: dict[tuple[bool, str], int] = {}
    for i, scene in enumerate(scenes):
        key = (MIX.tempting(scene), MIX.style(scene, f"1:train:{i}"))
        counts[key] = counts.get(key, 0) + 1
        assert MIX.tempting(scene) == (scene.bars[0].color in {"orange", "red", "yellow"})
    tempting = sum(n for (t, _), n in counts.items() if t)
    assert 0.4 < tempting / len(scenes) < 0.6  # 3 of 6 colours
    assert counts.get((False, sft_data.SHORTCUT), 0) == 0
    assert abs(counts[(True, sft_data.SHORTCUT)] / tempting - 0.4) < 0.04
    for style in sft_data.CAREFUL_STYLES:  # the rest split evenly, on either kind of scene
        assert abs(counts[(True, style)] / tempting - 0.2) < 0.04
        assert abs(counts[(False, style)] / (len(scenes) - tempting) - 1 / 3) < 0.05


def test_the_style_is_drawn_independent_of_the_answer() -> None:
    scenes = vm.dataset_scenes(dataclasses.replace(COMPARE, n_train=3000, n_test=0))["train"]
    shortcut = {"A": [], "B": []}
    for i, scene in enumerate(scenes):
        if MIX.tempting(scene):
            shortcut[scene.answer].append(MIX.style(scene, f"1:train:{i}") == sft_data.SHORTCUT)
    rates = {answer: sum(v) / len(v) for answer, v in shortcut.items()}
    assert abs(rates["A"] - rates["B"]) < 0.07, rates


@pytest.mark.parametrize("bad", [{"shortcut": 1.0}, {"shortcut": -0.1}, {"careful": 0}, {"careful": 4},
                                 {"tempting_colors": ("red", "pink")}])
def test_bad_mixes_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="styles"):
        sft_data.StyleMix(**bad)


def test_written_files_follow_the_mix(tmp_path: Path) -> None:
    config = dataclasses.replace(COMPARE, n_train=300, n_test=6)
    paths = ensure_sft_dataset(tmp_path / "styled", config, MIX)
    rows = pq.read_table(paths["train"]).to_pylist()
    styles = [sft_data.response_style(r["response"]) for r in rows]
    assert set(styles) == set(sft_data.STYLES)
    assert 0.12 < styles.count(sft_data.SHORTCUT) / len(rows) < 0.28  # 40 % of about half the scenes
    manifest = json.loads((tmp_path / "styled" / MANIFEST_NAME).read_text())
    assert manifest["styles"]["shortcut"] == 0.4
    # The plain mix writes no styles key: plain data built before styles existed stays valid.
    ensure_sft_dataset(tmp_path / "plain", dataclasses.replace(config, n_train=3))
    assert "styles" not in json.loads((tmp_path / "plain" / MANIFEST_NAME).read_text())
