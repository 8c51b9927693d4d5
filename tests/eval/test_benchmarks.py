"""Benchmark loaders on small local files written in each benchmark's real hub schema.

``write_benchmark_files`` is also used by test_eval_cli.py; the schemas follow the sources named
in verl_ext/eval/benchmarks.py.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import pytest
from datasets import Features, Image, List, Value
from PIL import Image as PILImage

from verl_ext.eval import benchmarks as bm
from verl_ext.eval.benchmarks import (
    BENCHMARKS,
    format_choices,
    load_benchmark,
    parse_benchmarks,
    parse_mathverse_choices,
    parse_wemath_options,
)
from verl_ext.generation.base import load_image


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ real schemas

MATHVISTA_FEATURES = Features(
    {
        "pid": Value("string"),
        "question": Value("string"),
        "image": Value("string"),
        "decoded_image": Image(),
        "choices": List(Value("string")),
        "unit": Value("string"),
        "precision": Value("float64"),
        "answer": Value("string"),
        "question_type": Value("string"),
        "answer_type": Value("string"),
        "metadata": {
            "category": Value("string"),
            "context": Value("string"),
            "grade": Value("string"),
            "img_height": Value("int64"),
            "img_width": Value("int64"),
            "language": Value("string"),
            "skills": List(Value("string")),
            "source": Value("string"),
            "split": Value("string"),
            "task": Value("string"),
        },
        "query": Value("string"),
    }
)

MATHVERSE_FEATURES = Features(
    {
        "sample_index": Value("string"),
        "problem_index": Value("string"),
        "problem_version": Value("string"),
        "question": Value("string"),
        "image": Image(),
        "answer": Value("string"),
        "question_type": Value("string"),
        "metadata": {
            "split": Value("string"),
            "source": Value("string"),
            "subject": Value("string"),
            "subfield": Value("string"),
        },
        "query_wo": Value("string"),
        "query_cot": Value("string"),
        "question_for_eval": Value("string"),
    }
)

WEMATH_FEATURES = Features(
    {
        "ID": Value("string"),
        "split": Value("string"),
        "knowledge concept": Value("string"),
        "question": Value("string"),
        "option": Value("string"),
        "answer": Value("string"),
        "image_path": Image(),
        "key": Value("string"),
        "question number": Value("int64"),
        "knowledge concept description": Value("string"),
    }
)

MATHVISION_FEATURES = Features(
    {
        "id": Value("string"),
        "question": Value("string"),
        "options": List(Value("string")),
        "image": Value("string"),
        "decoded_image": Image(),
        "answer": Value("string"),
        "solution": Value("string"),
        "level": Value("int64"),
        "subject": Value("string"),
    }
)

FEATURES = {
    "mathvista": MATHVISTA_FEATURES,
    "mathverse": MATHVERSE_FEATURES,
    "wemath": WEMATH_FEATURES,
    "mathvision": MATHVISION_FEATURES,
}
IMAGE_COLUMN = {
    "mathvista": "decoded_image",
    "mathverse": "image",
    "wemath": "image_path",
    "mathvision": "decoded_image",
}


def _vista_meta(task: str) -> dict[str, Any]:
    return {
        "category": "math-targeted-vqa",
        "context": "geometry diagram",
        "grade": "high school",
        "img_height": 48,
        "img_width": 64,
        "language": "english",
        "skills": ["geometry reasoning", "algebraic reasoning"],
        "source": "Geometry3K",
        "split": "testmini",
        "task": task,
    }


def mathvista_rows() -> list[dict[str, Any]]:
    return [
        {
            "pid": "1",
            "question": "As shown in the figure, what is the measure of angle ABC?",
            "image": "images/1.jpg",
            "decoded_image": {"bytes": png((200, 0, 0)), "path": "1.jpg"},
            "choices": ["40°", "60°", "120°", "140°"],
            "unit": None,
            "precision": None,
            "answer": "60°",
            "question_type": "multi_choice",
            "answer_type": "text",
            "metadata": _vista_meta("geometry problem solving"),
            "query": "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, "
            "at the end.\nQuestion: As shown in the figure, what is the measure of angle ABC?\n"
            "Choices:\n(A) 40°\n(B) 60°\n(C) 120°\n(D) 140°",
        },
        {
            "pid": "2",
            "question": "How many bars have values larger than 4?",
            "image": "images/2.png",
            "decoded_image": {"bytes": png((0, 200, 0)), "path": "2.png"},
            "choices": None,
            "unit": None,
            "precision": None,
            "answer": "3",
            "question_type": "free_form",
            "answer_type": "integer",
            "metadata": _vista_meta("figure question answering"),
            "query": "Hint: Please answer the question requiring an integer answer and provide the final value, "
            "e.g., 1, 2, 3, at the end.\nQuestion: How many bars have values larger than 4?",
        },
        {
            "pid": "3",
            "question": "How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)",
            "image": "images/3.png",
            "decoded_image": {"bytes": png((0, 0, 200)), "path": "3.png"},
            "choices": None,
            "unit": "$",
            "precision": 2.0,
            "answer": "1.45",
            "question_type": "free_form",
            "answer_type": "float",
            "metadata": _vista_meta("math word problem"),
            "query": "Hint: Please answer the question requiring a floating-point number with two decimal places "
            "and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.\nQuestion: How much money does Luca "
            "need to buy a sour apple candy and a butterscotch candy? (Unit: $)",
        },
    ]


def _verse(index: str, problem: str, version: str, question: str, answer: str, kind: str, color) -> dict[str, Any]:
    hint = (
        "provide the correct option letter, e.g., A, B, C, D"
        if kind == "multi-choice"
        else "provide the final value, e.g., 1, 2.5, 300"
    )
    return {
        "sample_index": index,
        "problem_index": problem,
        "problem_version": version,
        "question": question,
        "image": {"bytes": png(color), "path": f"images_version_1-4/image_{problem}.png"},
        "answer": answer,
        "question_type": kind,
        "metadata": {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Angle"},
        "query_wo": f"Please directly answer the question and {hint}.\nQuestion: {question}",
        "query_cot": (
            f"Please first conduct reasoning, and then answer the question and {hint}, at the end.\nQuestion: {question}"
        ),
        "question_for_eval": question,
    }


def mathverse_rows() -> list[dict[str, Any]]:
    mc = (
        "As shown in the figure, AB parallel CD, EG bisects angle BEF, then angle 2 is equal to ()\n"
        "Choices:\nA:50°\nB:60°\nC:65°\nD:90°"
    )
    return [
        _verse("9", "2", "Text Dominant", mc, "C", "multi-choice", (10, 10, 10)),
        _verse("10", "2", "Vision Only", "", "C", "multi-choice", (20, 20, 20)),
        _verse(
            "3422",
            "685",
            "Text Lite",
            "The radius is 3 cm. Find L.\n\nGive your answer rounded down to the nearest cm.",
            "14",
            "free-form",
            (30, 30, 30),
        ),
    ]


def _wemath(id_: str, key: str, question: str, option: str, answer: str, number: int, color) -> dict[str, Any]:
    return {
        "ID": id_,
        "split": "testmini",
        "knowledge concept": "Area of Circles",
        "question": question,
        "option": option,
        "answer": answer,
        "image_path": {"bytes": png(color), "path": f"{key.split('_')[0]}/image/{id_}.png"},
        "key": key,
        "question number": number,
        "knowledge concept description": "Area of ...",
    }


def wemath_rows() -> list[dict[str, Any]]:
    return [
        _wemath(
            "1",
            "2steps_1",
            "What is the radius of the circle?",
            "A. 2;B. 3;C. 4;D. 5;E. No correct answer",
            "B",
            1,
            (1, 2, 3),
        ),
        _wemath(
            "1",
            "2steps_2",
            "A circle has radius 3. What is its area? (π = 3.14)",
            "A. 28.26;B. 18.84;C. 9.42;D. 3.14;E. No correct answer",
            "A",
            2,
            (4, 5, 6),
        ),
        _wemath(
            "1",
            "2steps_multi",
            "What is the area of the circle? (π = 3.14)",
            "A. 28.26;B. 18.84;C. 9.42;D. 3.14; E. No correct answer",
            "A",
            3,
            (7, 8, 9),
        ),
        _wemath(
            "165",
            "3steps_3",
            "Mary walks 80 steps. What is the area of the flower bed (  ) m²?(π = 3.14)",
            "A. 200.96;B. 3215.36;C. 6280;D. 32; E. No correct answer",
            "B",
            1575,
            (9, 9, 9),
        ),
    ]


def mathvision_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": "1",
            "question": "Which number should be written in place of the question mark?\n<image1>",
            "options": [],
            "image": "images/1.jpg",
            "decoded_image": {"bytes": png((100, 100, 0)), "path": "1.jpg"},
            "answer": "60",
            "solution": None,
            "level": 2,
            "subject": "arithmetic",
        },
        {
            "id": "4",
            "question": "How many different digits can be found when the following calculation is done? <image1>",
            "options": ["2", "3", "4", "5", "6"],
            "image": "images/4.jpg",
            "decoded_image": {"bytes": png((0, 100, 100)), "path": "4.jpg"},
            "answer": "D",
            "solution": None,
            "level": 3,
            "subject": "counting",
        },
        {
            "id": "7",
            "question": "Which of the pictures below shows the folded paper? <image1>",
            "options": ["A", "B", "C", "D", "E"],
            "image": "images/7.jpg",
            "decoded_image": {"bytes": png((100, 0, 100)), "path": "7.jpg"},
            "answer": "E",
            "solution": None,
            "level": 1,
            "subject": "descriptive geometry",
        },
    ]


ROWS = {"mathvista": mathvista_rows, "mathverse": mathverse_rows, "wemath": wemath_rows, "mathvision": mathvision_rows}


def write_benchmark_files(data_dir: Path, kind: str = "parquet") -> Path:
    """Write every benchmark's fixture rows as DIR/NAME/SPLIT.{parquet,jsonl} in the real schema."""
    for name, rows_fn in ROWS.items():
        split = BENCHMARKS[name].split
        folder = data_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        rows = rows_fn()
        if kind == "parquet":
            datasets.Dataset.from_list(rows, features=FEATURES[name]).to_parquet(str(folder / f"{split}.parquet"))
        else:
            # A JSONL copy stores images as files next to it and their relative paths in the image column.
            column = IMAGE_COLUMN[name]
            with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                for i, row in enumerate(rows):
                    image = row.pop(column)
                    relative = f"images/{i}.png"
                    (folder / "images").mkdir(exist_ok=True)
                    (folder / relative).write_bytes(image["bytes"])
                    row[column if column in ("image", "image_path") else "image"] = relative
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return data_dir


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory) -> Path:
    return write_benchmark_files(tmp_path_factory.mktemp("bench_parquet"))


