"""The toy SFT model asset: verl's SFT trainer for real (a few steps), cached, rebuilt when settings change."""

from __future__ import annotations

import os

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
    built = sft_model.ensure_toy_sft_model(root, model_config, SMALL_DATA, steps=3)
    assert built == root
    model_dir = root / "model"
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    base = AutoModelForImageTextToText.from_pretrained(root / "base")
    assert AutoProcessor.from_pretrained(model_dir) is not None
    # verl's SFT trainer saves its Hugging Face copy in bfloat16: compare with the base rounded the same way.
    base_state = base.state_dict()
    changed = [n for n, p in model.state_dict().items() if not p.equal(base_state[n].to(p.dtype))]
    assert changed, "3 SFT steps left every weight as the base model's"
    assert all(not n.startswith("model.visual") for n in changed), f"the vision tower must stay frozen: {changed}"
    assert "step:3" in (root / "sft.log").read_text()
    assert (root / "data" / "rl" / "unlabeled.parquet").is_file() and (root / "data" / "test.parquet").is_file()
    assert not list(root.glob(".sft-*")), "the build's working directory was left behind"

    # Complete for these settings: a second call builds nothing.
    monkeypatch.setattr(sft_model, "_run_sft", lambda *a, **k: pytest.fail("rebuilt a complete asset"))
    mtime = os.stat(model_dir / "model.safetensors").st_mtime_ns
    assert sft_model.ensure_toy_sft_model(root, model_config, SMALL_DATA, steps=3) == root
    assert os.stat(model_dir / "model.safetensors").st_mtime_ns == mtime


def test_other_settings_rebuild_and_a_failed_build_leaves_no_manifest(tmp_path, monkeypatch):
    """Settings are part of the manifest; a failing trainer raises with the log's path and leaves no manifest."""
    root = tmp_path / "toy-sft"
    calls = []

    def failing(base, data, steps, ckpt, log_path):
        calls.append(steps)
        raise RuntimeError(f"verl's SFT trainer exited with status 1; see {log_path}")

    monkeypatch.setattr(sft_model, "ensure_tiny_model", lambda path, config: path)
    monkeypatch.setattr(sft_model, "ensure_toy_data", lambda path, config: {})
    monkeypatch.setattr(sft_model, "_run_sft", failing)
    with pytest.raises(RuntimeError, match="sft.log"):
        sft_model.ensure_toy_sft_model(root, TinyModelConfig(), SMALL_DATA, steps=3)
    assert not (root / sft_model.MANIFEST_NAME).exists()
    assert not list(root.glob(".sft-*"))
    assert sft_model._payload(TinyModelConfig(), SMALL_DATA, 3) != sft_model._payload(TinyModelConfig(), SMALL_DATA, 4)
    assert calls == [3]
