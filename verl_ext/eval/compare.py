"""``python -m verl_ext.eval.compare``: several evaluation runs in one table laid out like the MM-UPT paper's.

Usage::

    python -m verl_ext.eval.compare --paper-table 1 \\
        --row "Qwen2.5-VL-7B=outputs/eval/base" \\
        --row "MM-UPT (Geometry3K)=outputs/eval/mmupt_geometry3k" --out table1.md

Each ``--row "LABEL=DIR"`` is one run of ``python -m verl_ext.eval`` (its directory or its results.json),
in the order given. A row whose label is one of the paper's rows (``--list-rows``) gets the paper's
numbers beside ours (each cell ``ours / paper``), any other "—". ``Δ base`` is a row's Avg minus the Avg
of the model it was trained from (ours from the rows given, the paper's from the paper), the improvement
the paper reports. Exit status 0, or 2 for a usage error (a malformed row, a missing results file).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from verl_ext.eval.benchmarks import BENCHMARKS
from verl_ext.eval.report import COLUMNS, PAPER_SOURCE, PAPER_TABLE1, TABLE_BENCHMARKS
from verl_ext.eval.report import format_accuracy, md_table, table_row

logger = logging.getLogger("verl_ext.eval.compare")

BASE_7B = "Qwen2.5-VL-7B"


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's tables: its rows' published accuracies and which model each row was trained from."""

    number: int
    title: str
    rows: Mapping[str, Mapping[str, float]]
    """Row label -> {benchmark or ``avg``: accuracy in %}; a table may publish only ``avg``."""
    base: Mapping[str, str] = field(default_factory=dict)
    """Row label -> label of the model it was post-trained from (for ``Δ base``)."""
    default_base: Optional[str] = None
    """What a row not in ``base`` was trained from (e.g. supervised GRPO on GeoQA: the 7B model)."""


# Table 2 publishes the average over the four benchmarks; its base and original-data rows are Table 1's.
_SYNTH_AVG = {
    "In-context synthesis (Geometry3K)": 51.00,
    "In-context synthesis (GeoQA)": 52.20,
    "In-context synthesis (MMR1)": 52.94,
    "Direct synthesis (Geometry3K)": 52.32,
    "Direct synthesis (GeoQA)": 52.67,
    "Direct synthesis (MMR1)": 52.16,
}
# Table 3: the average over the four benchmarks before and after MM-UPT on Geometry3K.
_BACKBONES = {"Qwen2.5-VL-3B": (39.00, 41.72), "MM-Eureka-7B": (53.10, 53.78), "ThinkLite-VL-7B": (52.63, 54.07)}

PAPER_TABLES: dict[int, PaperTable] = {
    1: PaperTable(
        1,
        "MM-UPT on standard datasets without labels, and supervised GRPO, Qwen2.5-VL-7B",
        PAPER_TABLE1,
        default_base=BASE_7B,
    ),
    2: PaperTable(
        2,
        "MM-UPT on synthetic questions written by the model from each seed set, Qwen2.5-VL-7B",
        {
            **{name: row for name, row in PAPER_TABLE1.items() if name == BASE_7B or name.startswith("MM-UPT (")},
            **{name: {"avg": avg} for name, avg in _SYNTH_AVG.items()},
        },
        default_base=BASE_7B,
    ),
    3: PaperTable(
        3,
        "MM-UPT (Geometry3K) on other backbones",
        {
            **{name: {"avg": before} for name, (before, _) in _BACKBONES.items()},
            **{f"{name} + MM-UPT": {"avg": after} for name, (_, after) in _BACKBONES.items()},
        },
        {f"{name} + MM-UPT": name for name in _BACKBONES},
    ),
}
"""The paper's tables by number."""


class CompareError(ValueError):
    """A usage error: malformed row, unreadable results."""


@dataclass(frozen=True)
class Row:
    """One of our runs."""

    label: str
    path: Path
    """The results.json read."""
    model: str
    summary: Mapping[str, Mapping[str, Any]]
    """``benchmarks`` of results.json: per benchmark its accuracy, question count, ..."""


def parse_row(spec: str) -> tuple[str, Path]:
    """``"LABEL=DIR"`` -> (label, path); the label is everything before the first ``=``."""
    label, sep, path = spec.partition("=")
    if not sep or not label.strip() or not path.strip():
        raise CompareError(f'malformed --row {spec!r}: expected "LABEL=DIR"')
    return label.strip(), Path(path.strip()).expanduser()