@pytest.fixture()
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "hf_datasets_cache")


def _by_id(samples):
    return {s.prompt_id: s for s in samples}


# ------------------------------------------------------------------------------------------ loaders


def test_mathvista_schema(parquet_dir, cache_dir):
    samples = _by_id(load_benchmark("mathvista", data_dir=parquet_dir, cache_dir=cache_dir))
    mc, integer, floating = samples["1"], samples["2"], samples["3"]
    assert mc.is_choice and mc.choices == {"A": "40°", "B": "60°", "C": "120°", "D": "140°"}
    assert mc.answer == "60°" and mc.answer_letter == "B" and mc.reference() == "B (60°)"
    assert mc.question.endswith("Choices:\n(A) 40°\n(B) 60°\n(C) 120°\n(D) 140°")
    assert mc.category == "geometry problem solving"
    assert (integer.answer_type, integer.choices, integer.answer) == ("integer", None, "3")
    assert (floating.answer_type, floating.precision, floating.meta["unit"]) == ("float", 2, "$")
    # Images stay undecoded until generation, and decode to the stored picture.
    assert isinstance(mc.images[0], dict) and mc.images[0]["bytes"]
    assert load_image(mc.images[0]).getpixel((0, 0)) == (200, 0, 0)


def test_mathverse_schema(parquet_dir, cache_dir):
    samples = _by_id(load_benchmark("mathverse", data_dir=parquet_dir, cache_dir=cache_dir))
    text_dominant, vision_only, free = samples["9"], samples["10"], samples["3422"]
    assert text_dominant.choices == {"A": "50°", "B": "60°", "C": "65°", "D": "90°"}
    assert text_dominant.answer_letter == "C" and text_dominant.category == "Text Dominant"
    assert text_dominant.question.count("Choices:") == 1  # options are already in the question text
    # Vision Only: the question is in the image; the prompt asks for it.
    assert vision_only.question == bm.VISION_ONLY_QUESTION and vision_only.choices is None
    assert vision_only.is_choice and vision_only.answer_letter == "C"
    assert (free.answer_type, free.answer, free.category) == ("text", "14", "Text Lite")
    assert free.meta["problem_index"] == "685"


