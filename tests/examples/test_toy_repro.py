"""``examples/toy_repro.sh`` and ``examples/toy_gap_sweep.sh`` in their short forms (one seed, a few steps):
every stage runs and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_script(script: str, **env_vars: str) -> str:
    env = dict(os.environ, QUICK="1", SFT_STEPS="10", HF_HUB_OFFLINE="1", **env_vars)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(["bash", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def test_toy_repro_quick_then_the_sweep(tmp_path):
    out = run_script("examples/toy_repro.sh", WORK_DIR=str(tmp_path))

    assert (tmp_path / "sft" / "model" / "config.json").is_file(), "stage 1 left no SFT model"
    # The SFT model's diagnosis on the RL questions and the held-out set, and each run's final checkpoint's.
    sft = json.loads((tmp_path / "diag" / "sft.json").read_text())
    assert {Path(p).name for p in sft["summary"]} == {"unlabeled.parquet", "test.parquet"}
    for variant in ("grpo_supervised", "mmupt"):
        final = json.loads((tmp_path / "diag" / f"{variant}-seed0.json").read_text())
        assert final["settings"]["model"].endswith("global_step_2/actor/huggingface")
        assert 0.0 <= final["summary"][str(tmp_path / "sft" / "data" / "test.parquet")]["all"]["maj"] <= 1.0
    for variant in ("grpo_supervised", "mmupt"):
        lines = (tmp_path / "runs" / f"{variant}-seed0.jsonl").read_text().splitlines()
        steps = {json.loads(line)["step"]: json.loads(line)["data"] for line in lines}
        # Validated before training (the SFT model) and after each of the 2 steps.
        assert set(steps) >= {0, 1, 2}
        for step in (0, 1, 2):
            assert any(k.startswith("val-core/") and "/acc/" in k for k in steps[step]), (variant, step)
    assert "mmupt/majority_ratio" in steps[2]

    table = (tmp_path / "report" / "table.md").read_text()
    assert "| SFT model |" in table
    assert "| Supervised GRPO (labels) |" in table and "| MM-UPT (unlabeled questions) |" in table
    assert (tmp_path / "report" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # The synthetic variant either trained or was skipped with the reason stated.
    assert "MM-UPT (self-synthesized questions)" in table or "no synthesized question survived" in out

    # The positive-control regime by default: bars only, answered in several styles, one diagnosis of its own.
    manifest = json.loads((tmp_path / "sft" / "data" / ".verl_ext_toy_data.json").read_text())
    assert manifest["config"]["difficulty"]["tasks"] == ["compare"] and manifest["config"]["styles"]["careful"] == 3
    assert (tmp_path / "sft" / "diagnosis.json").is_file()
    # The mechanism: verl's rollout dumps of every step, read back as answer styles.
    assert sorted(p.name for p in (tmp_path / "rollouts" / "mmupt-seed0").iterdir()) == ["1.jsonl", "2.jsonl"]
    mechanism = (tmp_path / "report" / "mechanism.md").read_text()
    assert "| MM-UPT (unlabeled questions) (1 seeds) |" in mechanism and "shortcut first -> last" in mechanism

    # The dose-response over two regimes, the positive one reusing the runs above: one more regime trained.
    sweep = tmp_path / "sweep"
    run_script("examples/toy_gap_sweep.sh", SWEEP_DIR=str(sweep), POSITIVE_DIR=str(tmp_path), RL_STEPS="1")
    plain = json.loads((sweep / "plain" / "sft" / "data" / ".verl_ext_toy_data.json").read_text())
    assert plain["config"]["difficulty"]["tasks"] == ["count", "compare"]
    assert not (sweep / "bars_m45").exists()
    table = (sweep / "report" / "sweep.md").read_text()
    assert table.index("| plain |") < table.index("| bars_m45 |")
    assert (sweep / "report" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
