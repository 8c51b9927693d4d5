"""python -m verl_ext.eval.diagnose: greedy / mean@N / maj@N figures, exact on scripted answers, and a real run."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verl_ext.eval import diagnose as dg

LABELS = ["3", "A", "7"]


def write_rows(path: Path, labels=LABELS, hidden=False) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (56, 56), (220, 30, 30)).save(buf, format="PNG")
    rows = [
        {
            "data_source": "test",
            "prompt": [{"role": "user", "content": f"<image>Question {i}?"}],
            "images": [{"bytes": buf.getvalue(), "path": None}],
            "reward_model": {"style": "rule", "ground_truth": "" if hidden else label},
            "extra_info": {"answer": label, "task": "count" if i % 2 == 0 else "compare"},
        }
        for i, label in enumerate(labels)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


class Scripted:
    """Answers each request from a script keyed by its question text: greedy text, then n samples."""

    def __init__(self, script):
        self.script = script

    def generate(self, requests, settings, *, on_batch=None, desc=""):
        out = []
        for request in requests:
            greedy, samples = self.script[request.messages[0]["content"]]
            out.append([greedy] if settings.greedy else list(samples))
        return out


def boxed(*answers):
    return [f"So \\boxed{{{a}}}." if a is not None else "no idea" for a in answers]


def test_figures_are_exact_on_scripted_answers(tmp_path):
    path = write_rows(tmp_path / "rl.parquet", hidden=True)  # the hidden extra_info.answer is the label
    script = {
        # right greedy; 2 of 4 samples right, and the right answer wins the vote ("3.0" clusters with "3")
        "<image>Question 0?": ("\\boxed{3}", boxed("3", "3.0", "4", "5")),
        # wrong greedy; 1 of 4 right; the wrong "B" wins
        "<image>Question 1?": ("\\boxed{B}", boxed("B", "B", "A", None)),
        # wrong greedy; a 2-2 tie: no label, so the vote is wrong although half the samples are right
        "<image>Question 2?": ("\\boxed{1}", boxed("7", "7", "2", "2")),
    }
    config = dg.DiagnoseConfig(model=str(tmp_path), data=[str(path)], n=4)
    report = dg.diagnose(config, generator=Scripted(script))
    s = report["summary"][str(path)]
    assert s["all"]["greedy"] == pytest.approx(1 / 3)
    assert s["all"]["mean"] == pytest.approx((2 / 4 + 1 / 4 + 2 / 4) / 3)
    assert s["all"]["maj"] == pytest.approx(1 / 3)
    assert s["all"]["pass"] == pytest.approx(1.0)
    assert s["all"]["no_label"] == pytest.approx(1 / 3)
    assert s["all"]["majority_ratio"] == pytest.approx((2 / 4 + 2 / 4 + 2 / 4) / 3)
    assert set(s) == {"all", "count", "compare"}
    assert s["count"]["questions"] == 2 and s["count"]["maj"] == pytest.approx(1 / 2)
    assert s["compare"]["maj"] == 0.0
    assert report["questions"][str(path)][0]["correct"] == [True, True, False, False]
    # A vote threshold the winner misses leaves no label: question 0's 2/4 is below 0.75.
    strict = dg.diagnose(dataclasses.replace(config, min_ratio=0.75), generator=Scripted(script))
    assert strict["summary"][str(path)]["all"]["maj"] == 0.0
    # tie_break=first gives question 2 the first cluster ("7", right).
    first = dg.diagnose(dataclasses.replace(config, tie_break="first"), generator=Scripted(script))
    assert first["summary"][str(path)]["all"]["maj"] == pytest.approx(2 / 3)
    table = dg.markdown_table({"rl.parquet": s}, 4)
    assert "| rl.parquet | all | 3 | 33.3 | 41.7 | 33.3 | 100.0 | +0.0 | -8.3 | 33.3 | 0.50 |" in table


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data=[x.parquet]"], "missing setting(s) model"),
        (["model=MODEL", "data=[DATA]", "n=0"], "n=0: must be >= 1"),
        (["model=MODEL", "data=[DATA]", "temperature=0"], "temperature=0.0: must be > 0"),
        (["model=MODEL", "data=[DATA]", "tempreature=1"], "tempreature"),
        (["model=MODEL", "data=[DATA]", "n=abc"], "n"),
        (["model=MODEL", "data=[nope.parquet]"], "nope.parquet: no such file"),
        (["model=/no/such/model", "data=[DATA]"], "no such model directory"),
        (["model=MODEL", "data=[DATA]", "tie_break=coin"], "tie_break=coin"),
        (["model=MODEL", "oops"], "malformed setting 'oops'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    data = write_rows(tmp_path / "d.parquet")
    argv = [a.replace("MODEL", str(tmp_path)).replace("DATA", str(data)) for a in argv]
    assert dg.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_unlabelled_row_is_an_error(tmp_path):
    path = write_rows(tmp_path / "d.parquet", labels=["3", ""])
    with pytest.raises(ValueError, match="row 1 has no label"):
        dg.load_questions(str(path))


@pytest.mark.slow
def test_real_run_on_the_tiny_model(tmp_path, tiny_model_dir):
    """Through the command line on the real tiny model: the JSON report holds every question's n answers."""
    data = write_rows(tmp_path / "d.parquet")
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "verl_ext.eval.diagnose", f"model={tiny_model_dir}", f"data=[{data}]",
         "n=3", "max_new_tokens=4", f"out={out}"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| d.parquet | all | 3 |" in proc.stdout
    report = json.loads(out.read_text())
    questions = report["questions"][str(data)]
    assert len(questions) == 3 and all(len(q["samples"]) == 3 for q in questions)
    assert report["settings"]["n"] == 3


@pytest.mark.parametrize(
    "figures, expected",
    [
        ({"greedy": 0.70, "maj": 0.62}, "maj@8 62.0 vs greedy 70.0 (-8.0 points): the vote is not better"),
        ({"greedy": 0.70, "maj": 0.71}, "(+1.0 points): the vote is not better"),
        ({"greedy": 0.40, "maj": 0.60}, "room to gain, but the vote's labels are right on only 60 %"),
        ({"greedy": 0.70, "maj": 0.92}, "(+22.0 points): room to gain, with labels right on 92 %"),
    ],
)
def test_reading_says_what_the_gap_means(figures, expected):
    assert expected in dg.reading(figures, 8)