def test_wemath_schema(parquet_dir, cache_dir):
    samples = load_benchmark("wemath", data_dir=parquet_dir, cache_dir=cache_dir)
    ids = [s.prompt_id for s in samples]
    assert ids == ["1@2steps_1", "1@2steps_2", "1@2steps_multi", "165@3steps_3"]
    first = samples[0]
    assert first.choices == {"A": "2", "B": "3", "C": "4", "D": "5", "E": "No correct answer"}
    assert first.answer_letter == "B" and first.is_choice
    assert [s.category for s in samples] == ["S1 (one-step)", "S1 (one-step)", "S2 (two-step)", "S1 (one-step)"]
    assert samples[2].meta == {"key": "2steps_multi", "problem_id": "1", "knowledge_concept": "Area of Circles"}
    assert samples[3].choices["E"] == "No correct answer"
    assert load_image(samples[1].images[0]).getpixel((1, 1)) == (4, 5, 6)


def test_mathvision_schema(parquet_dir, cache_dir):
    samples = _by_id(load_benchmark("mathvision", data_dir=parquet_dir, cache_dir=cache_dir))
    free, mc, in_image = samples["1"], samples["4"], samples["7"]
    assert "<image1>" not in free.question and free.choices is None and free.answer == "60"
    assert mc.choices == {"A": "2", "B": "3", "C": "4", "D": "5", "E": "6"} and mc.answer_letter == "D"
    assert mc.reference() == "D (5)" and mc.category == "counting" and mc.meta["level"] == 3
    # Options drawn in the image: only their letters are listed.
    assert in_image.question.endswith("Choices: (A), (B), (C), (D), (E)") and in_image.reference() == "E"


