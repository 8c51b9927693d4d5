"""Offline generation with vLLM's ``LLM.generate`` (GPU clusters; ``pip install -e .[gpu]``).

Prompts are rendered with the model's own chat template (through its transformers processor, so the
vision placeholders are the model's) and images go in ``multi_modal_data``. The pieces that do not
need vLLM (prompt inputs, engine arguments, sampling arguments, output collection) are pure
functions, tested without a GPU; :class:`VLLMGenerator` only wires them to the engine.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from verl_ext.generation.base import (
    BackendConfig,
    BatchedGenerator,
    GenerationRequest,
    SamplingSettings,
    load_images,
    render_prompt,
)

logger = logging.getLogger(__name__)

__all__ = [
    "VLLM_MISSING",
    "VLLMGenerator",
    "build_prompt_inputs",
    "collect_texts",
    "import_vllm",
    "llm_init_kwargs",
    "sampling_params_kwargs",
]

VLLM_MISSING = (
    "the vllm generation backend needs vLLM, which is not installed; install the GPU extra with "
    "`pip install -e .[gpu]` (or use --backend hf)"
)


def import_vllm() -> Any:
    """Import vllm, or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module("vllm")
    except ImportError as err:
        raise ImportError(VLLM_MISSING) from err


def sampling_params_kwargs(settings: SamplingSettings) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` meaning exactly ``settings``."""
    return {
        "n": settings.n,
        "temperature": settings.temperature,
        # vLLM ignores top_p/top_k when greedy, but rejects nothing: pass neutral values then.
        "top_p": 1.0 if settings.greedy else settings.top_p,
        "top_k": settings.top_k if settings.top_k > 0 and not settings.greedy else -1,  # -1: disabled
        "max_tokens": settings.max_new_tokens,
        "seed": settings.seed,
        "repetition_penalty": settings.repetition_penalty,
        "skip_special_tokens": True,
    }


def llm_init_kwargs(model_path: str, config: BackendConfig) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for ``config``."""
    kwargs: dict[str, Any] = {
        "model": str(model_path),
        "tensor_parallel_size": config.tensor_parallel_size,
        "dtype": config.dtype,
        "trust_remote_code": config.trust_remote_code,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "limit_mm_per_prompt": {"image": config.max_images_per_prompt},
        "enforce_eager": config.enforce_eager,
        # "vllm": vLLM's own neutral sampling defaults, not the checkpoint's generation_config.json.
        "generation_config": "vllm",
    }
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    if config.pixel_kwargs():
        kwargs["mm_processor_kwargs"] = config.pixel_kwargs()
    return kwargs


def build_prompt_inputs(
    requests: Sequence[GenerationRequest], render: Callable[[GenerationRequest], str]
) -> list[dict[str, Any]]:
    """One ``LLM.generate`` prompt dict per request: the rendered text plus its decoded images."""
    inputs = []
    for request in requests:
        item: dict[str, Any] = {"prompt": render(request)}
        images = load_images(request)
        if images:
            # A single image is passed bare: every vLLM version takes that form.
            item["multi_modal_data"] = {"image": images[0] if len(images) == 1 else images}
        inputs.append(item)
    return inputs


def collect_texts(outputs: Sequence[Any], n: int) -> list[list[str]]:
    """The completion texts of ``LLM.generate``'s request outputs (returned in prompt order)."""
    texts = []
    for output in outputs:
        completions = [c.text for c in output.outputs]
        if len(completions) != n:
            raise RuntimeError(f"vLLM returned {len(completions)} completions for a request with n={n}")
        texts.append(completions)
    return texts


class VLLMGenerator(BatchedGenerator):
    """A vLLM engine answering batches of requests."""

    def __init__(self, model_path: str, config: BackendConfig = BackendConfig()):
        vllm = import_vllm()
        self.config = config
        self.model_path = str(model_path)
        self._sampling_params_cls = vllm.SamplingParams
        self.llm = vllm.LLM(**llm_init_kwargs(self.model_path, config))
        self._template_owner, self.vision = self._chat_template_owner()
        logger.info(
            "vllm generator: %s (tensor parallel %d, batch size %d)",
            self.model_path,
            config.tensor_parallel_size,
            config.batch_size,
        )

    def _chat_template_owner(self) -> tuple[Any, bool]:
        # The processor renders image parts as the model's own vision placeholders, which vLLM
        # then expands; a text-only model has no processor worth the name, only its tokenizer.
        from transformers import AutoConfig, AutoProcessor

        hf_config = AutoConfig.from_pretrained(self.model_path, trust_remote_code=self.config.trust_remote_code)
        if getattr(hf_config, "vision_config", None) is not None:
            processor = AutoProcessor.from_pretrained(self.model_path, trust_remote_code=self.config.trust_remote_code)
            return processor, True
        return self.llm.get_tokenizer(), False

    def _render(self, request: GenerationRequest) -> str:
        return render_prompt(self._template_owner, request, vision=self.vision)

    def _generate_batch(
        self, requests: list[GenerationRequest], settings: SamplingSettings, batch_index: int
    ) -> list[list[str]]:
        params = self._sampling_params_cls(**sampling_params_kwargs(settings))
        outputs = self.llm.generate(build_prompt_inputs(requests, self._render), params, use_tqdm=False)
        return collect_texts(outputs, settings.n)

    def close(self) -> None:
        """Drop the engine (its GPU memory is freed when the last reference goes)."""
        self.llm = None
