"""Turn a multimodal math dataset into verl's RL parquet with the labels hidden: MM-UPT's training data.

Sources: the paper's datasets by short name (``geometry3k``, ``geoqa``, ``mmr1``; see
:mod:`verl_ext.data.sources`), any Hugging Face hub dataset by id (or a local snapshot of one), or local
``.json`` / ``.jsonl`` / ``.parquet`` files with an image column and a question column. Each kept row is a row
of :mod:`verl_ext.data.schema` with the original answer only in ``extra_info["answer"]``; ``keep_labels`` also
makes it the ground truth (the supervised baseline), and the validation split (``test.parquet``) always keeps
it. Bad rows are dropped and counted per reason (docs/data.md, "Bad rows", lists them), unreadable files and sources
too, and the run goes on with the rest. Exit status: 0 if any row was written, 1 if none was, 2 for usage
errors, 130 when interrupted.

Usage::

    python -m verl_ext.data.prepare dataset=geometry3k val_split=test out=~/data/mmupt/geometry3k
    python -m verl_ext.data.prepare dataset=mmr1 data_dir=./MMR1-snapshot val_split=validation out=out/
    python -m verl_ext.data.prepare dataset=my_data.jsonl question_column=query val_fraction=0.05 out=out/
"""

from __future__ import annotations

import ast
import base64
import binascii
import dataclasses
import difflib
import hashlib
import io
import json
import logging
import math
import os
import random
import signal
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from verl_ext.config.compose import CLIError, settings_from_argv, start_command
from verl_ext.data import sources
from verl_ext.data.schema import (
    IMAGE_PLACEHOLDER,
    MAX_CHOICES,
    ImageCountMismatch,
    RowWriter,
    SchemaError,
    build_row,
    compose_prompt,
    open_verified,
    read_rows,
)
from verl_ext.data.sources import DATA_SUFFIXES, ColumnError, Columns, SourceSpec
from verl_ext.files import write_json
from verl_ext.model_path import is_hub_id

logger = logging.getLogger(__name__)

SUMMARY_NAME = "prepare_summary.json"
"""Written next to the parquet files: the configuration and the counts of the run."""

# Drop reasons, as reported in the summary.
MISSING_QUESTION = "missing_question"
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
IMAGE_COUNT_MISMATCH = "image_count_mismatch"
EXTREME_ASPECT_RATIO = "extreme_aspect_ratio"
MISSING_ANSWER = "missing_answer"  # only in the validation split, which is scored against its labels
UNREADABLE_ROW = "unreadable_row"
UNREADABLE_FILE = "unreadable_file"
UNREADABLE_SOURCE = "unreadable_source"
ERROR = "error"  # an unexpected exception while converting a row (logged with its traceback)
WRITE_ERROR = "write_error"  # an output file could not be written (counted per file)
NOT_A_FILE = "image_not_a_file"  # an image path names a FIFO, device or directory: refused without reading it
IMAGE_TOO_LARGE = "image_too_large"  # over max_image_bytes: refused without decoding (or, for a path, reading) it
BAD_IMAGE_VALUE = "bad_image_value"  # a value that cannot be an image (a number, a list of numbers...)
INVALID_TEXT = "invalid_text"  # not valid Unicode (a lone surrogate from a JSON escape, or undecodable bytes)
QUESTION_TOO_LONG = "question_too_long"  # over max_question_chars
DUPLICATE = "duplicate"  # the same question and images as a row already written (to either split): kept once

_BAD_LINE = object()  # a JSON Lines line that does not parse