def test_max_samples_keeps_dataset_order(parquet_dir, cache_dir):
    samples = load_benchmark("wemath", data_dir=parquet_dir, max_samples=2, cache_dir=cache_dir)
    assert [s.prompt_id for s in samples] == ["1@2steps_1", "1@2steps_2"]


def test_jsonl_with_image_paths_matches_parquet(tmp_path, parquet_dir, cache_dir):
    jsonl_dir = write_benchmark_files(tmp_path / "jsonl", kind="jsonl")
    for name in BENCHMARKS:
        from_parquet = load_benchmark(name, data_dir=parquet_dir, cache_dir=cache_dir)
        from_jsonl = load_benchmark(name, data_dir=jsonl_dir, cache_dir=cache_dir)
        assert [s.prompt_id for s in from_jsonl] == [s.prompt_id for s in from_parquet]
        for a, b in zip(from_parquet, from_jsonl):
            assert (a.question, a.answer, a.choices, a.answer_letter, a.category) == (
                b.question,
                b.answer,
                b.choices,
                b.answer_letter,
                b.category,
            )
            # Relative paths were resolved against the JSONL's directory.
            assert isinstance(b.images[0], str) and Path(b.images[0]).is_file()
            assert load_image(a.images[0]).tobytes() == load_image(b.images[0]).tobytes()


