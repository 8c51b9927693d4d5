"""``examples/toy_repro.sh`` in its short form (one seed, a few steps): every stage runs and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_toy_repro_quick(tmp_path):
    env = dict(os.environ, QUICK="1", WORK_DIR=str(tmp_path), SFT_STEPS="10", HF_HUB_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        ["bash", "examples/toy_repro.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]

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