class RowRejected(Exception):
    """A source row cannot be turned into a training row; ``reason`` is one of the drop reasons."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PrepareConfig:
    """What to prepare and how."""

    dataset: tuple[str, ...]
    """A known short name, a hub id, a local snapshot directory of a hub dataset, or one or more local files."""
    out: Path
    """Output directory for ``train.parquet`` (and ``test.parquet``)."""
    split: str = "train"
    """Hub split to prepare as training data (ignored for local files)."""
    image_column: str | None = None
    """Image column; by default guessed (known datasets: their documented column)."""
    question_column: str | None = None
    """Question column; by default guessed."""
    answer_column: str | None = None
    """Answer column; by default guessed; rows without an answer are fine for training."""
    choices_column: str | None = None
    """Column of multiple-choice option texts; by default guessed."""
    data_dir: Path | None = None
    """Read the hub dataset from this local snapshot directory instead of downloading it."""
    val_fraction: float = 0.0
    """Fraction of the training source moved to ``test.parquet`` (exclusive with ``val_split``)."""
    val_split: str | None = None
    """Hub split (or, for local sources, a local file) written as ``test.parquet`` with labels."""
    max_rows: int | None = None
    """Read at most this many rows from each source split (the first ones)."""
    keep_labels: bool = False
    """Also put the answer in ``reward_model.ground_truth`` of training rows (supervised baseline)."""
    seed: int = 0
    """Seed of the ``val_fraction`` split."""
    data_source: str | None = None
    """``data_source`` column value; default ``verl_ext/prepared/<name>``."""
    cache_dir: Path | None = None
    """``datasets`` cache directory; default the ``datasets`` default (``HF_DATASETS_CACHE``)."""
    max_aspect_ratio: float = 200.0
    """Drop images whose long side exceeds this multiple of the short side (Qwen2-VL's resize refuses > 200)."""
    max_image_bytes: int = 64 << 20
    """Drop images over this many bytes (encoded) without decoding them."""
    max_question_chars: int = 8000
    """Drop questions longer than this (a prompt that long is a data error, not a question)."""

    def __post_init__(self) -> None:
        if not self.dataset:
            raise CLIError("dataset is required")
        if not 0.0 <= self.val_fraction < 1.0:
            raise CLIError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_fraction > 0 and self.val_split is not None:
            raise CLIError("val_fraction and val_split are exclusive: choose one way to get a validation split")
        if self.max_rows is not None and self.max_rows < 1:
            raise CLIError(f"max_rows must be >= 1, got {self.max_rows}")
        if self.max_aspect_ratio < 1:
            raise CLIError("max_aspect_ratio must be >= 1")
        if self.data_source is not None and not self.data_source.strip():
            raise CLIError("data_source must not be empty")


@dataclass
class SplitStats:
    """Counts for one output split."""

    read: int = 0
    """Source rows looked at (including unreadable ones)."""
    written: int = 0
    """Rows written to the output file."""
    dropped: Counter = field(default_factory=Counter)
    """Drop reason -> number of rows."""


@dataclass
class PrepareResult:
    """What a run did."""

    paths: dict[str, Path] = field(default_factory=dict)
    """Output split -> file written by this run."""
    stats: dict[str, SplitStats] = field(default_factory=dict)
    """Output split -> its counts."""
    failures: Counter = field(default_factory=Counter)
    """Reason -> number of whole files or sources that could not be read."""
    interrupted: bool = False
    """True when the run was stopped (Ctrl-C) and only the rows finished before were written."""

    @property
    def written(self) -> int:
        """Rows written over all splits."""
        return sum(s.written for s in self.stats.values())

    @property
    def exit_code(self) -> int:
        """0 if anything was written, else 1; 130 when interrupted (what was finished is written)."""
        return 130 if self.interrupted else 0 if self.written else 1


# ------------------------------------------------------------------------------------------------ field values


def question_text(value: Any) -> str | None:
    """The question of a row: a string, or the last user turn of a chat message list."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        # Chat-format sources (e.g. an already converted verl parquet) keep the question in the last user turn.
        for message in reversed(list(value)):
            if isinstance(message, Mapping) and message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else None
    return None


def answer_text(value: Any) -> str:
    """The original answer as a string (``""`` if none); R1-V style ``<answer>x</answer>`` is unwrapped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, Mapping):
        # verl-format sources nest it: reward_model.ground_truth, or extra_info.answer.
        return next((answer_text(value[k]) for k in ("ground_truth", "answer") if value.get(k)), "")
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(part for part in map(answer_text, value) if part)
    text = str(value).strip()
    start, end = text.find("<answer>"), text.rfind("</answer>")
    if start != -1 and end > start:
        text = text[start + len("<answer>") : end].strip()
    return text


