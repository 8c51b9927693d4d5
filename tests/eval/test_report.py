"""Accuracy summaries, We-Math's four-dimensional metrics, the Table 1 markdown and the chart."""

from __future__ import annotations

import sys

import pytest

from verl_ext.eval.report import (
    PAPER_TABLE1,
    markdown_report,
    plot_accuracy,
    summarize,
    table1_markdown,
    wemath_four_dimensional,
)


def rec(benchmark, pid, correct, *, index=0, category=None, extracted="x", meta=None, split="testmini"):
    return {
        "benchmark": benchmark,
        "split": split,
        "prompt_id": pid,
        "response_index": index,
        "correct": correct,
        "extracted": extracted,
        "category": category,
        "meta": meta or {},
    }


def test_paper_numbers_average_to_their_avg_column():
    for name, row in PAPER_TABLE1.items():
        mean = sum(row[b] for b in ("mathvision", "mathverse", "mathvista", "wemath")) / 4
        assert abs(mean - row["avg"]) < 0.006, name
    assert PAPER_TABLE1["Qwen2.5-VL-7B"]["mathvista"] == 66.30
    assert PAPER_TABLE1["MM-UPT (MMR1)"]["wemath"] == 68.74


def test_accuracy_per_benchmark_and_category():
    records = [
        rec("mathverse", "1", True, category="Vision Only"),
        rec("mathverse", "2", False, category="Text Dominant", extracted=None),
        rec("mathverse", "3", True, category="Text Dominant"),
        rec("mathverse", "4", False, category="Vision Intensive"),
        rec("mathvista", "a", True, category="figure question answering"),
    ]
    summary = summarize(records)
    assert list(summary) == ["mathverse", "mathvista"]  # the paper's column order
    verse = summary["mathverse"]
    assert verse["accuracy"] == pytest.approx(50.0)
    assert (verse["n_prompts"], verse["n_responses"], verse["extracted"]) == (4, 4, 75.0)
    # Versions in MathVerse's own order, not alphabetical.
    assert list(verse["categories"]) == ["Text Dominant", "Vision Intensive", "Vision Only"]
    assert verse["categories"]["Text Dominant"] == {"accuracy": 50.0, "n_prompts": 2}
    assert summary["mathvista"]["accuracy"] == 100.0


def test_several_responses_average_per_question_and_duplicates_keep_the_last():
    records = [
        rec("mathvision", "1", True, index=0),
        rec("mathvision", "1", False, index=1),
        rec("mathvision", "1", True, index=2),
        rec("mathvision", "1", True, index=3),
        rec("mathvision", "2", True, index=0),
        rec("mathvision", "2", False, index=1),
        rec("mathvision", "2", False, index=2),
        rec("mathvision", "2", False, index=3),
        rec("mathvision", "2", True, index=3),  # a resumed run rewrote this response
    ]
    result = summarize(records)["mathvision"]
    assert result["accuracy"] == pytest.approx(100 * (0.75 + 0.5) / 2)
    assert (result["n_prompts"], result["n_responses"]) == (2, 8)


def _wemath_problem(pid, steps, subs, multi):
    out = []
    for i, ok in enumerate(subs, 1):
        out.append(
            rec(
                "wemath",
                f"{pid}@{steps}_{i}",
                ok,
                category="S1 (one-step)",
                meta={"key": f"{steps}_{i}", "problem_id": pid},
            )
        )
    step = "S2 (two-step)" if steps == "2steps" else "S3 (three-step)"
    out.append(
        rec("wemath", f"{pid}@{steps}_multi", multi, category=step, meta={"key": f"{steps}_multi", "problem_id": pid})
    )
    return out


