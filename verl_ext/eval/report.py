"""Accuracy summaries, the Table 1 comparison with MM-UPT's numbers, and a bar chart.

Accuracy is per question: the share of a question's responses graded correct (0 or 1 with one
response), averaged over the benchmark's questions, in percent.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from verl_ext.eval.benchmarks import BENCHMARKS, MATHVERSE_VERSIONS, WEMATH_STEPS

logger = logging.getLogger(__name__)

# The paper's numbers: its Table 1 here, Tables 2 and 3 in verl_ext.eval.compare. They are v2's (NeurIPS
# 2025), so the citation gives v2's title; v1 was "Unsupervised Post-Training for Multi-Modal LLM
# Reasoning via GRPO".
PAPER_SOURCE = (
    'Wei et al., "First SFT, Second RL, Third UPT: Continual Improving Multi-Modal LLM Reasoning via '
    'Unsupervised Post-Training" (MM-UPT), arXiv:2505.22453 v2'
)
TABLE_BENCHMARKS = ("mathvision", "mathverse", "mathvista", "wemath")
"""The paper's column order."""
COLUMNS = (*TABLE_BENCHMARKS, "avg")

# Accuracy (%) of Qwen2.5-VL-7B and its post-trained versions, in COLUMNS order; source: PAPER_SOURCE.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    name: dict(zip(COLUMNS, values))
    for name, values in {
        "Qwen2.5-VL-7B": (24.87, 43.83, 66.30, 62.87, 49.47),
        "MM-UPT (Geometry3K)": (27.33, 42.46, 68.50, 66.61, 51.23),
        "MM-UPT (GeoQA)": (27.07, 43.68, 68.90, 68.22, 51.97),
        "MM-UPT (MMR1)": (26.15, 44.87, 72.90, 68.74, 53.17),
        "GRPO, supervised (MMR1)": (29.01, 45.03, 71.40, 67.24, 53.17),
    }.items()
}
DEFAULT_REFERENCE = "Qwen2.5-VL-7B"
_CATEGORY_TITLES = {"mathverse": "Problem version", "wemath": "Step", "mathvision": "Subject", "mathvista": "Task"}


# ------------------------------------------------------------------------------------------ summaries


