"""The toy reproduction's table and plot, from metric logs in verl's file-logger format."""

from __future__ import annotations

import json

from verl_ext.toy.report import attach_diagnoses, load_runs, main, stopping_table, table

ACC = "val-core/verl_ext/visual_math/acc/mean@1"


def write_run(path, accs, ratios=None):
    with open(path, "w") as f:
        for step, acc in enumerate(accs):
            data = {ACC: acc, "timing_s/step": 1.0}
            if ratios and step:
                data["mmupt/majority_ratio"] = ratios[step - 1]
            f.write(json.dumps({"step": step, "data": data}) + "\n")
        f.write("not json\n")


def write_diag(path, greedy, mean, maj):
    """A diagnosis report as verl_ext.eval.diagnose writes it (only the held-out summary matters here)."""
    summary = {
        "/x/rl/unlabeled.parquet": {"all": {"greedy": 0.9, "mean": 0.9, "maj": 0.9}},
        "/x/test.parquet": {"all": {"greedy": greedy, "mean": mean, "maj": maj}},
    }
    path.write_text(json.dumps({"settings": {}, "summary": summary, "questions": {}}))


def test_table_gives_mean_and_spread_over_seeds(tmp_path):
    write_run(tmp_path / "mmupt-seed0.jsonl", [0.40, 0.45, 0.50], ratios=[0.6, 0.7])
    write_run(tmp_path / "mmupt-seed1.jsonl", [0.40, 0.42, 0.60], ratios=[0.5, 0.8])
    write_run(tmp_path / "grpo_supervised-seed0.jsonl", [0.40, 0.55])
    write_run(tmp_path / "notes.jsonl", [0.9])  # not a run name: ignored
    runs = load_runs(tmp_path)
    assert sorted((r.variant, r.seed) for r in runs) == [("grpo_supervised", 0), ("mmupt", 0), ("mmupt", 1)]
    text = table(runs)  # no diagnoses: greedy from the logs only
    assert "| SFT model | n/a | n/a | n/a | | | 3 | 0 |" in text
    assert "| MM-UPT (unlabeled questions) | 55.0 ± 7.1 | n/a | n/a | n/a | n/a | 2 | 2 |" in text
    assert "| Supervised GRPO (labels) | 55.0 ± 0.0 | n/a | n/a | n/a | n/a | 1 | 1 |" in text
    assert "synthesized" not in text


def test_gap_shares_come_from_the_diagnoses(tmp_path):
    runs_dir, diag = tmp_path / "runs", tmp_path / "diag"
    runs_dir.mkdir()
    diag.mkdir()
    write_run(runs_dir / "mmupt-seed0.jsonl", [0.40, 0.50])
    write_run(runs_dir / "mmupt-seed1.jsonl", [0.40, 0.60])
    write_diag(diag / "sft.json", greedy=0.40, mean=0.30, maj=0.60)
    write_diag(diag / "mmupt-seed0.json", greedy=0.50, mean=0.40, maj=0.60)
    write_diag(diag / "mmupt-seed1.json", greedy=0.60, mean=0.50, maj=0.60)
    runs = load_runs(runs_dir)
    sft = attach_diagnoses(runs, diag)
    assert sft == {"greedy": 0.40, "mean": 0.30, "maj": 0.60}
    text = table(runs, sft)
    assert "| SFT model | 40.0 | 30.0 | 60.0 | | | 2 | 0 |" in text
    # greedy 0.55 closes (0.55 - 0.40) / (0.60 - 0.40) = 75 %; mean@8 0.45 closes (0.45 - 0.30) / 0.30 = 50 %.
    assert "| MM-UPT (unlabeled questions) | 55.0 ± 7.1 | 45.0 ± 7.1 | 60.0 ± 0.0 | +75 % | +50 % | 2 | 1 |" in text
    # A ceiling at or below the start: nothing for the vote to close.
    write_diag(diag / "sft.json", greedy=0.70, mean=0.50, maj=0.65)
    assert "| no gap | +0 % |" not in table(runs, attach_diagnoses(runs, diag))
    assert "no gap" in table(runs, attach_diagnoses(runs, diag))