def choice_texts(value: Any) -> list[str]:
    """Option texts of a multiple-choice question, in order; ``[]`` when there are none or too many."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()  # numpy arrays from pandas-written parquet
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith(("[", "{")):
            return []  # one bare string is not a list of options
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return []
    if isinstance(value, Mapping):
        items = [str(v) for _, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
    elif isinstance(value, Sequence):
        items = [str(v) for v in value if v is not None]
    else:
        return []
    return items if len(items) <= MAX_CHOICES else []


def image_items(value: Any) -> list[Any]:
    """The images of a row's image value: none, one, or a list (None items dropped)."""
    if value is None:
        return []
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [item for item in value if item is not None]
    return [value]


def _png(image: Any) -> bytes:
    if image.mode not in {"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"}:  # modes PNG cannot store
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _read_image_path(value: str | os.PathLike[str], base_dir: Path | None, max_bytes: int) -> bytes:
    text = os.fspath(value).removeprefix("file://")
    path = Path(text).expanduser()
    if not path.is_absolute():
        if base_dir is None:
            raise RowRejected(MISSING_IMAGE, f"relative image path {text!r} with no local directory to resolve it")
        path = base_dir / path
    try:
        info = path.stat()  # before opening: opening a FIFO would block, a device would never end
        if not stat.S_ISREG(info.st_mode):
            raise RowRejected(NOT_A_FILE, f"{path} is not a regular file")
        if info.st_size > max_bytes:
            raise RowRejected(IMAGE_TOO_LARGE, f"{path} has {info.st_size} bytes (limit {max_bytes})")
        return path.read_bytes()
    except OSError as exc:
        raise RowRejected(MISSING_IMAGE, f"cannot read {path}: {exc.strerror or exc}") from None


