"""Tests for ``python -m verl_ext.data.prepare``.

Nothing is downloaded: the hub datasets are rebuilt in ``tmp_path`` as local snapshots with the same features
as on the hub (written with ``datasets`` itself, like the hub's parquet files), and loaded through the same
``datasets.load_dataset`` call that reads the hub.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from verl_ext.config.compose import CLIError
from verl_ext.data import prepare as prep
from verl_ext.data import sources
from verl_ext.data.prepare import (
    PrepareConfig,
    RowRejected,
    answer_text,
    choice_texts,
    image_bytes,
    main,
    question_text,
)
from verl_ext.data.schema import FORMAT_INSTRUCTION, read_rows, validate_file

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------ fixtures


def _encode(color: str = "red", fmt: str = "PNG", size: tuple[int, int] = (32, 24), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color if mode != "CMYK" else (0, 255, 255, 0)).save(buffer, format=fmt)
    return buffer.getvalue()


def _noisy_jpeg(seed: int = 0) -> bytes:
    pixels = (np.random.default_rng(seed).random((48, 48, 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


PNG = _encode("red")
PNG_BLUE = _encode("blue")
JPEG = _noisy_jpeg()
BMP = _encode("green", "BMP")
GARBAGE = b"this is not an image"
# The header parses and PIL's verify() passes, but the pixel data stops half-way: only load() notices.
TRUNCATED_JPEG = JPEG[: len(JPEG) // 2]


def _img(data: bytes) -> dict[str, Any]:
    return {"bytes": data, "path": None}


def _features(kind: str):
    from datasets import Features, Image as HFImage, List, Value

    if kind == "geometry3k":
        # hiyouga/geometry3k's dataset card (dataset_info.features).
        return Features(
            {
                "images": List(HFImage()),
                "problem": Value("string"),
                "answer": Value("string"),
                "id": Value("int64"),
                "choices": List(Value("string")),
                "ground_truth": Value("string"),
            }
        )
    if kind == "easyr1":  # MMR1-Math-RL-Data-v0 and WaltonFuture/GEOQA_R1V_Train_8K (EasyR1 keys)
        return Features({"images": List(HFImage()), "problem": Value("string"), "answer": Value("string")})
    if kind == "r1v":  # leonardPKU/GEOQA_R1V_Train_8K, R1-V's original upload
        return Features({"image": HFImage(), "problem": Value("string"), "solution": Value("string")})
    raise ValueError(kind)


def write_hub_snapshot(root: Path, kind: str, splits: dict[str, list[dict[str, Any]]]) -> Path:
    """A local copy of a hub dataset repo: ``data/<split>-00000-of-00001.parquet`` plus a card with the configs."""
    from datasets import Dataset

    features = _features(kind)
    (root / "data").mkdir(parents=True)
    for split, rows in splits.items():
        columns = {name: [row[name] for row in rows] for name in features}
        Dataset.from_dict(columns, features=features).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    files = "".join(f"      - split: {s}\n        path: data/{s}-*\n" for s in splits)
    (root / "README.md").write_text(f"---\nconfigs:\n  - config_name: default\n    data_files:\n{files}---\n")
    return root


def _g3k(index: int, problem: Any, images: list, answer: str = "3", choices: list[str] | None = None) -> dict:
    return {"images": images, "problem": problem, "answer": answer, "id": index, "choices": choices or [],
            "ground_truth": ""}


@pytest.fixture
def geometry3k_snapshot(tmp_path: Path) -> Path:
    train = [
        _g3k(0, "<image>Find x.", [_img(PNG)], "3", ["1", "3", "5", "7"]),
        _g3k(1, "<image>Find y.", [_img(JPEG)], "4"),
        _g3k(2, "<image>Find z.", [_img(BMP)], "5"),  # re-encoded to PNG
        _g3k(3, "<image>Broken.", [_img(GARBAGE)]),  # corrupt_image
        _g3k(4, "<image>Half an image.", [_img(TRUNCATED_JPEG)]),  # corrupt_image (load fails, verify does not)
        _g3k(5, "<image>No image.", []),  # missing_image
        _g3k(6, "<image>", [_img(PNG)]),  # missing_question: nothing but the placeholder
        _g3k(7, None, [_img(PNG)]),  # missing_question
        _g3k(8, "<image><image>Two placeholders, one image.", [_img(PNG)]),  # image_count_mismatch
        _g3k(9, "<image>No answer.", [_img(PNG)], ""),  # fine for training
    ]
    test = [
        _g3k(0, "<image>Test one.", [_img(PNG_BLUE)], "12", ["6", "12"]),
        _g3k(1, "<image>Test two.", [_img(PNG)], "7"),
        _g3k(2, "<image>Unlabelled test.", [_img(PNG)], ""),  # missing_answer: validation needs labels
    ]
    return write_hub_snapshot(tmp_path / "hiyouga_geometry3k", "geometry3k", {"train": train, "test": test})


def _run(*args: str, tmp_path: Path) -> int:
    return main([*args, f"cache_dir={tmp_path / 'hf_cache'}"])


def _summary(out: Path) -> dict:
    return json.loads((out / prep.SUMMARY_NAME).read_text())


# ------------------------------------------------------------------------------------------------ known datasets


def test_geometry3k_snapshot(tmp_path: Path, geometry3k_snapshot: Path) -> None:
    out = tmp_path / "out"
    code = _run("dataset=[geometry3k]", f"data_dir={geometry3k_snapshot}", "val_split=test", f"out={out}", tmp_path=tmp_path)
    assert code == 0
    train = read_rows(out / "train.parquet")
    assert [r["extra_info"]["index"] for r in train] == [0, 1, 2, 9]
    first = train[0]
    assert first["data_source"] == "verl_ext/prepared/geometry3k"
    assert first["prompt"] == [{"role": "user", "content": "<image>Find x." + FORMAT_INSTRUCTION}]
    assert first["images"] == [{"bytes": PNG, "path": None}]  # original bytes, not decoded and re-encoded
    assert first["reward_model"] == {"style": "rule", "ground_truth": ""}
    assert first["extra_info"] == {"split": "train", "index": 0, "answer": "3", "question": "Find x.",
                                   "choices": ["1", "3", "5", "7"], "source": "hiyouga/geometry3k"}
    assert train[1]["images"][0]["bytes"] == JPEG  # JPEG is kept as is
    converted = Image.open(io.BytesIO(train[2]["images"][0]["bytes"]))
    assert converted.format == "PNG" and converted.getpixel((0, 0)) == (0, 128, 0)
    assert train[3]["extra_info"]["answer"] == "" and train[3]["extra_info"]["choices"] == []
    assert all(r["reward_model"]["ground_truth"] == "" for r in train)

    test = read_rows(out / "test.parquet")
    assert [r["reward_model"]["ground_truth"] for r in test] == ["12", "7"]  # validation keeps its labels
    assert [r["extra_info"]["split"] for r in test] == ["test", "test"]
    assert test[0]["extra_info"]["choices"] == ["6", "12"]
    assert validate_file(out / "train.parquet").ok
    assert validate_file(out / "test.parquet", require_label=True).ok

    summary = _summary(out)
    assert summary["splits"]["train"] == {
        "read": 10,
        "written": 4,
        "dropped": {"corrupt_image": 2, "image_count_mismatch": 1, "missing_image": 1, "missing_question": 2},
    }
    assert summary["splits"]["test"] == {"read": 3, "written": 2, "dropped": {"missing_answer": 1}}
    assert summary["data_source"] == "verl_ext/prepared/geometry3k"


def test_keep_labels_and_max_rows(tmp_path: Path, geometry3k_snapshot: Path) -> None:
    out = tmp_path / "out"
    code = _run("dataset=[hiyouga/geometry3k]", f"data_dir={geometry3k_snapshot}", "keep_labels=true", "max_rows=3", "data_source=mine/geo", f"out={out}", tmp_path=tmp_path)
    assert code == 0
    rows = read_rows(out / "train.parquet")
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["3", "4", "5"]
    assert {r["data_source"] for r in rows} == {"mine/geo"}
    assert not (out / "test.parquet").exists()
    assert _summary(out)["splits"]["train"]["read"] == 3


def test_mmr1_multi_image_rows_and_validation_split(tmp_path: Path) -> None:
    snapshot = write_hub_snapshot(
        tmp_path / "mmr1",
        "easyr1",
        {
            "train": [
                {"images": [_img(PNG)], "problem": "<image>\nWhat is the area?", "answer": "12"},
                {"images": [_img(PNG), _img(PNG_BLUE)],
                 "problem": "Image 1: <image> Image 2: <image> Which one is blue?", "answer": "2"},
                {"images": [_img(PNG), _img(PNG_BLUE)], "problem": "Compare the two figures.", "answer": "equal"},
                {"images": [_img(PNG)], "problem": "Image 1: <image> Image 2: <image> Which?", "answer": "1"},
            ],
            "validation": [{"images": [_img(JPEG)], "problem": "<image>Solve.", "answer": "\\frac{1}{2}"}],
        },
    )
    out = tmp_path / "out"
    assert _run("dataset=[mmr1]", f"data_dir={snapshot}", "val_split=validation", f"out={out}",
                tmp_path=tmp_path) == 0
    rows = read_rows(out / "train.parquet")
    assert [r["prompt"][0]["content"] for r in rows] == [
        "<image>What is the area?" + FORMAT_INSTRUCTION,
        "Image 1: <image> Image 2: <image> Which one is blue?" + FORMAT_INSTRUCTION,  # placeholders stay in place
        "<image><image>Compare the two figures." + FORMAT_INSTRUCTION,
    ]
    assert [len(r["images"]) for r in rows] == [1, 2, 2]
    assert rows[1]["images"][1]["bytes"] == PNG_BLUE
    assert rows[1]["extra_info"]["question"] == "Image 1: Image 2: Which one is blue?"
    assert {r["extra_info"]["source"] for r in rows} == {"MMR1/MMR1-Math-RL-Data-v0"}
    assert _summary(out)["splits"]["train"]["dropped"] == {"image_count_mismatch": 1}
    (test_row,) = read_rows(out / "test.parquet")
    assert test_row["reward_model"]["ground_truth"] == "\\frac{1}{2}"


@pytest.mark.parametrize("layout", ["easyr1", "r1v"])
def test_geoqa_layouts(tmp_path: Path, layout: str) -> None:
    if layout == "easyr1":
        rows = [{"images": [_img(PNG)], "problem": "As shown in the figure, find the angle.", "answer": "30"}]
    else:
        rows = [{"image": _img(PNG), "problem": "As shown in the figure, find the angle.",
                 "solution": "<answer> 30 </answer>"}]
    snapshot = write_hub_snapshot(tmp_path / "geoqa", layout, {"train": rows})
    out = tmp_path / "out"
    assert _run("dataset=[geoqa]", f"data_dir={snapshot}", f"out={out}", tmp_path=tmp_path) == 0
    (row,) = read_rows(out / "train.parquet")
    assert row["extra_info"]["answer"] == "30"
    assert row["prompt"][0]["content"] == "<image>As shown in the figure, find the angle." + FORMAT_INSTRUCTION
    assert row["extra_info"]["source"] == "WaltonFuture/GEOQA_R1V_Train_8K"


def test_snapshot_directory_as_dataset(tmp_path: Path, geometry3k_snapshot: Path) -> None:
    """A snapshot directory given directly is read like any hub dataset, with the generic column guesses."""
    out = tmp_path / "out"
    assert _run(f"dataset=[{geometry3k_snapshot}]", "max_rows=2", f"out={out}", tmp_path=tmp_path) == 0
    rows = read_rows(out / "train.parquet")
    assert len(rows) == 2 and rows[0]["extra_info"]["choices"] == ["1", "3", "5", "7"]
    assert rows[0]["data_source"] == "verl_ext/prepared/hiyouga_geometry3k"
    assert rows[0]["extra_info"]["source"] == str(geometry3k_snapshot)


def test_uncached_hub_dataset_offline_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import datasets
    import huggingface_hub

    # Whatever the import order, this test must not try the network.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="verl_ext.data.prepare"):
        code = _run("dataset=[verl-ext-tests/not-in-any-cache]", f"out={out}", tmp_path=tmp_path)
    assert code == 1
    assert not out.exists()
    assert any("unreadable_source" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------ local files


def _write_images(directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / "a.png").write_bytes(PNG)
    (directory / "b.jpg").write_bytes(JPEG)
    (directory / "c.gif").write_bytes(_encode("blue", "GIF", mode="P"))
    (directory / "d.png").write_bytes(GARBAGE)


def test_local_jsonl(tmp_path: Path) -> None:
    data = tmp_path / "my data"
    _write_images(data / "images")
    uri = "data:image/png;base64," + base64.b64encode(PNG_BLUE).decode()
    lines = [
        json.dumps({"image": "images/a.png", "question": "What colour?", "answer": 7, "options": ["red", "blue"]}),
        json.dumps({"image": ["images/a.png", "images/b.jpg"], "question": "Same picture?", "answer": None}),
        json.dumps({"image": {"path": "images/c.gif"}, "question": "What shape?", "answer": "<answer>C</answer>"}),
        json.dumps({"image": uri, "question": "Inline image?", "answer": "yes"}),
        json.dumps({"image": str((data / "images" / "a.png").absolute()), "question": "Absolute path?"}),
        "",
        "{this line is not json",  # unreadable_row
        json.dumps([1, 2, 3]),  # unreadable_row: not an object
        json.dumps({"image": "images/missing.png", "question": "Where is it?"}),  # missing_image
        json.dumps({"image": "images/d.png", "question": "Corrupt?"}),  # corrupt_image
        json.dumps({"image": "images/a.png", "question": "   "}),  # missing_question
        json.dumps({"image": "images/a.png"}),  # missing_question
        json.dumps({"question": "No image column value"}),  # missing_image
    ]
    path = data / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert _run(f"dataset=[{path}]", f"out={out}", tmp_path=tmp_path) == 0
    rows = read_rows(out / "train.parquet")
    assert [r["extra_info"]["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["extra_info"]["answer"] == "7" and rows[0]["extra_info"]["choices"] == ["red", "blue"]
    assert [len(r["images"]) for r in rows] == [1, 2, 1, 1, 1]
    assert rows[1]["images"][1]["bytes"] == JPEG and rows[1]["extra_info"]["answer"] == ""
    assert Image.open(io.BytesIO(rows[2]["images"][0]["bytes"])).format == "PNG"  # GIF re-encoded
    assert rows[2]["extra_info"]["answer"] == "C"
    assert rows[3]["images"][0]["bytes"] == PNG_BLUE
    assert {r["extra_info"]["source"] for r in rows} == {str(path)}
    assert {r["data_source"] for r in rows} == {"verl_ext/prepared/my_data"}
    assert _summary(out)["splits"]["train"]["dropped"] == {
        "corrupt_image": 1, "missing_image": 2, "missing_question": 2, "unreadable_row": 2}
    assert _summary(out)["splits"]["train"]["read"] == 12


def test_local_json_parquet_and_unreadable_files(tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps([{"images": ["images/a.png"], "problem": "From a list?", "answer": "1"}]))
    as_columns = tmp_path / "columns.json"
    as_columns.write_text(json.dumps({"images": [["images/b.jpg"], ["images/a.png"]],
                                      "problem": ["Column one?", "Column two?"], "answer": ["2", "3"]}))
    table = pa.table({
        "images": [[{"bytes": PNG, "path": None}], [{"bytes": None, "path": "images/b.jpg"}]],
        "problem": ["From parquet bytes?", "From parquet path?"],
        "answer": ["4", "5"],
    })
    as_parquet = tmp_path / "rows.parquet"
    pq.write_table(table, as_parquet)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 but not really")
    missing = tmp_path / "missing.jsonl"
    out = tmp_path / "out"
    code = _run(f"dataset=[{as_list},{broken},{as_columns},{missing},{as_parquet}]", f"out={out}", tmp_path=tmp_path)
    assert code == 0
    rows = read_rows(out / "train.parquet")
    assert [r["extra_info"]["question"] for r in rows] == [
        "From a list?", "Column one?", "Column two?", "From parquet bytes?", "From parquet path?"]
    assert [r["extra_info"]["source"] for r in rows] == [str(as_list)] + [str(as_columns)] * 2 + [str(as_parquet)] * 2
    assert rows[-1]["images"][0]["bytes"] == JPEG
    summary = _summary(out)
    assert summary["unreadable"] == {"unreadable_file": 2}
    assert summary["splits"]["train"] == {"read": 5, "written": 5, "dropped": {}}


def test_local_val_split_file(tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"image": "images/a.png", "question": f"Q{i}?", "answer": str(i)})
                               for i in range(3)))
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"image": "images/b.jpg", "question": "V?", "answer": "9"}))
    out = tmp_path / "out"
    assert _run(f"dataset=[{train}]", f"val_split={val}", f"out={out}", tmp_path=tmp_path) == 0
    (test_row,) = read_rows(out / "test.parquet")
    assert test_row["reward_model"]["ground_truth"] == "9" and test_row["extra_info"]["source"] == str(val)


def _numbered_jsonl(tmp_path: Path, n: int) -> Path:
    _write_images(tmp_path / "images")
    path = tmp_path / "numbered.jsonl"
    path.write_text("\n".join(json.dumps({"image": "images/a.png", "question": f"Question {i}?", "answer": str(i)})
                              for i in range(n)))
    return path


def test_val_fraction(tmp_path: Path) -> None:
    path = _numbered_jsonl(tmp_path, 20)

    def split(name: str, *extra: str) -> tuple[list[int], list[int], list[dict], list[dict]]:
        out = tmp_path / name
        assert _run(f"dataset=[{path}]", "val_fraction=0.25", f"out={out}", *extra, tmp_path=tmp_path) == 0
        train, test = read_rows(out / "train.parquet"), read_rows(out / "test.parquet")
        return [r["extra_info"]["index"] for r in train], [r["extra_info"]["index"] for r in test], train, test

    train_ids, test_ids, train, test = split("a")
    assert len(test_ids) == 5 and sorted(train_ids + test_ids) == list(range(20))
    assert all(r["reward_model"]["ground_truth"] == "" for r in train)
    assert all(r["reward_model"]["ground_truth"] == r["extra_info"]["answer"] != "" for r in test)
    assert split("b")[:2] == (train_ids, test_ids)  # deterministic for a seed
    assert split("c", "seed=1")[1] != test_ids
    _, _, labelled, _ = split("d", "keep_labels=true")
    assert all(r["reward_model"]["ground_truth"] == r["extra_info"]["answer"] for r in labelled)


def test_nothing_written_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"image": "nowhere.png", "question": "?"}) + "\n")
    out = tmp_path / "out"
    assert _run(f"dataset=[{path}]", f"out={out}", tmp_path=tmp_path) == 1
    assert not (out / "train.parquet").exists() and not (out / prep.SUMMARY_NAME).exists()
    assert _run(f"dataset=[{tmp_path / 'absent.json'}]", f"out={out}", tmp_path=tmp_path) == 1


def test_interrupt_keeps_finished_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _numbered_jsonl(tmp_path, 6)
    real = prep.convert_row
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(prep, "convert_row", interrupted)
    out = tmp_path / "out"
    # Non-zero (130, as a shell reports Ctrl-C), and the finished rows are written.
    assert _run(f"dataset=[{path}]", "val_fraction=0.3", f"out={out}", tmp_path=tmp_path) == 130
    assert len(read_rows(out / "train.parquet")) == 3
    assert not (out / "test.parquet").exists()  # the run stopped before the validation split
    assert _summary(out)["interrupted"] is True


def test_unexpected_row_error_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _numbered_jsonl(tmp_path, 4)
    real = prep.convert_row

    def flaky(values, *args, **kwargs):
        if values["question"] == "Question 2?":
            raise RuntimeError("boom")
        return real(values, *args, **kwargs)

    monkeypatch.setattr(prep, "convert_row", flaky)
    out = tmp_path / "out"
    assert _run(f"dataset=[{path}]", f"out={out}", tmp_path=tmp_path) == 0
    assert [r["extra_info"]["index"] for r in read_rows(out / "train.parquet")] == [0, 1, 3]
    assert _summary(out)["splits"]["train"]["dropped"] == {"error": 1}


def test_write_failure_keeps_the_other_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _numbered_jsonl(tmp_path, 10)
    real_commit = prep.RowWriter.commit

    def commit(self):
        if self.path.name == "test.parquet":
            self.abort()
            raise OSError(28, "No space left on device")
        return real_commit(self)

    monkeypatch.setattr(prep.RowWriter, "commit", commit)
    out = tmp_path / "out"
    assert _run(f"dataset=[{path}]", "val_fraction=0.2", f"out={out}", tmp_path=tmp_path) == 0
    assert len(read_rows(out / "train.parquet")) == 8
    assert sorted(p.name for p in out.iterdir()) == [prep.SUMMARY_NAME, "train.parquet"]
    summary = _summary(out)
    assert summary["unreadable"] == {"write_error": 1} and summary["splits"]["test"]["written"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["val_fraction=0.1", "val_split=test"], "val_fraction and val_split are exclusive"),
        (["val_fraction=1.5"], "val_fraction must be in [0, 1)"),
        (["max_rows=0"], "max_rows must be >= 1"),
        (["question_column=nope"], "question column 'nope' not found"),
        (["val_split=holdout"], "Unknown split"),
        (["data_dir=/nonexistent/snapshot/dir"], "is not a directory"),
        (["bogus=true"], "Key 'bogus' not in 'PrepareConfig'"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, geometry3k_snapshot: Path, caplog: pytest.LogCaptureFixture,
                             args: list[str], message: str) -> None:
    base = ["dataset=[geometry3k]", f"data_dir={geometry3k_snapshot}", f"out={tmp_path / 'out'}"]
    if any(arg.startswith("data_dir=") for arg in args):
        base = [base[0], base[2]]
    with caplog.at_level(logging.INFO, logger="verl_ext.data.prepare"):
        assert _run(*base, *args, tmp_path=tmp_path) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]
    assert not (tmp_path / "out").exists()


def test_usage_errors_for_local_files(tmp_path: Path) -> None:
    path = _numbered_jsonl(tmp_path, 2)
    out = [f"out={tmp_path / 'out'}"]
    assert _run(f"dataset=[{path}]", "val_split=test", *out, tmp_path=tmp_path) == 2
    assert _run(f"dataset=[{path}]", f"data_dir={tmp_path}", *out, tmp_path=tmp_path) == 2
    assert _run(f"dataset=[{path}]", "image_column=question", "question_column=question", *out,
                tmp_path=tmp_path) == 2
    no_images = tmp_path / "text_only.jsonl"
    no_images.write_text(json.dumps({"question": "2+2?", "answer": "4"}))
    assert _run(f"dataset=[{no_images}]", *out, tmp_path=tmp_path) == 2
    (tmp_path / "notes.txt").write_text("hello")
    assert _run(f"dataset=[{tmp_path / 'notes.txt'}]", *out, tmp_path=tmp_path) == 2
    assert _run("dataset=[geometry3k,mmr1]", *out, tmp_path=tmp_path) == 2


def test_cli_subprocess(tmp_path: Path) -> None:
    path = _numbered_jsonl(tmp_path, 3)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "verl_ext.data.prepare", f"dataset=[{path}]", f"out={tmp_path / 'out'}"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "prepare done: read 3 rows, wrote 3, dropped 0" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "verl_ext.data.prepare", f"dataset=[{path}]", "val_fraction=2"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "usage error" in bad.stderr


# ------------------------------------------------------------------------------------------------ helpers


def test_field_normalisation() -> None:
    assert answer_text(None) == "" and answer_text(float("nan")) == ""
    assert answer_text(12) == "12" and answer_text(" 2.5 ") == "2.5"
    assert answer_text("<answer> 3\\sqrt{2} </answer>") == "3\\sqrt{2}"
    assert answer_text(["4", "5"]) == "4, 5"
    assert choice_texts(["1", 2]) == ["1", "2"]
    assert choice_texts(np.array(["a", "b"])) == ["a", "b"]
    assert choice_texts('["x", "y"]') == ["x", "y"] and choice_texts("['x', 'y']") == ["x", "y"]
    assert choice_texts({"B": "second", "A": "first"}) == ["first", "second"]
    assert choice_texts("A") == [] and choice_texts(None) == [] and choice_texts(list("x" * 27)) == []
    assert question_text("Q?") == "Q?"
    assert question_text([{"role": "system", "content": "s"}, {"role": "user", "content": "<image>Q?"}]) == "<image>Q?"
    assert question_text(42) is None and question_text([{"role": "assistant", "content": "A"}]) is None


def test_image_inputs() -> None:
    pil = Image.new("RGB", (20, 10), "red")
    assert Image.open(io.BytesIO(image_bytes(pil))).size == (20, 10)
    cmyk = _encode(fmt="TIFF", mode="CMYK")
    converted = Image.open(io.BytesIO(image_bytes(cmyk)))
    assert converted.format == "PNG" and converted.mode == "RGB"
    assert image_bytes(memoryview(PNG)) == PNG
    with pytest.raises(RowRejected) as excinfo:
        image_bytes(_encode(size=(402, 2)))
    assert excinfo.value.reason == "extreme_aspect_ratio"
    for bad, reason in [
        ({"bytes": None, "path": None}, "missing_image"),
        ("relative.png", "missing_image"),  # no directory to resolve it against
        ("", "missing_image"),
        ("data:image/png;base64,@@@", "corrupt_image"),
        (12345, "bad_image_value"),  # a number is no image, not a "corrupt" one
        (TRUNCATED_JPEG, "corrupt_image"),
    ]:
        with pytest.raises(RowRejected) as excinfo:
            image_bytes(bad)
        assert excinfo.value.reason == reason, bad


def test_sources() -> None:
    assert sources.lookup("GEOMETRY3K") is sources.GEOMETRY3K
    assert sources.lookup("mmr1/mmr1-math-rl-data-v0") is sources.MMR1
    assert sources.lookup("someone/else") is None
    assert sources.data_source_name("geoqa") == "verl_ext/prepared/geoqa"
    assert sources.data_source_name("owner/some set") == "verl_ext/prepared/owner/some_set"
    assert sources.data_source_name("./data/my.train.jsonl") == "verl_ext/prepared/my"
    assert sources.data_source_name("/data/geo/train.parquet") == "verl_ext/prepared/geo"
    assert sources.data_source_name("train.jsonl") == "verl_ext/prepared/train"
    columns = sources.resolve_columns(["image", "problem", "solution"], sources.GEOQA)
    assert columns == sources.Columns(image="image", question="problem", answer="solution", choices=None)
    with pytest.raises(sources.ColumnError, match="no image"):
        sources.resolve_columns(["problem"], sources.GEOMETRY3K)
    with pytest.raises(CLIError):
        PrepareConfig(dataset=("x",), out=Path("o"), val_fraction=0.2, val_split="test")


# ------------------------------------------------------------------------------------------------ verl


def test_rlhf_dataset_loads_prepared_data(
    tmp_path: Path, geometry3k_snapshot: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, rl_dataset_config
) -> None:
    import datasets
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
    from verl.utils.tokenizer import build_multimodal_processor_inputs

    # RLHFDataset loads parquet through `datasets` without a cache_dir: keep its cache out of the home directory.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))

    # Add a two-image row next to the one-image Geometry3K rows.
    jsonl = tmp_path / "two.jsonl"
    _write_images(tmp_path / "images")
    two_images = {"image": ["images/a.png", "images/b.jpg"], "question": "Compare <image> and <image>."}
    jsonl.write_text(json.dumps(two_images))
    out = tmp_path / "out"
    assert _run("dataset=[geometry3k]", f"data_dir={geometry3k_snapshot}", f"out={out}",
                tmp_path=tmp_path) == 0
    assert _run(f"dataset=[{jsonl}]", f"out={tmp_path / 'out2'}", tmp_path=tmp_path) == 0
    files = [str(out / "train.parquet"), str(tmp_path / "out2" / "train.parquet")]

    tokenizer = hf_tokenizer(str(tiny_model_dir))
    processor = hf_processor(str(tiny_model_dir))
    dataset = RLHFDataset(files, tokenizer, rl_dataset_config(), processor=processor)
    assert len(dataset) == 5  # the length filter ran the processor on every row and kept all of them

    item = dataset[0]
    assert item["data_source"] == "verl_ext/prepared/geometry3k"
    assert item["reward_model"]["ground_truth"] == "" and item["extra_info"]["answer"] == "3"
    (message,) = item["raw_prompt"]
    image_part, text_part = message["content"]
    assert image_part["type"] == "image"
    assert text_part == {"type": "text", "text": "Find x." + FORMAT_INSTRUCTION}

    two = dataset[4]
    parts = two["raw_prompt"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image", "text", "image", "text"]
    raw_prompt = processor.apply_chat_template(two["raw_prompt"], add_generation_prompt=True, tokenize=False)
    images, videos, _ = RLHFDataset._process_multi_modal_info(two["raw_prompt"], 14, dataset.config)
    inputs = build_multimodal_processor_inputs(processor, text=[raw_prompt], images=images, videos=videos)
    assert len(inputs["image_grid_thw"]) == 2
    merge = processor.image_processor.merge_size ** 2
    expected_tokens = int(inputs["image_grid_thw"].prod(dim=1).sum()) // merge
    assert int((inputs["input_ids"][0] == processor.image_token_id).sum()) == expected_tokens

    batch = collate_fn([dataset[i] for i in range(len(dataset))])
    assert len(batch["raw_prompt"]) == 5


def test_an_already_converted_verl_parquet_keeps_its_nested_answers(tmp_path):
    """visual_math writes verl's schema: the answer sits in reward_model / extra_info, not a column."""
    import pyarrow.parquet as pq

    from verl_ext.data.prepare import main as prepare_main
    from verl_ext.toy.visual_math import VisualMathConfig, write_dataset

    files = write_dataset(tmp_path / "vm", VisualMathConfig(n_train=6, n_test=2))
    assert prepare_main([f"dataset=[{files['train']}]", f"out={tmp_path / 'out'}"]) == 0
    source = pq.read_table(files["train"]).to_pylist()
    rows = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    assert [r["extra_info"]["answer"] for r in rows] == [s["reward_model"]["ground_truth"] for s in source]
    assert all(r["reward_model"]["ground_truth"] == "" for r in rows)
    # The format instruction is not appended twice.
    assert all(r["prompt"][-1]["content"].count("\\boxed{}") == 1 for r in rows)


