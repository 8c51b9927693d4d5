"""Small local copies of the four benchmarks in their real hub schemas, with images drawn locally.

The rows follow the sources named in :mod:`verl_ext.eval.benchmarks` (column names, feature types,
question and option layouts), so ``python -m verl_ext.eval ... eval.data_dir=DIR`` reads them through the same
code path as a hub snapshot. They stand in for the benchmarks where nothing may be downloaded: the test
suite, and the CPU mode of ``examples/*.sh``. Images are plain PNGs drawn with PIL; answers are real
but no model is expected to get them right from these pictures.

Usage::

    python -m verl_ext.toy.fixtures out=DIR [per_benchmark=N] [format=parquet|jsonl]

writes ``DIR/<benchmark>/<split>.parquet`` (or ``.jsonl`` with images as files next to it) for
MathVista, MathVerse, We-Math and MathVision, and prints ``DIR``.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import datasets
from datasets import Features, Image, List, Value
from omegaconf import MISSING
from PIL import Image as PILImage

from verl_ext.eval.benchmarks import BENCHMARKS, parse_benchmarks

logger = logging.getLogger("verl_ext.toy.fixtures")

__all__ = [
    "FEATURES",
    "ID_FIELDS",
    "IMAGE_COLUMN",
    "ROWS",
    "benchmark_rows",
    "main",
    "mathverse_rows",
    "mathvision_rows",
    "mathvista_rows",
    "png",
    "wemath_rows",
    "write_benchmark_files",
]

KINDS = ("parquet", "jsonl")


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    """A PNG of one colour, drawn here (tests read the colour back to check which image they got)."""
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ real schemas
# Feature types as the hub datasets declare them (see verl_ext/eval/benchmarks.py for the sources).

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

ID_FIELDS: dict[str, tuple[str, ...]] = {
    "mathvista": ("pid",),
    "mathverse": ("sample_index", "problem_index"),
    "wemath": ("ID",),
    "mathvision": ("id",),
}
"""The columns a benchmark's prompt ids are made of: renamed in the copies ``benchmark_rows`` adds."""


def benchmark_rows(name: str, n: Optional[int] = None) -> list[dict[str, Any]]:
    """The fixture rows of benchmark ``name``: all of them, the first ``n``, or more than there are.

    Beyond the hand-written rows, copies are added in order with ``-1``, ``-2``, ... appended to the id
    columns (the same suffix for a whole round, so We-Math's multi-step problems stay complete).
    """
    name = parse_benchmarks(name)[0]
    base = ROWS[name]()
    if n is None:
        return base
    if n < 1:
        raise ValueError(f"need at least one row per benchmark, got {n}")
    rows = []
    for k in range(n):
        row = copy.deepcopy(base[k % len(base)])
        round_ = k // len(base)
        if round_:
            for column in ID_FIELDS[name]:
                row[column] = f"{row[column]}-{round_}"
        rows.append(row)
    return rows


def write_benchmark_files(
    data_dir: Path,
    kind: str = "parquet",
    *,
    per_benchmark: Optional[int] = None,
    benchmarks: Optional[Iterable[str]] = None,
) -> Path:
    """Write the fixture rows as DIR/NAME/SPLIT.{parquet,jsonl} in each benchmark's real schema.

    ``per_benchmark``: rows per benchmark (default: the hand-written ones, 3-4 each); ``benchmarks``:
    which ones (default: all four). A JSONL copy stores its images as files next to it and their
    relative paths in the image column. Returns ``data_dir``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    data_dir = Path(data_dir)
    names = parse_benchmarks(",".join(benchmarks)) if benchmarks is not None else list(ROWS)
    for name in names:
        split = BENCHMARKS[name].split
        folder = data_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        rows = benchmark_rows(name, per_benchmark)
        if kind == "parquet":
            datasets.Dataset.from_list(rows, features=FEATURES[name]).to_parquet(str(folder / f"{split}.parquet"))
        else:
            column = IMAGE_COLUMN[name]
            with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                for i, row in enumerate(rows):
                    image = row.pop(column)
                    relative = f"images/{i}.png"
                    (folder / "images").mkdir(exist_ok=True)
                    (folder / relative).write_bytes(image["bytes"])
                    row[column if column in ("image", "image_path") else "image"] = relative
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        logger.info("%s: %d rows -> %s", name, len(rows), folder)
    return data_dir


@dataclass
class FixturesCommand:
    """``python -m verl_ext.toy.fixtures out=DIR [key=value ...]``: small local benchmark files in the
    real hub schemas (for ``eval.data_dir`` of ``python -m verl_ext.eval``)."""

    out: str = MISSING
    """Output directory (``DIR/<benchmark>/<split>.<format>``)."""
    per_benchmark: Optional[int] = None
    """Rows per benchmark (None: the 3-4 written)."""
    format: str = "parquet"
    """``parquet``, or ``jsonl`` with image files."""
    benchmarks: list[str] = field(default_factory=lambda: list(ROWS))
    """The benchmarks to write (default: all four)."""


USAGE = "usage: python -m verl_ext.toy.fixtures out=DIR [per_benchmark=N] [format=jsonl] [benchmarks=[wemath,...]]"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; prints the output directory and returns the exit status (2: a bad setting)."""
    from verl_ext.config.compose import CLIError, settings_from_argv, start_command

    argv = start_command(argv, FixturesCommand.__doc__, USAGE)
    if argv is None:
        return 0
    try:
        args = settings_from_argv(FixturesCommand, argv, USAGE)
        if args.per_benchmark is not None and args.per_benchmark < 1:
            raise ValueError(f"per_benchmark must be >= 1, got {args.per_benchmark}")
        out = write_benchmark_files(Path(args.out), args.format, per_benchmark=args.per_benchmark, benchmarks=args.benchmarks)
    except (CLIError, ValueError) as err:
        logger.error("%s", err)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
