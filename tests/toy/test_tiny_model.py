"""Tests for the locally built tiny Qwen2.5-VL checkpoint."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from PIL import Image

from verl_ext.toy import tiny_model as tm
from verl_ext.toy.tiny_model import (
    MARKER_NAME,
    SPECIAL_TOKENS,
    TinyModelConfig,
    build_tiny_model,
    ensure_tiny_model,
)
from verl_ext.toy.visual_math import make_example

# Small enough to build in about a second; used where the test is about build mechanics, not model quality.
FAST = TinyModelConfig(vocab_size=600, corpus_lines=300, hidden_size=32, intermediate_size=64)

ROUND_TRIP_TEXTS = [
    "The answer is \\boxed{12}.",
    "Let's think step by step.\n\nFirst, 3 + 4 = 7, so \\frac{7}{2} = 3.5.",
    "  leading and trailing spaces  ",
    "Tabs\tand\r\nCRLF and unicode: ünïcödé 中文 🙂 ∑_{i=1}^{n} x_i",
    "<think> count the red circles </think> \\boxed{3}",
    "",
]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Same path as in tests/data so a single pytest session builds the default model once.
    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "tiny_qwen2_5_vl")


@pytest.fixture(scope="session")
def loaded(tiny_dir: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    return model, processor, tokenizer


def _image(index: int = 0) -> Image.Image:
    return Image.open(io.BytesIO(make_example("train", index).png))


def test_files_and_marker(tiny_dir: Path) -> None:
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MARKER_NAME} <= names
    assert "processor_config.json" in names or "preprocessor_config.json" in names
    marker = json.loads((tiny_dir / MARKER_NAME).read_text())
    assert marker["config"] == tm.dataclasses.asdict(TinyModelConfig())
    # The checkpoint is meant to stay tiny: a few hundred thousand float32 parameters.
    assert (tiny_dir / "model.safetensors").stat().st_size < 5_000_000


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_tokenizer_round_trip(loaded, text: str) -> None:
    _, _, tokenizer = loaded
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_tokenizer_vocab_and_merges(loaded) -> None:
    _, _, tokenizer = loaded
    assert 2000 <= len(tokenizer) <= 4000
    # Frequent task words must be single tokens, digits are split one by one (Qwen2's pre-tokenizer).
    tokens = tokenizer.tokenize("How many red circles? The answer is 123")
    assert "Ġcircles" in tokens and "Ġanswer" in tokens
    assert tokens[-3:] == ["1", "2", "3"]


def test_special_tokens(loaded, tiny_dir: Path) -> None:
    model, processor, tokenizer = loaded
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    n_bpe = len(tokenizer) - len(SPECIAL_TOKENS)
    # Appended after the BPE vocab, in Qwen2.5-VL's order, like the real tokenizer.
    assert ids == list(range(n_bpe, n_bpe + len(SPECIAL_TOKENS)))
    for token, token_id in zip(SPECIAL_TOKENS, ids, strict=True):
        assert tokenizer(f"a{token}b", add_special_tokens=False)["input_ids"][1] == token_id
        assert tokenizer.decode([token_id]) == token
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    # Model-side ids agree with the tokenizer.
    cfg = model.config
    assert cfg.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert processor.image_token_id == cfg.image_token_id
    assert cfg.text_config.vocab_size == len(tokenizer)
    gen = model.generation_config
    assert list(gen.eos_token_id) == [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert gen.pad_token_id == tokenizer.pad_token_id


def test_chat_template_text(loaded) -> None:
    _, _, tokenizer = loaded
    messages = [{"role": "user", "content": "What is 2+3?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *messages, {"role": "assistant", "content": "5"}]
    text = tokenizer.apply_chat_template(with_system, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
        "<|im_start|>assistant\n5<|im_end|>\n"
    )


def test_chat_template_image_and_processor(loaded) -> None:
    _, processor, tokenizer = loaded
    image = _image()
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Count them."}]}
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>Count them.<|im_end|>") == 1
    assert text.endswith("<|im_start|>assistant\n")
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    grid = inputs["image_grid_thw"][0].tolist()
    # 112x112 px -> 8x8 patches of 14 px (one temporal patch) -> 16 tokens after the 2x2 merge.
    assert grid == [1, 8, 8]
    assert inputs["pixel_values"].shape == (64, 3 * 2 * 14 * 14)
    n_image_tokens = int((inputs["input_ids"][0] == processor.image_token_id).sum())
    assert n_image_tokens == 16
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert inputs["input_ids"].shape[1] == len(plain) + 15
    # transformers' own tokenize=True path (loads images from the messages) gives the same ids.
    direct = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=True, return_tensors="pt"
    )
    assert torch.equal(direct["input_ids"], inputs["input_ids"])
    two = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]}]
    numbered = processor.apply_chat_template(two, tokenize=False, add_vision_id=True)
    assert "Picture 1: <|vision_start|><|image_pad|><|vision_end|>Picture 2: <|vision_start|>" in numbered


def test_processor_pixel_bounds(loaded) -> None:
    _, processor, _ = loaded
    big = Image.new("RGB", (640, 480), (10, 200, 30))
    small = Image.new("RGB", (20, 20), (10, 200, 30))
    grid_big = processor.image_processor(images=[big], return_tensors="pt")["image_grid_thw"][0]
    grid_small = processor.image_processor(images=[small], return_tensors="pt")["image_grid_thw"][0]
    cfg = TinyModelConfig()
    area = lambda g: int(g[1] * g[2]) * cfg.patch_size**2  # noqa: E731
    assert cfg.min_pixels <= area(grid_big) <= cfg.max_pixels
    assert cfg.min_pixels <= area(grid_small) <= cfg.max_pixels


def test_generate_with_image(loaded) -> None:
    model, processor, tokenizer = loaded
    image = _image(3)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=True)
    elapsed = time.perf_counter() - start
    prompt_len = inputs["input_ids"].shape[1]
    assert torch.equal(out[0, :prompt_len], inputs["input_ids"][0])
    assert 1 <= out.shape[1] - prompt_len <= 8
    assert all(0 <= t < len(tokenizer) for t in out[0].tolist())
    assert elapsed < 5.0  # typically ~20 ms; loose bound for slow CI machines
    # Batched generation with left padding also works (rollouts batch prompts).
    processor.tokenizer.padding_side = "left"
    texts = [text, processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "A much longer question here?"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )]
    batch = processor(text=texts, images=[image, _image(4)], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2


def test_forward_loss_backward(loaded) -> None:
    """A training step (loss + grads through the vision tower) works on CPU."""
    model, processor, _ = loaded
    image = _image(6)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which bar is longer?"}]},
        {"role": "assistant", "content": "\\boxed{A}"},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    model.train()
    try:
        out = model(**inputs, labels=inputs["input_ids"])
        out.loss.backward()
    finally:
        model.eval()
    assert torch.isfinite(out.loss)
    vision_grads = [p.grad for n, p in model.named_parameters() if "visual" in n and p.grad is not None]
    assert vision_grads and any(g.abs().sum() > 0 for g in vision_grads)
    model.zero_grad(set_to_none=True)


def test_verl_loaders(tiny_dir: Path) -> None:
    from verl.utils import hf_processor, hf_tokenizer

    tokenizer = hf_tokenizer(str(tiny_dir))
    processor = hf_processor(str(tiny_dir))
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # verl binds Qwen2.5-VL's get_rope_index to the processor and calls it like the agent loop does.
    image = _image()
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    input_ids = inputs["input_ids"]
    mm_token_type_ids = (input_ids == processor.image_token_id).long()
    positions, _ = processor.get_rope_index(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        image_grid_thw=inputs["image_grid_thw"],
        mm_token_type_ids=mm_token_type_ids,
    )
    assert positions.shape == (3, 1, input_ids.shape[1])
    image_pos = positions[:, 0, mm_token_type_ids[0].bool()]
    # 4x4 merged grid: height and width indices each take 4 distinct values; temporal stays constant.
    assert image_pos[0].unique().numel() == 1
    assert image_pos[1].unique().numel() == 4 and image_pos[2].unique().numel() == 4


def test_mrope_section_fits_head_dim() -> None:
    for hidden, heads in [(64, 4), (128, 4), (96, 4), (256, 2)]:
        cfg = TinyModelConfig(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=heads)
        assert sum(cfg.mrope_section) == cfg.head_dim // 2
        assert all(s > 0 for s in cfg.mrope_section)
    assert TinyModelConfig().mrope_section == [2, 3, 3]
    with pytest.raises(ValueError):
        TinyModelConfig(hidden_size=60, num_attention_heads=4)
    with pytest.raises(ValueError):
        TinyModelConfig(num_attention_heads=4, num_key_value_heads=3)


def test_build_is_deterministic(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a", FAST)
    b = build_tiny_model(tmp_path / "b", FAST)
    c = build_tiny_model(tmp_path / "c", tm.dataclasses.replace(FAST, seed=1))
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_build_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash midway")

    monkeypatch.setattr(tm, "_build_model", boom)
    out = tmp_path / "tiny"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_tiny_model(out, FAST)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_existing_dir(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    out.mkdir()
    with pytest.raises(FileExistsError):
        build_tiny_model(out, FAST)


def test_ensure_builds_once_and_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[TinyModelConfig] = []
    real_build = tm.build_tiny_model

    def counting_build(out_dir, config=TinyModelConfig(), **kwargs):
        calls.append(config)
        return real_build(out_dir, config, **kwargs)

    monkeypatch.setattr(tm, "build_tiny_model", counting_build)
    out = tmp_path / "tiny"
    # A leftover of a killed build and a half-written directory without marker must both be handled.
    (tmp_path / ".tiny.tmp-999-deadbeef").mkdir()
    out.mkdir()
    (out / "config.json").write_text("{}")

    assert ensure_tiny_model(out, FAST) == out.absolute()
    assert len(calls) == 1
    assert not (tmp_path / ".tiny.tmp-999-deadbeef").exists()
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(out, FAST) == out.absolute()
    assert len(calls) == 1
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    # Asking for another config rebuilds in place.
    other = tm.dataclasses.replace(FAST, seed=7)
    ensure_tiny_model(out, other)
    assert calls == [FAST, other]
    assert json.loads((out / MARKER_NAME).read_text())["config"]["seed"] == 7


def test_ensure_concurrent_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_build = tm.build_tiny_model

    def slow_counting_build(out_dir, config=TinyModelConfig(), **kwargs):
        calls.append(out_dir)
        time.sleep(0.3)  # widen the race window
        return real_build(out_dir, config, **kwargs)

    monkeypatch.setattr(tm, "build_tiny_model", slow_counting_build)
    out = tmp_path / "tiny"
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(ensure_tiny_model(out, FAST))
        except Exception as exc:  # pragma: no cover - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(calls) == 1
    assert results == [out.absolute()] * 3


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli_model"
    assert tm.main([f"out={out}", "vocab_size=600", "corpus_lines=300", "hidden_size=32", "intermediate_size=64"]) == 0
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["config"]["hidden_size"] == 32 and marker["config"]["vocab_size"] == 600
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(out).text_config.hidden_size == 32
