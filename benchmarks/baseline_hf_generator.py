"""The baseline of ``bench_synthesis.py``: the in-process transformers engine the package used until generation moved onto verl's rollout replicas (2026-12-02).

Frozen here, outside the package, so the benchmark can time synthesis through verl's rollout replicas
against what it replaced, in one run. Nothing in ``verl_ext`` imports it.

Offline generation with transformers ``generate``: CPU or one GPU, left-padded batches.

Vision-language models (a ``vision_config`` in their config) are driven through their processor,
which expands each image placeholder to the image's tokens and honours ``min_pixels``/``max_pixels``;
text-only models through their tokenizer. Sampling goes through an explicit ``GenerationConfig``
(see :func:`verl_ext.rollout.gen_config.build_generation_config`) so a checkpoint's
``generation_config.json`` (Qwen2.5-VL ships top_k=1, repetition_penalty=1.05) never changes what
was asked for.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from verl_ext.generation.base import (
    BackendConfig,
    BatchedGenerator,
    GenerationRequest,
    SamplingSettings,
    load_images,
    render_prompt,
)

logger = logging.getLogger(__name__)

__all__ = ["HFGenerator", "resolve_dtype"]

_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def resolve_dtype(name: str, device: Any) -> Any:
    """The torch dtype for ``name`` on ``device``; ``auto`` is bfloat16 on a GPU, float32 elsewhere."""
    import torch

    key = str(name).lower()
    if key == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # half-precision matmuls on a CPU are slower than fp32 and lose accuracy
    if key not in _DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; use auto or one of {sorted(_DTYPE_NAMES)}")
    return getattr(torch, _DTYPE_NAMES[key])


class HFGenerator(BatchedGenerator):
    """A transformers model answering batches of requests."""

    def __init__(
        self,
        model_path: str,
        config: BackendConfig = BackendConfig(),
        dtype: str = "auto",
        device: Optional[str] = None,
        trust_remote_code: bool = False,
    ):
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        self.config = config
        self.model_path = str(model_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = resolve_dtype(dtype, self.device)
        trust = trust_remote_code
        hf_config = AutoConfig.from_pretrained(self.model_path, trust_remote_code=trust)
        self.vision = getattr(hf_config, "vision_config", None) is not None
        if self.vision:
            self.processor: Optional[Any] = AutoProcessor.from_pretrained(self.model_path, trust_remote_code=trust)
            self.tokenizer = self.processor.tokenizer
            model_cls = AutoModelForImageTextToText
        else:
            if config.pixel_kwargs():
                logger.warning("%s has no vision encoder; min_pixels/max_pixels are ignored", self.model_path)
            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=trust)
            model_cls = AutoModelForCausalLM
        # Decoder-only batches must be padded on the left so every prompt ends where generation starts.
        self.tokenizer.padding_side = "left"
        self.model = model_cls.from_pretrained(self.model_path, dtype=dtype, trust_remote_code=trust)
        self.model.to(self.device).eval()
        self.eos_ids = self._eos_ids()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.eos_ids[0]
        self.pad_id = self.tokenizer.pad_token_id
        self.suppress_ids = self._placeholder_ids()
        logger.info(
            "hf generator: %s on %s (%s, %.1fM params, batch size %d)",
            self.model_path,
            self.device,
            dtype,
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            config.batch_size,
        )

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        for value in (getattr(self.model.generation_config, "eos_token_id", None), self.tokenizer.eos_token_id):
            if value is not None:
                ids.update(value if isinstance(value, (list, tuple)) else [value])
        if not ids:
            raise ValueError(f"{self.model_path}: neither the tokenizer nor the generation config names an EOS token")
        return sorted(ids)

    def _placeholder_ids(self) -> list[int]:
        # Vision placeholder tokens inside a completion have no image behind them and break the
        # model's multimodal position ids; trained models never emit them, random test models do.
        names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        return sorted({i for i in (getattr(self.model.config, n, None) for n in names) if i is not None})

    def _encode(self, requests: list[GenerationRequest]) -> dict[str, Any]:
        owner = self.processor if self.vision else self.tokenizer
        texts = [render_prompt(owner, r, vision=self.vision) for r in requests]
        if not self.vision:
            return self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        images = [load_images(r) for r in requests]
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if any(images):
            kwargs["images"] = images
            if self.config.pixel_kwargs():
                kwargs["images_kwargs"] = self.config.pixel_kwargs()
        return self.processor(**kwargs)

    def _generate_batch(
        self, requests: list[GenerationRequest], settings: SamplingSettings, batch_index: int
    ) -> list[list[str]]:
        import torch

        from verl_ext.rollout.gen_config import build_generation_config

        inputs = self._encode(requests).to(self.device)
        params = {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": settings.top_k,
            "repetition_penalty": settings.repetition_penalty,
        }
        gen_config = build_generation_config(
            params, settings.max_new_tokens, self.eos_ids, self.pad_id, self.suppress_ids
        )
        # The rollout keeps per-token scores for log-probs; here they would cost vocab x length floats
        # per sequence (gigabytes at 16k tokens), so only the sequences are returned.
        gen_config.output_scores = False
        gen_config.return_dict_in_generate = False
        # Greedy completions are identical: compute one and repeat it.
        per_request = 1 if settings.greedy else settings.n
        gen_config.num_return_sequences = per_request
        if settings.seed is not None and not settings.greedy:
            torch.manual_seed(settings.seed + batch_index)
        with torch.inference_mode():
            sequences = self.model.generate(**inputs, generation_config=gen_config)
        completions = sequences[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        # generate() repeats each prompt num_return_sequences times in place: rows k*n .. k*n+n-1.
        grouped = [texts[i * per_request : (i + 1) * per_request] for i in range(len(requests))]
        return [group * settings.n if per_request == 1 else group for group in grouped]

    def close(self) -> None:
        """Drop the model and free its GPU memory."""
        import torch

        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