def test_cli_writes_table_and_plot(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_run(runs / "mmupt-seed0.jsonl", [0.3, 0.35], ratios=[0.5])
    diag = tmp_path / "diag"
    diag.mkdir()
    write_diag(diag / "sft.json", greedy=0.3, mean=0.25, maj=0.4)
    assert main([f"runs={runs}", f"diag={diag}", f"out={tmp_path / 'out'}"]) == 0
    assert (tmp_path / "out" / "table.md").read_text().startswith("| model |")
    assert (tmp_path / "out" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_without_runs_fails(tmp_path):
    assert main([f"runs={tmp_path}", f"out={tmp_path / 'out'}"]) == 1


def test_stopping_table_puts_the_collapse_signal_beside_the_peak(tmp_path):
    # Validated every step here; the majority ratio climbs from 0.5 (steps 1-4) to 0.9: the rule's
    # first window (steps 5-8) is 0.2 above the start, so it fires at step 8.
    accs = [0.70, 0.72, 0.75, 0.74, 0.73, 0.70, 0.66, 0.64, 0.62, 0.60]
    write_run(tmp_path / "mmupt_long-seed0.jsonl", accs, ratios=[0.5] * 4 + [0.7, 0.7, 0.7, 0.7, 0.9])
    write_run(tmp_path / "grpo_supervised-seed0.jsonl", [0.40, 0.55])  # no vote: not a label-free run
    text = stopping_table(load_runs(tmp_path))
    assert "| MM-UPT, 3x longer (unlabeled questions), seed 0 | 2: 75.0 | 9: 60.0 | 8 | 8: 62.0 |" in text
    assert "Supervised" not in text


def write_dump(directory, step, outputs):
    """A rollout dump as verl writes it with ``trainer.rollout_data_dir`` (one JSON object per response)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{step}.jsonl", "w") as f:
        for text in outputs:
            f.write(json.dumps({"input": "q", "output": text, "gts": "", "score": 1.0, "step": step}) + "\n")
        f.write("{broken\n")


SHORT = "At a glance, bar A is longer. The answer is \\boxed{A}."
CAREFUL = "Bar B is longer than bar A. The answer is \\boxed{B}."
CAREFUL2 = "Checking both ends, bar A is shorter than bar B. The answer is \\boxed{B}."


def test_mechanism_table_shows_the_styles_leave_the_shortcut(tmp_path):
    runs_dir, dumps, diag = tmp_path / "runs", tmp_path / "rollouts", tmp_path / "diag"
    runs_dir.mkdir()
    diag.mkdir()
    for seed, last in ((0, [CAREFUL] * 4), (1, [CAREFUL2] * 3 + [SHORT])):
        with open(runs_dir / f"mmupt-seed{seed}.jsonl", "w") as f:
            for step in (1, 2, 3, 4):
                data = {ACC: 0.5, "mmupt/label_accuracy": 0.5 + 0.1 * step}
                f.write(json.dumps({"step": step, "data": data}) + "\n")
        write_dump(dumps / f"mmupt-seed{seed}", 1, [SHORT, SHORT, CAREFUL, CAREFUL2])
        write_dump(dumps / f"mmupt-seed{seed}", 4, last)
        write_dump(dumps / f"mmupt-seed{seed}", "notastep", [SHORT])  # ignored
    questions = [{"greedy": SHORT, "samples": [SHORT, CAREFUL]}, {"greedy": CAREFUL, "samples": [CAREFUL2]}]
    (diag / "sft.json").write_text(json.dumps({"summary": {"/x/test.parquet": {"all": {"greedy": 0.5}}},
                                               "questions": {"/x/test.parquet": questions}}))
    assert main([f"runs={runs_dir}", f"diag={diag}", f"rollouts={dumps}", f"out={tmp_path / 'report'}"]) == 0
    text = (tmp_path / "report" / "mechanism.md").read_text()
    # Step 1: half shortcut in both seeds; step 4: none in seed 0, a quarter in seed 1 (mean 12.5 %).
    assert "| MM-UPT (unlabeled questions) (2 seeds) | 25 -> 50 % | 25 -> 38 % | 0 -> 0 % | 50 -> 12 % |" in text
    # Pseudo-label accuracy, steps 1-3 vs 2-4; the SFT model's greedy answers: 1 of 2 in the shortcut style.
    assert "| 70 -> 80 % | n/a |" in text
    assert "| SFT model |" in text and "| 50 % |" in text