def image_bytes(
    item: Any, base_dir: Path | None = None, max_aspect_ratio: float = 200.0, max_bytes: int = 64 << 20
) -> bytes:
    """One image of a source row as checked PNG/JPEG bytes (other formats are re-encoded as PNG).

    Accepts a PIL image, raw bytes, a ``{"bytes", "path"}`` dict (``datasets``' Image storage), a file path
    (relative paths are resolved against ``base_dir``, the directory of the data file) or a base64 data URI.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, Mapping):  # datasets' Image storage
        item = item.get("bytes") or item.get("path")
        if not item:
            raise RowRejected(MISSING_IMAGE, "image dict has neither bytes nor path")
    if isinstance(item, Image.Image):
        try:
            data = _png(item)
        except Exception as exc:  # a lazily loaded image can fail only now, when its pixels are read
            raise RowRejected(CORRUPT_IMAGE, f"{type(exc).__name__}: {exc}") from None
    elif isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
    elif isinstance(item, str) and item.startswith("data:image/"):
        try:
            data = base64.b64decode(item.split(",", 1)[1], validate=True)
        except (IndexError, binascii.Error) as exc:
            raise RowRejected(CORRUPT_IMAGE, f"bad base64 data URI: {exc}") from None
    elif isinstance(item, str | os.PathLike):
        if not os.fspath(item).strip():
            raise RowRejected(MISSING_IMAGE, "empty image path")
        data = _read_image_path(item, base_dir, max_bytes)
    else:
        raise RowRejected(BAD_IMAGE_VALUE, f"an image column value of type {type(item).__name__}")
    if not data:
        raise RowRejected(MISSING_IMAGE, "image has no bytes")
    if len(data) > max_bytes:
        raise RowRejected(IMAGE_TOO_LARGE, f"{len(data)} bytes (limit {max_bytes})")
    try:
        with open_verified(data) as image:
            width, height = image.size
            if image.format not in ("PNG", "JPEG"):
                data = _png(image)
    except UnidentifiedImageError:
        raise RowRejected(CORRUPT_IMAGE, "not a recognised image format") from None
    except Exception as exc:  # PIL signals bad data with many exception types (OSError, SyntaxError, ...)
        raise RowRejected(CORRUPT_IMAGE, f"{type(exc).__name__}: {exc}") from None
    if min(width, height) < 1:
        raise RowRejected(CORRUPT_IMAGE, f"image is {width}x{height}")
    if max(width, height) / min(width, height) > max_aspect_ratio:
        raise RowRejected(EXTREME_ASPECT_RATIO, f"image is {width}x{height}")
    return data


@dataclass(frozen=True)
class RowContext:
    """Where a source row comes from."""

    index: int
    """Position of the row in its source split or file."""
    source: str
    """Hub name or file path, stored in ``extra_info["source"]``."""
    base_dir: Path | None
    """Directory that relative image paths are resolved against."""


def convert_row(
    values: Any, columns: Columns, context: RowContext, *, split: str, data_source: str, config: PrepareConfig
) -> dict[str, Any]:
    """Turn one source row into a schema row for ``split``, or raise :class:`RowRejected` with the drop reason.

    The validation split (``test``) keeps its labels and drops rows without one, as it is scored against them.
    """
    if not isinstance(values, Mapping):
        raise RowRejected(UNREADABLE_ROW, "invalid JSON line" if values is _BAD_LINE else "not a JSON object")
    question = question_text(values.get(columns.question))
    if question is None or not question.replace(IMAGE_PLACEHOLDER, "").strip():
        raise RowRejected(MISSING_QUESTION)
    if len(question) > config.max_question_chars:
        raise RowRejected(QUESTION_TOO_LONG, f"{len(question)} characters (limit {config.max_question_chars})")
    items = image_items(values.get(columns.image))
    if not items:
        raise RowRejected(MISSING_IMAGE, f"no value in column {columns.image!r}")
    try:
        # Checked before decoding: a row whose placeholders cannot match is dropped without the cost.
        compose_prompt(question, len(items))
    except ImageCountMismatch as exc:
        raise RowRejected(IMAGE_COUNT_MISMATCH, str(exc)) from None
    except SchemaError as exc:  # e.g. nothing but the format instruction
        raise RowRejected(MISSING_QUESTION, str(exc)) from None
    images = [image_bytes(item, context.base_dir, config.max_aspect_ratio, config.max_image_bytes) for item in items]
    answer = answer_text(values.get(columns.answer)) if columns.answer else ""
    if split == "test" and not answer:
        raise RowRejected(MISSING_ANSWER, "the validation split is scored against labels")
    choices = choice_texts(values.get(columns.choices)) if columns.choices else []
    for what, text in [("question", question), ("answer", answer), *(("choice", choice) for choice in choices)]:
        try:  # parquet cannot store a lone surrogate ("\ud800" in JSON, or undecodable bytes)
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RowRejected(INVALID_TEXT, f"the {what} is not valid Unicode ({exc.reason} at {exc.start})") from None
    try:
        return build_row(
            data_source=data_source, question=question, images=images, split=split, index=context.index,
            answer=answer, choices=choices, source=context.source, keep_label=config.keep_labels or split == "test",
        )
    except SchemaError as exc:
        raise RowRejected(ERROR, str(exc)) from None


# ------------------------------------------------------------------------------------------------ sources


@dataclass
class SourceRows:
    """The rows of one source split, addressable by position."""

    name: str
    """Hub name or file path(s), for messages."""
    columns: list[str]
    """Column names present in the data."""
    length: int
    """Number of rows."""
    get: Callable[[int], tuple[Any, RowContext]]
    """Row ``i`` -> (its values, not a dict when the line could not be read; where it comes from)."""


def _json_rows(text: str) -> list[Any]:
    """Rows of a ``.json`` file: a list of objects, a dict of equal-length columns, or one list under a key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines saved with a .json suffix
            return _jsonl_rows(text)
        raise
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lists = list(data.values())
        if len(lists) == 1 and all(isinstance(row, dict) for row in lists[0]):
            return lists[0]  # {"data": [{...}, ...]}
        if len({len(v) for v in lists}) == 1:
            return [dict(zip(data, values)) for values in zip(*lists)]  # {"col": [...], ...}
    raise ValueError("expected a list of rows, or a dict of equal-length column lists")


