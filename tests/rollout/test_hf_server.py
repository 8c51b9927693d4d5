"""The ``hf`` rollout's generation server, driven directly (it is plain Python; Ray only hosts it)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import verl  # noqa: F401  (plugin active, as in a Ray worker)
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import RolloutConfig
from verl_ext.rollout.gen_config import build_generation_config
from verl_ext.rollout.hf_server import HFRolloutServer, max_new_tokens

PROMPT_LENGTH = 128
RESPONSE_LENGTH = 16
# 112 = 4 * 28: a multiple of patch (14) * merge (2), inside the tiny processor's [3136, 50176] pixel bounds,
# so neither verl nor the processor resizes it: 8 x 8 patches -> 16 image tokens.
SIDE = 112


def _rollout_config(**overrides):
    return OmegaConf.create(
        {
            "name": "hf",
            "prompt_length": PROMPT_LENGTH,
            "response_length": RESPONSE_LENGTH,
            "tensor_model_parallel_size": 1,
            **overrides,
        }
    )


def _make_server(model_dir) -> HFRolloutServer:
    # As HFReplica passes them: OmegaConf configs, converted by the server.
    return HFRolloutServer(_rollout_config(), OmegaConf.create({"path": str(model_dir)}), replica_rank=0)


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> HFRolloutServer:
    return _make_server(tiny_model_dir)


def _image(side: int = SIDE) -> Image.Image:
    img = Image.new("RGB", (side, side))
    img.putdata([((7 * x) % 256, (5 * y) % 256, (x * y) % 256) for y in range(side) for x in range(side)])
    return img


def _encode(server: HFRolloutServer, image: Image.Image, question: str = "How many red circles are there?"):
    """Prompt ids with the image pads expanded, as verl's agent loop builds them."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = server.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return server.processor(text=[text], images=[image], return_tensors="pt")


@pytest.fixture(scope="module")
def image_prompt(server):
    image = _image()
    enc = _encode(server, image)
    return enc["input_ids"][0].tolist(), image, enc


def _generate(server, prompt_ids, image=None, **params):
    params.setdefault("logprobs", True)
    return asyncio.run(
        server.generate(prompt_ids, params, request_id="test", image_data=[image] if image is not None else None)
    )


def _manual_log_probs(server, enc, tokens):
    """log_softmax at temperature 1 of the generated tokens from one full forward pass (the actor's view)."""
    prompt = enc["input_ids"][0].tolist()
    full = torch.tensor([prompt + list(tokens)])
    with torch.no_grad():
        logits = server.model(
            input_ids=full,
            attention_mask=torch.ones_like(full),
            pixel_values=enc["pixel_values"],
            image_grid_thw=enc["image_grid_thw"],
            # The image tokens' 3D M-RoPE positions, as verl gives the actor (without it transformers 5
            # falls back to text positions).
            mm_token_type_ids=torch.cat([enc["mm_token_type_ids"], torch.zeros((1, len(tokens)), dtype=torch.long)], 1),
        ).logits[0].float()
    logits = logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]
    return torch.log_softmax(logits, dim=-1)[torch.arange(len(tokens)), torch.tensor(tokens)]


# ------------------------------------------------------------------------------------------------ setup


def test_server_loads_the_model_as_fp32_on_cpu(server):
    assert isinstance(server.config, RolloutConfig)
    assert server.config.dtype == "bfloat16"  # verl's default ...
    assert next(server.model.parameters()).dtype == torch.float32  # ... falls back to fp32 on CPU
    assert not server.model.training
    cfg = server.model.config
    assert set(server.suppress_ids) == {
        cfg.image_token_id,
        cfg.video_token_id,
        cfg.vision_start_token_id,
        cfg.vision_end_token_id,
    }
    assert server.tokenizer.convert_tokens_to_ids("<|im_end|>") in server.eos_ids
    assert server.pad_id == server.tokenizer.pad_token_id


