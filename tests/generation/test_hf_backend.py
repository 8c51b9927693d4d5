"""The transformers backend on the tiny random Qwen2.5-VL: batching, n samples, images, determinism, lengths."""

from __future__ import annotations

import io
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from PIL import Image

from verl_ext.generation import (
    BackendConfig,
    GenerationRequest,
    Generator,
    SamplingSettings,
    make_generator,
    resolve_backend,
)
from verl_ext.generation.hf_backend import HFGenerator

TOKEN = 28 * 28  # pixels per image token (patch 14, 2 x 2 merge)
MIN_PIXELS, MAX_PIXELS = TOKEN * 4, TOKEN * 16


@pytest.fixture(scope="module")
def generator(tiny_model_dir) -> HFGenerator:
    config = BackendConfig(batch_size=2, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, show_progress=False)
    return HFGenerator(str(tiny_model_dir), config)


def red(size=(300, 200)) -> Image.Image:
    return Image.new("RGB", size, (220, 30, 30))


def requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "<image>How many red squares?"},
            ],
            [red()],
        ),
        GenerationRequest([{"role": "user", "content": "What is the sum of 3 and 4?"}]),
        GenerationRequest(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare "},
                        {"type": "image"},
                        {"type": "text", "text": " and "},
                        {"type": "image"},
                    ],
                }
            ],
            [red((64, 64)), red((120, 90))],
        ),
    ]


class GenerateSpy:
    """Wraps model.generate to record its inputs and outputs."""

    def __init__(self, model):
        self.model, self.original, self.calls = model, model.generate, []

    def __enter__(self):
        def spy(**kwargs):
            out = self.original(**kwargs)
            self.calls.append({"kwargs": kwargs, "sequences": out})
            return out

        self.model.generate = spy
        return self

    def __exit__(self, *exc):
        self.model.generate = self.original


def test_is_a_generator(generator):
    assert isinstance(generator, Generator) and generator.vision
    assert resolve_backend("auto") in ("hf", "vllm")
    with pytest.raises(ValueError, match="unknown generation backend"):
        resolve_backend("tgi")


def test_n_samples_per_request_and_batching(generator):
    batches = []
    settings = SamplingSettings(n=3, temperature=1.0, max_new_tokens=6, seed=1)
    out = generator.generate(
        requests(), settings, on_batch=lambda start, outputs: batches.append((start, len(outputs)))
    )
    assert len(out) == 3 and all(len(texts) == 3 and all(isinstance(t, str) for t in texts) for texts in out)
    assert batches == [(0, 2), (2, 1)]  # batch_size 2, reported as each batch finishes
    # Sampling draws different completions for one prompt.
    assert any(len(set(texts)) > 1 for texts in out)


def test_images_reach_the_model_within_the_pixel_bounds(generator, tiny_model_dir):
    image_token = generator.model.config.image_token_id
    with GenerateSpy(generator.model) as spy:
        generator.generate(requests(), SamplingSettings(n=1, temperature=0, max_new_tokens=2))
    first, second = spy.calls
    grid = first["kwargs"]["image_grid_thw"]
    assert grid.shape == (1, 3) and second["kwargs"]["image_grid_thw"].shape == (2, 3)
    ids = first["kwargs"]["input_ids"]
    tokens_per_image = int(grid.prod()) // 4
    assert MIN_PIXELS // TOKEN <= tokens_per_image <= MAX_PIXELS // TOKEN
    # The image row carries that many image tokens; the text-only row of the batch none.
    assert int((ids[0] == image_token).sum()) == tokens_per_image and int((ids[1] == image_token).sum()) == 0
    # Left padding: every row ends with the generation prompt, padding sits at the start.
    assert bool(first["kwargs"]["attention_mask"][:, -1].all())

    # Wider pixel bounds give the same image more tokens.
    wide = HFGenerator(
        str(tiny_model_dir), BackendConfig(min_pixels=TOKEN * 32, max_pixels=TOKEN * 64, show_progress=False)
    )
    with GenerateSpy(wide.model) as spy:
        wide.generate(requests()[:1], SamplingSettings(n=1, temperature=0, max_new_tokens=2))
    assert int(spy.calls[0]["kwargs"]["image_grid_thw"].prod()) // 4 > tokens_per_image


