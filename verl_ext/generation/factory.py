"""Build the generator of a command: verl rollout replicas of the chosen engine, from a model path."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Optional

from verl_ext.generation.base import BackendConfig, BatchedGenerator

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "vllm")
"""Rollout engines: ``hf`` (this package's transformers replica) or ``vllm`` (verl's); ``auto`` picks."""


def resolve_backend(backend: str = "auto") -> str:
    """``hf`` or ``vllm``; ``auto`` is vllm when it is installed and a GPU is present, else hf."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    import torch

    # find_spec: whether vllm is installed, without importing it.
    return "vllm" if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() else "hf"


def make_generator(
    backend: str = "auto",
    model_path: str = "",
    config: Optional[BackendConfig] = None,
    verl_overrides: Sequence[str] = (),
) -> BatchedGenerator:
    """Start rollout replicas of ``model_path`` on the chosen engine, from verl's defaults and ``verl_overrides``.

    For callers holding a model path (tests, the toy measurements); the commands compose a recipe and
    start :class:`~verl_ext.generation.replicas.ReplicaGenerator` on it. Engine and cluster settings are
    verl keys: ``trainer.n_gpus_per_node=2`` gives two replicas of tensor parallel size 1.
    """
    from verl_ext.generation.replicas import ReplicaGenerator, generation_config

    if not model_path:
        raise ValueError("make_generator needs a model_path")
    chosen = resolve_backend(backend)
    logger.info("rollout engine: %s%s", chosen, " (auto)" if backend == "auto" else "")
    return ReplicaGenerator(generation_config(model_path, chosen, verl_overrides), config or BackendConfig())
