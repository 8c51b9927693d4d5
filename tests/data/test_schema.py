"""Tests for the shared unlabeled multimodal RL row schema."""

from __future__ import annotations

import io
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from verl_ext.data import schema
from verl_ext.data.schema import (
    COLUMNS,
    FORMAT_INSTRUCTION,
    ImageCountMismatch,
    RowWriter,
    SchemaError,
    arrow_schema,
    build_row,
    compose_prompt,
    read_rows,
    validate_file,
    validate_row,
)


def _png(color: str = "red", size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_rows(path: Path, rows, *, extra_info_fields=()) -> Path | None:
    with RowWriter(path, extra_info_fields=extra_info_fields) as writer:
        for row in rows:
            writer.add(row)
        return writer.commit()


def _row(index: int = 0, **overrides) -> dict:
    fields = {
        "data_source": "verl_ext/prepared/test",
        "question": "Find x.",
        "images": [_png()],
        "split": "train",
        "index": index,
        "answer": "3",
        "source": "unit-test",
    }
    fields.update(overrides)
    return build_row(**fields)


@pytest.mark.parametrize(
    ("question", "n_images", "content", "clean"),
    [
        ("Find x.", 1, "<image>Find x.", "Find x."),
        ("  Find x.  ", 2, "<image><image>Find x.", "Find x."),
        ("<image>Find x.", 1, "<image>Find x.", "Find x."),  # Geometry3K's leading placeholder
        ("<image>\n Find x.", 1, "<image>Find x.", "Find x."),
        (" <image> <image>\nCompare.", 2, "<image><image>Compare.", "Compare."),
        # Inner placeholders stay where they are: they say which image the text refers to.
        ("Left: <image> right: <image> which is larger?", 2, "Left: <image> right: <image> which is larger?",
         "Left: right: which is larger?"),
        ("Find x." + FORMAT_INSTRUCTION, 1, "<image>Find x.", "Find x."),  # instruction not repeated
    ],
)
def test_compose_prompt(question: str, n_images: int, content: str, clean: str) -> None:
    assert compose_prompt(question, n_images) == (content + FORMAT_INSTRUCTION, clean)


@pytest.mark.parametrize(("question", "n_images"), [("<image><image>Find x.", 1), ("<image>Find x.", 2)])
def test_compose_prompt_mismatch(question: str, n_images: int) -> None:
    with pytest.raises(ImageCountMismatch):
        compose_prompt(question, n_images)


@pytest.mark.parametrize(("question", "n_images"), [("Find x.", 0), ("<image>", 1), ("   ", 1)])
def test_compose_prompt_rejects_empty(question: str, n_images: int) -> None:
    with pytest.raises(SchemaError):
        compose_prompt(question, n_images)


def test_build_row_hides_the_answer() -> None:
    row = _row(choices=["1", "3", "5"])
    assert list(row) == list(COLUMNS)
    assert row["data_source"] == "verl_ext/prepared/test"
    assert row["prompt"] == [{"role": "user", "content": "<image>Find x." + FORMAT_INSTRUCTION}]
    assert row["images"] == [{"bytes": _png(), "path": None}]
    assert row["ability"] == "math"
    assert row["reward_model"] == {"style": "rule", "ground_truth": ""}
    assert row["extra_info"] == {
        "split": "train",
        "index": 0,
        "answer": "3",
        "question": "Find x.",
        "choices": ["1", "3", "5"],
        "source": "unit-test",
    }
    assert validate_row(row) == []


def test_build_row_keep_label_and_extra_fields() -> None:
    row = _row(keep_label=True, extra_info={"seed_index": 7})
    assert row["reward_model"]["ground_truth"] == "3"
    assert row["extra_info"]["seed_index"] == 7
    with pytest.raises(SchemaError, match="set by build_row"):
        _row(extra_info={"answer": "oops"})


@pytest.mark.parametrize(
    "overrides",
    [{"data_source": ""}, {"images": []}, {"images": [b""]}, {"images": ["not bytes"]}, {"choices": ["x"] * 27}],
)
def test_build_row_rejects_bad_fields(overrides: dict) -> None:
    with pytest.raises(SchemaError):
        _row(**overrides)


def test_validate_row_reports_problems() -> None:
    good = _row()
    bad = dict(good)
    bad["images"] = [{"bytes": b"\x89PNG\r\n\x1a\nbroken", "path": None}, {"bytes": _png(), "path": None}]
    bad["reward_model"] = {"style": "rule", "ground_truth": 3}
    bad["extra_info"] = dict(good["extra_info"], choices="A,B", index="0")
    problems = validate_row(bad)
    assert any("placeholders for 2 images" in p for p in problems)
    assert any(p.startswith("image 0: image does not decode") for p in problems)
    assert any("reward_model" in p for p in problems)
    assert any("choices" in p for p in problems)
    assert any("index" in p for p in problems)
    assert validate_row(bad, check_images=False) != []
    assert validate_row({k: v for k, v in good.items() if k != "ability"})[0].startswith("columns are")
    gif = io.BytesIO()
    Image.new("P", (8, 8)).save(gif, format="GIF")
    assert "expected PNG or JPEG" in validate_row(dict(good, images=[{"bytes": gif.getvalue(), "path": None}]))[0]
    assert validate_row(good, require_label=True) == ["reward_model.ground_truth is empty but a label is required"]


def test_write_and_read_roundtrip_with_stable_types(tmp_path: Path) -> None:
    rows = [_row(0), _row(1, choices=["a", "b"], answer=""), _row(2, images=[_png("red"), _png("blue")],
                                                               question="<image> and <image>: same colour?")]
    path = write_rows(tmp_path / "train.parquet", rows)
    assert path == (tmp_path / "train.parquet").absolute()
    table = pq.read_table(path)
    assert table.schema.equals(arrow_schema())
    assert table.schema.field("extra_info").type.field("choices").type == pa.list_(pa.string())
    assert read_rows(path) == rows
    report = validate_file(path)
    assert report.ok and report.rows == 3
    # Files with only empty choice lists still have the same type: the schema is fixed, not inferred.
    only_empty = write_rows(tmp_path / "empty_choices.parquet", [_row(0)])
    assert pq.read_table(only_empty).schema.equals(table.schema)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_choices.parquet", "train.parquet"]


def test_validate_file_finds_bad_rows(tmp_path: Path) -> None:
    rows = [_row(0), _row(1)]
    rows[1]["images"][0]["bytes"] = b"not an image"
    path = tmp_path / "mixed.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema()), path)
    report = validate_file(path)
    assert not report.ok and list(report.problems) == [1]
    assert validate_file(path, check_images=False).ok


def test_extra_info_fields(tmp_path: Path) -> None:
    fields = [("seed_index", pa.int64())]
    path = write_rows(tmp_path / "syn.parquet", [_row(0, extra_info={"seed_index": 4})], extra_info_fields=fields)
    assert read_rows(path)[0]["extra_info"]["seed_index"] == 4
    assert validate_file(path, extra_info_fields=["seed_index"]).ok
    with pytest.raises(ValueError, match="already part"):
        arrow_schema([("answer", pa.string())])


def test_writer_streams_in_row_groups_and_rejects_invalid_rows(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    with RowWriter(path, batch_size=2) as writer:
        for i in range(5):
            writer.add(_row(i))
        with pytest.raises(SchemaError):
            writer.add(dict(_row(9), ability="poetry"))
        assert not path.exists()  # nothing is visible before the commit
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    assert [r["extra_info"]["index"] for r in read_rows(path)] == [0, 1, 2, 3, 4]
    assert writer.rows_written == 5


def test_writer_without_rows_creates_nothing(tmp_path: Path) -> None:
    assert write_rows(tmp_path / "none.parquet", []) is None
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "train.parquet"
    write_rows(path, [_row(0)])
    before = path.read_bytes()

    def rows():
        for i in range(10):
            if i == 7:
                raise OSError("disk full")
            yield _row(i)

    with pytest.raises(OSError, match="disk full"):
        with RowWriter(path, batch_size=3) as writer:  # two row groups reach the temp file before the failure
            for row in rows():
                writer.add(row)
    assert path.read_bytes() == before  # the previous file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["train.parquet"]  # and no temp file is left behind

    # A failing rename is cleaned up as well.
    monkeypatch.setattr(schema.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError, match="rename failed"):
        write_rows(path, [_row(1)])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train.parquet"]


def test_writer_use_after_close(tmp_path: Path) -> None:
    writer = RowWriter(tmp_path / "x.parquet")
    writer.add(_row())
    assert writer.commit() is not None
    with pytest.raises(RuntimeError):
        writer.add(_row())
    with pytest.raises(RuntimeError):
        writer.commit()