def load_row(label: str, path: Path) -> Row:
    """Read one run's results.json (``path`` is the file or the eval output directory)."""
    file = path / "results.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise CompareError(f"{label}: cannot read {file}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise CompareError(f"{label}: {file} is not JSON: {err}") from None
    summary = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(summary, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("accuracy"), int | float) for v in summary.values()
    ):
        raise CompareError(f"{label}: {file} is not a results.json of python -m verl_ext.eval")
    return Row(label=label, path=file, model=str(data.get("model", "")), summary=summary)


def _key(label: str) -> str:
    return re.sub(r"\s+", " ", label).strip().casefold()


def compare_markdown(rows: Sequence[Row], table: int | PaperTable, note: Optional[str] = None) -> str:
    """The markdown table of ``rows`` laid out like the paper's ``table``, with a heading and notes."""
    spec = table if isinstance(table, PaperTable) else PAPER_TABLES[table]
    paper_names = {_key(name): name for name in spec.rows}
    ours = {_key(row.label): table_row(row.summary) for row in rows}
    cells = []
    for row in rows:
        mine, name = ours[_key(row.label)], paper_names.get(_key(row.label))
        paper = spec.rows[name] if name else {}
        line = [row.label, *(f"{format_accuracy(mine[c])} / {format_accuracy(paper.get(c))}" for c in COLUMNS)]
        base = spec.base.get(name, spec.default_base) if name else spec.default_base
        if base is None or _key(base) == _key(row.label):  # no base, or the base model's own row
            line.append("")
        else:
            base_ours = ours.get(_key(base), {}).get("avg")
            ours_delta = None if base_ours is None or mine["avg"] is None else mine["avg"] - base_ours
            base_paper = spec.rows.get(base, {}).get("avg")
            paper_delta = None if base_paper is None or "avg" not in paper else paper["avg"] - base_paper
            line.append(f"{format_accuracy(ours_delta, True)} / {format_accuracy(paper_delta, True)}")
        cells.append(line)
    unmatched = [row.label for row in rows if _key(row.label) not in paper_names]
    partial = [row.label for row in rows if any(ours[_key(row.label)][b] is None for b in TABLE_BENCHMARKS)]

    header = ["Model", *(BENCHMARKS[b].title for b in TABLE_BENCHMARKS), "Avg", "Δ base"]
    lines = [
        f"### Table {spec.number}: {spec.title}",
        "",
        "Accuracy (%). Each cell: ours / paper (— where there is no number). Δ base: Avg minus the Avg of "
        "the model the row was trained from.",
        "",
        md_table(header, cells),
        "",
        f"Paper numbers: {PAPER_SOURCE}, Table {spec.number}"
        + ("" if spec.number == 1 else " (per-benchmark numbers not included here: Avg only)")
        + ".",
    ]
    if unmatched:
        lines.append(f"Rows without paper numbers: {', '.join(unmatched)} (paper rows: {', '.join(spec.rows)}).")
    if partial:
        lines.append(
            f"Not every benchmark was evaluated for {', '.join(partial)}: their Avg is over the benchmarks "
            "evaluated, the paper's over all four."
        )
    if note:
        lines.append(note)
    lines += ["", "Results:"]
    for row in rows:
        counts = ", ".join(f"{b} {row.summary[b].get('n_prompts', '?')}" for b in row.summary)
        lines.append(f"- {row.label}: {row.path} (model {row.model or '?'}; questions: {counts or 'none'})")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: prints the table; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The one command with --flags instead of key=value: a row label holds commas and parentheses
    # ("GRPO, supervised (MMR1)"), which a key=value list would split.
    p = argparse.ArgumentParser(
        prog="python -m verl_ext.eval.compare",
        description="Several verl_ext.eval results side by side, laid out like a table of the MM-UPT paper.",
    )
    p.add_argument("--row", action="append", default=[], metavar="LABEL=DIR", help="a run: label and eval output dir")
    p.add_argument("--paper-table", type=int, choices=sorted(PAPER_TABLES), default=1, help="paper table (1, 2, 3)")
    p.add_argument("--note", default=None, help="a line added under the table")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown to this file")
    p.add_argument("--list-rows", action="store_true", help="print the paper's row labels of --paper-table and exit")
    args = p.parse_args(argv)
    spec = PAPER_TABLES[args.paper_table]
    if args.list_rows:
        print("\n".join(spec.rows))
        return 0
    try:
        if not args.row:
            raise CompareError("no --row given")
        rows = [load_row(*parse_row(text)) for text in args.row]
        labels = [_key(row.label) for row in rows]
        if duplicates := sorted({row.label for row in rows if labels.count(_key(row.label)) > 1}):
            raise CompareError(f"duplicate row label(s): {', '.join(duplicates)}")
    except CompareError as err:
        logger.error("%s", err)
        return 2
    text = compare_markdown(rows, spec, note=args.note)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
