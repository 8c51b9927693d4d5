"""Generation for evaluation and data synthesis, on verl's rollout replicas (``replicas.py``).

Start replicas from a composed verl config with :class:`~verl_ext.generation.replicas.ReplicaGenerator`
(the commands) or from a model path with :func:`make_generator` (tests, toy measurements), then call
``generate(requests, settings)``: a list of :class:`GenerationRequest` (chat messages + images) in,
``settings.n`` completion texts per request out.
"""

from verl_ext.generation.base import (
    IMAGE_PLACEHOLDER,
    BackendConfig,
    BatchedGenerator,
    GenerationRequest,
    Generator,
    SamplingSettings,
    load_image,
    load_images,
    structured_messages,
)
from verl_ext.generation.factory import BACKENDS, make_generator, resolve_backend

__all__ = [
    "BACKENDS",
    "IMAGE_PLACEHOLDER",
    "BackendConfig",
    "BatchedGenerator",
    "GenerationRequest",
    "Generator",
    "SamplingSettings",
    "load_image",
    "load_images",
    "make_generator",
    "resolve_backend",
    "structured_messages",
]
