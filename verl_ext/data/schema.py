"""The row schema of unlabeled multimodal RL data, shared by ``verl_ext.data.prepare`` and the synthesis pipeline.

A row is what verl's ``RLHFDataset`` reads (the layout of verl's ``examples/data_preprocess/geo3k.py``):
``data_source`` (verl routes reward functions on it); ``prompt``, one user message holding one ``<image>`` per
image, the question and :data:`FORMAT_INSTRUCTION`; ``images``, ``{"bytes": PNG or JPEG, "path": None}``;
``ability`` ``"math"``; ``reward_model`` ``{"style": "rule", "ground_truth": ""}`` (empty for unlabeled data);
``extra_info`` with ``split``, ``index``, ``answer`` (the hidden original answer, read only for monitoring),
``question`` (without placeholders or instruction), ``choices`` (option texts, else ``[]``), ``source`` (hub
name or file path) and any extra fields a writer declares. Files are written with one fixed Arrow schema
(:func:`arrow_schema`), so column types never depend on which rows are in a file (``choices`` is
``list<string>`` even when every list is empty).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_ext.files import temp_sibling
from verl_ext.prompts import FORMAT_INSTRUCTION, IMAGE_PLACEHOLDER  # noqa: F401 - part of the row format

ABILITY = "math"
REWARD_STYLE = "rule"
COLUMNS: tuple[str, ...] = ("data_source", "prompt", "images", "ability", "reward_model", "extra_info")
EXTRA_INFO_FIELDS: tuple[str, ...] = ("split", "index", "answer", "question", "choices", "source")
MAX_CHOICES = 26
"""Options are lettered A-Z by the answer extractor, so a question cannot have more."""


class SchemaError(ValueError):
    """A row cannot be built from the given fields."""


class ImageCountMismatch(SchemaError):
    """The question's ``<image>`` placeholders cannot be matched with its images."""


def arrow_schema(extra_info_fields: Sequence[tuple[str, Any]] = ()) -> Any:
    """The Arrow schema of a row file; ``extra_info_fields`` (name, Arrow type) are appended to ``extra_info``."""
    import pyarrow as pa

    if clash := {name for name, _ in extra_info_fields} & set(EXTRA_INFO_FIELDS):
        raise ValueError(f"extra_info fields {sorted(clash)} are already part of the schema")
    text = pa.string()
    types = {"index": pa.int64(), "choices": pa.list_(text)}  # the other fields are strings
    extra_info = [*((name, types.get(name, text)) for name in EXTRA_INFO_FIELDS), *extra_info_fields]
    return pa.schema(
        [
            ("data_source", text),
            ("prompt", pa.list_(pa.struct([("role", text), ("content", text)]))),
            ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", text)]))),
            ("ability", text),
            ("reward_model", pa.struct([("style", text), ("ground_truth", text)])),
            ("extra_info", pa.struct(extra_info)),
        ]
    )


def compose_prompt(question: str, n_images: int) -> tuple[str, str]:
    """Return ``(user content, clean question)`` for ``question`` asked about ``n_images`` images.

    A question without placeholders gets ``n_images`` of them in front. A question that already has exactly
    ``n_images`` keeps them: leading ones are normalised to the front, inner ones stay where they are (they
    tell the model which image the text refers to). Any other count raises :class:`ImageCountMismatch`.
    A trailing :data:`FORMAT_INSTRUCTION` is not repeated, so already-prepared questions can be fed back in.
    """
    if n_images < 1:
        raise SchemaError("a multimodal row needs at least one image")
    text = question.strip().removesuffix(FORMAT_INSTRUCTION.strip()).rstrip()
    count = text.count(IMAGE_PLACEHOLDER)
    clean = re.sub(r"\s*<image>\s*", " ", text).strip()
    if not clean:
        raise SchemaError("the question is empty")
    if count not in (0, n_images):
        raise ImageCountMismatch(f"the question has {count} {IMAGE_PLACEHOLDER} placeholders for {n_images} images")
    lead = re.match(r"(?:\s*<image>)*\s*", text)
    if lead.group(0).count(IMAGE_PLACEHOLDER) == count:  # none, or all of them leading: put them in front
        text = IMAGE_PLACEHOLDER * n_images + text[lead.end() :]
    return text + FORMAT_INSTRUCTION, clean


