"""The toy SFT model asset: verl's SFT trainer for real (a few steps), cached, rebuilt when settings change."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from verl_ext.toy.tiny_model import TinyModelConfig
from verl_ext.toy import sft_model
from verl_ext.toy.data import ToyDataConfig

SMALL_DATA = ToyDataConfig(n_sft=64, n_sft_test=8, n_rl=8, n_test=8, prompt="synth_in_context_short")


@pytest.mark.slow
def test_builds_once_with_verl_sft_trainer_and_reuses(tmp_path, monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    root = tmp_path / "toy-sft"
    model_config = TinyModelConfig()  # the small default model keeps the test fast
    # 3 steps learn nothing: no floors, but the build still diagnoses its model, for real.
    built = sft_model.ensure_toy_sft_model(root, model_config, SMALL_DATA, steps=3, floors={})
    assert built == root
    summary = json.loads((root / "diagnosis.json").read_text())["summary"][str(root / "data" / "test.parquet")]
    assert summary["all"]["questions"] == SMALL_DATA.n_test and {"count", "compare"} <= set(summary)
    assert (root / "build_seed").read_text().strip() == "0"
    model_dir = root / "model"
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    base = AutoModelForImageTextToText.from_pretrained(root / "base")
    assert AutoProcessor.from_pretrained(model_dir) is not None
    # verl's SFT trainer saves its Hugging Face copy in bfloat16: compare with the base rounded the same way.
    base_state = base.state_dict()
    changed = [n for n, p in model.state_dict().items() if not p.equal(base_state[n].to(p.dtype))]
    assert changed, "3 SFT steps left every weight as the base model's"
    assert all(not n.startswith("model.visual") for n in changed), f"the vision tower must stay frozen: {changed}"
    assert "step:3" in (root / "sft.log").read_text() == (root / "sft-seed0.log").read_text()
    assert (root / "data" / "rl" / "unlabeled.parquet").is_file() and (root / "data" / "test.parquet").is_file()
    assert not list(root.glob(".sft-*")), "the build's working directory was left behind"

    # Complete for these settings: a second call builds nothing.
    monkeypatch.setattr(sft_model, "_run_sft", lambda *a, **k: pytest.fail("rebuilt a complete asset"))
    mtime = os.stat(model_dir / "model.safetensors").st_mtime_ns
    assert sft_model.ensure_toy_sft_model(root, model_config, SMALL_DATA, steps=3, floors={}) == root
    assert os.stat(model_dir / "model.safetensors").st_mtime_ns == mtime


def test_other_settings_rebuild_and_a_failed_build_leaves_no_manifest(tmp_path, monkeypatch):
    """Settings are part of the manifest; a failing trainer raises with the log's path and leaves no manifest."""
    root = tmp_path / "toy-sft"
    calls = []

    def failing(base, data, steps, seed, ckpt, log_path):
        calls.append(steps)
        raise RuntimeError(f"verl's SFT trainer exited with status 1; see {log_path}")

    monkeypatch.setattr(sft_model, "ensure_tiny_model", lambda path, config: path)
    monkeypatch.setattr(sft_model, "ensure_toy_data", lambda path, config: {})
    monkeypatch.setattr(sft_model, "_run_sft", failing)
    with pytest.raises(RuntimeError, match=r"sft-seed0\.log"):
        sft_model.ensure_toy_sft_model(root, TinyModelConfig(), SMALL_DATA, steps=3)
    assert not (root / sft_model.MANIFEST_NAME).exists()
    assert not list(root.glob(".sft-*"))
    payload = lambda steps, seed=0: sft_model._payload(TinyModelConfig(), SMALL_DATA, steps, seed, {})  # noqa: E731
    assert payload(3) != payload(4) and payload(3) != payload(3, seed=1)
    assert calls == [3]


def _fake_builds(monkeypatch, maj_by_seed: dict[int, float]) -> list[int]:
    """Stand-ins for the base model, the data, verl's SFT trainer and the diagnosis: seed k's build scores
    ``maj_by_seed[k]`` on compare and 0.5 on count."""
    seeds = []

    def sft(base, data, steps, seed, ckpt, log_path):
        seeds.append(seed)
        log_path.write_text(f"step:{steps}\n")
        hf = ckpt / "hf"
        hf.mkdir(parents=True)
        (hf / "config.json").write_text("{}")
        return hf

    def diagnosis(model_dir, test_file, out, log_path):
        out.write_text("{}")
        maj = maj_by_seed[seeds[-1]]
        return {"all": {"maj": maj, "greedy": maj}, "compare": {"maj": maj, "greedy": maj},
                "count": {"maj": 0.5, "greedy": 0.5}}

    monkeypatch.setattr(sft_model, "ensure_tiny_model", lambda path, config: path)
    monkeypatch.setattr(sft_model, "ensure_toy_data", lambda path, config: {"test": path / "test.parquet"})
    monkeypatch.setattr(sft_model, "_run_sft", sft)
    monkeypatch.setattr(sft_model, "diagnose_build", diagnosis)
    return seeds


def test_a_build_below_its_floor_is_retried_with_the_next_seed(tmp_path, monkeypatch):
    seeds = _fake_builds(monkeypatch, {0: 0.52, 1: 0.9, 2: 0.9})
    root = sft_model.ensure_toy_sft_model(tmp_path / "toy-sft", TinyModelConfig(), SMALL_DATA, steps=3)
    assert seeds == [0, 1]
    assert (root / "build_seed").read_text().strip() == "1"
    # Every attempt's log and diagnosis are kept.
    assert {p.name for p in root.glob("*-seed*")} == {"sft-seed0.log", "sft-seed1.log", "diagnosis-seed0.json",
                                                     "diagnosis-seed1.json"}
    assert (root / sft_model.MANIFEST_NAME).is_file()


