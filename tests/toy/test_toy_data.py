"""Tests for the toy reproduction's data (verl_ext.toy.data) and visual_math.alternative_questions."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from verl_ext.data import schema as row_schema
from verl_ext.toy import sft_data
from verl_ext.toy import visual_math as vm
from verl_ext.data.synth_filters import image_key, normalize_question, parse_question, screen
from verl_ext.data.synthesize import SynthesizeConfig, seed_from_row, seed_prompt, synthesize
from verl_ext.toy.visual_math import VisualMathConfig, alternative_questions
from verl_ext.generation.base import GenerationRequest, SamplingSettings
from verl_ext.prompts import load_prompt
from verl_ext.toy import data as toy
from verl_ext.toy.data import (
    FILES,
    MANIFEST_NAME,
    QUESTION_TASK_PREFIX,
    ToyDataConfig,
    ensure_toy_data,
    question_target,
    question_writing_row,
    write_toy_data,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = ToyDataConfig(n_sft=20, n_sft_test=10, n_rl=9, n_test=6, seed=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_toy_data(tmp_path_factory.mktemp("toy") / "data", SMALL)


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _is_question_row(row: dict) -> bool:
    return row["extra_info"]["task"].startswith(QUESTION_TASK_PREFIX)


def _image_hash(row: dict) -> str:
    (image,) = row["images"]
    return hashlib.sha256(image["bytes"]).hexdigest()


# ------------------------------------------------------------------------------------------------ alternatives


def _true_answer(scene: vm.Scene, question: str) -> str:
    """Answer ``question`` from the scene description alone (independent of alternative_questions' code)."""
    shapes = scene.shapes
    values = [int(label.text) for label in scene.labels if label.text.isdigit()]
    bars = {bar.name: bar for bar in scene.bars}
    words = question.rstrip("?").split()
    if question == "How many shapes are in the image in total?":
        return str(len(shapes))
    if question.startswith("How many") and question.endswith("shapes are in the image?"):
        return str(sum(s.color == words[2] for s in shapes))
    if question.endswith("of any color are in the image?"):
        return str(sum(s.kind + "s" == words[2] for s in shapes))
    if question.startswith("How many") and question.endswith("are in the image?"):
        return str(sum(s.color == words[2] and s.kind + "s" == words[3] for s in shapes))
    if question == "What is the largest number shown in the image?":
        return str(max(values))
    if question == "What is the smallest number shown in the image?":
        return str(min(values))
    if question == "How many numbers are written in the image?":
        return str(len(scene.labels))
    if question.startswith("What is the difference between the largest and the smallest"):
        return str(max(values) - min(values))
    if question.startswith("Which bar is shorter"):
        return min(bars.values(), key=lambda b: b.length).name
    if question.startswith("What color is bar"):
        return bars[words[-1]].color
    if question == "What color is the longer bar?":
        return max(bars.values(), key=lambda b: b.length).color
    if question == "What color is the shorter bar?":
        return min(bars.values(), key=lambda b: b.length).color
    raise AssertionError(f"unexpected alternative question {question!r}")


CONFIGS = {
    "default": VisualMathConfig(),
    "hard": VisualMathConfig(min_terms=1, max_terms=4, max_number=99, max_count=8, max_distractors=8, min_bar_gap=4),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_alternative_questions_differ_and_are_correct(name: str) -> None:
    config = CONFIGS[name]
    seen_kinds: Counter = Counter()
    for index in range(90):
        scene = vm.sample_scene("train", index, config)
        alternatives = alternative_questions(scene)
        assert alternatives, f"no alternative for {scene}"
        assert alternatives == alternative_questions(scene)  # deterministic
        questions = [q for q, _ in alternatives]
        assert len(set(questions)) == len(questions)
        for question, answer in alternatives:
            assert normalize_question(question) != normalize_question(scene.question)
            assert answer == _true_answer(scene, question), (scene, question)
            seen_kinds[(scene.task, question.split()[0])] += 1
    # Every task offers its alternatives (count: several kinds of count; sum: max/min/...; compare: shorter/colour).
    assert {task for task, _ in seen_kinds} == set(vm.TASKS)


def test_count_alternatives_cover_other_shapes_and_colours() -> None:
    scene = vm.Scene(
        task="count",
        question="How many red circles are in the image?",
        answer="2",
        image_size=112,
        font_size=18,
        shapes=(
            vm.Shape("circle", "red", (1, 1, 12, 12)),
            vm.Shape("circle", "red", (30, 1, 41, 12)),
            vm.Shape("square", "red", (58, 1, 69, 12)),
            vm.Shape("circle", "blue", (1, 30, 12, 41)),
        ),
        target={"kind": "circle", "color": "red"},
    )
    assert dict(alternative_questions(scene)) == {
        "How many blue circles are in the image?": "1",
        "How many red squares are in the image?": "1",
        "How many blue shapes are in the image?": "1",
        "How many red shapes are in the image?": "3",
        "How many circles of any color are in the image?": "3",
        "How many squares of any color are in the image?": "1",
        "How many shapes are in the image in total?": "4",
    }


def test_sum_and_compare_alternatives() -> None:
    labels = tuple(vm.Label(text, (0, 0), (0, 0, 1, 1)) for text in ("7", "15", "3"))
    scene = vm.Scene(
        task="sum", question=vm._SUM_QUESTIONS[0], answer="25", image_size=112, font_size=18, labels=labels
    )
    answers = dict(alternative_questions(scene))
    assert answers["What is the largest number shown in the image?"] == "15"
    assert answers["What is the smallest number shown in the image?"] == "3"
    assert answers["How many numbers are written in the image?"] == "3"
    assert answers["What is the difference between the largest and the smallest number in the image?"] == "12"
    bars = (vm.Bar("A", "red", (10, 0, 29, 5)), vm.Bar("B", "green", (10, 20, 69, 25)))
    scene = vm.Scene(
        task="compare", question=vm._COMPARE_QUESTIONS[0], answer="B", image_size=112, font_size=18, bars=bars
    )
    answers = dict(alternative_questions(scene))
    assert answers["Which bar is shorter, A or B? Answer with the letter."] == "A"
    assert answers["What color is the longer bar?"] == "green"
    assert answers["What color is bar A?"] == "red"


# ------------------------------------------------------------------------------------------------ files


def test_files_and_sft_schema(small: dict[str, Path]) -> None:
    assert set(small) == set(FILES)
    assert all(path.is_file() for path in small.values())
    answers_dir = small["sft_train"].parent / "answers"
    for split in vm.SPLITS:
        path = small[f"sft_{split}"]
        # Exactly the layout sft_data writes (its own file is the reference).
        assert pq.read_schema(path) == pq.read_schema(answers_dir / f"{split}.parquet")
        rows = _rows(path)
        questions = [r for r in rows if _is_question_row(r)]
        answers = [r for r in rows if not _is_question_row(r)]
        assert len(questions) == SMALL.question_rows(split) > 0
        assert len(answers) == SMALL.answer_rows(split)
        assert len(rows) == (SMALL.n_sft if split == "train" else SMALL.n_sft_test)
        # Answer rows are sft_data's rows, unchanged.
        assert sorted(answers, key=lambda r: r["extra_info"]["index"]) == _rows(answers_dir / f"{split}.parquet")
        vm_config = SMALL.sft_config()
        for row in answers:
            scene = vm.sample_scene(split, row["extra_info"]["index"], vm_config)
            assert row[sft_data.RESPONSE_KEY] == sft_data.response_text(scene)
        for row in rows:
            assert row["messages"][:-1] == row["prompt"]
            assert row["messages"][-1] == {"role": "assistant", "content": row["response"]}
            assert row["messages"][0]["content"].count(row_schema.IMAGE_PLACEHOLDER) == len(row["images"]) == 1
        # Shuffled: the question rows are not all at the end.
        kinds = [_is_question_row(r) for r in rows]
        assert kinds != sorted(kinds)


def test_question_rows(small: dict[str, Path]) -> None:
    template = load_prompt(toy.DEFAULT_PROMPT)
    for split in vm.SPLITS:
        for row in filter(_is_question_row, _rows(small[f"sft_{split}"])):
            info = row["extra_info"]
            scene = vm.sample_scene(split, info["index"], SMALL.sft_config())
            assert info["task"] == QUESTION_TASK_PREFIX + scene.task
            assert (info["question"], info["answer"]) in alternative_questions(scene)
            assert row["reward_model"] == {"style": "rule", "ground_truth": ""}
            assert row["response"] == question_target(info["question"]) == f"<question>{info['question']}</question>"
            content = row["prompt"][0]["content"]
            assert content == "<image>" + template.render(
                {"question": scene.question, "answer": scene.answer, "choices": ""}
            )
            # synthesize's parser and filters read the target back into the question, and keep it.
            assert parse_question(row["response"]) == info["question"]
            verdict = screen(
                row["response"], seed_question=scene.question, images_key=image_key([b"x"]), seen=set()
            )
            assert verdict.kept and verdict.question == info["question"]
            assert row == question_writing_row(split, info["index"], SMALL)  # a pure function of the scene


class _ReplayGenerator:
    """Answers each synthesis request with the target of the SFT row whose prompt and image it equals."""

    def __init__(self, sft_rows: list[dict]) -> None:
        self.by_prompt = {(r["prompt"][0]["content"], r["images"][0]["bytes"]): r["response"] for r in sft_rows}
        self.requests: list[GenerationRequest] = []

    def generate(
        self, requests: Sequence[GenerationRequest], settings: SamplingSettings, *, on_batch=None
    ) -> list[list[str]]:
        self.requests.extend(requests)
        out = []
        for request in requests:
            (message,) = request.messages
            (image,) = request.images
            # synthesize puts the image before the text when the template has no placeholder: the SFT turn
            # says the same with a leading <image>.
            key = (row_schema.IMAGE_PLACEHOLDER + message["content"], bytes(image))
            out.append([self.by_prompt[key]] * settings.n)  # KeyError: the prompts differ
        return out


def test_synthesize_sees_the_sft_prompt_and_parses_the_target(small: dict[str, Path], tmp_path: Path) -> None:
    """The question rows' prompts are what `synthesize --strategy in_context` sends for the same seed rows."""
    sft_rows = [r for r in _rows(small["sft_train"]) if _is_question_row(r)]
    vm_config = SMALL.sft_config()
    examples = [vm.make_example("train", r["extra_info"]["index"], vm_config) for r in sft_rows]
    seeds = [vm.example_to_row(example, vm_config) for example in examples]
    seed_file = tmp_path / "seeds.parquet"
    pq.write_table(pa.Table.from_pylist(seeds, schema=vm.row_schema()), seed_file)
    generator = _ReplayGenerator(sft_rows)
    result = synthesize(
        SynthesizeConfig(seeds=(seed_file,), out=tmp_path / "synth", model="unused", strategy="in_context"),
        generator=generator,
    )
    assert len(generator.requests) == len(sft_rows)
    assert result.kept == len(sft_rows) and not result.dropped and not result.bad_input
    kept = [row for path in result.files for row in _rows(path)]
    assert [r["extra_info"]["question"] for r in kept] == [r["extra_info"]["question"] for r in sft_rows]
    # toy.data's question-writing rows show the model the prompt synthesize sends for a seed.
    template = load_prompt("synth_in_context")
    seed = seed_from_row(seeds[0], position=0, file=seed_file, row=0, needs=template.fields)
    assert generator.requests[0].messages[0]["content"] == seed_prompt(template, seed)


def test_rl_and_test_files(small: dict[str, Path]) -> None:
    rl = SMALL.rl_config()
    unlabeled, labeled, test = _rows(small["rl_unlabeled"]), _rows(small["rl_labeled"]), _rows(small["test"])
    assert len(unlabeled) == len(labeled) == SMALL.n_rl and len(test) == SMALL.n_test
    for path, require_label in ((small["rl_unlabeled"], False), (small["rl_labeled"], True), (small["test"], True)):
        report = row_schema.validate_file(path, require_label=require_label)
        assert report.ok, report.problems
        assert pq.read_schema(path) == row_schema.arrow_schema([("task", pa.string())])
    scenes = vm.dataset_scenes(rl)
    for split, rows in (("train", unlabeled), ("train", labeled), ("test", test)):
        for i, row in enumerate(rows):
            scene = scenes[split][i]
            assert row["data_source"] == toy.DATA_SOURCE
            assert row["extra_info"]["index"] == i
            assert row["extra_info"]["question"] == scene.question
            assert row["extra_info"]["answer"] == scene.answer
            assert row["extra_info"]["task"] == scene.task
            assert row["prompt"][0]["content"] == "<image>" + scene.question + row_schema.FORMAT_INSTRUCTION
    assert all(r["reward_model"]["ground_truth"] == "" for r in unlabeled)
    assert all(r["reward_model"]["ground_truth"] == r["extra_info"]["answer"] != "" for r in labeled + test)
    # The same questions, with and without labels.
    strip = lambda r: {**r, "reward_model": None}  # noqa: E731
    assert [strip(r) for r in unlabeled] == [strip(r) for r in labeled]


def test_scenes_are_disjoint(small: dict[str, Path]) -> None:
    sft = {_image_hash(r) for split in vm.SPLITS for r in _rows(small[f"sft_{split}"])}
    rl = {_image_hash(r) for r in _rows(small["rl_unlabeled"])}
    test = {_image_hash(r) for r in _rows(small["test"])}
    assert len(sft) == SMALL.n_sft + SMALL.n_sft_test  # also: no scene is both an answer and a question row
    assert len(rl) == SMALL.n_rl and len(test) == SMALL.n_test
    assert not sft & rl and not sft & test and not rl & test
    # The scene seeds themselves never coincide, whatever the base seed.
    for seed in range(4):
        config = dataclasses.replace(SMALL, seed=seed)
        assert config.sft_seed not in {dataclasses.replace(SMALL, seed=s).rl_seed for s in range(8)}


def test_difficulty_reaches_every_file(tmp_path: Path) -> None:
    config = ToyDataConfig(
        n_sft=6, n_sft_test=3, n_rl=6, n_test=3, difficulty=VisualMathConfig(tasks=("sum",), max_number=99, max_terms=4)
    )
    paths = write_toy_data(tmp_path / "data", config)
    for name in FILES:
        for row in _rows(paths[name]):
            task = row["extra_info"].get("task") or "sum"
            assert task.removeprefix(QUESTION_TASK_PREFIX) == "sum"
    assert config.sft_config().max_number == config.rl_config().max_number == 99


def test_no_question_rows(tmp_path: Path) -> None:
    config = ToyDataConfig(n_sft=5, n_sft_test=2, n_rl=2, n_test=2, question_fraction=0.0)
    paths = write_toy_data(tmp_path / "data", config)
    assert not any(_is_question_row(r) for r in _rows(paths["sft_train"]))
    assert len(_rows(paths["sft_train"])) == 5


@pytest.mark.parametrize(
    "bad",
    [{"n_rl": 0}, {"n_test": 0}, {"n_sft": -1}, {"question_fraction": 1.0}, {"question_fraction": -0.1}, {"seed": -1}],
)
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        ToyDataConfig(**bad)


def test_config_ignores_sizes_of_the_difficulty() -> None:
    a = ToyDataConfig(difficulty=VisualMathConfig(n_train=5, seed=9))
    assert a == ToyDataConfig() and a.difficulty.n_train == 0 and a.difficulty.seed == 0


# ------------------------------------------------------------------------------------------------ idempotence


def _mtimes(paths: dict[str, Path]) -> dict[str, int]:
    return {name: path.stat().st_mtime_ns for name, path in paths.items()}


def test_ensure_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = ToyDataConfig(n_sft=5, n_sft_test=2, n_rl=3, n_test=2)
    out = tmp_path / "data"
    paths = ensure_toy_data(out, config)
    before = _mtimes(paths)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["config"]["n_rl"] == 3 and manifest["prompt"]["name"] == "synth_in_context"
    assert not list(out.glob(".staging-*")) and not list(out.rglob(".*.tmp-*"))

    def fail(*args, **kwargs):
        raise AssertionError("complete data must not be rewritten")

    with monkeypatch.context() as m:
        m.setattr(toy, "write_toy_data", fail)
        assert ensure_toy_data(out, config) == paths
    assert _mtimes(paths) == before

    # Other settings rewrite; an interrupted run (no manifest) is redone.
    other = dataclasses.replace(config, n_rl=4)
    assert len(_rows(ensure_toy_data(out, other)["rl_unlabeled"])) == 4
    (out / MANIFEST_NAME).unlink()
    assert len(_rows(ensure_toy_data(out, config)["rl_labeled"])) == 3
    assert (out / MANIFEST_NAME).is_file()


def test_failed_write_leaves_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = ToyDataConfig(n_sft=4, n_sft_test=2, n_rl=2, n_test=2)
    out = tmp_path / "data"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(toy, "_write_rl", boom)
    with pytest.raises(OSError):
        ensure_toy_data(out, config)
    assert not (out / MANIFEST_NAME).exists()
    monkeypatch.undo()
    assert ensure_toy_data(out, config)["test"].is_file()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    argv = [f"out={out}", "n_sft=6", "n_sft_test=2", "n_rl=3", "n_test=2", "seed=1", "difficulty.max_number=50",
            "difficulty.min_bar_gap=4", "difficulty.tasks=[sum,compare]", "question_fraction=0.5"]
    assert toy.main(argv) == 0
    paths = {name: out / rel for name, rel in toy.FILES.items()}
    printed = capsys.readouterr().out
    for name, path in paths.items():
        assert f"{name}: {path}" in printed
    manifest = json.loads((out / MANIFEST_NAME).read_text())["config"]
    assert manifest["seed"] == 1 and manifest["question_fraction"] == 0.5
    assert manifest["difficulty"]["max_number"] == 50 and manifest["difficulty"]["min_bar_gap"] == 4
    assert manifest["difficulty"]["tasks"] == ["sum", "compare"]
    assert sum(map(_is_question_row, _rows(paths["sft_train"]))) == 3
    before = _mtimes(paths)
    assert toy.main(argv) == 0 and _mtimes(paths) == before  # rerun: nothing rewritten
    assert toy.main([*argv, "force=true"]) == 0
    assert _mtimes(paths) != before
    assert toy.main([f"out={out}", "n_rl=0"]) == 2
    assert "n_rl" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ verl


def test_verl_sft_dataset_reads_the_mix(small: dict[str, Path], tiny_model_dir: Path) -> None:
    """verl's MultiTurnSFTDataset (recipes/sft_tiny.yaml's data settings) trains on exactly each response."""
    from omegaconf import OmegaConf
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    data_cfg = yaml.safe_load((REPO / "recipes" / "sft_tiny.yaml").read_text())["data"]
    data_cfg = {k: v for k, v in data_cfg.items() if k not in ("train_files", "val_files")}
    # The synthesis prompt is long: question rows need more than the answer rows' budget.
    data_cfg["max_length"] = max(int(data_cfg["max_length"]), 512)
    config = OmegaConf.create(data_cfg)
    tokenizer = hf_tokenizer(str(tiny_model_dir))
    processor = hf_processor(str(tiny_model_dir))
    dataset = MultiTurnSFTDataset(str(small["sft_train"]), tokenizer, config, processor=processor)
    rows = _rows(small["sft_train"])
    assert len(dataset) == len(rows)
    for i, row in enumerate(rows):
        item = dataset[i]
        ids, mask = item["input_ids"], item["loss_mask"].bool()
        assert tokenizer.decode(ids[mask]) == row["response"] + "<|im_end|>\n"
        assert int((ids == processor.image_token_id).sum()) == 16