def test_wemath_four_dimensional_metrics():
    records = (
        _wemath_problem("1", "2steps", [True, True], True)  # CM (strict and loose)
        + _wemath_problem("2", "2steps", [True, False], True)  # RM strict, CM loose
        + _wemath_problem("3", "2steps", [False, False], True)  # RM strict and loose
        + _wemath_problem("4", "2steps", [True, True], False)  # IG
        + _wemath_problem("5", "3steps", [True, False, True], False)  # IK
        + [rec("wemath", "6@3steps_1", True, meta={"key": "3steps_1", "problem_id": "6"})]  # incomplete: skipped
    )
    summary = summarize(records)["wemath"]
    d = summary["four_dimensional"]
    assert d["problems"] == 5
    assert (d["IK"], d["IG"], d["CM_strict"], d["CM_loose"]) == (20.0, 20.0, 20.0, 40.0)
    assert d["RM_strict"] == pytest.approx(100 * 2 / 3)  # RM / (RM + CM)
    assert d["RM_loose"] == pytest.approx(100 * 1 / 3)
    assert d["score_strict"] == pytest.approx(100 * (5 - 0.5 - 2 - 1) / 5)
    assert d["score_loose"] == pytest.approx(100 * (5 - 0.5 - 1 - 1) / 5)
    assert list(summary["categories"]) == ["S1 (one-step)", "S2 (two-step)", "S3 (three-step)"]
    assert summary["categories"]["S2 (two-step)"] == {"accuracy": 75.0, "n_prompts": 4}
    assert wemath_four_dimensional({}) is None


def test_table1_markdown_has_paper_rows_ours_and_difference():
    summary = summarize([rec("mathvista", "1", True), rec("mathvista", "2", False), rec("wemath", "1@2steps_1", True)])
    table = table1_markdown(summary, label="tiny", reference="Qwen2.5-VL-7B")
    lines = table.splitlines()
    assert lines[0] == "| Model | MathVision | MathVerse | MathVista | We-Math | Avg |"
    assert "| Qwen2.5-VL-7B (paper) | 24.87 | 43.83 | 66.30 | 62.87 | 49.47 |" in lines
    assert "| MM-UPT (MMR1) (paper) | 26.15 | 44.87 | 72.90 | 68.74 | 53.17 |" in lines
    assert "| **tiny (ours)** | — | — | 50.00 | 100.00 | 75.00 |" in lines
    # Avg's difference is against the paper row's mean over the benchmarks we ran.
    avg_diff = 75.0 - (66.30 + 62.87) / 2
    assert f"| Δ ours − Qwen2.5-VL-7B (paper) | — | — | -16.30 | +37.13 | {avg_diff:+.2f} |" in lines
    assert "arXiv:2505.22453" in table and "2 benchmark(s) evaluated" in table
    with pytest.raises(ValueError, match="unknown paper row"):
        table1_markdown(summary, reference="GPT-4o")


def test_table1_cites_the_paper_by_its_v2_title():
    # The numbers come from arXiv v2 (NeurIPS 2025), which retitled the paper.
    table = table1_markdown(summarize([rec("mathvista", "1", True)]))
    assert (
        'Paper numbers: Wei et al., "First SFT, Second RL, Third UPT: Continual Improving Multi-Modal LLM '
        'Reasoning via Unsupervised Post-Training" (MM-UPT), arXiv:2505.22453 v2, Table 1.' in table
    )
    assert "via GRPO" not in table


def test_markdown_report_sections():
    records = _wemath_problem("1", "2steps", [True, True], False) + [rec("mathverse", "9", True, category="Text Lite")]
    text = markdown_report(summarize(records), label="run1", header={"model": "/m"}, reference="MM-UPT (GeoQA)")
    assert text.startswith("# Evaluation: run1\n")
    assert "- **model**: /m" in text
    assert "## MathVerse (testmini)" in text and "| Text Lite | 100.00 | 1 |" in text
    assert "## We-Math (testmini)" in text and "| S2 (two-step) | 0.00 | 1 |" in text
    assert "| strict | 0.00 | 100.00 |" in text  # IK 0, IG 100
    assert "Δ ours − MM-UPT (GeoQA) (paper)" in text


def test_chart_png(tmp_path):
    pytest.importorskip("matplotlib")
    summary = summarize([rec("mathvista", "1", True), rec("mathvision", "1", False)])
    path = plot_accuracy(summary, tmp_path / "chart" / "accuracy.png", label="tiny")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_chart_without_matplotlib_names_the_dependency(tmp_path, monkeypatch):
    # None in sys.modules makes the import fail, as if matplotlib were not installed.
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_accuracy(summarize([rec("mathvista", "1", True)]), tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()