def test_every_build_below_its_floor_is_an_error_and_no_trusted_model(tmp_path, monkeypatch):
    seeds = _fake_builds(monkeypatch, {3: 0.5, 4: 0.6})
    root = tmp_path / "toy-sft"
    with pytest.raises(sft_model.BelowFloor, match=r"after 2 builds \(seeds 3-4\): compare maj@8 60.0 < 70.0"):
        sft_model.ensure_toy_sft_model(root, TinyModelConfig(), SMALL_DATA, steps=3, seed=3, attempts=2)
    assert seeds == [3, 4]
    assert not (root / sft_model.MANIFEST_NAME).exists()  # never handed to the quickstart as built


def test_floors_apply_to_the_tasks_the_data_has():
    summary = {"all": {"maj": 0.9}, "compare": {"maj": 0.9}}
    assert sft_model.below_floors(summary, {"compare": 0.7}) == []
    assert sft_model.below_floors(summary, {"compare": 0.95}) == ["compare maj@8 90.0 < 95.0"]
    assert sft_model.below_floors(summary, {"count": 0.3}) == ["count maj@8 0.0 < 30.0"]  # not measured: missed
    one_task = sft_model._with_tasks({"all": {"maj": 0.8}}, sft_model.TOY_DATA)
    assert one_task["compare"] == {"maj": 0.8}


def test_cli_reports_a_failed_build_in_one_line(tmp_path, monkeypatch, capsys):
    _fake_builds(monkeypatch, {0: 0.5})
    status = sft_model.main([f"out={tmp_path / 'x'}", "steps=3", "attempts=1", "n_sft=64", "n_rl=8", "n_test=8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith("error: the toy SFT model is below its floor")


def test_the_default_regime_is_the_positive_control():
    data = sft_model.TOY_DATA
    assert data.difficulty.tasks == ("compare",)
    assert data.styles.shortcut > 1 / (1 + data.styles.careful)  # the shortcut is each careful phrasing's mode
    assert data.styles.shortcut < 0.5  # but the careful ones together outvote it
    assert sft_model.PLAIN_DATA.styles == sft_model.StyleMix()


def test_a_shipped_build_is_copied_where_its_settings_fit(tmp_path, monkeypatch):
    seeds = _fake_builds(monkeypatch, {0: 0.9})
    monkeypatch.setattr(sft_model, "SHIPPED_DIR", tmp_path / "shipped")
    built = sft_model.ensure_toy_sft_model(tmp_path / "a", TinyModelConfig(), SMALL_DATA, steps=3)
    (built / "diagnosis.json").write_text(json.dumps({
        "settings": {"model": "/x", "data": ["/y"], "n": 8, "temperature": 1.0},
        "summary": {str(built / "data" / "test.parquet"): {"all": {"greedy": 0.6, "maj": 0.9}}}}))
    sft_model.ship_build(built)
    shipped = json.loads((tmp_path / "shipped" / "build.json").read_text())
    assert shipped["payload"] == json.loads((built / sft_model.MANIFEST_NAME).read_text())
    assert shipped["diagnosis"]["summary"] == {"test.parquet": {"all": {"greedy": 0.6, "maj": 0.9}}}
    assert "model" not in shipped["diagnosis"]["settings"]  # nothing of the building machine's paths

    # Same settings elsewhere: copied, not trained.
    copy = sft_model.ensure_toy_sft_model(tmp_path / "b", TinyModelConfig(), SMALL_DATA, steps=3)
    assert seeds == [0]
    assert (copy / "model" / "config.json").read_text() == "{}"
    assert (copy / "build_seed").read_text().strip() == "0"
    # Other settings, or use_shipped=False: trained from scratch.
    sft_model.ensure_toy_sft_model(tmp_path / "c", TinyModelConfig(), SMALL_DATA, steps=4)
    sft_model.ensure_toy_sft_model(tmp_path / "d", TinyModelConfig(), SMALL_DATA, steps=3, use_shipped=False)
    assert seeds == [0, 0, 0]


def test_ship_refuses_other_settings(tmp_path, capsys):
    assert sft_model.main([f"out={tmp_path}", "ship=true", "steps=5"]) == 2
    assert "default build only" in capsys.readouterr().err


def test_the_shipped_model_is_the_default_build_of_todays_code():
    """The quickstart starts from the shipped model: it must be what the code builds now, and a trusted build."""
    build = json.loads((sft_model.SHIPPED_DIR / sft_model.SHIPPED_BUILD).read_text())
    floors = {t: f for t, f in sft_model.FLOORS.items() if t in sft_model.TOY_DATA.difficulty.tasks}
    expected = sft_model._payload(sft_model.TOY_MODEL, sft_model.TOY_DATA, sft_model.SFT_STEPS, 0, floors)
    assert build["payload"] == json.loads(json.dumps(expected)), (
        "the toy data, model or SFT recipe changed since the shipped model was built: rebuild it with "
        "`python -m verl_ext.toy.sft_model out=DIR ship=true` (about 10 minutes on 2 cores)"
    )
    summary = sft_model._with_tasks(build["diagnosis"]["summary"][build["test_file"]], sft_model.TOY_DATA)
    assert sft_model.below_floors(summary, floors) == []
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (sft_model.SHIPPED_DIR / "model").iterdir()}


def test_the_readme_shows_the_shipped_models_figures():
    """The quickstart's model is the one whose figures the README gives: read from its build, not assumed."""
    build = json.loads((sft_model.SHIPPED_DIR / sft_model.SHIPPED_BUILD).read_text())
    figures = build["diagnosis"]["summary"][build["test_file"]]["all"]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"held-out greedy {100 * figures['greedy']:.1f} %, maj@8 {100 * figures['maj']:.1f} %" in readme
