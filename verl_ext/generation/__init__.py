"""Generation for evaluation and data synthesis, on verl's rollout replicas (``replicas.py``).

Start replicas from a composed verl config with :class:`~verl_ext.generation.replicas.ReplicaGenerator`
(the commands) or from a model path with :func:`make_generator` (tests, toy measurements), then call
``generate(requests, settings)``: a list of :class:`GenerationRequest` (chat messages + images) in,
``settings.n`` completion texts per request out.
"""

from verl_ext.generation.base import BackendConfig, GenerationRequest, Generator, SamplingSettings
from verl_ext.generation.factory import make_generator

__all__ = ["BackendConfig", "GenerationRequest", "Generator", "SamplingSettings", "make_generator"]
