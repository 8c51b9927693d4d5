"""The toy reproduction's table and plot, from metric logs in verl's file-logger format."""

from __future__ import annotations

import json

from verl_ext.toy.report import load_runs, main, table

ACC = "val-core/verl_ext/visual_math/acc/mean@1"


def write_run(path, accs, ratios=None):
    with open(path, "w") as f:
        for step, acc in enumerate(accs):
            data = {ACC: acc, "timing_s/step": 1.0}
            if ratios and step:
                data["mmupt/majority_ratio"] = ratios[step - 1]
            f.write(json.dumps({"step": step, "data": data}) + "\n")
        f.write("not json\n")


def test_table_gives_mean_and_spread_over_seeds(tmp_path):
    write_run(tmp_path / "mmupt-seed0.jsonl", [0.40, 0.45, 0.50], ratios=[0.6, 0.7])
    write_run(tmp_path / "mmupt-seed1.jsonl", [0.40, 0.42, 0.60], ratios=[0.5, 0.8])
    write_run(tmp_path / "grpo_supervised-seed0.jsonl", [0.40, 0.55])
    write_run(tmp_path / "notes.jsonl", [0.9])  # not a run name: ignored
    runs = load_runs(tmp_path)
    assert sorted((r.variant, r.seed) for r in runs) == [("grpo_supervised", 0), ("mmupt", 0), ("mmupt", 1)]
    text = table(runs)
    assert "| SFT model (start of every run) | 40.0 ± 0.0 | 3 | 0 |" in text
    assert "| MM-UPT (unlabeled questions) | 55.0 ± 7.1 | 2 | 2 |" in text
    assert "| Supervised GRPO (labels) | 55.0 ± 0.0 | 1 | 1 |" in text
    assert "synthesized" not in text


def test_cli_writes_table_and_plot(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_run(runs / "mmupt-seed0.jsonl", [0.3, 0.35], ratios=[0.5])
    assert main(["--runs", str(runs), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "table.md").read_text().startswith("| model |")
    assert (tmp_path / "out" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_without_runs_fails(tmp_path):
    assert main(["--runs", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
