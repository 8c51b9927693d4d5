"""Choose and build a generation backend."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from typing import Any, Optional

from verl_ext.generation.base import BackendConfig, BatchedGenerator

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "cuda_available", "make_generator", "resolve_backend", "vllm_available"]

BACKENDS = ("auto", "hf", "vllm")


def vllm_available() -> bool:
    """Whether vllm can be imported (checked without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def resolve_backend(backend: str = "auto") -> str:
    """``hf`` or ``vllm``; ``auto`` is vllm when it is installed and a GPU is present, else hf."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    return "vllm" if vllm_available() and cuda_available() else "hf"


def make_generator(
    backend: str = "auto",
    model_path: str = "",
    config: Optional[BackendConfig] = None,
    **overrides: Any,
) -> BatchedGenerator:
    """Load ``model_path`` on the chosen backend; ``overrides`` replace fields of ``config``."""
    if not model_path:
        raise ValueError("make_generator needs a model_path")
    config = dataclasses.replace(config or BackendConfig(), **overrides)
    chosen = resolve_backend(backend)
    logger.info("generation backend: %s%s", chosen, " (auto)" if backend == "auto" else "")
    if chosen == "vllm":
        from verl_ext.generation.vllm_backend import VLLMGenerator

        return VLLMGenerator(model_path, config)
    from verl_ext.generation.hf_backend import HFGenerator

    return HFGenerator(model_path, config)