# ------------------------------------------------------------------------------------------------ bad input


def _rows_jsonl(tmp_path: Path, lines: list[bytes]) -> Path:
    if not (tmp_path / "images").exists():
        _write_images(tmp_path / "images")
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _row(question: str, image: str = "images/a.png") -> bytes:
    return json.dumps({"image": image, "question": question, "answer": "1"}).encode()


def test_a_bad_line_or_value_drops_only_its_row(tmp_path: Path) -> None:
    lines = [
        _row("Good question 1?"),
        _row("Bad bytes ?").replace(b"Bad bytes ", b"Bad \xff\xfe bytes "),  # invalid UTF-8
        b'{"image": "images/a.png", "question": "Lone \\ud800 surrogate?", "answer": "1"}',  # not valid Unicode
        _row("Good question 2?"),
        _row("x" * 9000 + "?"),  # over the question length cap
    ]
    out = tmp_path / "out"
    assert _run(f"dataset=[{_rows_jsonl(tmp_path, lines)}]", f"out={out}", tmp_path=tmp_path) == 0
    questions = [r["extra_info"]["question"] for r in read_rows(out / "train.parquet")]
    assert questions == ["Good question 1?", "Good question 2?"]
    assert _summary(out)["splits"]["train"]["dropped"] == {"invalid_text": 2, "question_too_long": 1}


