"""Accuracy summaries, the Table 1 comparison with MM-UPT's numbers, and a bar chart.

Accuracy is per question: the share of a question's responses graded correct (0 or 1 with one
response), averaged over the benchmark's questions, in percent. MathVerse is broken down by problem
version, We-Math by step (one-step sub-questions, two- and three-step composites) together with its
four-dimensional metrics, MathVision by subject and MathVista by task.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from verl_ext.eval.benchmarks import BENCHMARKS, MATHVERSE_VERSIONS, WEMATH_STEPS

logger = logging.getLogger(__name__)

__all__ = [
    "PAPER_SOURCE",
    "PAPER_TABLE1",
    "TABLE_BENCHMARKS",
    "markdown_report",
    "plot_accuracy",
    "summarize",
    "table1_markdown",
    "wemath_four_dimensional",
]

PAPER_SOURCE = (
    'Wei et al., "Unsupervised Post-Training for Multi-Modal LLM Reasoning via GRPO" '
    "(MM-UPT), arXiv:2505.22453, Table 1"
)
TABLE_BENCHMARKS = ("mathvision", "mathverse", "mathvista", "wemath")
"""The paper's column order."""

# Accuracy (%) of Qwen2.5-VL-7B and its post-trained versions; source: PAPER_SOURCE.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "Qwen2.5-VL-7B": {"mathvision": 24.87, "mathverse": 43.83, "mathvista": 66.30, "wemath": 62.87, "avg": 49.47},
    "MM-UPT (Geometry3K)": {"mathvision": 27.33, "mathverse": 42.46, "mathvista": 68.50, "wemath": 66.61, "avg": 51.23},
    "MM-UPT (GeoQA)": {"mathvision": 27.07, "mathverse": 43.68, "mathvista": 68.90, "wemath": 68.22, "avg": 51.97},
    "MM-UPT (MMR1)": {"mathvision": 26.15, "mathverse": 44.87, "mathvista": 72.90, "wemath": 68.74, "avg": 53.17},
    "GRPO, supervised (MMR1)": {
        "mathvision": 29.01,
        "mathverse": 45.03,
        "mathvista": 71.40,
        "wemath": 67.24,
        "avg": 53.17,
    },
}
DEFAULT_REFERENCE = "Qwen2.5-VL-7B"


# ------------------------------------------------------------------------------------------ summaries


