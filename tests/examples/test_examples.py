"""``examples/table{1,2,3}.sh`` end to end in CPU mode: prepare, (synthesize,) train, merge, evaluate, print the table.

Each test runs a script as a user would (``CPU_MODE=1 WORK_DIR=... bash examples/tableN.sh``) in a subprocess,
then checks what it wrote: the merged Hugging Face models load, the evaluations wrote their results, and the
printed table has the paper's layout and rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

BENCHMARKS = ("mathvision", "mathverse", "mathvista", "wemath")
HEADER = "| Model | MathVision | MathVerse | MathVista | We-Math | Avg | Δ base |"
SAMPLES_PER_BENCHMARK = 2  # the CPU-mode default of EVAL_MAX_SAMPLES


def run_script(name: str, work_dir: Path, **env_overrides: str) -> str:
    """Run examples/NAME in CPU mode; returns its stdout+stderr, failing the test with the tail on error."""
    env = dict(
        os.environ,
        CPU_MODE="1",
        WORK_DIR=str(work_dir),
        PYTHON=sys.executable,
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        **env_overrides,
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "examples" / name)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200
    )
    out = proc.stdout + proc.stderr
    (work_dir / f"{name}.out").write_text(out)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{out[-8000:]}"
    print(f"{name}: {time.monotonic() - start:.0f}s wall")  # shown with -s; CI keeps each script under ~6 min
    return proc.stdout


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The printed markdown table: label -> its cells, in order (dicts keep insertion order)."""
    assert HEADER in stdout, stdout[-3000:]
    body = stdout[stdout.index(HEADER) :].splitlines()[2:]
    rows = {}
    for line in body:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def check_model(model_dir: Path) -> None:
    """A merged checkpoint is a complete Hugging Face model: weights, config and processor load."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    assert (model_dir / "config.json").is_file(), f"no merged model in {model_dir}"
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype="float32")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert AutoProcessor.from_pretrained(model_dir).tokenizer is not None


def check_eval(eval_dir: Path, label: str) -> None:
    for name in ("results.json", "report.md", "samples.jsonl", "run.json"):
        assert (eval_dir / name).is_file(), f"{eval_dir / name} missing"
    results = json.loads((eval_dir / "results.json").read_text())
    assert results["label"] == label
    assert set(results["benchmarks"]) == set(BENCHMARKS)
    assert all(r["n_prompts"] == SAMPLES_PER_BENCHMARK for r in results["benchmarks"].values())


def check_cells(cells: list[str], paper_avg: str | None) -> None:
    """Five ``ours / paper`` accuracy cells and the Δ base cell."""
    assert len(cells) == 6
    for cell in cells[:5]:
        assert re.fullmatch(r"\d+\.\d\d / (\d+\.\d\d|—)", cell), cells
    if paper_avg is not None:
        assert cells[4].endswith(f"/ {paper_avg}"), cells


def check_logged(stdout: str, *commands: str) -> None:
    """Every step prints its command before running it."""
    for command in commands:
        assert re.search(rf"^  \$ .*{re.escape(command)}", stdout, re.M), f"no logged command {command!r}"


def test_table1(tmp_path):
    work = tmp_path / "work"
    stdout = run_script("table1.sh", work)
    rows = table_rows(stdout)
    assert list(rows) == ["Qwen2.5-VL-7B", "MM-UPT (Geometry3K)", "GRPO, supervised (Geometry3K)"]
    check_cells(rows["Qwen2.5-VL-7B"], "49.47")
    check_cells(rows["MM-UPT (Geometry3K)"], "51.23")
    assert rows["MM-UPT (Geometry3K)"][5].endswith("/ +1.76")
    check_cells(rows["GRPO, supervised (Geometry3K)"], "—")  # the paper reports supervised GRPO on MMR1 only
    assert (work / "table1.md").read_text() in stdout

    for run, label in [
        ("base", "Qwen2.5-VL-7B"),
        ("mmupt_geometry3k", "MM-UPT (Geometry3K)"),
        ("supervised_geometry3k", "GRPO, supervised (Geometry3K)"),
    ]:
        check_eval(work / "eval" / run, label)
    for run in ("mmupt_geometry3k", "supervised_geometry3k"):
        check_model(work / "models" / run)
        assert (work / "checkpoints" / run / "global_step_1" / "actor").is_dir()

    # MM-UPT trains without labels, the supervised baseline with them; both from the same prepared source.
    import pyarrow.parquet as pq

    hidden = pq.read_table(work / "data" / "geometry3k" / "train.parquet").to_pylist()
    kept = pq.read_table(work / "data" / "geometry3k_labels" / "train.parquet").to_pylist()
    assert len(hidden) == len(kept) == 8
    assert all(r["reward_model"]["ground_truth"] == "" and r["extra_info"]["answer"] for r in hidden)
    assert [r["reward_model"]["ground_truth"] for r in kept] == [r["extra_info"]["answer"] for r in hidden]
    check_logged(
        stdout,
        "-m verl_ext.toy.visual_math",
        "-m verl_ext.data.prepare",
        "keep_labels=true",
        "-m verl.trainer.main config=" + str(REPO / "recipes" / "quickstart.yaml"),
        "-m verl.trainer.main config=" + str(REPO / "recipes" / "grpo_supervised.yaml"),
        "-m verl.model_merger merge --backend fsdp",
        "-m verl_ext.eval config=" + str(REPO / "recipes" / "eval" / "paper.yaml"),
        "-m verl_ext.eval.compare --paper-table 1",
    )

    # A rerun finds every output in place and only prints the table again.
    again = run_script("table1.sh", work)
    assert "verl.trainer.main" not in again and table_rows(again) == rows


def test_table2(tmp_path):
    work = tmp_path / "work"
    stdout = run_script("table2.sh", work)
    rows = table_rows(stdout)
    assert list(rows) == ["Qwen2.5-VL-7B", "In-context synthesis (Geometry3K)", "Direct synthesis (Geometry3K)"]
    check_cells(rows["In-context synthesis (Geometry3K)"], "51.00")
    check_cells(rows["Direct synthesis (Geometry3K)"], "52.32")

    import pyarrow.parquet as pq

    labels = {"in_context": "In-context synthesis (Geometry3K)", "direct": "Direct synthesis (Geometry3K)"}
    for strategy, label in labels.items():
        synth = work / "synth" / "geometry3k" / strategy
        questions = pq.read_table(synth / "train.parquet").to_pylist()
        assert questions and all(r["extra_info"]["strategy"] == strategy for r in questions)
        assert all(r["reward_model"]["ground_truth"] == "" for r in questions)
        manifest = json.loads((synth / "synthesize_manifest.json").read_text())
        assert manifest["summary"]["kept"] == len(questions)
        run = f"synth_{strategy}_geometry3k"
        check_model(work / "models" / run)
        check_eval(work / "eval" / run, label)
        # The run trained on the synthesized questions.
        train_log = next((work / "logs").glob(f"*-train-{run}.log")).read_text()
        assert f"data.train_files={synth / 'train.parquet'}" in train_log.splitlines()[0]
    check_logged(
        stdout,
        "-m verl_ext.toy.standin_synthesis config=" + str(REPO / "recipes" / "synth" / "in_context.yaml"),
        "-m verl_ext.toy.standin_synthesis config=" + str(REPO / "recipes" / "synth" / "direct.yaml"),
    )


def test_table3(tmp_path):
    work = tmp_path / "work"
    stdout = run_script("table3.sh", work)
    rows = table_rows(stdout)
    assert list(rows) == ["Qwen2.5-VL-3B", "Qwen2.5-VL-3B + MM-UPT"]
    check_cells(rows["Qwen2.5-VL-3B"], "39.00")
    check_cells(rows["Qwen2.5-VL-3B + MM-UPT"], "41.72")
    assert rows["Qwen2.5-VL-3B + MM-UPT"][5].endswith("/ +2.72")
    check_eval(work / "eval" / "base_qwen2.5-vl-3b", "Qwen2.5-VL-3B")
    check_eval(work / "eval" / "mmupt_geometry3k_qwen2.5-vl-3b", "Qwen2.5-VL-3B + MM-UPT")
    check_model(work / "models" / "mmupt_geometry3k_qwen2.5-vl-3b")