def test_image_paths_that_are_not_regular_files_or_too_large_are_refused_unread(tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    fifo = tmp_path / "images" / "pipe.png"
    os.mkfifo(fifo)  # opening it would block: the row must be refused from its stat alone
    lines = [_row("A pipe?", "images/pipe.png"), _row("A directory?", "images"), _row("Fine?")]
    path = _rows_jsonl(tmp_path, lines)
    result = prep.prepare(prep.PrepareConfig(dataset=(str(path),), out=tmp_path / "out"))
    assert result.stats["train"].dropped == {"image_not_a_file": 2} and result.stats["train"].written == 1
    small = prep.prepare(prep.PrepareConfig(dataset=(str(path),), out=tmp_path / "out2", max_image_bytes=10))
    assert small.stats["train"].dropped == {"image_not_a_file": 2, "image_too_large": 1}


def test_duplicates_are_counted_and_never_in_both_splits(tmp_path: Path) -> None:
    lines = [_row(f"Question {i % 10}?") for i in range(20)]  # 10 distinct questions, 2 copies each
    out = tmp_path / "out"
    assert _run(f"dataset=[{_rows_jsonl(tmp_path, lines)}]", "val_fraction=0.5", f"out={out}",
                tmp_path=tmp_path) == 0
    train = {r["extra_info"]["question"] for r in read_rows(out / "train.parquet")}
    test = {r["extra_info"]["question"] for r in read_rows(out / "test.parquet")}
    assert not train & test and len(train | test) == 10
    summary = _summary(out)["splits"]
    assert summary["train"]["dropped"].get("duplicate", 0) + summary["test"]["dropped"].get("duplicate", 0) == 10


@pytest.mark.parametrize(
    "name, message",
    [("geometry3kk", "did you mean 'geometry3k'"), ("no such set!", "not a known dataset, a local path or a hub id")],
)
def test_an_unknown_dataset_name_answers_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture, name, message):
    with caplog.at_level(logging.ERROR):
        assert _run(f"dataset=[{name}]", f"out={tmp_path / 'out'}", tmp_path=tmp_path) == 2
    assert message in caplog.text and not (tmp_path / "hf_cache").exists()


