"""Benchmark loaders on small local files written in each benchmark's real hub schema.

The files come from :mod:`verl_ext.toy.fixtures`; the schemas follow the sources named in
verl_ext/eval/benchmarks.py.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import pytest

from verl_ext.eval import benchmarks as bm
from verl_ext.eval.benchmarks import (
    BENCHMARKS,
    choices_block,
    load_benchmark,
    parse_benchmarks,
    parse_mathverse_choices,
    parse_wemath_options,
)
from verl_ext.eval.grading import grade_response
from verl_ext.toy.fixtures import FEATURES, ROWS, write_benchmark_files
from verl_ext.generation.base import load_image


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
    rows = ROWS["mathverse"]()
    datasets.Dataset.from_list(rows, features=FEATURES["mathverse"]).to_parquet(str(root / "testmini.parquet"))
    datasets.Dataset.from_list(rows[2:], features=FEATURES["mathverse"]).to_parquet(
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
    rows = ROWS["mathvista"]()
    rows[1]["pid"] = rows[0]["pid"]
    (tmp_path / "mathvista").mkdir()
    datasets.Dataset.from_list(rows, features=FEATURES["mathvista"]).to_parquet(
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


def test_parse_wemath_options_splits_only_at_the_next_letter():
    # Only the next letter in order starts an option: B's "A." and D's "F." are text.
    assert parse_wemath_options("A. 2;B. 1;A. is wrong;C. 3;D. 4;F. no;E. No correct answer") == {
        "A": "2",
        "B": "1;A. is wrong",
        "C": "3",
        "D": "4;F. no",
        "E": "No correct answer",
    }


def test_parse_mathverse_choices():
    assert parse_mathverse_choices("Find x.\nChoices:\nA:1\nB:2.5\nC:\\sqrt{3}\nD:4") == {
        "A": "1",
        "B": "2.5",
        "C": "\\sqrt{3}",
        "D": "4",
    }
    assert parse_mathverse_choices("Find x.\nChoices:\n(A) 1\n(B) 2") == {"A": "1", "B": "2"}
    # An option wrapped onto the next line is one option.
    assert parse_mathverse_choices("Find x.\nChoices:\nA:a long\n  option\nB:2") == {"A": "a long option", "B": "2"}
    assert parse_mathverse_choices("Find x.") is None


def test_parse_mathverse_choices_accepts_singular_choice():
    assert parse_mathverse_choices("Is the line tangent?\nChoice:\nA. True\nB. False") == {"A": "True", "B": "False"}
    # The whole question may be the option block (the rest is drawn in the image).
    assert parse_mathverse_choices("Choice:\nA. 1\nB. 2") == {"A": "1", "B": "2"}


def test_choices_block():
    assert choices_block({"A": "1", "B": "2"}) == "Choices:\n(A) 1\n(B) 2"
    assert choices_block({"A": "A", "B": "B"}) == "Choices: (A), (B)"


def test_parse_benchmarks():
    assert parse_benchmarks("mathvista, We-Math,mathverse,mathvision,mathvista") == [
        "mathvista",
        "wemath",
        "mathverse",
        "mathvision",
    ]
    with pytest.raises(ValueError, match="unknown benchmark"):
        parse_benchmarks("mmmu")


# ------------------------------------------------------------------------------------------ rows that broke parsing


def _load_rows(root: Path, name: str, rows: list[dict], cache_dir: str) -> dict:
    """Load ``rows`` (in the benchmark's hub schema) as a local copy; samples by prompt id."""
    (root / name).mkdir(parents=True)
    path = root / name / f"{BENCHMARKS[name].split}.parquet"
    datasets.Dataset.from_list(rows, features=FEATURES[name]).to_parquet(str(path))
    return _by_id(load_benchmark(name, data_dir=root, cache_dir=cache_dir))


def _wemath_row(problem_id: str, key: str, option: str, answer: str) -> dict:
    row = ROWS["wemath"]()[0]
    row.update(ID=problem_id, key=key, option=option, answer=answer)
    return row


def test_wemath_letter_period_inside_an_option_stays_in_it(tmp_path, cache_dir):
    rows = [
        # An earlier letter reappears inside D: it must not overwrite the gold option C.
        _wemath_row("2steps_102", "2steps_1", "A. 3 cm;B. 4 cm;C. 5 cm;D. 3 cm;C. is wrong; E. No correct answer", "C"),
        # A letter with no option of its own appears inside C: it must not become an option.
        _wemath_row("3steps_126", "3steps_2", "A. 12;B. 16;C. 20;G. is the midpoint;D. 24;E. No correct answer", "B"),
    ]
    samples = _load_rows(tmp_path, "wemath", rows, cache_dir)
    overwritten, spurious = samples["2steps_102@2steps_1"], samples["3steps_126@3steps_2"]
    assert overwritten.choices == {
        "A": "3 cm",
        "B": "4 cm",
        "C": "5 cm",
        "D": "3 cm;C. is wrong",
        "E": "No correct answer",
    }
    assert overwritten.reference() == "C (5 cm)"
    assert list(spurious.choices) == ["A", "B", "C", "D", "E"]
    assert spurious.choices["C"] == "20;G. is the midpoint" and spurious.choices["D"] == "24"
    assert "(G)" not in spurious.question and "(D) 24" in spurious.question


def _mathverse_row(sample_index: str, question: str, answer: str) -> dict:
    row = ROWS["mathverse"]()[0]
    row.update(sample_index=sample_index, question=question, question_for_eval=question, answer=answer)
    return row


def test_mathverse_singular_choice_with_a_text_answer_is_graded_by_letter(tmp_path, cache_dir):
    truth = "Is the function f(x) = x^3 odd?\nChoice:\nA. True\nB. False"
    bearing = "Find the true bearing of B from A.\nChoice:\nA. 270^\\circ T\nB. 180^\\circ T\nC. 090^\\circ T"
    centre = "Which point is the centre of the circle?\nChoices:\nA:B\nB:A\nC:O"
    rows = [
        _mathverse_row("339", truth, "False"),
        _mathverse_row("429", bearing, "090^\\circ T"),
        _mathverse_row("9", centre, "B"),
    ]
    samples = _load_rows(tmp_path, "mathverse", rows, cache_dir)
    true_false, compass = samples["339"], samples["429"]
    assert true_false.choices == {"A": "True", "B": "False"} and true_false.answer_letter == "B"
    assert true_false.reference() == "B (False)"
    assert compass.choices["C"] == "090^\\circ T" and compass.answer_letter == "C"
    # The letter, or the option's text, is right; another letter is wrong.
    assert grade_response("So the answer is \\boxed{B}.", true_false).correct
    assert grade_response("So the answer is \\boxed{False}.", true_false).correct
    assert not grade_response("So the answer is \\boxed{A}.", true_false).correct
    assert grade_response("\\boxed{C}", compass).correct
    assert not grade_response("\\boxed{A}", compass).correct
    # A letter answer stays the gold letter, even where another option's text is that letter.
    assert samples["9"].answer_letter == "B" and samples["9"].reference() == "B (A)"