def _jsonl_rows(text: str) -> list[Any]:
    rows: list[Any] = []
    for line in filter(str.strip, text.splitlines()):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append(_BAD_LINE)
    return rows


def read_local_file(path: Path) -> list[Any]:
    """The rows of one local data file (dicts; unreadable JSON lines as a sentinel).

    Hub sets and snapshot directories go through ``datasets.load_dataset`` (:func:`_load_split`);
    local JSON/JSONL files do not, for a measured reason: ``datasets`` 5.2.0's json builder rejects the
    whole file for one malformed line (``DatasetGenerationError``) or one byte that is not UTF-8
    (``UnicodeDecodeError``), measured 2026-12-04 on three-line files, where this reader drops that one
    row and counts it (``unreadable_row``/``invalid_text``), as the drop report promises.
    """
    if path.suffix.lower() == ".parquet":
        return read_rows(path)
    # Undecodable bytes become lone surrogates: only the rows holding them are dropped (invalid_text).
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    return _jsonl_rows(text) if path.suffix.lower() == ".jsonl" else _json_rows(text)


def _local_rows(paths: Sequence[Path], max_rows: int | None, failures: Counter) -> SourceRows:
    records: list[tuple[Any, RowContext]] = []
    for path in paths:
        try:
            rows = read_local_file(path)
        except Exception as exc:  # OSError, UnicodeDecodeError, JSON and Arrow errors: the file cannot be used
            failures[UNREADABLE_FILE] += 1
            logger.warning("%s: %s: %s: %s", UNREADABLE_FILE, path, type(exc).__name__, exc)
            continue
        if max_rows is not None:
            rows = rows[: max(0, max_rows - len(records))]
        records += [(row, RowContext(i, str(path), path.parent.absolute())) for i, row in enumerate(rows)]
    columns = sorted({key for row, _ in records if isinstance(row, dict) for key in row})
    return SourceRows(", ".join(map(str, paths)), columns, len(records), records.__getitem__)


@dataclass(frozen=True)
class ResolvedSource:
    """How ``dataset`` will be read."""

    spec: SourceSpec
    """Column candidates (a known dataset's, or the generic ones)."""
    load_from: str = ""
    """What is passed to ``datasets.load_dataset`` (hub id or directory); empty for files."""
    label: str = ""
    """Stored in ``extra_info["source"]``: the hub name or snapshot directory (files name themselves)."""
    files: tuple[Path, ...] = ()
    """The local data files; empty for a hub dataset."""
    base_dir: Path | None = None
    """Directory for relative image paths in hub snapshots."""


def _is_local_file(value: str) -> bool:
    path = Path(value).expanduser()
    if path.exists():
        return path.is_file()
    # A path that does not exist is a missing local file (counted as unreadable), unless it names a known dataset.
    return sources.looks_like_path(value) and sources.lookup(value) is None