def test_rerun_into_a_folder_of_another_dataset_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = _numbered_jsonl(tmp_path, 3)
    other = _rows_jsonl(tmp_path, [_row("Other?")])
    out = tmp_path / "out"
    assert _run(f"dataset=[{first}]", f"out={out}", tmp_path=tmp_path) == 0
    with caplog.at_level(logging.WARNING):
        assert _run(f"dataset=[{other}]", f"out={out}", tmp_path=tmp_path) == 0
    assert "holds files prepared from" in caplog.text


def test_sigterm_writes_the_finished_rows_and_exits_non_zero(tmp_path: Path) -> None:
    """The real command in a child process; its rows are slowed down so the signal lands mid-run."""
    path = _numbered_jsonl(tmp_path, 2000)
    out = tmp_path / "out"
    code = f"""
import sys, time
from verl_ext.data import prepare as prep
real = prep.convert_row
def slow(*args, **kwargs):
    print("row", flush=True)
    time.sleep(0.01)
    return real(*args, **kwargs)
prep.convert_row = slow
sys.exit(prep.main([{f"dataset=[{path}]"!r}, {f"out={out}"!r}]))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(20):  # let some rows finish
        assert proc.stdout.readline() == "row\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    rows = read_rows(out / "train.parquet")
    assert 19 <= len(rows) < 2000 and _summary(out)["interrupted"] is True  # the 20th was mid-conversion
