"""The evaluation protocol of MM-UPT (arXiv 2505.22453), its defaults the paper's, and the prompt it builds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

from verl_ext.eval.benchmarks import Sample
from verl_ext.generation.base import GenerationRequest, SamplingSettings
from verl_ext.prompts import FORMAT_INSTRUCTION, IMAGE_PLACEHOLDER


@dataclass(frozen=True)
class EvalProtocol:
    """Prompting and sampling of an evaluation run."""

    system_prompt: str = "You are a helpful assistant."
    """System turn; an empty string sends none (the chat template may then add its own default)."""
    format_instruction: str = FORMAT_INSTRUCTION
    """Appended to every question, verbatim (keep its leading space)."""
    temperature: float = 0.2
    """Sampling temperature (0: greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    top_k: int = -1
    """Top-k sampling (-1: off)."""
    max_new_tokens: int = 16384
    """Longest response in tokens."""
    n: int = 1
    """Responses per question; accuracy averages over them."""
    seed: Optional[int] = 0
    """Sampling seed (None: unseeded)."""
    min_pixels: Optional[int] = 262144
    """Smallest image area after resizing (512 x 512)."""
    max_pixels: Optional[int] = 1204224
    """Largest image area after resizing (1536 patches of 28 x 28)."""

    def sampling(self) -> SamplingSettings:
        names = ("n", "temperature", "top_p", "top_k", "max_new_tokens", "seed")
        return SamplingSettings(**{name: getattr(self, name) for name in names})


def build_request(sample: Sample, protocol: EvalProtocol) -> GenerationRequest:
    """The chat request for ``sample``: system turn, then the images and the question with the instruction."""
    messages: list[dict[str, Any]] = []
    if protocol.system_prompt:
        messages.append({"role": "system", "content": protocol.system_prompt})
    # Images first, then the question: Qwen2.5-VL's own examples and verl's geo3k rows do the same.
    # A literal "<image>" in a question would be read as one more image marker.
    question = sample.question.replace(IMAGE_PLACEHOLDER, "")
    instruction = protocol.format_instruction
    if sample.choices and instruction.strip():
        # The question ends with its option lines; glued on, the instruction would read as part
        # of the last option ("(D) 140° Please reason ...").
        instruction = "\n" + instruction.lstrip()
    messages.append({"role": "user", "content": IMAGE_PLACEHOLDER * len(sample.images) + question + instruction})
    # Seeds follow the question, not its place among the questions still to answer: a resumed run
    # samples each question as the uninterrupted run would have.
    digest = hashlib.blake2b(f"{sample.benchmark}/{sample.prompt_id}".encode(), digest_size=4).digest()
    return GenerationRequest(messages=messages, images=list(sample.images), seed_key=int.from_bytes(digest, "little"))
