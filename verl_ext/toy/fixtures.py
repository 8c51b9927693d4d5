"""Small local copies of MathVista, MathVerse, We-Math and MathVision in their real hub schemas.

The rows and feature types (``fixtures.json``) follow the sources of :mod:`verl_ext.eval.benchmarks`, so
``python -m verl_ext.eval ... eval.data_dir=DIR`` reads them as it reads a hub snapshot where nothing may be
downloaded (the tests, the CPU mode of ``examples/*.sh``). Images are one-colour PNGs (tests read the colour
back to tell them apart); the answers are real, but not readable from these pictures.

    python -m verl_ext.toy.fixtures out=DIR [per_benchmark=N] [format=parquet|jsonl]

writes ``DIR/<benchmark>/<split>.parquet`` (or ``.jsonl``, its images as files next to it) and prints ``DIR``.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import datasets
from datasets import Features, Image, List, Value
from omegaconf import MISSING
from PIL import Image as PILImage

from verl_ext.eval.benchmarks import BENCHMARKS, parse_benchmarks

logger = logging.getLogger("verl_ext.toy.fixtures")

KINDS = ("parquet", "jsonl")
_DATA = json.loads(resources.files(__package__).joinpath("fixtures.json").read_text(encoding="utf-8"))


def _feature(spec: Any) -> Any:
    # fixtures.json spells a feature as its dtype, "image", [item] or {column: feature}.
    if isinstance(spec, dict):
        return {key: _feature(value) for key, value in spec.items()}
    if isinstance(spec, list):
        return List(_feature(spec[0]))
    return Image() if spec == "image" else Value(spec)


FEATURES = {name: Features(_feature(entry["features"])) for name, entry in _DATA.items()}
IMAGE_COLUMN = {name: next(k for k, v in f.items() if isinstance(v, Image)) for name, f in FEATURES.items()}
ID_FIELDS = {name: tuple(entry["id_fields"]) for name, entry in _DATA.items()}
"""The columns a benchmark's prompt ids are made of: renamed in the copies ``benchmark_rows`` adds."""


def _png(color: Sequence[int]) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 48), tuple(color)).save(buffer, format="PNG")
    return buffer.getvalue()


def _rows(name: str) -> list[dict[str, Any]]:
    rows = copy.deepcopy(_DATA[name]["rows"])
    column = IMAGE_COLUMN[name]
    for row in rows:
        image = row[column]
        row[column] = {"bytes": _png(image["color"]), "path": image["path"]}
    return rows


ROWS = {name: functools.partial(_rows, name) for name in _DATA}


def benchmark_rows(name: str, n: Optional[int] = None) -> list[dict[str, Any]]:
    """The fixture rows of benchmark ``name``: all, the first ``n``, or more: copies in order with ``-1``, ``-2``,
    ... appended to the id columns (one suffix per round, so We-Math's multi-step problems stay complete)."""
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
    """Write ``per_benchmark`` rows (default: the 3-4 written) of each of ``benchmarks`` (default: all) as
    ``data_dir/NAME/SPLIT.{parquet,jsonl}`` in its real schema (JSONL: image files, relative paths in the
    image column); returns ``data_dir``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    data_dir = Path(data_dir)
    names = parse_benchmarks(",".join(benchmarks)) if benchmarks is not None else list(ROWS)
    for name in names:
        split = BENCHMARKS[name].split
        rows = benchmark_rows(name, per_benchmark)
        folder = data_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "parquet":
            datasets.Dataset.from_list(rows, features=FEATURES[name]).to_parquet(str(folder / f"{split}.parquet"))
        else:
            column = IMAGE_COLUMN[name]
            (folder / "images").mkdir(exist_ok=True)
            with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                for i, row in enumerate(rows):
                    relative = f"images/{i}.png"
                    (folder / relative).write_bytes(row.pop(column)["bytes"])
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
    from verl_ext.config.compose import CLIError, first_line, run_command, settings_from_argv

    def command(argv: list[str]) -> int:
        args = settings_from_argv(FixturesCommand, argv, USAGE)
        try:
            print(write_benchmark_files(Path(args.out), args.format, per_benchmark=args.per_benchmark,
                                        benchmarks=args.benchmarks))
        except ValueError as err:
            raise CLIError(first_line(err)) from None
        return 0

    return run_command(argv, FixturesCommand.__doc__, USAGE, command)


if __name__ == "__main__":
    sys.exit(main())
