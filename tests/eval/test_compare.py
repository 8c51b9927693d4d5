"""``python -m verl_ext.eval.compare``: our runs in the paper's table layouts, with the paper's numbers beside them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verl_ext.eval.compare import PAPER_TABLES, compare_markdown, load_row, main, parse_row
from verl_ext.eval.report import PAPER_TABLE1

HEADER = "| Model | MathVision | MathVerse | MathVista | We-Math | Avg | Δ base |"


def write_results(directory: Path, accuracies: dict[str, float], label: str = "x", model: str = "m") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    benchmarks = {b: {"accuracy": a, "n_prompts": 5, "n_responses": 5} for b, a in accuracies.items()}
    (directory / "results.json").write_text(json.dumps({"model": model, "label": label, "benchmarks": benchmarks}))
    return directory


def four(mv: float, mverse: float, mvista: float, wm: float) -> dict[str, float]:
    return {"mathvision": mv, "mathverse": mverse, "mathvista": mvista, "wemath": wm}


def rows_of(text: str) -> dict[str, list[str]]:
    lines = text[text.index(HEADER) :].splitlines()[2:]
    out = {}
    for line in lines:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def test_table1_layout_paper_numbers_and_deltas(tmp_path, capsys):
    base = write_results(tmp_path / "base", four(20, 40, 60, 60))  # avg 45
    geo = write_results(tmp_path / "geo", four(22, 42, 62, 62))  # avg 47
    sup = write_results(tmp_path / "sup", four(30, 40, 50, 60))  # avg 45
    out = tmp_path / "t1.md"
    code = main(
        [
            "--paper-table", "1", "--out", str(out), "--note", "a note",
            "--row", f"Qwen2.5-VL-7B={base}",
            "--row", f"MM-UPT (Geometry3K)={geo}/results.json",
            "--row", f"GRPO, supervised (GeoQA)={sup}",
        ]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    assert text.startswith("### Table 1:")
    rows = rows_of(text)
    assert list(rows) == ["Qwen2.5-VL-7B", "MM-UPT (Geometry3K)", "GRPO, supervised (GeoQA)"]
    paper = PAPER_TABLE1["MM-UPT (Geometry3K)"]
    assert rows["MM-UPT (Geometry3K)"] == [
        f"22.00 / {paper['mathvision']:.2f}",
        f"42.00 / {paper['mathverse']:.2f}",
        f"62.00 / {paper['mathvista']:.2f}",
        f"62.00 / {paper['wemath']:.2f}",
        f"47.00 / {paper['avg']:.2f}",
        f"+2.00 / {paper['avg'] - PAPER_TABLE1['Qwen2.5-VL-7B']['avg']:+.2f}",
    ]
    assert rows["Qwen2.5-VL-7B"][-1] == ""  # the base model has no base
    # A row the paper does not have: no paper numbers, but still compared with our base run.
    assert rows["GRPO, supervised (GeoQA)"][:5] == ["30.00 / —", "40.00 / —", "50.00 / —", "60.00 / —", "45.00 / —"]
    assert rows["GRPO, supervised (GeoQA)"][5] == "+0.00 / —"
    assert "Rows without paper numbers: GRPO, supervised (GeoQA)" in text
    assert "a note" in text and str(geo / "results.json") in text


def test_table2_and_3_publish_averages_only(tmp_path):
    base = load_row("qwen2.5-vl-7b", write_results(tmp_path / "b", four(10, 10, 10, 10)))  # labels match loosely
    synth = load_row("Direct  synthesis (MMR1)", write_results(tmp_path / "d", four(20, 20, 20, 20)))
    text = compare_markdown([base, synth], 2)
    rows = rows_of(text)
    assert rows["Direct  synthesis (MMR1)"][3:] == ["20.00 / —", "20.00 / 52.16", "+10.00 / +2.69"]
    assert rows["qwen2.5-vl-7b"][4] == "10.00 / 49.47"

    rows3 = [
        load_row("MM-Eureka-7B", write_results(tmp_path / "e0", four(50, 50, 50, 50))),
        load_row("MM-Eureka-7B + MM-UPT", write_results(tmp_path / "e1", four(51, 51, 51, 51))),
        load_row("ThinkLite-VL-7B + MM-UPT", write_results(tmp_path / "t1", four(1, 1, 1, 1))),
    ]
    rows = rows_of(compare_markdown(rows3, 3))
    assert rows["MM-Eureka-7B"][4:] == ["50.00 / 53.10", ""]
    assert rows["MM-Eureka-7B + MM-UPT"][4:] == ["51.00 / 53.78", "+1.00 / +0.68"]
    # Its base was not evaluated here: no difference of ours, the paper's still shown.
    assert rows["ThinkLite-VL-7B + MM-UPT"][4:] == ["1.00 / 54.07", "— / +1.44"]


def test_partial_evaluation_is_noted(tmp_path):
    row = load_row("MM-UPT (MMR1)", write_results(tmp_path / "p", {"mathvista": 70.0}))
    text = compare_markdown([row], 1)
    cells = rows_of(text)["MM-UPT (MMR1)"]
    assert cells[0] == "— / 26.15" and cells[4] == "70.00 / 53.17"
    assert "Not every benchmark was evaluated for MM-UPT (MMR1)" in text


def test_paper_tables():
    assert set(PAPER_TABLES) == {1, 2, 3}
    assert PAPER_TABLES[2].rows["In-context synthesis (GeoQA)"] == {"avg": 52.20}
    assert PAPER_TABLES[3].base["Qwen2.5-VL-3B + MM-UPT"] == "Qwen2.5-VL-3B"
    for table in PAPER_TABLES.values():
        assert all(base in table.rows for base in table.base.values())


def test_list_rows(capsys):
    assert main(["--paper-table", "3", "--list-rows"]) == 0
    assert capsys.readouterr().out.splitlines()[:3] == ["Qwen2.5-VL-3B", "MM-Eureka-7B", "ThinkLite-VL-7B"]


@pytest.mark.parametrize(
    "rows",
    [
        [],
        ["no equals sign"],
        ["=somewhere"],
        ["A=/nonexistent/dir"],
    ],
)
def test_usage_errors_exit_2(rows, capsys):
    argv = ["--paper-table", "1"] + [arg for row in rows for arg in ("--row", row)]
    assert main(argv) == 2
    assert capsys.readouterr().out == ""


def test_bad_results_and_duplicates_exit_2(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text('{"benchmarks": {"mathvista": {}}}')
    assert main(["--row", f"A={tmp_path / 'bad'}"]) == 2
    good = write_results(tmp_path / "good", four(1, 2, 3, 4))
    assert main(["--row", f"A={good}", "--row", f"a={good}"]) == 2


def test_parse_row_keeps_equals_in_the_path():
    assert parse_row("GRPO, supervised (MMR1)=/x/a=b") == ("GRPO, supervised (MMR1)", Path("/x/a=b"))