def test_test_image_is_not_resized(server, image_prompt):
    prompt_ids, _, enc = image_prompt
    assert enc["image_grid_thw"].tolist() == [[1, SIDE // 14, SIDE // 14]]
    assert prompt_ids.count(server.model.config.image_token_id) == (SIDE // 28) ** 2


# ------------------------------------------------------------------------------------------- generation


def test_generate_with_an_image(server, image_prompt):
    prompt_ids, image, _ = image_prompt
    out = _generate(server, prompt_ids, image, temperature=1.0, seed=0)
    assert len(out.token_ids) > 0
    assert len(out.log_probs) == len(out.token_ids)
    assert all(lp <= 0.0 for lp in out.log_probs)
    assert all(isinstance(t, int) for t in out.token_ids)
    assert len(out.token_ids) <= RESPONSE_LENGTH  # default budget: response_length
    assert out.stop_reason == "completed"
    assert out.extra_fields == {"global_steps": server.global_steps}


def test_generate_without_logprobs_returns_none(server, image_prompt):
    prompt_ids, image, _ = image_prompt
    out = _generate(server, prompt_ids, image, temperature=1.0, logprobs=False, max_tokens=3)
    assert out.log_probs is None
    assert 0 < len(out.token_ids) <= 3


def test_generate_text_only(server):
    prompt_ids = server.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 plus 3?"}], add_generation_prompt=True, tokenize=True
    )
    prompt_ids = list(prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids)
    out = _generate(server, prompt_ids, temperature=0.0, max_tokens=4)
    assert 0 < len(out.token_ids) <= 4
    assert len(out.log_probs) == len(out.token_ids)


def test_max_tokens_is_respected(server, image_prompt):
    prompt_ids, image, _ = image_prompt
    out = _generate(server, prompt_ids, image, temperature=1.0, max_tokens=5, seed=1)
    assert 0 < len(out.token_ids) <= 5
    # With EOS ignored the budget is used exactly.
    out = _generate(server, prompt_ids, image, temperature=1.0, max_tokens=5, ignore_eos=True, seed=1)
    assert len(out.token_ids) == 5
    out = _generate(server, prompt_ids, image, temperature=1.0, max_new_tokens=3, ignore_eos=True, seed=1)
    assert len(out.token_ids) == 3


def test_greedy_is_deterministic(server, image_prompt):
    prompt_ids, image, _ = image_prompt
    first = _generate(server, prompt_ids, image, temperature=0.0, max_tokens=8, ignore_eos=True)
    second = _generate(server, prompt_ids, image, temperature=0.0, max_tokens=8, ignore_eos=True)
    assert first.token_ids == second.token_ids
    assert first.log_probs == second.log_probs
    assert len(first.token_ids) == 8


def test_seeded_sampling_is_reproducible_and_seeds_differ(server, image_prompt):
    prompt_ids, image, _ = image_prompt
    runs = {
        seed: _generate(server, prompt_ids, image, temperature=1.0, max_tokens=8, ignore_eos=True, seed=seed).token_ids
        for seed in (11, 12)
    }
    again = _generate(server, prompt_ids, image, temperature=1.0, max_tokens=8, ignore_eos=True, seed=11).token_ids
    assert again == runs[11]
    assert runs[11] != runs[12]  # 8 draws from a near-uniform 2k-token distribution


def test_placeholder_tokens_are_never_generated(server, image_prompt):
    prompt_ids, image, enc = image_prompt
    boosted = list(server.suppress_ids)

    def boost(module, args, output):
        output = output.clone()
        output[..., boosted] += 50.0
        return output

    handle = server.model.lm_head.register_forward_hook(boost)
    try:
        # The boost makes a placeholder the model's clear favourite ...
        with torch.no_grad():
            logits = server.model(**{k: v for k, v in enc.items() if k != "attention_mask"}).logits[0, -1]
        assert int(logits.argmax()) in boosted
        # ... yet neither greedy nor sampled responses contain one.
        greedy = _generate(server, prompt_ids, image, temperature=0.0, max_tokens=8, ignore_eos=True)
        sampled = _generate(server, prompt_ids, image, temperature=1.0, max_tokens=8, ignore_eos=True, seed=0)
    finally:
        handle.remove()
    for out in (greedy, sampled):
        assert len(out.token_ids) == 8
        assert not set(out.token_ids) & set(boosted)


def test_image_token_count_mismatch_is_a_clear_error(server, image_prompt):
    prompt_ids, _, _ = image_prompt
    bigger = _image(2 * SIDE)  # needs 64 image tokens; the prompt was expanded for 16
    with pytest.raises(ValueError, match=r"prompt has 16 image tokens but its 1 image\(s\) need 64"):
        _generate(server, prompt_ids, bigger, temperature=0.0, max_tokens=2)


def test_video_and_audio_inputs_are_rejected(server, image_prompt):
    prompt_ids, _, _ = image_prompt
    for kwargs in ({"video_data": [object()]}, {"audio_data": [object()]}):
        with pytest.raises(ValueError, match="video and audio inputs need vLLM"):
            asyncio.run(server.generate(prompt_ids, {"max_tokens": 2}, request_id="v", **kwargs))


def test_context_is_the_models_as_in_vllm(server):
    assert server.config.max_model_len == server.model.config.text_config.max_position_embeddings


def test_prompt_longer_than_the_context_is_rejected(server):
    too_long = [server.pad_id] * server.config.max_model_len
    with pytest.raises(ValueError, match="no room to generate"):
        _generate(server, too_long, temperature=0.0)


# ------------------------------------------------------------------------------------ log-prob exactness


def test_log_probs_equal_the_actors_full_vocab_log_softmax(server, image_prompt):
    """KV-cached generation (with M-RoPE image positions) gives the log-probs the actor's full forward gives."""
    prompt_ids, image, enc = image_prompt
    out = _generate(server, prompt_ids, image, temperature=1.0, max_tokens=10, ignore_eos=True, seed=5)
    manual = _manual_log_probs(server, enc, out.token_ids)
    assert torch.allclose(torch.tensor(out.log_probs), manual, atol=1e-4, rtol=0)


def test_image_positions_are_the_processors(server, image_prompt):
    """The server scores with the image tokens' 3D M-RoPE positions, as the actor does.

    Without ``mm_token_type_ids`` transformers 5 silently gives image tokens text positions: the policy
    the rollout samples from is then another one than the actor's. Both halves are checked, so the
    test fails if either the server or transformers' fallback changes.
    """
    prompt_ids, image, enc = image_prompt
    out = _generate(server, prompt_ids, image, temperature=1.0, max_tokens=10, ignore_eos=True, seed=7)
    tokens = out.token_ids
    full = torch.tensor([prompt_ids + list(tokens)])
    with torch.no_grad():
        text_positions = server.model(
            input_ids=full, attention_mask=torch.ones_like(full),
            pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"],
        ).logits[0].float()
    text_positions = torch.log_softmax(text_positions[len(prompt_ids) - 1 : -1], dim=-1)
    text_lp = text_positions[torch.arange(len(tokens)), torch.tensor(tokens)]
    served = torch.tensor(out.log_probs)
    assert torch.allclose(served, _manual_log_probs(server, enc, tokens), atol=1e-4, rtol=0)
    # What the server served before it passed mm_token_type_ids (a random model barely reads positions;
    # a trained one does: rollout_corr/kl was ~0.1 on the toy SFT model).
    assert not torch.allclose(served, text_lp, atol=1e-4, rtol=0)


def test_greedy_log_probs_ignore_the_models_generation_defaults(server, image_prompt, monkeypatch):
    """A generation_config.json asking for temperature 0.7 / top-k 50 / top-p 0.8 must not leak in."""
    prompt_ids, image, enc = image_prompt
    baseline = _generate(server, prompt_ids, image, temperature=1.0, max_tokens=6, ignore_eos=True, seed=3)
    gen = server.model.generation_config
    leaky = type(gen).from_dict({**gen.to_dict(), "do_sample": True, "temperature": 0.7, "top_k": 50, "top_p": 0.8})
    monkeypatch.setattr(server.model, "generation_config", leaky)
    out = _generate(server, prompt_ids, image, temperature=1.0, max_tokens=6, ignore_eos=True, seed=3)
    assert out.token_ids == baseline.token_ids
    assert out.log_probs == pytest.approx(baseline.log_probs, abs=1e-6)
    manual = _manual_log_probs(server, enc, out.token_ids)
    assert torch.allclose(torch.tensor(out.log_probs), manual, atol=1e-4, rtol=0)


def test_concurrent_requests_are_batched_and_each_gets_its_own_exact_log_probs(server, monkeypatch):
    """Prompts of different lengths and images, sent at once: one padded batch, per-request results."""
    prompts = [_encode(server, _image(), q) for q in ("How many?", "What is the sum of the numbers shown?", "Hi")]
    batch_sizes = []
    real = server._generate_batch
    monkeypatch.setattr(server, "_generate_batch", lambda batch: batch_sizes.append(len(batch)) or real(batch))

    async def send_all():
        params = {"temperature": 1.0, "logprobs": True, "max_tokens": 8}
        return await asyncio.gather(
            *[server.generate(e["input_ids"][0].tolist(), dict(params), "r", image_data=[_image()]) for e in prompts]
        )

    outs = asyncio.run(send_all())
    assert batch_sizes == [3]
    for enc, out in zip(prompts, outs):
        assert 1 <= len(out.token_ids) <= 8
        manual = _manual_log_probs(server, enc, out.token_ids)
        assert torch.allclose(torch.tensor(out.log_probs), manual, atol=1e-4, rtol=0)


def test_requests_with_different_sampling_settings_are_not_mixed(server, image_prompt, monkeypatch):
    prompt_ids, image, _ = image_prompt
    batch_sizes = []
    real = server._generate_batch
    monkeypatch.setattr(server, "_generate_batch", lambda batch: batch_sizes.append(len(batch)) or real(batch))

    async def send():
        return await asyncio.gather(
            server.generate(prompt_ids, {"temperature": 1.0, "max_tokens": 4}, "a", image_data=[image]),
            server.generate(prompt_ids, {"temperature": 0.0, "max_tokens": 4}, "b", image_data=[image]),
        )

    asyncio.run(send())
    assert sorted(batch_sizes) == [1, 1]


# ------------------------------------------------------------------------------------------------ weights


@pytest.fixture
def fresh_server(tiny_model_dir) -> HFRolloutServer:
    return _make_server(tiny_model_dir)


def test_update_weights_replaces_the_served_weights(fresh_server):
    server = fresh_server
    enc = _encode(server, _image())
    prompt_ids = enc["input_ids"][0].tolist()
    before = server.weights_fingerprint()
    assert before["version"] == 0 and before["global_steps"] is None
    greedy_before = _generate(server, prompt_ids, _image(), temperature=0.0, max_tokens=6, ignore_eos=True)

    generator = torch.Generator().manual_seed(0)
    perturbed, by_storage = {}, {}
    for name, tensor in server.model.state_dict().items():
        if tensor.is_floating_point():
            # Tied tensors (embed_tokens / lm_head) share storage: the actor sends them equal.
            key = tensor.untyped_storage().data_ptr()
            if key not in by_storage:
                by_storage[key] = tensor + 0.05 * torch.randn(tensor.shape, generator=generator)
            perturbed[name] = by_storage[key]
    assert server.update_weights(perturbed, global_steps=7) == len(perturbed)

    after = server.weights_fingerprint()
    assert after["sha256"] != before["sha256"]
    assert after["version"] == 1 and after["global_steps"] == 7
    for name, tensor in perturbed.items():
        assert torch.equal(server.model.state_dict()[name], tensor), name
    greedy_after = _generate(server, prompt_ids, _image(), temperature=0.0, max_tokens=6, ignore_eos=True)
    assert greedy_after.token_ids != greedy_before.token_ids or greedy_after.log_probs != pytest.approx(
        greedy_before.log_probs, abs=1e-3
    )
    assert greedy_after.extra_fields["global_steps"] == 7

    # The same weights again: same digest, next version; global_steps kept when not given.
    server.update_weights(perturbed)
    again = server.weights_fingerprint()
    assert again["sha256"] == after["sha256"]
    assert again["version"] == 2 and again["global_steps"] == 7


def test_update_weights_with_an_unknown_name_loads_nothing(fresh_server):
    server = fresh_server
    before = server.weights_fingerprint()
    name = next(iter(server.model.state_dict()))
    tensor = server.model.state_dict()[name]
    with pytest.raises(KeyError, match="not_a_weight"):
        server.update_weights({name: torch.zeros_like(tensor), "not_a_weight": torch.zeros(1)})
    assert server.weights_fingerprint() == before


def test_weights_fingerprint_is_stable(server):
    assert server.weights_fingerprint() == server.weights_fingerprint()


# ----------------------------------------------------------------------------------------- max_new_tokens


@pytest.fixture(scope="module")
def rollout_config() -> RolloutConfig:
    return omega_conf_to_dataclass(_rollout_config(), dataclass_type=RolloutConfig)


def test_max_new_tokens_default_budget(rollout_config):
    # max_model_len unset: prompt_length + response_length = 144.
    assert max_new_tokens(rollout_config, 40, {}) == RESPONSE_LENGTH
    assert max_new_tokens(rollout_config, PROMPT_LENGTH, {}) == RESPONSE_LENGTH
    assert max_new_tokens(rollout_config, 140, {}) == 4  # what is left of the context
    assert max_new_tokens(rollout_config, 143, {}) == 1


def test_max_new_tokens_explicit_budget_is_popped_and_clamped(rollout_config):
    params = {"max_tokens": 5, "temperature": 1.0}
    assert max_new_tokens(rollout_config, 40, params) == 5
    assert params == {"temperature": 1.0}
    params = {"max_new_tokens": 7}
    assert max_new_tokens(rollout_config, 40, params) == 7
    assert params == {}
    assert max_new_tokens(rollout_config, 40, {"max_tokens": 1000}) == 104  # room left in 144
    assert max_new_tokens(rollout_config, 40, {"max_tokens": 0}) == 1
    assert max_new_tokens(rollout_config, 40, {"max_tokens": 9, "max_new_tokens": 3}) == 9  # as vLLM server


def test_max_new_tokens_uses_max_model_len_when_set():
    config = omega_conf_to_dataclass(_rollout_config(max_model_len=200), dataclass_type=RolloutConfig)
    assert max_new_tokens(config, 150, {"max_tokens": 100}) == 50
    assert max_new_tokens(config, 150, {}) == 1  # prompt beyond prompt_length: verl's formula floors at 1
    with pytest.raises(ValueError, match="max_model_len=200"):
        max_new_tokens(config, 200, {})


def test_max_new_tokens_prompt_too_long(rollout_config):
    with pytest.raises(ValueError, match="prompt of 144 tokens leaves no room"):
        max_new_tokens(rollout_config, 144, {})
    with pytest.raises(ValueError, match="no room"):
        max_new_tokens(rollout_config, 500, {"max_tokens": 5})


# ------------------------------------------------------------------------------------ build_generation_config


def test_generation_config_greedy_at_temperature_zero():
    config = build_generation_config({"temperature": 0.0, "top_p": 0.5}, 7, [3, 1], 0, [9])
    assert config.do_sample is False
    assert config.temperature is None and config.top_p is None
    assert config.max_new_tokens == 7
    assert config.eos_token_id == [1, 3]
    assert config.pad_token_id == 0
    assert config.suppress_tokens == [9]
    assert config.return_dict_in_generate and config.output_logits


def test_generation_config_sampling():
    config = build_generation_config(
        {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.1, "stop_token_ids": [5, 3]},
        4,
        [3],
        None,
    )
    assert config.do_sample is True
    assert config.temperature == pytest.approx(0.6) and config.top_p == pytest.approx(0.9)
    assert config.top_k == 20
    assert config.repetition_penalty == pytest.approx(1.1)
    assert config.eos_token_id == [3, 5]
    assert config.suppress_tokens is None


@pytest.mark.parametrize("top_k", [-1, 0, None])
def test_generation_config_disabled_top_k_is_zero(top_k):
    params = {"temperature": 1.0} if top_k is None else {"temperature": 1.0, "top_k": top_k}
    assert build_generation_config(params, 4, [1], 0).top_k == 0


def test_generation_config_ignore_eos_and_do_sample_false():
    assert build_generation_config({"ignore_eos": True}, 4, [1], 0).eos_token_id is None
    assert build_generation_config({"temperature": 1.0, "do_sample": False}, 4, [1], 0).do_sample is False


def test_model_generation_defaults_do_not_leak_into_the_prepared_config(server, monkeypatch):
    gen = server.model.generation_config
    leaky = type(gen).from_dict(
        {**gen.to_dict(), "do_sample": True, "top_k": 50, "top_p": 0.8, "temperature": 0.7, "typical_p": 0.9}
    )
    monkeypatch.setattr(server.model, "generation_config", leaky)
    sampling = build_generation_config({"temperature": 1.0, "top_k": -1}, 4, server.eos_ids, server.pad_id)
    prepared = server.model._prepare_generation_config(sampling)[0]
    assert prepared.top_k == 0
    assert prepared.top_p == pytest.approx(1.0)
    assert prepared.temperature == pytest.approx(1.0)
    assert prepared.typical_p == pytest.approx(1.0)
    assert prepared.do_sample is True
    greedy = build_generation_config({"temperature": 0.0}, 4, server.eos_ids, server.pad_id)
    assert server.model._prepare_generation_config(greedy)[0].do_sample is False
