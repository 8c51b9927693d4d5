"""An explicit transformers ``GenerationConfig`` from verl/vLLM-style sampling parameters (no verl import)."""

from __future__ import annotations

from typing import Any, Optional

from transformers import GenerationConfig


def build_generation_config(
    sampling_params: dict[str, Any],
    max_tokens: int,
    eos_ids: list[int],
    pad_id: Optional[int],
    suppress_ids: Optional[list[int]] = None,
) -> GenerationConfig:
    """An explicit GenerationConfig, so the model's own generation defaults (top_k=50 ...) never leak in."""
    temperature = float(sampling_params.get("temperature", 1.0))
    top_k = int(sampling_params.get("top_k", -1) or -1)
    stop_ids = list(sampling_params.get("stop_token_ids") or [])
    do_sample = temperature > 0 and sampling_params.get("do_sample", True)
    return GenerationConfig(
        max_new_tokens=max_tokens,
        do_sample=bool(do_sample),
        temperature=temperature if do_sample else None,
        top_p=float(sampling_params.get("top_p", 1.0)) if do_sample else None,
        repetition_penalty=float(sampling_params.get("repetition_penalty", 1.0)),
        eos_token_id=None if sampling_params.get("ignore_eos") else sorted(set(eos_ids + stop_ids)),
        pad_token_id=pad_id,
        # 0, not None: None lets transformers' default top_k=50 back in.
        top_k=top_k if top_k > 0 else 0,
        suppress_tokens=suppress_ids or None,
        # Neutral values for the warpers a model's generation_config.json could otherwise switch on
        # (transformers fills every None from it): the rollout must sample what verl asked for.
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        no_repeat_ngram_size=0,
        min_new_tokens=0,
        return_dict_in_generate=True,
        output_logits=True,
    )