def build_row(
    *,
    data_source: str,
    question: str,
    images: Sequence[bytes],
    split: str,
    index: int,
    answer: str = "",
    choices: Sequence[str] = (),
    source: str = "",
    keep_label: bool = False,
    extra_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one row. ``images`` are encoded PNG/JPEG bytes in placeholder order.

    The answer goes to ``extra_info["answer"]`` only, unless ``keep_label`` also makes it the reward
    model's ground truth (supervised baselines and validation data).
    """
    if clash := set(extra_info or ()) & set(EXTRA_INFO_FIELDS):
        raise SchemaError(f"extra_info fields {sorted(clash)} are set by build_row")
    content, clean = compose_prompt(question, len(images))
    row = {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": content}],
        "images": [{"bytes": image, "path": None} for image in images],
        "ability": ABILITY,
        "reward_model": {"style": REWARD_STYLE, "ground_truth": answer if keep_label else ""},
        "extra_info": {
            "split": split,
            "index": int(index),
            "answer": answer,
            "question": clean,
            "choices": [str(choice) for choice in choices],
            "source": source,
            **(extra_info or {}),
        },
    }
    if problems := validate_row(row, check_images=False, extra_info_fields=extra_info or ()):
        raise SchemaError("; ".join(problems))
    return row


# ------------------------------------------------------------------------------------------------ validation


@contextlib.contextmanager
def open_verified(data: bytes) -> Iterator[Any]:
    """The PIL image ``data`` encodes, its container verified and its pixels decoded (PIL's ``verify()``
    checks only the container and leaves the image unusable, so the pixels are decoded from a fresh copy).
    PIL's errors (many types) propagate."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        yield image


def _image_problem(data: Any, decode: bool) -> str | None:
    if not isinstance(data, bytes) or not data:
        return "image bytes are missing"
    if not decode:
        return None
    try:
        with open_verified(data) as image:
            fmt = image.format
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for bad data
        return f"image does not decode: {exc}"
    return None if fmt in ("PNG", "JPEG") else f"image format is {fmt}, expected PNG or JPEG"


def validate_row(
    row: Mapping[str, Any],
    *,
    check_images: bool = True,
    require_label: bool = False,
    extra_info_fields: Iterable[str] = (),
) -> list[str]:
    """Problems with ``row`` as human-readable strings; an empty list means the row is valid."""
    if set(row) != set(COLUMNS):
        return [f"columns are {sorted(row)}, expected {sorted(COLUMNS)}"]
    problems: list[str] = []
    if not isinstance(row["data_source"], str) or not row["data_source"]:
        problems.append("data_source must be a non-empty string")
    if row["ability"] != ABILITY:
        problems.append(f"ability must be {ABILITY!r}")
    prompt = row["prompt"] if isinstance(row["prompt"], list | tuple) else []
    users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    if len(users) != 1 or not all(isinstance(m, Mapping) and isinstance(m.get("content"), str) for m in prompt):
        problems.append("prompt must hold exactly one user message, every content a string")
    images = row["images"] if isinstance(row["images"], list | tuple) else []
    if not images:
        problems.append("images must be a non-empty list")
    placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in users if isinstance(m.get("content"), str))
    if placeholders != len(images):
        problems.append(f"{placeholders} {IMAGE_PLACEHOLDER} placeholders for {len(images)} images")
    for i, image in enumerate(images):
        if not isinstance(image, Mapping) or set(image) != {"bytes", "path"}:
            problems.append(f"image {i} must be a {{'bytes', 'path'}} dict")
        elif problem := _image_problem(image["bytes"], check_images):
            problems.append(f"image {i}: {problem}")
    reward = row["reward_model"] if isinstance(row["reward_model"], Mapping) else {}
    if reward.get("style") != REWARD_STYLE or not isinstance(reward.get("ground_truth"), str):
        problems.append(f"reward_model must be {{'style': {REWARD_STYLE!r}, 'ground_truth': str}}")
    elif require_label and not reward["ground_truth"]:
        problems.append("reward_model.ground_truth is empty but a label is required")
    info = row["extra_info"]
    wanted = set(EXTRA_INFO_FIELDS) | set(extra_info_fields)
    if not isinstance(info, Mapping) or not wanted <= set(info):
        return [*problems, f"extra_info must have the fields {sorted(wanted)}"]
    problems += [f"extra_info.{key} must be a string" for key in ("split", "answer", "question", "source")
                 if not isinstance(info[key], str)]
    if not isinstance(info["index"], int) or isinstance(info["index"], bool):
        problems.append("extra_info.index must be an integer")
    choices = info["choices"]
    if not isinstance(choices, list | tuple) or not all(isinstance(c, str) for c in choices):
        problems.append("extra_info.choices must be a list of strings")
    elif len(choices) > MAX_CHOICES:
        problems.append(f"extra_info.choices has more than {MAX_CHOICES} options")
    if not info["question"]:
        problems.append("extra_info.question is empty")
    return problems


