"""Build the generator of a command: verl rollout replicas of the chosen engine, from a model path."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from typing import Any, Optional

from verl_ext.generation.base import BackendConfig, BatchedGenerator

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "cuda_available", "make_generator", "resolve_backend", "rollout_overrides", "vllm_available"]

BACKENDS = ("auto", "hf", "vllm")
"""Rollout engines: ``hf`` (this package's transformers replica) or ``vllm`` (verl's); ``auto`` picks."""


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


def rollout_overrides(config: BackendConfig) -> list[str]:
    """verl config overrides carrying ``config``'s engine settings (the keys a recipe would set)."""
    rollout = "actor_rollout_ref.rollout"
    out = [
        f"{rollout}.tensor_model_parallel_size={config.tensor_parallel_size}",
        # Replicas = devices / tensor parallel size (verl's rule); Ray places each replica's pool.
        f"trainer.n_gpus_per_node={config.tensor_parallel_size * config.replicas}",
        f"{rollout}.gpu_memory_utilization={config.gpu_memory_utilization}",
        f"{rollout}.enforce_eager={str(config.enforce_eager).lower()}",
        f"actor_rollout_ref.model.trust_remote_code={str(config.trust_remote_code).lower()}",
    ]
    if config.dtype != "auto":
        out.append(f"{rollout}.dtype={config.dtype}")
    if config.max_model_len is not None:
        out.append(f"{rollout}.max_model_len={config.max_model_len}")
    return out


def make_generator(
    backend: str = "auto",
    model_path: str = "",
    config: Optional[BackendConfig] = None,
    **overrides: Any,
) -> BatchedGenerator:
    """Start ``config.replicas`` rollout replicas of ``model_path`` on the chosen engine; ``overrides`` replace fields of ``config``."""
    from verl_ext.generation.replicas import ReplicaGenerator, generation_config

    if not model_path:
        raise ValueError("make_generator needs a model_path")
    config = dataclasses.replace(config or BackendConfig(), **overrides)
    chosen = resolve_backend(backend)
    logger.info("rollout engine: %s%s", chosen, " (auto)" if backend == "auto" else "")
    return ReplicaGenerator(generation_config(model_path, chosen, rollout_overrides(config)), config)