def _pct(values: Iterable[float]) -> float:
    values = list(values)
    return 100.0 * sum(values) / len(values)


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
        if key.split("_")[0] in ("2steps", "3steps"):
            problems[(key.split("_")[0], str(entry["meta"].get("problem_id")))][key] = entry["score"] == 1.0
    counts: Counter[str] = Counter()
    for (steps, _), solved in problems.items():
        parts = [f"{steps}_{i}" for i in range(1, int(steps[0]) + 1)] + [f"{steps}_multi"]
        if any(part not in solved for part in parts):
            continue  # an incomplete problem (an eval.max_samples cut) cannot be diagnosed
        *sub, multi = (solved[part] for part in parts)
        counts["problems"] += 1
        if not multi:
            counts["IG" if all(sub) else "IK"] += 1
        else:
            counts["CM_strict" if all(sub) else "RM_strict"] += 1
            counts["CM_loose" if any(sub) else "RM_loose"] += 1
    n = counts["problems"]
    if n == 0:
        return None
    out: dict[str, Any] = {"problems": n, **{k: 100.0 * (counts[k] / n) for k in ("IK", "IG", "CM_strict", "CM_loose")}}
    for mode in ("strict", "loose"):
        rm, cm = counts[f"RM_{mode}"], counts[f"CM_{mode}"]
        out[f"RM_{mode}"] = 100.0 * (rm / (rm + cm)) if rm + cm else 0.0
        out[f"score_{mode}"] = 100.0 * ((n - 0.5 * counts["IG"] - rm - counts["IK"]) / n)
    return out


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per benchmark: accuracy, counts, extraction rate, per-category accuracy (and We-Math's diagnosis)."""
    # A resumed run may have rewritten a prompt whose batch was cut short: the last record wins.
    latest = {
        (r["benchmark"], r.get("split"), str(r["prompt_id"]), int(r.get("response_index", 0))): r for r in records
    }
    grouped: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for record in latest.values():
        grouped[record["benchmark"]][str(record["prompt_id"])].append(record)
    summary: dict[str, dict[str, Any]] = {}
    for benchmark in sorted(grouped, key=lambda b: (TABLE_BENCHMARKS + (b,)).index(b)):
        prompts = {
            pid: {
                "score": sum(bool(r["correct"]) for r in rs) / len(rs),
                "category": rs[0].get("category"),
                "meta": rs[0].get("meta") or {},
            }
            for pid, rs in grouped[benchmark].items()
        }
        responses = [r for rs in grouped[benchmark].values() for r in rs]
        categories: dict[str, list[float]] = defaultdict(list)
        for entry in prompts.values():
            if entry["category"] is not None:
                categories[str(entry["category"])].append(entry["score"])
        canonical = {"mathverse": MATHVERSE_VERSIONS, "wemath": WEMATH_STEPS}.get(benchmark, ())
        order = [n for n in canonical if n in categories] + sorted(n for n in categories if n not in canonical)
        summary[benchmark] = {
            "accuracy": _pct(p["score"] for p in prompts.values()),
            "n_prompts": len(prompts),
            "n_responses": len(responses),
            "extracted": _pct(r.get("extracted") is not None for r in responses),
            "split": responses[0].get("split"),
            "categories": {n: {"accuracy": _pct(categories[n]), "n_prompts": len(categories[n])} for n in order},
        }
        if benchmark == "wemath":
            summary[benchmark]["four_dimensional"] = wemath_four_dimensional(prompts)
    return summary


# ------------------------------------------------------------------------------------------ markdown


def format_accuracy(value: Optional[float], signed: bool = False) -> str:
    """An accuracy (or with ``signed`` a difference) in points with two decimals; "—" when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def md_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
    """A markdown table, its first ``left`` columns left-aligned and the others right-aligned."""
    lines = [header, ["---"] * left + ["---:"] * (len(header) - left), *rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


def table_row(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, Optional[float]]:
    """A run's accuracy per Table 1 benchmark (None where it did not run) and their average."""
    row: dict[str, Optional[float]] = {b: summary[b]["accuracy"] if b in summary else None for b in TABLE_BENCHMARKS}
    present = [v for v in row.values() if v is not None]
    row["avg"] = sum(present) / len(present) if present else None
    return row


def _paper_row_over(name: str, evaluated: Sequence[str]) -> dict[str, float]:
    """A paper row with its Avg over the benchmarks ``evaluated`` (the paper's covers all four)."""
    row = PAPER_TABLE1[name]
    return {**row, "avg": sum(row[b] for b in evaluated) / len(evaluated)} if evaluated else dict(row)


def table1_markdown(
    summary: Mapping[str, Mapping[str, Any]], label: str = "ours", reference: str = DEFAULT_REFERENCE
) -> str:
    """Table 1 of the paper with our row and our difference to the ``reference`` row."""
    if reference not in PAPER_TABLE1:
        raise ValueError(f"unknown paper row {reference!r}; rows: {', '.join(PAPER_TABLE1)}")
    ours = table_row(summary)
    evaluated = [b for b in TABLE_BENCHMARKS if ours[b] is not None]
    ref = _paper_row_over(reference, evaluated)
    rows = [[f"{name} (paper)", *(format_accuracy(row[c]) for c in COLUMNS)] for name, row in PAPER_TABLE1.items()]
    rows.append([f"**{label} (ours)**", *(format_accuracy(ours[c]) for c in COLUMNS)])
    diffs = [None if ours[c] is None else ours[c] - ref[c] for c in COLUMNS]
    rows.append([f"Δ ours − {reference} (paper)", *(format_accuracy(d, signed=True) for d in diffs)])
    header = ["Model", *(BENCHMARKS[b].title for b in TABLE_BENCHMARKS), "Avg"]
    notes = [f"Paper numbers: {PAPER_SOURCE}, Table 1."]
    if len(evaluated) < len(TABLE_BENCHMARKS):
        notes.append(
            f"Our Avg is over the {len(evaluated)} benchmark(s) evaluated; its Δ compares with the "
            f"{reference} row's mean over the same benchmark(s)."
        )
    return md_table(header, rows) + "\n\n" + " ".join(notes) + "\n"


def markdown_report(
    summary: Mapping[str, Mapping[str, Any]],
    *,
    label: str = "ours",
    reference: str = DEFAULT_REFERENCE,
    header: Optional[Mapping[str, Any]] = None,
) -> str:
    """The full markdown report: run header, Table 1 comparison, per-benchmark breakdowns."""
    out = [f"# Evaluation: {label}", ""]
    if header:
        out += [f"- **{key}**: {value}" for key, value in header.items()] + [""]
    out += ["## Comparison with MM-UPT Table 1 (accuracy, %)", "", table1_markdown(summary, label, reference)]
    for benchmark, result in summary.items():
        out += [
            f"## {BENCHMARKS[benchmark].title} ({result.get('split')})",
            "",
            f"Accuracy {result['accuracy']:.2f}% over {result['n_prompts']} questions "
            f"({result['n_responses']} responses; a final answer was found in {result['extracted']:.1f}% of them).",
            "",
        ]
        if result["categories"]:
            rows = [[name, f"{c['accuracy']:.2f}", c["n_prompts"]] for name, c in result["categories"].items()]
            out += [md_table([_CATEGORY_TITLES[benchmark], "Accuracy", "Questions"], rows), ""]
        if diagnosis := result.get("four_dimensional"):
            rows = [
                [mode, *(f"{diagnosis[k]:.2f}" for k in ("IK", "IG", f"CM_{mode}", f"RM_{mode}", f"score_{mode}"))]
                for mode in ("strict", "loose")
            ]
            out += [
                f"Four-dimensional metrics over {diagnosis['problems']} multi-step problems "
                "(IK insufficient knowledge, IG inadequate generalization, CM complete mastery, RM rote memorization):",
                "",
                md_table(["", "IK", "IG", "CM", "RM", "Score"], rows),
                "",
            ]
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------------------ chart


def plot_accuracy(summary: Mapping[str, Mapping[str, Any]], path: str | Path, *, label: str = "ours") -> Path:
    """A grouped bar chart (PNG) of our accuracy next to the paper's rows, per benchmark and on average."""
    try:
        # The object API with an Agg canvas: no pyplot global state, no display needed.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "the accuracy chart needs matplotlib, which is not installed (pip install matplotlib); "
            "the JSONL, results.json and report.md do not need it"
        ) from err
    ours = table_row(summary)
    evaluated = [b for b in TABLE_BENCHMARKS if ours[b] is not None]
    columns = [*evaluated, "avg"]
    series = [(f"{name} (paper)", [_paper_row_over(name, evaluated)[c] for c in columns]) for name in PAPER_TABLE1]
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
    axes.set_xticks(range(len(columns)), [BENCHMARKS[c].title if c in BENCHMARKS else "Avg" for c in columns])
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
