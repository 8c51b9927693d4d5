"""Requests, sampling settings and the batching generator base of the replica generators.

A :class:`GenerationRequest` is one chat conversation plus its images; a backend answers a list of
them with ``n`` completions each. Images may be given lazily (encoded bytes, a file path or a
``{"bytes", "path"}`` dict, as ``datasets`` stores them undecoded) and are only decoded when the
batch holding the request runs, so a whole benchmark can be queued without holding every image.
"""

from __future__ import annotations

import abc
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Union, runtime_checkable

from PIL import Image
from tqdm.auto import tqdm

from verl_ext.prompts import IMAGE_PLACEHOLDER


ImageSource = Union[Image.Image, bytes, str, os.PathLike, Mapping[str, Any]]
"""A decoded PIL image, encoded image bytes, a file path, or a ``{"bytes", "path"}`` dict."""

BatchCallback = Callable[[int, list[list[str]]], None]
"""Called after each batch with the index of its first request and its completions."""

_ROLES = ("system", "user", "assistant")


@dataclass
class GenerationRequest:
    """One conversation to complete."""

    messages: list[dict[str, Any]]
    """Chat turns ``{"role": "system"|"user"|"assistant", "content": ...}``. A string content marks each
    image's position with ``<image>``; a list content holds ``{"type": "text", "text": ...}`` and
    ``{"type": "image"}`` parts. Images without any marker are put before the first user text."""
    images: list[ImageSource] = field(default_factory=list)
    """The request's images in marker order; decoded only when the request's batch runs."""
    seed_key: Optional[int] = None
    """What its completions' seeds are derived from (None: its place in the ``generate`` call). A stable id
    (a question's hash) makes a resumed run sample the question as the uninterrupted run would have."""

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a generation request needs at least one message")
        for message in self.messages:
            if message.get("role") not in _ROLES:
                raise ValueError(f"message role must be one of {_ROLES}; got {message.get('role')!r}")
        structured_messages(self)  # placeholder count vs images: fail at construction, not mid-run


@dataclass(frozen=True)
class SamplingSettings:
    """How completions are sampled; the same meaning on every backend."""

    n: int = 1
    """Completions per request."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding (the ``n`` completions are then identical)."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 disables it."""
    top_k: int = -1
    """Sample among the k most likely tokens; -1 (or 0) disables it."""
    max_new_tokens: int = 1024
    """Longest completion in tokens."""
    seed: Optional[int] = 0
    """Seed for sampling (None: not seeded); each completion gets its own seed derived from it
    (:func:`verl_ext.generation.replicas.completion_seed`)."""
    repetition_penalty: float = 1.0
    """Penalty on tokens already present; 1.0 disables it (and keeps model defaults from leaking in)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1; got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0; got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1; got {self.max_new_tokens}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0; got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy (temperature 0)."""
        return self.temperature == 0


@dataclass(frozen=True)
class BackendConfig:
    """How requests are batched and sent; the engine (model, dtype, replicas, tensor parallel size) is
    verl's config (``actor_rollout_ref.*``, ``trainer.n_gpus_per_node``, ``trainer.nnodes``)."""

    batch_size: int = 64
    """Requests sent to the replicas at once; also the unit of progress reporting and of ``on_batch``
    callbacks (each replica's server batches what reaches it)."""
    min_pixels: Optional[int] = None
    """Smallest image area after the processor's resize (None: the processor's own setting)."""
    max_pixels: Optional[int] = None
    """Largest image area after the processor's resize (None: the processor's own setting)."""
    show_progress: bool = True
    """Show a tqdm progress bar over the requests."""
    batch_timeout_s: Optional[float] = 3600.0
    """Seconds one batch may take on the servers before it fails with a TimeoutError (None: no limit),
    so a hung server fails a shard (synthesis retries it) or a round (training goes on) instead of
    hanging them."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if self.batch_timeout_s is not None and self.batch_timeout_s <= 0:
            raise ValueError(f"batch_timeout_s must be positive or None; got {self.batch_timeout_s}")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive; got {value}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) exceeds max_pixels ({self.max_pixels})")

    def pixel_kwargs(self) -> dict[str, int]:
        """The image-processor keyword arguments for the pixel bounds that are set."""
        return {k: v for k, v in (("min_pixels", self.min_pixels), ("max_pixels", self.max_pixels)) if v is not None}


@runtime_checkable
class Generator(Protocol):
    """Anything that completes requests: ``generate(requests, settings)`` returns ``n`` texts per request."""

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        *,
        on_batch: Optional[BatchCallback] = None,
    ) -> list[list[str]]:
        """Complete every request, in order; ``on_batch`` sees each batch's results as soon as they exist."""
        ...


