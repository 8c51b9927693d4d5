"""The vLLM backend without vLLM: prompt inputs, engine and sampling arguments, output collection,
the wiring against a stand-in ``vllm`` module, and the install hint when vLLM is missing."""

from __future__ import annotations

import os
import re
import sys
import types
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from PIL import Image
from transformers import AutoProcessor

from verl_ext.generation import BackendConfig, GenerationRequest, SamplingSettings, make_generator, structured_messages
from verl_ext.generation.base import text_messages
from verl_ext.generation.vllm_backend import (
    VLLM_MISSING,
    VLLMGenerator,
    build_prompt_inputs,
    collect_texts,
    import_vllm,
    llm_init_kwargs,
    sampling_params_kwargs,
)

VISION = "<|vision_start|><|image_pad|><|vision_end|>"


def red(size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, (200, 0, 0))


# ------------------------------------------------------------------------------------------ messages


def test_placeholders_become_image_parts_in_order():
    request = GenerationRequest(
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "Left <image> right <image>."}],
        [red(), red()],
    )
    assert structured_messages(request)[1]["content"] == [
        {"type": "text", "text": "Left "},
        {"type": "image"},
        {"type": "text", "text": " right "},
        {"type": "image"},
        {"type": "text", "text": "."},
    ]


def test_images_without_markers_go_before_the_first_user_text():
    request = GenerationRequest([{"role": "system", "content": "s"}, {"role": "user", "content": "What?"}], [red()])
    assert structured_messages(request)[1]["content"] == [{"type": "image"}, {"type": "text", "text": "What?"}]


def test_structured_content_passes_through_and_is_counted():
    content = [{"type": "image", "image": "ignored: images travel in request.images"}, {"type": "text", "text": "Hi"}]
    request = GenerationRequest([{"role": "user", "content": content}], [red()])
    assert structured_messages(request)[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Hi"}]
    with pytest.raises(ValueError, match="mark 1 image"):
        GenerationRequest([{"role": "user", "content": content}], [red(), red()])
    with pytest.raises(ValueError, match="unsupported content part"):
        GenerationRequest([{"role": "user", "content": [{"type": "video"}]}])


def test_text_messages_for_text_only_templates():
    request = GenerationRequest(
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    )
    assert text_messages(request) == [{"role": "user", "content": "ab"}]
    with pytest.raises(ValueError, match="no vision encoder"):
        text_messages(GenerationRequest([{"role": "user", "content": "<image>x"}], [red()]))


# ------------------------------------------------------------------------------------------ pure functions


def test_sampling_params_mapping():
    sampled = sampling_params_kwargs(
        SamplingSettings(n=8, temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=512, seed=3)
    )
    assert sampled == {
        "n": 8,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "max_tokens": 512,
        "seed": 3,
        "repetition_penalty": 1.0,
        "skip_special_tokens": True,
    }
    disabled = sampling_params_kwargs(SamplingSettings(top_k=0))
    assert disabled["top_k"] == -1  # vLLM's "off"; 0 is rejected by some versions
    greedy = sampling_params_kwargs(SamplingSettings(n=2, temperature=0, top_p=0.5, top_k=5, seed=None))
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"], greedy["seed"], greedy["n"]) == (
        0,
        1.0,
        -1,
        None,
        2,
    )


def test_engine_kwargs():
    kwargs = llm_init_kwargs(
        "/models/qwen",
        BackendConfig(
            tensor_parallel_size=4, min_pixels=262144, max_pixels=1204224, max_model_len=20480, max_images_per_prompt=2
        ),
    )
    assert kwargs == {
        "model": "/models/qwen",
        "tensor_parallel_size": 4,
        "dtype": "auto",
        "trust_remote_code": False,
        "gpu_memory_utilization": 0.9,
        "limit_mm_per_prompt": {"image": 2},
        "enforce_eager": False,
        "generation_config": "vllm",
        "max_model_len": 20480,
        "mm_processor_kwargs": {"min_pixels": 262144, "max_pixels": 1204224},
    }
    bare = llm_init_kwargs("m", BackendConfig())
    assert "mm_processor_kwargs" not in bare and "max_model_len" not in bare