def resolve_source(config: PrepareConfig) -> ResolvedSource:
    """Decide whether ``config.dataset`` names local files or a hub dataset; raises CLIError if unclear."""
    values = config.dataset
    if all(_is_local_file(v) for v in values):
        paths = tuple(Path(v).expanduser() for v in values)
        bad = [str(p) for p in paths if p.suffix.lower() not in DATA_SUFFIXES]
        if bad:
            raise CLIError(f"unsupported data file type: {', '.join(bad)} (use {', '.join(DATA_SUFFIXES)})")
        if config.data_dir is not None:
            raise CLIError("data_dir is for hub datasets; local files are read directly")
        return ResolvedSource(sources.GENERIC, files=paths)
    if len(values) > 1:
        raise CLIError("several dataset values are only supported for local data files")
    value = values[0]
    spec = sources.lookup(value)
    if config.data_dir is not None and not config.data_dir.expanduser().is_dir():
        raise CLIError(f"data_dir {config.data_dir} is not a directory")
    directory = config.data_dir or (Path(value) if Path(value).expanduser().is_dir() else None)
    if directory is not None:
        load_from = str(directory.expanduser().absolute())
        # A snapshot of a known dataset is still that dataset; any other directory is named by its path.
        label = spec.hub_name if spec else (value if config.data_dir is not None else load_from)
        return ResolvedSource(spec or sources.GENERIC, load_from, label, base_dir=Path(load_from))
    if spec is not None:
        return ResolvedSource(spec, spec.hub_name, spec.hub_name)
    if not is_hub_id(value):
        near = difflib.get_close_matches(value.lower(), sorted(sources.KNOWN), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise CLIError(
            f"dataset {value!r} is not a known dataset, a local path or a hub id (Org/Name): {hint}"
            f"known: {', '.join(sorted(sources.KNOWN))}"
        )
    return ResolvedSource(sources.GENERIC, value, value)


# ------------------------------------------------------------------------------------------------ run


def _load_split(resolved: ResolvedSource, split: str, config: PrepareConfig, failures: Counter) -> SourceRows | None:
    if resolved.files:
        return _local_rows(resolved.files, config.max_rows, failures)
    import datasets

    cache_dir = str(config.cache_dir) if config.cache_dir else None
    try:
        # Arrow format: images keep their encoded bytes (not decoded to PIL and re-encoded).
        ds = datasets.load_dataset(resolved.load_from, split=split, cache_dir=cache_dir).with_format("arrow")
    except Exception as exc:  # hub, network, cache and format errors all mean the same thing here
        if isinstance(exc, ValueError) and "unknown split" in str(exc).lower():
            raise CLIError(f"{resolved.load_from}: {exc}") from None  # a split the dataset does not have
        failures[UNREADABLE_SOURCE] += 1
        logger.error("%s: %s: %s: %s", UNREADABLE_SOURCE, resolved.load_from, type(exc).__name__, exc)
        return None

    def get(i: int) -> tuple[Any, RowContext]:
        return ds[i].to_pylist()[0], RowContext(i, resolved.label, resolved.base_dir)

    length = len(ds) if config.max_rows is None else min(len(ds), config.max_rows)
    return SourceRows(f"{resolved.label}@{split}", list(ds.column_names), length, get)


def _plan(config: PrepareConfig, resolved: ResolvedSource, failures: Counter) -> list[tuple[Any, ...]]:
    """The output splits to write: (split, source rows, the positions to read, the columns to read).

    The columns are resolved for every split before anything is written, so a wrong name fails fast (exit 2).
    """
    train = _load_split(resolved, config.split, config, failures)
    if train is None or train.length == 0:
        return []
    jobs = [("train", train, range(train.length))]
    if config.val_fraction > 0:
        # A requested validation split never silently comes out empty (from two rows on).
        n_val = max(round(train.length * config.val_fraction), min(1, train.length - 1))
        val = set(random.Random(config.seed).sample(range(train.length), n_val))
        jobs = [("train", train, [i for i in range(train.length) if i not in val]), ("test", train, sorted(val))]
    elif config.val_split is not None:
        if resolved.files:
            if not _is_local_file(config.val_split):
                raise CLIError("for local data files, val_split takes the path of a labelled data file")
            test = _local_rows([Path(config.val_split).expanduser()], config.max_rows, failures)
        else:
            test = _load_split(resolved, config.val_split, config, failures)
        if test is not None and test.length:
            jobs.append(("test", test, range(test.length)))
    names = {what: getattr(config, f"{what}_column") for what in ("image", "question", "answer", "choices")}
    planned = []
    for split, rows, indices in jobs:
        try:
            planned.append((split, rows, indices, sources.resolve_columns(rows.columns, resolved.spec, **names)))
        except ColumnError as exc:
            raise CLIError(f"{rows.name}: {exc}") from None
    return planned


class ReasonLog:
    """Log the first few events of each reason at ``level``; the rest go to the debug log (the summary counts them)."""

    LIMIT = 3

    def __init__(self, log: logging.Logger, level: int, what: str) -> None:
        self.log, self.level, self.what, self.seen = log, level, what, Counter()

    def __call__(self, reason: str, where: str, detail: str = "") -> None:
        self.seen[reason] += 1
        if self.seen[reason] == self.LIMIT + 1:
            self.log.log(self.level, "%s: more %s; from now on they are only counted in the summary", self.what, reason)
        level = self.level if self.seen[reason] <= self.LIMIT else logging.DEBUG
        self.log.log(level, "%s %s: %s%s", self.what, where, reason, f" ({detail})" if detail else "")


def counts(counter: Counter) -> str:
    """``reason=n, ...`` in name order, or ``none``."""
    return ", ".join(f"{reason}={n}" for reason, n in sorted(counter.items())) or "none"


def _content_key(row: Mapping[str, Any]) -> bytes:
    """What makes two rows the same question: the prompt text and the image bytes."""
    digest = hashlib.sha256(row["prompt"][0]["content"].encode())
    for image in row["images"]:
        digest.update(image["bytes"])
    return digest.digest()


def _run_job(
    split: str, rows: SourceRows, indices: Sequence[int], columns: Columns, data_source: str,
    config: PrepareConfig, stats: SplitStats, keys: set[bytes],
) -> bool:
    """Convert and write ``split``; returns False if interrupted (the finished rows are still written)."""
    log_drop = ReasonLog(logger, logging.WARNING, f"{split}: dropped")
    with (
        RowWriter(config.out / f"{split}.parquet") as writer,
        tqdm(indices, desc=f"prepare {split}", unit="row", disable=None, dynamic_ncols=True) as progress,
    ):
        try:
            for i in progress:
                stats.read += 1
                try:
                    values, context = rows.get(i)
                    row = convert_row(values, columns, context, split=split, data_source=data_source, config=config)
                    key = _content_key(row)
                    if key in keys:
                        raise RowRejected(DUPLICATE, "same question and images as a row already written")
                    keys.add(key)
                    writer.add(row)
                    stats.written += 1
                except RowRejected as exc:
                    stats.dropped[exc.reason] += 1
                    log_drop(exc.reason, f"{context.source} row {context.index}", exc.detail)
                except Exception as exc:  # one broken row must not end the run; the traceback goes to the log
                    stats.dropped[ERROR] += 1
                    logger.warning("%s: row %s failed", split, i, exc_info=exc)
        except KeyboardInterrupt:
            logger.warning("%s: interrupted; writing the %d rows finished so far", split, stats.written)
            return False
    return True


def _write_summary(config: PrepareConfig, result: PrepareResult, data_source: str, seconds: float) -> None:
    summary = {
        "config": dataclasses.asdict(config),
        "data_source": data_source,
        "files": result.paths,
        "splits": {split: vars(s) for split, s in result.stats.items()},  # read, written, dropped
        "unreadable": result.failures,
        "interrupted": result.interrupted,
        "seconds": round(seconds, 2),
    }
    write_json(config.out / SUMMARY_NAME, summary, default=str)  # paths as strings, keys sorted


def _log_summary(result: PrepareResult) -> None:
    for split, s in result.stats.items():
        logger.info("%s: read %d rows, wrote %d, dropped %d (%s)", split, s.read, s.written, s.dropped.total(),
                    counts(s.dropped))
    if result.failures:
        logger.info("unreadable: %s", counts(result.failures))
    read = sum(s.read for s in result.stats.values())
    dropped = sum(s.dropped.total() for s in result.stats.values())
    files = ", ".join(f"{split}={path}" for split, path in result.paths.items()) or "nothing"
    unreadable = f", {result.failures.total()} unreadable file(s)/source(s)" if result.failures else ""
    logger.info("prepare %s: read %d rows, wrote %d, dropped %d%s -> %s",
                "interrupted" if result.interrupted else "done", read, result.written, dropped, unreadable, files)


def _warn_if_foreign(config: PrepareConfig) -> None:
    """A rerun into a folder prepared from another dataset replaces its files: say so."""
    try:
        previous = json.loads((config.out / SUMMARY_NAME).read_text())["config"]["dataset"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if list(previous) != list(config.dataset):
        logger.warning(
            "%s holds files prepared from %s; they are replaced by %s's (use another out to keep both)",
            config.out, ", ".join(map(str, previous)), ", ".join(config.dataset),
        )


def prepare(config: PrepareConfig) -> PrepareResult:
    """Run the preparation described by ``config``; see the module docstring."""
    start = time.perf_counter()
    resolved = resolve_source(config)
    data_source = config.data_source or sources.data_source_name(config.dataset[0])
    result = PrepareResult()
    jobs = _plan(config, resolved, result.failures)
    keys: set[bytes] = set()  # over both splits: a duplicate is kept once, never in train and test
    config = dataclasses.replace(config, out=config.out.expanduser().absolute())
    _warn_if_foreign(config)
    for split, rows, indices, columns in jobs:
        stats = result.stats.setdefault(split, SplitStats())
        path = config.out / f"{split}.parquet"
        try:
            finished = _run_job(split, rows, indices, columns, data_source, config, stats, keys)
        except OSError as exc:  # e.g. a full disk: this file is lost, but files already written stay valid
            result.failures[WRITE_ERROR] += 1
            logger.error("%s: could not write %s: %s", split, path, exc)
            stats.written = 0
            continue
        if stats.written:
            result.paths[split] = path
        elif path.exists():
            logger.warning("%s: no rows written; %s from an earlier run is left as it was", split, path)
        if not finished:
            result.interrupted = True
            break
    if result.written:
        try:
            _write_summary(config, result, data_source, time.perf_counter() - start)
        except OSError as exc:  # the data files are complete; a missing summary must not fail the run
            logger.warning("could not write %s: %s", config.out / SUMMARY_NAME, exc)
    _log_summary(result)
    return result


# ------------------------------------------------------------------------------------------------ CLI


USAGE = "usage: python -m verl_ext.data.prepare dataset=NAME|HUB_ID|DIR|FILE[,...] out=DIR [key=value ...]"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 written, 1 nothing written, 2 usage error, 130 interrupted).

    The settings are :class:`PrepareConfig`'s fields as ``key=value`` (``dataset`` takes one value or a
    list: ``dataset=[a.jsonl,b.jsonl]``).
    """
    argv = start_command(argv, __doc__, USAGE)
    if argv is None:
        return 0
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = prepare(settings_from_argv(PrepareConfig, argv, USAGE))
    except CLIError as exc:
        logger.error("usage error: %s", exc)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    return result.exit_code


def _terminate(signum, frame) -> None:
    # SIGTERM ends the run like Ctrl-C: the rows finished so far are written, the exit status says so.
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
