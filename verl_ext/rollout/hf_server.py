"""The generation server of the ``hf`` rollout: one Ray actor holding a transformers model.

It answers verl's token-in/token-out ``generate`` calls (the vLLM server's contract: prompt ids
with the image placeholders already expanded, PIL images, sampling parameters) and takes fresh
weights from the FSDP actor after each update. Concurrent requests that share sampling settings
are generated as one left-padded batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.torch_dtypes import PrecisionType
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.replica import TokenOutput

from verl_ext.rollout.gen_config import build_generation_config

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))


def max_new_tokens(config: RolloutConfig, prompt_len: int, sampling_params: dict[str, Any]) -> int:
    """A request's token budget (its ``max_tokens`` or ``max_new_tokens``, popped), as verl's vLLM server sets it.

    ``config.max_model_len`` unset falls back to prompt + response length (the server sets it to the
    model's context size, as vLLM does, before any request).
    """
    max_model_len = config.max_model_len or (config.prompt_length + config.response_length)
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(
            f"prompt of {prompt_len} tokens leaves no room to generate within max_model_len={max_model_len}"
        )
    default = min(config.response_length, config.prompt_length + config.response_length - prompt_len)
    budget = sampling_params.pop("max_tokens", sampling_params.pop("max_new_tokens", default))
    return max(1, min(int(budget), room))


def state_dict_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names and float32 values, in name order (same weights, same digest)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


#: Most requests one generate call serves; more only pads more on a CPU.
MAX_BATCH = 64
#: How long the batcher waits for a wave of concurrent requests to arrive.
BATCH_WAIT_S = 0.01
#: Longest wait for a wave that keeps growing (requests with images arrive over tens of milliseconds).
MAX_WAVE_WAIT_S = 0.25


@dataclass
class _Request:
    """A queued generate call; requests with equal ``key`` can share one batch."""

    prompt_ids: list[int]
    vision: dict[str, Any]
    params: dict[str, Any]
    """The sampling parameters without ``max_tokens``/``max_new_tokens`` and ``seed``."""
    max_tokens: int
    seed: Optional[int]
    future: asyncio.Future

    @property
    def key(self) -> tuple[str, int, bool]:
        # Seeded and unseeded requests sample differently (per row vs the shared RNG): never mixed.
        return repr(sorted(self.params.items())), self.max_tokens, self.seed is None


class SeededRowSampler(LogitsProcessor):
    """Samples each row's next token from its own seeded RNG, then leaves only that token for greedy search.

    transformers samples a batch from the shared torch RNG, so a request's completion would depend on its
    batch mates; a seeded request (vLLM's per-request ``seed``) must get the same one however it is batched.
    Each row gets a ``torch.Generator``; after the usual warpers (temperature, top-k, top-p, in transformers'
    order) the draw is Gumbel-max (argmax of scores plus Gumbel noise, pre-drawn a few steps at a time), one
    vectorised argmax per step. Runs after the built-in processors (repetition penalty, suppressed tokens).
    """

    #: Noise values drawn per refill (all rows): bounds the memory of the pre-drawn noise to ~16 MB.
    NOISE_BUDGET = 1 << 22

    def __init__(self, seeds: list[int], temperature: float, top_k: int, top_p: float):
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.warpers = [TemperatureLogitsWarper(temperature)]
        if top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.step = 0
        self.noise: Optional[torch.Tensor] = None

    def _gumbel(self, vocab: int) -> torch.Tensor:
        chunk = max(1, self.NOISE_BUDGET // (len(self.generators) * vocab))
        offset = self.step % chunk
        if offset == 0:
            uniform = torch.stack([torch.rand((chunk, vocab), generator=g) for g in self.generators])
            self.noise = -torch.log(-torch.log(uniform.clamp_(1e-10, 1.0 - 1e-7)))
        self.step += 1
        return self.noise[:, offset]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        picked = (scores.float() + self._gumbel(scores.shape[-1]).to(scores.device)).argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter_(1, picked, 0.0)


class HFRolloutServer:
    """Serves ``generate`` for one rollout replica (created by ``HFReplica`` as a Ray actor)."""

    def __init__(self, config: RolloutConfig, model_config, replica_rank: int, node_rank: int = 0):
        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        # An HFModelConfig (the trainer's) passes through; a DictConfig (a standalone replica's) is converted.
        self.model_config = model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        self.global_steps: Optional[int] = None
        self.weights_version = 0
        self.served = 0
        self._lock = threading.Lock()
        self._pending: list[_Request] = []
        self._batcher: Optional[asyncio.Task] = None
        self.max_batch = max(1, min(MAX_BATCH, int(self.config.max_num_seqs or MAX_BATCH)))
        custom = self.config.custom or {}
        # rollout.custom.log_weight_digest: log a digest of the served weights after each sync, so a
        # test (or a suspicious user) can check the rollout serves exactly the trained weights.
        self.log_weight_digest = bool(custom.get("log_weight_digest", False))
        # rollout.custom.num_threads: torch threads of this server (standalone replicas share a node's cores).
        if custom.get("num_threads"):
            torch.set_num_threads(int(custom["num_threads"]))
        self.tokenizer = model_config.tokenizer
        self.processor = model_config.processor

        # On a CPU, bf16 matmuls are slower than fp32 and lose precision the actor does not: fp32 there.
        dtype = PrecisionType.to_dtype(self.config.dtype) if torch.cuda.is_available() else torch.float32
        is_vision = getattr(model_config.hf_config, "vision_config", None) is not None
        auto_cls = AutoModelForImageTextToText if is_vision else AutoModelForCausalLM
        self.model = auto_cls.from_pretrained(
            model_config.local_path, dtype=dtype, trust_remote_code=model_config.trust_remote_code
        ).eval()
        if self.config.max_model_len is None:
            # As verl's vLLM server: the context is the model's, not prompt + response length.
            text_config = getattr(self.model.config, "text_config", self.model.config)
            self.config.max_model_len = getattr(text_config, "max_position_embeddings", None)
        # Sampling draws from this process's torch RNG: seed it from rollout.seed, as vLLM seeds its engine.
        torch.manual_seed(int(self.config.seed) + replica_rank)
        eos = (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id)
        self.eos_ids = sorted({i for v in eos if v is not None for i in (v if isinstance(v, (list, tuple)) else [v])})
        if not self.eos_ids:
            raise ValueError(
                f"{self.model_config.local_path}: neither the tokenizer nor the generation config names an EOS token"
            )
        # A response holding image/video placeholder tokens breaks verl's multimodal position ids
        # (there is no image behind them); trained models never emit them, random ones do.
        names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        self.suppress_ids = sorted({getattr(self.model.config, n, None) for n in names} - {None})
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        size = sum(p.numel() for p in self.model.parameters()) / 1e6
        logger.info("hf rollout server %d: %s loaded (%s, %.1fM params)", replica_rank, model_config.local_path,
                    dtype, size)

    # ------------------------------------------------------------------ generation

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        audio_data: Optional[list[Any]] = None,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        priority: int = 0,
        **kwargs,
    ) -> TokenOutput:
        """Generate one response; the contract of verl's vLLM server ``generate``.

        Concurrent requests with the same sampling settings are generated together in one padded
        batch (up to ``rollout.max_num_seqs``, capped by ``MAX_BATCH``).
        """
        if video_data is not None or audio_data is not None:
            raise ValueError("the hf rollout serves text and images only; video and audio inputs need vLLM")
        prompt_ids = [int(t) for t in prompt_ids]
        params = dict(sampling_params)
        max_tokens = max_new_tokens(self.config, len(prompt_ids), params)
        seed = params.pop("seed", None)
        vision = self._vision_inputs(prompt_ids, image_data, mm_processor_kwargs) if image_data else {}
        future = asyncio.get_running_loop().create_future()
        request = _Request(prompt_ids, vision, params, max_tokens, None if seed is None else int(seed), future)
        self._pending.append(request)
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._serve_pending())
        token_ids, log_probs = await request.future
        extra_fields = {"global_steps": self.global_steps}
        return TokenOutput(token_ids=token_ids, log_probs=log_probs, stop_reason="completed", extra_fields=extra_fields)

    async def _serve_pending(self) -> None:
        while self._pending:
            # Let the other requests of this wave (n samples x prompts) arrive before batching: wait while
            # the queue still grows, so a wave is not cut into many small generate calls.
            seen, waited = -1, 0.0
            while len(self._pending) != seen and len(self._pending) < self.max_batch and waited < MAX_WAVE_WAIT_S:
                seen = len(self._pending)
                await asyncio.sleep(BATCH_WAIT_S)
                waited += BATCH_WAIT_S
            head = self._pending[0]
            batch = [r for r in self._pending if r.key == head.key][: self.max_batch]
            for r in batch:
                self._pending.remove(r)
            self.served += len(batch)
            try:
                results = await asyncio.to_thread(self._generate_batch, batch)
            except Exception as err:  # noqa: BLE001 - each caller gets the error, the server lives on
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(err)
                continue
            for r, result in zip(batch, results):
                if not r.future.done():
                    r.future.set_result(result)

    def _vision_inputs(self, prompt_ids: list[int], images: list[Any], mm_kwargs: Optional[dict]) -> dict:
        if self.processor is None:
            raise ValueError(f"{self.model_config.local_path} has no processor, but the request carries images")
        out = self.processor.image_processor(images=images, return_tensors="pt", **(mm_kwargs or {}))
        image_token_id = getattr(self.model.config, "image_token_id", None)
        if image_token_id is not None and "image_grid_thw" in out:
            merge = getattr(self.processor.image_processor, "merge_size", 1) ** 2
            expected = int(out["image_grid_thw"].prod(dim=-1).sum().item()) // merge
            found = prompt_ids.count(image_token_id)
            if expected != found:
                raise ValueError(
                    f"prompt has {found} image tokens but its {len(images)} image(s) need {expected}: "
                    "the images were not resized the way the prompt was expanded"
                )
        return {k: v for k, v in out.items() if k in ("pixel_values", "image_grid_thw")}

    def _mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """1 on image placeholder tokens, 2 on video ones, 0 elsewhere: what M-RoPE needs to place them.

        transformers 5.x computes Qwen2-VL's 3D image positions in ``generate`` only when this is passed
        (the processor returns it, verl builds the same for the actor); without it the image tokens silently
        get text positions and the rollout samples from another policy than the actor's (rollout_corr/kl
        ~0.1, validation of a trained toy model 20 points below its offline accuracy).
        """
        types = torch.zeros_like(input_ids)
        types[input_ids == self.model.config.image_token_id] = 1
        video_token_id = getattr(self.model.config, "video_token_id", None)
        if video_token_id is not None:
            types[input_ids == video_token_id] = 2
        return types

    def _generate_batch(self, batch: list["_Request"]) -> list[tuple[list[int], list[float]]]:
        """One left-padded ``generate`` call for requests that share sampling settings."""
        prompts = [torch.tensor(r.prompt_ids) for r in batch]
        input_ids = pad_sequence(prompts, batch_first=True, padding_value=self.pad_id, padding_side="left")
        attention_mask = pad_sequence([torch.ones_like(p) for p in prompts], batch_first=True, padding_side="left")
        width = input_ids.shape[1]
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        with_images = [r.vision for r in batch if r.vision]
        if with_images:
            # The model walks image tokens in order and takes images from these in the same order.
            inputs["pixel_values"] = torch.cat([v["pixel_values"] for v in with_images])
            inputs["image_grid_thw"] = torch.cat([v["image_grid_thw"] for v in with_images])
            inputs["mm_token_type_ids"] = self._mm_token_type_ids(input_ids)
        params = batch[0].params
        temperature = float(params.get("temperature", 1.0))
        processors = LogitsProcessorList()
        gen_params = params
        if batch[0].seed is not None and temperature > 0 and params.get("do_sample", True):
            top_k, top_p = int(params.get("top_k", -1) or -1), float(params.get("top_p", 1.0))
            processors.append(SeededRowSampler([r.seed for r in batch], temperature, top_k, top_p))
            gen_params = {**params, "temperature": 0.0}  # greedy over the one token the sampler left
        gen_config = build_generation_config(
            gen_params, batch[0].max_tokens, self.eos_ids, self.pad_id, self.suppress_ids
        )
        gen_config.output_logits = bool(params.get("logprobs"))
        with self._lock, torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=gen_config, logits_processor=processors)
        eos = set() if params.get("ignore_eos") else set(self.eos_ids)
        # The policy's log-probs as the actor computes them: log_softmax(logits / T) over the full
        # vocabulary ("processed" = temperature applied; "raw" = none). Not the warped distribution:
        # the placeholder suppression is a safety net of this server, not part of the policy.
        scale = temperature if self.config.logprobs_mode != "raw_logprobs" and temperature > 0 else 1.0
        results = []
        for row in range(len(batch)):
            tokens = out.sequences[row, width:].tolist()
            # Rows that finished early are padded to the longest: cut after the first EOS.
            tokens = tokens[: next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))]
            log_probs = None  # only when asked (training asks; synthesis and evaluation do not)
            if params.get("logprobs"):
                log_probs = [
                    torch.log_softmax(step[row].float() / scale, dim=-1)[token].item()
                    for step, token in zip(out.logits, tokens)
                ]
            results.append((tokens, log_probs))
        return results

    # ------------------------------------------------------------------ weights

    def update_weights(self, state_dict: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> int:
        """Load the actor's full weights (HF names); returns the number of tensors loaded."""
        own = self.model.state_dict()
        unknown = [k for k in state_dict if k not in own]
        if unknown:
            raise KeyError(
                f"hf rollout: {len(unknown)} weight names from the actor do not exist in the rollout model, "
                f"e.g. {unknown[:3]}; the actor and rollout must be the same architecture"
            )
        with self._lock, torch.no_grad():
            for name, tensor in state_dict.items():
                own[name].copy_(tensor.to(own[name].dtype))
            self.weights_version += 1
            if global_steps is not None:
                self.global_steps = global_steps
        if self.log_weight_digest:
            sha = self.weights_fingerprint()["sha256"]
            logger.info("hf rollout server %d: weights v%d (global step %s) sha256=%s", self.replica_rank,
                        self.weights_version, global_steps, sha)
        return len(state_dict)

    def weights_fingerprint(self) -> dict[str, Any]:
        """A digest of the served weights and how often they were replaced (for tests and debugging)."""
        with self._lock:
            sha = state_dict_digest(self.model.state_dict())
        return {"sha256": sha, "version": self.weights_version, "global_steps": self.global_steps}

    def served_requests(self) -> int:
        """Requests this server has generated for (for tests and debugging)."""
        return self.served

    # ------------------------------------------------------------------ verl's server control API

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    async def wait_for_requests_to_drain(self):
        # Requests hold the lock while they run; taking it once means none is in flight.
        await asyncio.to_thread(self._lock.acquire)
        self._lock.release()

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id}

    async def _nothing(self, *args, **kwargs) -> None:
        """vLLM frees and restores GPU memory around training (and profiles); on the CPU there is nothing to do."""

    wake_up = sleep = clear_kv_cache = release_kv_cache = resume_kv_cache = _nothing
    resume_generation = open_submission_gate = resume_engine_generation = start_profile = stop_profile = _nothing
