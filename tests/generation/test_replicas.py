"""Generation through verl's rollout replicas (the ``hf`` replica on the tiny Qwen2.5-VL).

What the old in-process engine promised, checked on the new path: n samples per request, batches
reported in order, images within the pixel bounds, lazy image sources, greedy identical to plain
transformers ``generate``, seeded sampling reproducible however requests are batched, and a text-only
model. One generator (one Ray session) per module: starting replicas costs ~20 s.
"""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from verl_ext.generation import BackendConfig, GenerationRequest, Generator, SamplingSettings, make_generator
from verl_ext.generation.base import render_prompt
from verl_ext.generation.factory import resolve_backend
from verl_ext.generation.replicas import ReplicaGenerator, generation_config, replica_count

pytestmark = pytest.mark.slow  # Ray and server processes

TOKEN = 28 * 28  # pixels per image token (patch 14, 2 x 2 merge)
MIN_PIXELS, MAX_PIXELS = TOKEN * 4, TOKEN * 16


@pytest.fixture(scope="module")
def varied_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with larger random weights, so greedy completions differ between prompts."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path_factory.mktemp("varied_tiny_model")
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(str(tiny_model_dir)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def generator(varied_model_dir):
    config = BackendConfig(batch_size=2, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, show_progress=False)
    gen = make_generator("hf", str(varied_model_dir), config)
    yield gen
    gen.close()


def red(size=(300, 200), shade=30) -> Image.Image:
    return Image.new("RGB", size, (220, shade, 30))


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
            [red((64, 64), 90), red((120, 90), 160)],
        ),
    ]