def test_prompt_inputs_with_the_models_chat_template(tiny_model_dir, tmp_path):
    processor = AutoProcessor.from_pretrained(str(tiny_model_dir))
    path = tmp_path / "img.png"
    red((50, 50)).save(path)
    reqs = [
        GenerationRequest(
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "<image>Count the shapes."},
            ],
            [str(path)],
        ),
        GenerationRequest([{"role": "user", "content": "No picture here."}]),
        GenerationRequest([{"role": "user", "content": "<image> vs <image>"}], [red(), red((20, 20))]),
    ]
    from verl_ext.generation.base import render_prompt

    inputs = build_prompt_inputs(reqs, lambda r: render_prompt(processor, r, vision=True))
    first, second, third = inputs
    assert first["prompt"] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{VISION}Count the shapes.<|im_end|>\n<|im_start|>assistant\n"
    )
    image = first["multi_modal_data"]["image"]
    assert isinstance(image, Image.Image) and image.size == (50, 50) and image.mode == "RGB"
    assert "multi_modal_data" not in second and VISION not in second["prompt"]
    assert third["prompt"].count(VISION) == 2 and [i.size for i in third["multi_modal_data"]["image"]] == [
        (40, 30),
        (20, 20),
    ]


def test_collect_texts():
    outputs = [
        SimpleNamespace(outputs=[SimpleNamespace(text="a1"), SimpleNamespace(text="a2")]),
        SimpleNamespace(outputs=[SimpleNamespace(text="b1"), SimpleNamespace(text="b2")]),
    ]
    assert collect_texts(outputs, 2) == [["a1", "a2"], ["b1", "b2"]]
    with pytest.raises(RuntimeError, match="n=3"):
        collect_texts(outputs, 3)


# ------------------------------------------------------------------------------------------ missing vLLM


def test_missing_vllm_names_the_install_command(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    with pytest.raises(ImportError, match=r"pip install -e \.\[gpu\]"):
        import_vllm()
    with pytest.raises(ImportError, match=r"pip install -e \.\[gpu\]"):
        make_generator("vllm", str(tiny_model_dir))
    assert "pip install -e .[gpu]" in VLLM_MISSING


# ------------------------------------------------------------------------------------------ wiring


def _question(prompt: str) -> str:
    return re.search(r"Question \d", prompt).group(0)


def _fake_vllm(log: dict) -> types.ModuleType:
    module = types.ModuleType("vllm")

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs):
            log["init"] = kwargs

        def generate(self, prompts, params, use_tqdm=True):
            log.setdefault("calls", []).append((prompts, params.kwargs))
            n = params.kwargs["n"]
            return [
                SimpleNamespace(outputs=[SimpleNamespace(text=f"{_question(p['prompt'])}#{k}") for k in range(n)])
                for p in prompts
            ]

        def get_tokenizer(self):
            raise AssertionError("a vision model's prompts come from its processor")

    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module


def test_generator_against_a_stand_in_engine(monkeypatch, tiny_model_dir):
    log: dict = {}
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm(log))
    config = BackendConfig(batch_size=2, tensor_parallel_size=2, min_pixels=3136, max_pixels=12544, show_progress=False)
    generator = make_generator("vllm", str(tiny_model_dir), config)
    assert isinstance(generator, VLLMGenerator) and generator.vision
    assert log["init"]["tensor_parallel_size"] == 2
    assert log["init"]["mm_processor_kwargs"] == {"min_pixels": 3136, "max_pixels": 12544}

    reqs = [GenerationRequest([{"role": "user", "content": f"<image>Question {i}?"}], [red()]) for i in range(3)]
    seen = []
    out = generator.generate(
        reqs, SamplingSettings(n=2, temperature=0.2, max_new_tokens=64, seed=5), on_batch=lambda s, o: seen.append(s)
    )
    assert seen == [0, 2] and [len(p) for p, _ in log["calls"]] == [2, 1]
    assert out == [[f"Question {i}#0", f"Question {i}#1"] for i in range(3)]
    prompts, params = log["calls"][0]
    assert VISION in prompts[0]["prompt"] and "Question 0?" in prompts[0]["prompt"]
    assert isinstance(prompts[0]["multi_modal_data"]["image"], Image.Image)
    assert params == sampling_params_kwargs(SamplingSettings(n=2, temperature=0.2, max_new_tokens=64, seed=5))
