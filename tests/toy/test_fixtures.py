"""``verl_ext.toy.fixtures``: local benchmark files in the real schemas, any number of rows, from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import pytest

from verl_ext.eval.benchmarks import BENCHMARKS, load_benchmark
from verl_ext.toy.fixtures import FEATURES, ROWS, benchmark_rows, main, write_benchmark_files
from verl_ext.generation.base import load_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "hf_datasets_cache")


def test_files_have_the_hub_features(tmp_path):
    write_benchmark_files(tmp_path)
    for name, spec in BENCHMARKS.items():
        path = tmp_path / name / f"{spec.split}.parquet"
        table = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "cache"))
        assert table.features == FEATURES[name], name
        assert len(table) == len(ROWS[name]())


def test_more_rows_than_written_get_fresh_ids(tmp_path, cache_dir):
    write_benchmark_files(tmp_path, per_benchmark=9)
    for name in BENCHMARKS:
        samples = load_benchmark(name, data_dir=tmp_path, cache_dir=cache_dir)  # refuses duplicate prompt ids
        assert len(samples) == 9
    wemath = [s.prompt_id for s in load_benchmark("wemath", data_dir=tmp_path, cache_dir=cache_dir)]
    assert wemath[:5] == ["1@2steps_1", "1@2steps_2", "1@2steps_multi", "165@3steps_3", "1-1@2steps_1"]
    # A copied round keeps its multi-step problem together under one new id.
    assert {"1-1@2steps_1", "1-1@2steps_2", "1-1@2steps_multi"} <= set(wemath)


def test_fewer_rows_are_the_first_ones():
    assert [r["pid"] for r in benchmark_rows("mathvista", 2)] == ["1", "2"]
    assert benchmark_rows("MathVista") == ROWS["mathvista"]()
    with pytest.raises(ValueError):
        benchmark_rows("mathvista", 0)


def test_cli_writes_a_subset_as_jsonl(tmp_path, cache_dir, capsys):
    out = tmp_path / "bench"
    assert main([f"out={out}", "per_benchmark=1", "format=jsonl", "benchmarks=[wemath,mathvista]"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["mathvista", "wemath"]
    (sample,) = load_benchmark("mathvista", data_dir=out, cache_dir=cache_dir)
    assert Path(sample.images[0]).is_file() and load_image(sample.images[0]).getpixel((0, 0)) == (200, 0, 0)
    assert main([f"out={out}", "per_benchmark=0"]) == 2


def test_python_dash_m(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "verl_ext.toy.fixtures", f"out={out}", "per_benchmark=2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert all((out / name / f"{spec.split}.parquet").is_file() for name, spec in BENCHMARKS.items())


def test_toy_data_files_are_package_data():
    """fixtures.json, tokenizer_corpus.json and chat_template.jinja ship with a non-editable install too."""
    import ast
    import fnmatch

    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"]
    patterns = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))["verl_ext"]
    data = [p for p in (REPO / "verl_ext" / "toy").iterdir() if p.suffix in (".json", ".jinja")]
    assert len(data) == 3
    for path in data:
        assert any(fnmatch.fnmatch(f"toy/{path.name}", pattern) for pattern in patterns), path.name