def reference_greedy(model_dir, request: GenerationRequest, max_new_tokens: int) -> str:
    """Plain transformers greedy decoding of one request: what the in-process engine did."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    text = render_prompt(processor, request, vision=True)
    kwargs = {"text": [text], "return_tensors": "pt"}
    if request.images:
        kwargs.update(images=list(request.images), images_kwargs={"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS})
    inputs = processor(**kwargs)
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    suppress = sorted({getattr(model.config, n) for n in names if getattr(model.config, n, None) is not None})
    with torch.inference_mode():
        out = model.generate(
            **inputs, do_sample=False, max_new_tokens=max_new_tokens, suppress_tokens=suppress, top_k=0, top_p=None,
            temperature=None, repetition_penalty=1.0,
        )
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_is_a_generator_on_the_registrys_hf_replica(generator):
    assert isinstance(generator, Generator) and isinstance(generator, ReplicaGenerator)
    assert generator.name == "hf" and generator.num_replicas == 1 and generator.vision
    assert resolve_backend("auto") in ("hf", "vllm")
    with pytest.raises(ValueError, match="unknown generation backend"):
        resolve_backend("tgi")
    with pytest.raises(ValueError, match="model_path"):
        make_generator("hf", "")


def test_n_samples_per_request_and_batching(generator):
    batches = []
    settings = SamplingSettings(n=3, temperature=1.0, max_new_tokens=6, seed=1)
    out = generator.generate(requests(), settings, on_batch=lambda start, outputs: batches.append((start, len(outputs))))
    assert len(out) == 3 and all(len(texts) == 3 and all(isinstance(t, str) for t in texts) for texts in out)
    assert batches == [(0, 2), (2, 1)]  # batch_size 2, reported as each batch finishes
    assert all(len(set(texts)) > 1 for texts in out)  # each completion has its own seed


def test_prompts_are_expanded_within_the_pixel_bounds(generator):
    image_token = generator.model_config.hf_config.image_token_id
    ids, images = generator.encode(requests()[0], {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS})
    tokens = ids.count(image_token)
    assert len(images) == 1 and MIN_PIXELS // TOKEN <= tokens <= MAX_PIXELS // TOKEN
    wide, _ = generator.encode(requests()[0], {"min_pixels": TOKEN * 32, "max_pixels": TOKEN * 64})
    assert wide.count(image_token) > tokens
    text_ids, no_images = generator.encode(requests()[1], {})
    assert image_token not in text_ids and no_images == []


def test_lazy_image_sources_decode_alike(generator, tmp_path):
    buffer = io.BytesIO()
    red().save(buffer, format="PNG")
    path = tmp_path / "red.png"
    path.write_bytes(buffer.getvalue())
    sources = [red(), buffer.getvalue(), str(path), {"bytes": buffer.getvalue(), "path": None}, {"bytes": None, "path": str(path)}]
    settings = SamplingSettings(n=1, temperature=0, max_new_tokens=6)
    outs = [
        generator.generate([GenerationRequest([{"role": "user", "content": "<image>What colour?"}], [s])], settings)
        for s in sources
    ]
    assert all(o == outs[0] for o in outs)


def test_greedy_is_plain_transformers_greedy_and_does_not_depend_on_batching(generator, varied_model_dir):
    settings = SamplingSettings(n=2, temperature=0, max_new_tokens=8)
    first = generator.generate(requests(), settings)
    assert all(texts[0] == texts[1] for texts in first)  # n greedy completions are one completion
    reference = [reference_greedy(varied_model_dir, r, 8) for r in requests()]
    assert [texts[0] for texts in first] == reference
    assert len(set(reference)) == len(reference)  # the prompts really get different completions
    alone = [generator.generate([r], SamplingSettings(n=1, temperature=0, max_new_tokens=8))[0][0] for r in requests()]
    assert alone == reference


def test_seeded_sampling_is_reproducible_however_requests_are_batched(generator):
    settings = SamplingSettings(n=2, temperature=1.0, max_new_tokens=8, seed=7)
    a = generator.generate(requests(), settings)
    b = generator.generate(requests(), settings)
    c = generator.generate(requests(), SamplingSettings(n=2, temperature=1.0, max_new_tokens=8, seed=8))
    assert a == b and a != c
    # A request's seeds depend on its position in the run, not on which requests share its batch.
    saved = generator.config
    try:
        generator.config = BackendConfig(batch_size=8, show_progress=False, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
        assert generator.generate(requests(), settings) == a
    finally:
        generator.config = saved


@pytest.mark.parametrize("max_new_tokens", [1, 5])
def test_max_new_tokens_reaches_the_server(generator, max_new_tokens):
    import ray

    prompt_ids, _ = generator.encode(requests()[1], {})
    params = {"temperature": 1.0, "max_tokens": max_new_tokens, "logprobs": False}
    outputs = [
        ray.get(generator.servers[0].generate.remote(prompt_ids=prompt_ids, sampling_params={**params, "seed": s}, request_id=str(s)))
        for s in range(4)
    ]
    lengths = [len(o.token_ids) for o in outputs]
    # Sampling from this random model seldom hits EOS, so some completion reaches the limit.
    assert max(lengths) == max_new_tokens


def test_replica_count_follows_the_cluster_settings(varied_model_dir):
    cfg = generation_config(
        str(varied_model_dir),
        overrides=[
            "trainer.n_gpus_per_node=8",
            "trainer.nnodes=2",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=4",
        ],
    )
    assert replica_count(cfg) == 4
    cfg.trainer.n_gpus_per_node, cfg.trainer.nnodes = 2, 1
    with pytest.raises(ValueError, match="cannot hold one replica"):
        replica_count(cfg)


def test_request_validation():
    with pytest.raises(ValueError, match="mark 2 image"):
        GenerationRequest([{"role": "user", "content": "<image><image>?"}], [red()])
    with pytest.raises(ValueError, match="role"):
        GenerationRequest([{"role": "robot", "content": "hi"}])
    with pytest.raises(ValueError, match="temperature"):
        SamplingSettings(temperature=-1)
    with pytest.raises(ValueError, match="min_pixels"):
        BackendConfig(min_pixels=100, max_pixels=10)


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


def test_text_only_model(generator, text_model_dir):
    # A second generator joins the running Ray session (and leaves it running when closed).
    text = make_generator("hf", str(text_model_dir), BackendConfig(batch_size=4, show_progress=False))
    try:
        assert not text.vision and not text.own_ray
        reqs = [
            GenerationRequest([{"role": "system", "content": "Grade it."}, {"role": "user", "content": "Is 2+2=4?"}]),
            GenerationRequest([{"role": "user", "content": [{"type": "text", "text": "Short"}]}]),
        ]
        out = text.generate(reqs, SamplingSettings(n=2, temperature=0, max_new_tokens=4))
        assert len(out) == 2 and all(len(texts) == 2 and texts[0] == texts[1] for texts in out)
        with pytest.raises(ValueError, match="no vision encoder"):
            text.generate([GenerationRequest([{"role": "user", "content": "<image>?"}], [red()])], SamplingSettings())
    finally:
        text.close()
    # The first generator still serves.
    assert generator.generate(requests()[1:2], SamplingSettings(n=1, temperature=0, max_new_tokens=2))


def test_two_replicas_share_one_synthesis_run(generator, varied_model_dir, tmp_path):
    """``trainer.n_gpus_per_node=2``: both hf servers answer requests of one synthesis run, which keeps what one replica keeps."""
    import zlib

    import pyarrow.parquet as pq
    import ray

    from verl_ext.data.synthesize import SynthesizeConfig, synthesize
    from verl_ext.toy.visual_math import VisualMathConfig, write_dataset

    class Tagged:
        """The model's (random) text, wrapped in the question tags so the real filters keep it."""

        def __init__(self, inner):
            self.inner = inner

        def generate(self, requests, settings, *, on_batch=None):
            out = self.inner.generate(requests, settings, on_batch=on_batch)
            return [[f"<question>What is shown, case {zlib.crc32(t.encode())}?</question>" for t in texts] for texts in out]

    seeds = write_dataset(tmp_path / "seeds", VisualMathConfig(n_train=6, n_test=1))["train"]

    def run(gen, out):
        config = SynthesizeConfig(seeds=(seeds,), out=tmp_path / out, model="test", num_per_seed=2, shard_size=3,
                                  temperature=0.0, max_new_tokens=6)
        result = synthesize(config, Tagged(gen))
        return [row["prompt"] for f in result.files for row in pq.read_table(f).to_pylist()]

    two = make_generator(
        "hf", str(varied_model_dir), BackendConfig(show_progress=False), ["trainer.n_gpus_per_node=2"]
    )
    try:
        assert two.num_replicas == 2 and len(two.servers) == 2
        rows_two = run(two, "two")
        served = ray.get([s.served_requests.remote() for s in two.servers])
    finally:
        two.close()
    assert all(n > 0 for n in served) and sum(served) == 6  # greedy: one request per seed row
    assert rows_two == run(generator, "one") and len(rows_two) == 6