def _dedupe(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    # A resumed run may have rewritten a prompt whose batch was cut short: the last record wins.
    latest: dict[tuple, Mapping[str, Any]] = {}
    for record in records:
        key = (record["benchmark"], record.get("split"), str(record["prompt_id"]), int(record.get("response_index", 0)))
        latest[key] = record
    return list(latest.values())


def _prompt_scores(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    prompts: dict[str, dict[str, Any]] = {}
    for record in records:
        entry = prompts.setdefault(
            str(record["prompt_id"]),
            {"correct": [], "extracted": [], "category": record.get("category"), "meta": record.get("meta") or {}},
        )
        entry["correct"].append(bool(record["correct"]))
        entry["extracted"].append(record.get("extracted") is not None)
    for entry in prompts.values():
        entry["score"] = sum(entry["correct"]) / len(entry["correct"])
    return prompts


def _category_order(benchmark: str, names: Iterable[str]) -> list[str]:
    canonical = {"mathverse": MATHVERSE_VERSIONS, "wemath": WEMATH_STEPS}.get(benchmark, ())
    names = set(names)
    return [n for n in canonical if n in names] + sorted(n for n in names if n not in canonical)


def wemath_four_dimensional(prompts: Mapping[str, Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """We-Math's multi-step diagnosis over the problems whose sub-questions and composite were all graded.

    A question counts as solved when all its responses are correct. Per problem: IK (insufficient
    knowledge) = a sub-question and the composite wrong; IG (inadequate generalization) = all
    sub-questions right, composite wrong; CM (complete mastery) = composite right and all (strict) or
    any (loose) sub-question right; RM (rote memorization) = composite right and some (strict) or
    all (loose) sub-questions wrong. Score = 1 - (IK + IG/2 + RM) / N; RM's rate is RM / (CM + RM).
    """
    problems: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)
    for entry in prompts.values():
        key = str(entry["meta"].get("key") or "")
        steps = key.split("_")[0]
        if steps not in ("2steps", "3steps"):
            continue
        problems[(steps, str(entry["meta"].get("problem_id")))][key] = entry["score"] == 1.0
    counts = defaultdict(int)
    n = 0
    for (steps, _), solved in problems.items():
        n_sub = int(steps[0])
        subs = [f"{steps}_{i}" for i in range(1, n_sub + 1)]
        if f"{steps}_multi" not in solved or any(s not in solved for s in subs):
            continue  # an incomplete problem (an eval.max_samples cut) cannot be diagnosed
        n += 1
        sub = [solved[s] for s in subs]
        multi = solved[f"{steps}_multi"]
        if not multi:
            counts["IG" if all(sub) else "IK"] += 1
        else:
            counts["CM_strict" if all(sub) else "RM_strict"] += 1
            counts["RM_loose" if not any(sub) else "CM_loose"] += 1
    if n == 0:
        return None

    def pct(x: float) -> float:
        return 100.0 * x

    out: dict[str, Any] = {"problems": n}
    for name in ("IK", "IG", "CM_strict", "CM_loose"):
        out[name] = pct(counts[name] / n)
    for mode in ("strict", "loose"):
        rm, cm = counts[f"RM_{mode}"], counts[f"CM_{mode}"]
        out[f"RM_{mode}"] = pct(rm / (rm + cm)) if rm + cm else 0.0
        out[f"score_{mode}"] = pct((n - 0.5 * counts["IG"] - rm - counts["IK"]) / n)
    return out


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per benchmark: accuracy, counts, extraction rate, per-category accuracy (and We-Math's diagnosis)."""
    by_benchmark: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in _dedupe(records):
        by_benchmark[record["benchmark"]].append(record)
    summary: dict[str, dict[str, Any]] = {}
    for benchmark in sorted(by_benchmark, key=lambda b: (TABLE_BENCHMARKS + (b,)).index(b)):
        prompts = _prompt_scores(by_benchmark[benchmark])
        scores = [p["score"] for p in prompts.values()]
        n_responses = sum(len(p["correct"]) for p in prompts.values())
        categories: dict[str, list[float]] = defaultdict(list)
        for entry in prompts.values():
            if entry["category"] is not None:
                categories[str(entry["category"])].append(entry["score"])
        result: dict[str, Any] = {
            "accuracy": 100.0 * sum(scores) / len(scores),
            "n_prompts": len(prompts),
            "n_responses": n_responses,
            "extracted": 100.0 * sum(sum(p["extracted"]) for p in prompts.values()) / n_responses,
            "split": by_benchmark[benchmark][0].get("split"),
            "categories": {
                name: {
                    "accuracy": 100.0 * sum(categories[name]) / len(categories[name]),
                    "n_prompts": len(categories[name]),
                }
                for name in _category_order(benchmark, categories)
            },
        }
        if benchmark == "wemath":
            result["four_dimensional"] = wemath_four_dimensional(prompts)
        summary[benchmark] = result
    return summary


# ------------------------------------------------------------------------------------------ markdown


def format_accuracy(value: Optional[float], signed: bool = False) -> str:
    """An accuracy (or with ``signed`` a difference) in points with two decimals; "—" when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def table_row(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, Optional[float]]:
    """A run's accuracy per Table 1 benchmark (None where it did not run) and their average."""
    row: dict[str, Optional[float]] = {b: summary[b]["accuracy"] if b in summary else None for b in TABLE_BENCHMARKS}
    present = [v for v in row.values() if v is not None]
    row["avg"] = sum(present) / len(present) if present else None
    return row


def table1_markdown(
    summary: Mapping[str, Mapping[str, Any]], label: str = "ours", reference: str = DEFAULT_REFERENCE
) -> str:
    """Table 1 of the paper with our row and our difference to the ``reference`` row."""
    if reference not in PAPER_TABLE1:
        raise ValueError(f"unknown paper row {reference!r}; rows: {', '.join(PAPER_TABLE1)}")
    ours = table_row(summary)
    evaluated = [b for b in TABLE_BENCHMARKS if ours[b] is not None]
    titles = [BENCHMARKS[b].title for b in TABLE_BENCHMARKS]
    lines = [
        "| Model | " + " | ".join(titles) + " | Avg |",
        "| --- |" + " ---: |" * (len(titles) + 1),
    ]
    for name, row in PAPER_TABLE1.items():
        lines.append(
            f"| {name} (paper) | " + " | ".join(format_accuracy(row[b]) for b in TABLE_BENCHMARKS) + f" | {format_accuracy(row['avg'])} |"
        )
    lines.append(
        f"| **{label} (ours)** | " + " | ".join(format_accuracy(ours[b]) for b in TABLE_BENCHMARKS) + f" | {format_accuracy(ours['avg'])} |"
    )
    ref = PAPER_TABLE1[reference]
    # The paper's Avg covers all four benchmarks; compare ours with its mean over the ones we ran.
    ref_avg = sum(ref[b] for b in evaluated) / len(evaluated) if evaluated else None
    diffs = [None if ours[b] is None else ours[b] - ref[b] for b in TABLE_BENCHMARKS]
    avg_diff = None if ours["avg"] is None or ref_avg is None else ours["avg"] - ref_avg
    lines.append(
        f"| Δ ours − {reference} (paper) | "
        + " | ".join(format_accuracy(d, signed=True) for d in diffs)
        + f" | {format_accuracy(avg_diff, signed=True)} |"
    )
    notes = [f"Paper numbers: {PAPER_SOURCE}."]
    if len(evaluated) < len(TABLE_BENCHMARKS):
        notes.append(
            f"Our Avg is over the {len(evaluated)} benchmark(s) evaluated; its Δ compares with the "
            f"{reference} row's mean over the same benchmark(s)."
        )
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def _category_title(benchmark: str) -> str:
    return {"mathverse": "Problem version", "wemath": "Step", "mathvision": "Subject", "mathvista": "Task"}.get(
        benchmark, "Category"
    )


def markdown_report(
    summary: Mapping[str, Mapping[str, Any]],
    *,
    label: str = "ours",
    reference: str = DEFAULT_REFERENCE,
    header: Optional[Mapping[str, Any]] = None,
) -> str:
    """The full markdown report: run header, Table 1 comparison, per-benchmark breakdowns."""
    out = [f"# Evaluation: {label}", ""]
    for key, value in (header or {}).items():
        out.append(f"- **{key}**: {value}")
    if header:
        out.append("")
    out += ["## Comparison with MM-UPT Table 1 (accuracy, %)", "", table1_markdown(summary, label, reference)]
    for benchmark, result in summary.items():
        title = BENCHMARKS[benchmark].title if benchmark in BENCHMARKS else benchmark
        out += [
            f"## {title} ({result.get('split')})",
            "",
            f"Accuracy {result['accuracy']:.2f}% over {result['n_prompts']} questions "
            f"({result['n_responses']} responses; a final answer was found in {result['extracted']:.1f}% of them).",
            "",
        ]
        if result["categories"]:
            out += [f"| {_category_title(benchmark)} | Accuracy | Questions |", "| --- | ---: | ---: |"]
            out += [f"| {name} | {c['accuracy']:.2f} | {c['n_prompts']} |" for name, c in result["categories"].items()]
            out.append("")
        diagnosis = result.get("four_dimensional")
        if diagnosis:
            out += [
                f"Four-dimensional metrics over {diagnosis['problems']} multi-step problems "
                "(IK insufficient knowledge, IG inadequate generalization, CM complete mastery, RM rote memorization):",
                "",
                "| | IK | IG | CM | RM | Score |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for mode in ("strict", "loose"):
                out.append(
                    f"| {mode} | {diagnosis['IK']:.2f} | {diagnosis['IG']:.2f} | {diagnosis[f'CM_{mode}']:.2f} "
                    f"| {diagnosis[f'RM_{mode}']:.2f} | {diagnosis[f'score_{mode}']:.2f} |"
                )
            out.append("")
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------------------ chart


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "the accuracy chart needs matplotlib, which is not installed (pip install matplotlib); "
            "the JSONL, results.json and report.md do not need it"
        ) from err
    return Figure, FigureCanvasAgg


def plot_accuracy(
    summary: Mapping[str, Mapping[str, Any]],
    path: str | Path,
    *,
    label: str = "ours",
    paper_rows: Optional[Sequence[str]] = None,
) -> Path:
    """A grouped bar chart (PNG) of our accuracy next to the paper's rows, per benchmark and on average."""
    # The object API with an Agg canvas: no pyplot global state, no display needed.
    Figure, FigureCanvasAgg = _matplotlib()
    ours = table_row(summary)
    columns = [b for b in TABLE_BENCHMARKS if ours[b] is not None] + ["avg"]
    names = ["MathVision", "MathVerse", "MathVista", "We-Math"]
    titles = [dict(zip(TABLE_BENCHMARKS, names)).get(c, "Avg") for c in columns]
    series: list[tuple[str, list[float]]] = []
    evaluated = columns[:-1]
    for row_name in paper_rows if paper_rows is not None else list(PAPER_TABLE1):
        row = PAPER_TABLE1[row_name]
        avg = sum(row[b] for b in evaluated) / len(evaluated) if evaluated else float("nan")
        series.append((f"{row_name} (paper)", [row[c] if c != "avg" else avg for c in columns]))
    series.append((f"{label} (ours)", [float(ours[c]) if ours[c] is not None else float("nan") for c in columns]))

    figure = Figure(figsize=(max(6.0, 1.6 * len(columns) + 3.0), 5.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(columns))]
        bars = axes.bar(xs, values, width=width, label=name, edgecolor="black" if "(ours)" in name else None)
        if "(ours)" in name:
            axes.bar_label(bars, fmt="%.1f", fontsize=7)
    axes.set_xticks(range(len(columns)), titles)
    axes.set_ylabel("Accuracy (%)")
    axes.set_ylim(0, 108)  # room for the value labels of bars at 100
    axes.set_title("Accuracy vs. MM-UPT Table 1")
    # Below the axes: inside, it would cover the bars.
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=3, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    logger.info("wrote %s", path)
    return path