@dataclass
class FileReport:
    """What :func:`validate_file` found in one parquet file."""

    path: Path
    """The file checked."""
    rows: int = 0
    """Number of rows in the file."""
    problems: dict[int, list[str]] = field(default_factory=dict)
    """Row number -> its problems, for invalid rows only."""

    @property
    def ok(self) -> bool:
        """True when every row is valid."""
        return not self.problems


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All rows of a row file as plain Python dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def validate_file(path: str | os.PathLike[str], **checks: Any) -> FileReport:
    """Check every row of a row file; ``checks`` are :func:`validate_row`'s keyword arguments."""
    rows = read_rows(path)
    problems = {number: found for number, row in enumerate(rows) if (found := validate_row(row, **checks))}
    return FileReport(path=Path(path), rows=len(rows), problems=problems)


# ------------------------------------------------------------------------------------------------ writing


class RowWriter(contextlib.AbstractContextManager):
    """Stream rows into a parquet file that appears at ``path`` only when complete.

    Rows are written in row groups to a temporary file next to ``path``; :meth:`commit` renames it into place
    with ``os.replace`` (atomic on POSIX), :meth:`abort` deletes it. Used as a context manager it commits on
    success and aborts on an exception, so a reader never sees a half-written file and a failed run leaves any
    previous ``path`` untouched. Nothing is created when no row was added.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, extra_info_fields: Sequence[tuple[str, Any]] = (), batch_size: int = 64
    ) -> None:
        self.path = Path(path).absolute()
        self.schema = arrow_schema(extra_info_fields)
        self.rows_written = 0
        """Rows added so far (written or buffered)."""
        self._extra_names = [name for name, _ in extra_info_fields]
        self._batch_size = batch_size
        self._batch: list[dict[str, Any]] = []
        self._tmp = temp_sibling(self.path)
        self._writer: Any = None
        self._closed = False

    def add(self, row: Mapping[str, Any]) -> None:
        """Append one row; raises :class:`SchemaError` (and writes nothing) if it is invalid."""
        if self._closed:
            raise RuntimeError("the writer is closed")
        if problems := validate_row(row, check_images=False, extra_info_fields=self._extra_names):
            raise SchemaError("; ".join(problems))
        self._batch.append(dict(row))
        self.rows_written += 1
        if len(self._batch) >= self._batch_size:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._batch:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        self._writer.write_table(pa.Table.from_pylist(self._batch, schema=self.schema))
        self._batch = []

    def commit(self) -> Path | None:
        """Finish the file and move it to ``path``; returns ``path``, or ``None`` when no row was added."""
        if self._closed:
            raise RuntimeError("the writer is closed")
        try:
            self._flush()
            if self._writer is None:
                return None
            self._writer.close()
            os.replace(self._tmp, self.path)
            return self.path
        except BaseException:
            self.abort()
            raise
        finally:
            self._closed = True

    def abort(self) -> None:
        """Drop everything written so far; ``path`` is left as it was."""
        self._closed = True
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the temp file goes anyway; a close error must not hide the cause
                self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: Any) -> None:
        if exc_type is not None:
            self.abort()  # harmless after a commit: the temp file is gone by then
        elif not self._closed:
            self.commit()