def test_lazy_image_sources_decode_alike(generator, tmp_path):
    buffer = io.BytesIO()
    red().save(buffer, format="PNG")
    path = tmp_path / "red.png"
    path.write_bytes(buffer.getvalue())
    sources = [
        red(),
        buffer.getvalue(),
        str(path),
        {"bytes": buffer.getvalue(), "path": None},
        {"bytes": None, "path": str(path)},
    ]
    settings = SamplingSettings(n=1, temperature=0, max_new_tokens=4)
    with GenerateSpy(generator.model) as spy:
        outs = [
            generator.generate([GenerationRequest([{"role": "user", "content": "<image>What colour?"}], [s])], settings)
            for s in sources
        ]
    assert all(o == outs[0] for o in outs)
    pixels = [c["kwargs"]["pixel_values"] for c in spy.calls]
    assert all(torch.equal(p, pixels[0]) for p in pixels)


def test_greedy_is_deterministic(generator):
    settings = SamplingSettings(n=2, temperature=0, max_new_tokens=8)
    first = generator.generate(requests(), settings)
    second = generator.generate(requests(), settings)
    assert first == second
    assert all(texts[0] == texts[1] for texts in first)  # n greedy completions are one completion
    # Batching does not change a greedy completion.
    alone = [generator.generate([r], SamplingSettings(n=1, temperature=0, max_new_tokens=8))[0][0] for r in requests()]
    assert alone == [texts[0] for texts in first]


def test_seeded_sampling_is_reproducible(generator):
    a = generator.generate(requests(), SamplingSettings(n=2, temperature=1.0, max_new_tokens=8, seed=7))
    b = generator.generate(requests(), SamplingSettings(n=2, temperature=1.0, max_new_tokens=8, seed=7))
    c = generator.generate(requests(), SamplingSettings(n=2, temperature=1.0, max_new_tokens=8, seed=8))
    assert a == b and a != c


@pytest.mark.parametrize("max_new_tokens", [1, 5])
def test_max_new_tokens(generator, max_new_tokens):
    # Sampling from this random model seldom hits EOS, so some completion reaches the limit.
    with GenerateSpy(generator.model) as spy:
        generator.generate(requests(), SamplingSettings(n=2, temperature=1.0, max_new_tokens=max_new_tokens, seed=0))
    for call in spy.calls:
        prompt_len = call["kwargs"]["input_ids"].shape[1]
        assert call["sequences"].shape[1] - prompt_len <= max_new_tokens
    assert any(c["sequences"].shape[1] - c["kwargs"]["input_ids"].shape[1] == max_new_tokens for c in spy.calls)


def test_placeholder_tokens_are_never_generated(generator):
    image_ids = set(generator.suppress_ids)
    assert generator.model.config.image_token_id in image_ids
    with GenerateSpy(generator.model) as spy:
        generator.generate(requests(), SamplingSettings(n=4, temperature=5.0, max_new_tokens=16, seed=3))
    for call in spy.calls:
        completion = call["sequences"][:, call["kwargs"]["input_ids"].shape[1] :]
        assert not set(completion.flatten().tolist()) & image_ids


def test_request_validation():
    with pytest.raises(ValueError, match="mark 2 image"):
        GenerationRequest([{"role": "user", "content": "<image><image>?"}], [red()])
    with pytest.raises(ValueError, match="role"):
        GenerationRequest([{"role": "robot", "content": "hi"}])
    with pytest.raises(ValueError, match="temperature"):
        SamplingSettings(temperature=-1)
    with pytest.raises(ValueError, match="min_pixels"):
        BackendConfig(min_pixels=100, max_pixels=10)


def test_make_generator_builds_the_hf_backend(tiny_model_dir):
    generator = make_generator("hf", str(tiny_model_dir), batch_size=3, show_progress=False)
    assert isinstance(generator, HFGenerator) and generator.config.batch_size == 3
    assert generator.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="model_path"):
        make_generator("hf", "")


@pytest.fixture(scope="module")
def text_model_dir(tiny_model_dir, tmp_path_factory):
    """A tiny random text-only Qwen2 sharing the tiny VL model's tokenizer (e.g. a local judge)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("tiny_text_model")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_text_only_model(text_model_dir):
    generator = HFGenerator(str(text_model_dir), BackendConfig(batch_size=4, show_progress=False))
    assert not generator.vision and generator.processor is None
    reqs = [
        GenerationRequest([{"role": "system", "content": "Grade it."}, {"role": "user", "content": "Is 2+2=4?"}]),
        GenerationRequest([{"role": "user", "content": [{"type": "text", "text": "Short"}]}]),
    ]
    out = generator.generate(reqs, SamplingSettings(n=2, temperature=0, max_new_tokens=4))
    assert len(out) == 2 and all(len(texts) == 2 and texts[0] == texts[1] for texts in out)
    with pytest.raises(ValueError, match="no vision encoder"):
        generator.generate([GenerationRequest([{"role": "user", "content": "<image>?"}], [red()])], SamplingSettings())