def test_hub_snapshot_directory_with_configs(tmp_path, cache_dir):
    # A hub repository as downloaded: MathVerse's README declares one config per parquet file.
    root = tmp_path / "snap" / "mathverse"
    root.mkdir(parents=True)
    rows = mathverse_rows()
    datasets.Dataset.from_list(rows, features=MATHVERSE_FEATURES).to_parquet(str(root / "testmini.parquet"))
    datasets.Dataset.from_list(rows[2:], features=MATHVERSE_FEATURES).to_parquet(
        str(root / "testmini_text_only.parquet")
    )
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: testmini\n  data_files:\n  - split: testmini\n    path: testmini.parquet\n"
        "- config_name: testmini_text_only\n  data_files:\n  - split: testmini_text_only\n"
        "    path: testmini_text_only.parquet\n---\n"
    )
    assert len(load_benchmark("mathverse", data_dir=tmp_path / "snap", cache_dir=cache_dir)) == 3
    text_only = load_benchmark("mathverse", split="testmini_text_only", data_dir=tmp_path / "snap", cache_dir=cache_dir)
    assert [s.prompt_id for s in text_only] == ["3422"]


@pytest.mark.parametrize(
    ("name", "split", "expected"),
    [
        ("mathvista", None, ("AI4Math/MathVista", None, "testmini")),
        ("mathverse", None, ("AI4Math/MathVerse", "testmini", "testmini")),
        ("mathverse", "testmini_text_only", ("AI4Math/MathVerse", "testmini_text_only", "testmini_text_only")),
        ("wemath", None, ("We-Math/We-Math", None, "testmini")),
        ("mathvision", None, ("MathLLMs/MathVision", None, "test")),
        ("mathvision", "testmini", ("MathLLMs/MathVision", None, "testmini")),
    ],
)
def test_hub_loading_asks_for_the_real_repository(monkeypatch, name, split, expected):
    calls = []
    path_to_name = {spec.hub_name: key for key, spec in BENCHMARKS.items()}

    def fake_load_dataset(path, name=None, split=None, cache_dir=None, **kwargs):
        calls.append((path, name, split))
        key = path_to_name[path]
        return datasets.Dataset.from_list(ROWS[key](), features=FEATURES[key])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    samples = load_benchmark(name, split=split)
    assert calls == [expected]
    assert samples and all(s.benchmark == name for s in samples)


def test_missing_local_copy_names_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mathvista/testmini\.parquet"):
        load_benchmark("mathvista", data_dir=tmp_path)


def test_duplicate_prompt_ids_are_refused(tmp_path, cache_dir):
    rows = mathvista_rows()
    rows[1]["pid"] = rows[0]["pid"]
    (tmp_path / "mathvista").mkdir()
    datasets.Dataset.from_list(rows, features=MATHVISTA_FEATURES).to_parquet(
        str(tmp_path / "mathvista" / "testmini.parquet")
    )
    with pytest.raises(ValueError, match="occurs twice"):
        load_benchmark("mathvista", data_dir=tmp_path, cache_dir=cache_dir)


# ------------------------------------------------------------------------------------------ parsing helpers


def test_parse_wemath_options():
    assert parse_wemath_options("A. 200.96;B. 3215.36;C. 6280;D. 32; E. No correct answer") == {
        "A": "200.96",
        "B": "3215.36",
        "C": "6280",
        "D": "32",
        "E": "No correct answer",
    }
    # Decimal points inside options are not option boundaries.
    assert parse_wemath_options("A. 1.5 cm;B. 2.5 cm") == {"A": "1.5 cm", "B": "2.5 cm"}
    assert parse_wemath_options("") == {}


def test_parse_mathverse_choices():
    assert parse_mathverse_choices("Find x.\nChoices:\nA:1\nB:2.5\nC:\\sqrt{3}\nD:4") == {
        "A": "1",
        "B": "2.5",
        "C": "\\sqrt{3}",
        "D": "4",
    }
    assert parse_mathverse_choices("Find x.\nChoices:\n(A) 1\n(B) 2") == {"A": "1", "B": "2"}
    assert parse_mathverse_choices("Find x.") is None


def test_format_choices():
    assert format_choices({"A": "1", "B": "2"}) == "Choices:\n(A) 1\n(B) 2"
    assert format_choices({"A": "A", "B": "B"}) == "Choices: (A), (B)"


def test_parse_benchmarks():
    assert parse_benchmarks("mathvista, We-Math,mathverse,mathvision,mathvista") == [
        "mathvista",
        "wemath",
        "mathverse",
        "mathvision",
    ]
    with pytest.raises(ValueError, match="unknown benchmark"):
        parse_benchmarks("mmmu")
