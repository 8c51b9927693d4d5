"""Shared test configuration: markers, an offline sandboxed environment and the tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports `datasets`: verl's RLHFDataset loads parquet through it, and its cache
# would otherwise land in ~/.cache/huggingface/datasets, shared with every other run on the machine.
os.environ.setdefault(
    "HF_DATASETS_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), f"verl_ext_tests_hf_datasets_{os.getpid()}")
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end or multi-process tests, deselect with -m 'not slow'")
    config.addinivalue_line(
        "markers", "vllm: verl's vLLM replicas on the CPU; opt-in, in the venv of scripts/vllm_cpu_env.sh (skipped elsewhere)"
    )


@pytest.fixture(scope="session", autouse=True)
def _offline_sandbox(tmp_path_factory: pytest.TempPathFactory):
    """No hub downloads, and assets are built into a session tmp dir, never into ~/.cache."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "VERL_EXT_CACHE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["VERL_EXT_CACHE"] = str(tmp_path_factory.mktemp("verl_ext_cache"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tiny Qwen2.5-VL checkpoint, built once per session.

    Same path as the ``tiny_dir`` fixtures of tests/assets and tests/data, so a full run builds it once.
    """
    from verl_ext.toy.tiny_model import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "tiny_qwen2_5_vl")


@pytest.fixture
def rl_dataset_config(tmp_path: Path):
    """verl's ``RLHFDataset`` settings for the test data files: ``rl_dataset_config(**overrides)``."""
    from omegaconf import OmegaConf

    def make(**overrides):
        cfg = {
            "cache_dir": str(tmp_path / "verl_cache"),
            "prompt_key": "prompt",
            "image_key": "images",
            "max_prompt_length": 1024,
            "truncation": "error",
            "filter_overlong_prompts": True,
            # None = filter in-process. datasets>=5 runs an mp.Pool even for num_proc=1 (verl's default), and a
            # forked worker deadlocks once this process has used torch's thread pool (as the model tests have).
            "filter_overlong_prompts_workers": None,
            "return_raw_chat": True,
        }
        cfg.update(overrides)
        return OmegaConf.create(cfg)

    return make
