"""The dose-response report of examples/toy_gap_sweep.sh, from toy_repro.sh work directories."""

from __future__ import annotations

import json

from verl_ext.toy.sweep_report import load_regime, main, table

ACC = "val-core/verl_ext/toy_visual_math/acc/mean@1"


def make_regime(root, greedy, maj, rl_maj, finals, labels=(0.8, 0.9)):
    """A toy_repro.sh work directory: the SFT diagnosis and, per variant, seed -> final held-out accuracy."""
    (root / "diag").mkdir(parents=True)
    (root / "runs").mkdir()
    summary = {"/w/sft/data/rl/unlabeled.parquet": {"all": {"greedy": greedy, "mean": 0.6, "maj": rl_maj}},
               "/w/sft/data/test.parquet": {"all": {"greedy": greedy, "mean": 0.6, "maj": maj}}}
    (root / "diag" / "sft.json").write_text(json.dumps({"summary": summary, "questions": {}}))
    for variant, per_seed in finals.items():
        for seed, final in enumerate(per_seed):
            with open(root / "runs" / f"{variant}-seed{seed}.jsonl", "w") as f:
                f.write(json.dumps({"step": 0, "data": {ACC: greedy}}) + "\n")
                for step, label in enumerate(labels, 1):
                    data = {"mmupt/label_accuracy": label} if variant == "mmupt" else {}
                    f.write(json.dumps({"step": step, "data": data}) + "\n")
                f.write(json.dumps({"step": len(labels), "data": {ACC: final}}) + "\n")
    return root


def test_gain_gap_and_closed_share(tmp_path):
    regime = load_regime("warm", make_regime(tmp_path / "warm", 0.60, 0.80, 0.85,
                                             {"grpo_supervised": [0.80, 0.84], "mmupt": [0.70, 0.74]}))
    assert round(regime.gap, 6) == 0.2 and regime.rl_label_accuracy == 0.85
    assert [round(g, 6) for g in regime.gains("mmupt")] == [0.1, 0.14]
    text = table([regime])
    # MM-UPT gains +12.0 of a 20-point gap: 60 %; supervised +22.0: 110 %. Labels right 85 % before, 85 % during.
    assert "| warm | 60.0 | 60.0 | 80.0 | +20.0 | +22.0 ± 2.8 | 110 % | +12.0 ± 2.8 | 60 % | 85 % / 85 % | 2 / 2 |" in text


def test_a_regime_without_gap_closes_nothing(tmp_path):
    regime = load_regime("plain", make_regime(tmp_path / "plain", 0.70, 0.62, 0.6, {"mmupt": [0.62]}))
    assert "no gap" in table([regime]) and "| -8.0 ± 0.0 |" in table([regime])


def test_cli_writes_table_and_plot(tmp_path):
    a = make_regime(tmp_path / "a", 0.7, 0.65, 0.6, {"grpo_supervised": [0.72], "mmupt": [0.66]})
    b = make_regime(tmp_path / "b", 0.6, 0.8, 0.85, {"grpo_supervised": [0.8], "mmupt": [0.75]})
    assert main([f"regimes=[plain={a},warm={b}]", f"out={tmp_path / 'out'}"]) == 0
    text = (tmp_path / "out" / "sweep.md").read_text()
    assert text.index("| plain |") < text.index("| warm |")
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_refuses_a_regime_that_is_not_a_directory(tmp_path, capsys):
    assert main([f"regimes=[x={tmp_path / 'missing'}]", f"out={tmp_path / 'out'}"]) == 2
    assert "is not NAME=DIR" in capsys.readouterr().err