class BatchedGenerator(abc.ABC):
    """Splits requests into batches of ``config.batch_size``, shows progress and reports each batch."""

    config: BackendConfig

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        *,
        on_batch: Optional[BatchCallback] = None,
        desc: str = "generating",
    ) -> list[list[str]]:
        """Complete every request in order, ``settings.n`` texts each."""
        requests = list(requests)
        results: list[list[str]] = []
        size = self.config.batch_size
        with tqdm(total=len(requests), desc=desc, unit="prompt", disable=not self.config.show_progress) as bar:
            for batch_index, start in enumerate(range(0, len(requests), size)):
                batch = requests[start : start + size]
                outputs = self._generate_batch(batch, settings, batch_index)
                results.extend(outputs)
                if on_batch is not None:
                    on_batch(start, outputs)
                bar.update(len(batch))
        return results

    @abc.abstractmethod
    def _generate_batch(
        self, requests: list[GenerationRequest], settings: SamplingSettings, batch_index: int
    ) -> list[list[str]]:
        """Complete one batch: ``settings.n`` texts per request."""

    def close(self) -> None:
        """Release the model (a no-op unless a backend holds resources worth freeing early)."""


# ---------------------------------------------------------------------------------------------- messages


def _split_placeholders(text: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i:
            parts.append({"type": "image"})
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def _normalise_part(part: Any) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, Mapping):
        raise ValueError(f"message content parts must be dicts or strings; got {type(part).__name__}")
    kind = part.get("type")
    if kind == "image":
        # The image itself travels in request.images; a part only marks where it goes.
        return {"type": "image"}
    if kind == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    raise ValueError(f"unsupported content part type {kind!r}; use 'text' or 'image'")


def structured_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    """The request's messages with list content (text and image parts), images counted against markers.

    A request whose messages mark no image but which carries images gets them all before the
    text of its first user message (the layout of single-image VQA prompts).
    """
    messages: list[dict[str, Any]] = []
    n_markers = 0
    for message in request.messages:
        content = message.get("content", "")
        if isinstance(content, str):
            parts = _split_placeholders(content)
        elif isinstance(content, Sequence):
            parts = [_normalise_part(p) for p in content]
        else:
            raise ValueError(f"message content must be a string or a list of parts; got {type(content).__name__}")
        n_markers += sum(1 for p in parts if p["type"] == "image")
        messages.append({"role": message["role"], "content": parts})
    n_images = len(request.images)
    if n_markers == 0 and n_images:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise ValueError("a request with images needs a user message to hold them")
        first_user["content"] = [{"type": "image"} for _ in range(n_images)] + first_user["content"]
    elif n_markers != n_images:
        raise ValueError(f"the messages mark {n_markers} image(s) but the request carries {n_images}")
    return messages


def render_prompt(template_owner: Any, request: GenerationRequest, *, vision: bool) -> str:
    """The prompt text of ``request`` under the chat template of a processor or tokenizer.

    ``vision`` selects structured content (a multimodal processor renders image parts as its vision
    placeholders) or plain strings (text-only chat templates only understand strings; images are an error).
    """
    messages = structured_messages(request)
    if not vision:
        if request.images:
            raise ValueError("this model has no vision encoder, but the request carries images")
        messages = [{"role": m["role"], "content": "".join(p["text"] for p in m["content"])} for m in messages]
    return template_owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ---------------------------------------------------------------------------------------------- images


def load_image(source: ImageSource) -> Image.Image:
    """Decode one image source to an RGB PIL image."""
    if isinstance(source, Mapping):
        source = source.get("bytes") or source.get("path")
        if not source:
            raise ValueError("an image dict needs non-empty 'bytes' or 'path'")
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (bytes, bytearray)):
        image = Image.open(io.BytesIO(source))
    elif isinstance(source, (str, os.PathLike)):
        image = Image.open(source)
    else:
        raise TypeError(f"cannot read an image from {type(source).__name__}")
    # Benchmarks hold palette, RGBA, CMYK and multi-frame images; the processors expect RGB.
    return image if image.mode == "RGB" else image.convert("RGB")


def load_images(request: GenerationRequest) -> list[Image.Image]:
    """All images of ``request``, decoded."""
    return [load_image(s) for s in request.images]
