"""Generation through verl's rollout replicas: the one engine behind synthesis and evaluation.

:class:`ReplicaGenerator` starts standalone replicas from verl's replica registry as
``verl/trainer/main_generation_server.py`` does (vLLM on a GPU cluster, this package's ``hf`` replica on
a CPU) and sends each request to a server as the trainer's agent loop does: token ids in, token ids out.
The prompt is rendered and its image placeholders expanded here, with the model's processor, so every
replica sees the token ids verl's own data pipeline would build.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from verl_ext.generation.base import (
    BackendConfig,
    BatchedGenerator,
    GenerationRequest,
    SamplingSettings,
    load_images,
    render_prompt,
)

logger = logging.getLogger(__name__)


def completion_seed(seed: int, request: int, k: int) -> int:
    """The seed of completion ``k`` of request number ``request``: a hash, so no two completions share one
    by construction (a stride would collide with the strides callers add to their base seeds)."""
    digest = hashlib.blake2b(f"{seed}:{request}:{k}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def generation_config(
    model_path: str,
    rollout_name: str = "hf",
    overrides: Sequence[str] = (),
) -> DictConfig:
    """verl's ``ppo_trainer`` config with the model and rollout set: what :class:`ReplicaGenerator` reads.

    For callers that hold a model path rather than a composed recipe (tests, the toy measurements);
    the commands compose their recipe instead. The defaults are one replica on one device.
    """
    from hydra import compose, initialize_config_module

    settings = [
        f"actor_rollout_ref.model.path={model_path}",
        f"actor_rollout_ref.rollout.name={rollout_name}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        *overrides,
    ]
    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=settings)


def replica_count(cfg: DictConfig) -> int:
    """Replicas the cluster settings give: every device of every node, ``tensor_model_parallel_size`` each."""
    rollout = cfg.actor_rollout_ref.rollout
    per_replica = int(rollout.tensor_model_parallel_size) * int(rollout.get("data_parallel_size", 1) or 1)
    devices = int(cfg.trainer.n_gpus_per_node) * int(cfg.trainer.nnodes)
    count = devices // per_replica
    if count < 1:
        raise ValueError(
            f"trainer.n_gpus_per_node * trainer.nnodes = {devices} devices cannot hold one replica of "
            f"tensor_model_parallel_size={rollout.tensor_model_parallel_size}"
        )
    return count


class ServerGenerator(BatchedGenerator):
    """Completes requests on rollout servers: renders and expands prompts, fans them out, decodes.

    Subclasses say how one request reaches a server (``_send``): :class:`ReplicaGenerator` owns its
    replicas; the online synthesis sends through the trainer's own LLM client.
    """

    def __init__(self, model_config: Any, config: Optional[BackendConfig] = None):
        self.config = config or BackendConfig()
        self.model_config = model_config
        self.tokenizer = model_config.tokenizer
        self.processor = model_config.processor
        self.vision = getattr(model_config.hf_config, "vision_config", None) is not None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    @abc.abstractmethod
    async def _send(self, index: int, request: dict[str, Any]) -> Any:
        """Send request number ``index`` of the run (``prompt_ids``, ``sampling_params``, ...); a TokenOutput."""

    def run(self, coroutine: Any) -> Any:
        """Run ``coroutine`` to completion from synchronous code, also inside a thread whose loop is running."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(coroutine)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    def encode(self, request: GenerationRequest, pixel_kwargs: dict[str, int]) -> tuple[list[int], list[Any]]:
        """The request's prompt token ids (image placeholders expanded) and its decoded images."""
        owner = self.processor if self.vision else self.tokenizer
        text = render_prompt(owner, request, vision=self.vision)
        images = load_images(request) if self.vision else []
        if images:
            ids = self.processor(text=[text], images=images, images_kwargs=pixel_kwargs)["input_ids"][0]
        else:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [int(t) for t in ids], images

    def _generate_batch(
        self, requests: list[GenerationRequest], settings: SamplingSettings, batch_index: int
    ) -> list[list[str]]:
        return self.run(self._complete(requests, settings, batch_index * self.config.batch_size))

    async def _complete(self, requests: list[GenerationRequest], settings: SamplingSettings, first: int) -> list[list[str]]:
        pixel_kwargs = self.config.pixel_kwargs()
        # Greedy completions are identical: ask for one and repeat it.
        per_request = 1 if settings.greedy else settings.n
        seeded = settings.seed is not None and not settings.greedy
        base = {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": settings.top_k,
            "repetition_penalty": settings.repetition_penalty,
            "max_tokens": settings.max_new_tokens,
            "logprobs": False,
        }
        calls = []
        for offset, request in enumerate(requests):
            prompt_ids, images = self.encode(request, pixel_kwargs)
            # The seed follows the request (its key, or its place in the run), not the batch it lands in.
            key = first + offset if request.seed_key is None else request.seed_key
            for k in range(per_request):
                params = {**base, "seed": completion_seed(settings.seed, key, k)} if seeded else dict(base)
                message = {
                    "prompt_ids": prompt_ids,
                    "sampling_params": params,
                    "request_id": uuid.uuid4().hex,
                    "image_data": images or None,
                    "mm_processor_kwargs": pixel_kwargs or None,
                }
                calls.append(asyncio.ensure_future(self._send(first + offset, message)))
        try:
            outputs = await asyncio.wait_for(asyncio.gather(*calls), timeout=self.config.batch_timeout_s)
        except BaseException as exc:
            # A failed or timed-out request: cancel the others, so none is left running on this loop (and
            # the trainer's load balancer gets its servers back through the client's own cleanup).
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            if isinstance(exc, asyncio.TimeoutError):
                raise TimeoutError(
                    f"{len(calls)} request(s) not completed by the rollout servers within "
                    f"{self.config.batch_timeout_s:g} s (BackendConfig.batch_timeout_s)"
                ) from exc
            raise
        texts = [self.tokenizer.decode(o.token_ids, skip_special_tokens=True) for o in outputs]
        grouped = [texts[i * per_request : (i + 1) * per_request] for i in range(len(requests))]
        return [group * settings.n if per_request == 1 else group for group in grouped]

    def close(self) -> None:
        """Close the event loop (subclasses also release their servers)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()


class ReplicaGenerator(ServerGenerator):
    """Starts standalone verl rollout replicas and completes requests on them (``close`` stops them)."""

    def __init__(self, cfg: DictConfig, config: Optional[BackendConfig] = None):
        import ray
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig
        from verl.workers.rollout.replica import get_rollout_replica_class

        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        rollout_cfg, model_cfg = cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.model
        super().__init__(omega_conf_to_dataclass(model_cfg, dataclass_type=HFModelConfig), config)
        self.name = str(rollout_cfg.name)
        self.num_replicas = replica_count(cfg)
        if self.name == "hf":
            # Standalone hf servers run on this (the driver's) node, one torch process each: share its cores.
            threads = max(1, (os.cpu_count() or 1) // self.num_replicas)
            rollout_cfg.custom = {"num_threads": threads, **(rollout_cfg.get("custom") or {})}
        self.replicas: list[Any] = []
        self.own_ray = not ray.is_initialized()
        if self.own_ray:
            init = dict((cfg.get("ray_kwargs", {}) or {}).get("ray_init", {}) or {})
            init = {k: v for k, v in init.items() if v is not None and k != "timeline_json_file"}
            ray.init(include_dashboard=False, logging_level=logging.WARNING, **init)
        try:
            replica_cls = get_rollout_replica_class(self.name)
            # Server actors are named by replica rank: a suffix keeps two generators (or a trainer) apart.
            suffix = f"gen_{uuid.uuid4().hex[:8]}"
            gpus_per_node = int(cfg.trainer.n_gpus_per_node)
            self.replicas = [
                replica_cls(replica_rank=rank, config=rollout_cfg, model_config=model_cfg,
                            gpus_per_node=gpus_per_node, name_suffix=suffix)
                for rank in range(self.num_replicas)
            ]
            self.run(self._start())
        except BaseException:
            self.close()
            raise
        self.servers = [r.server_handle for r in self.replicas]
        logger.info("generation: %d %s replica(s) of %s (tensor parallel %d)", self.num_replicas, self.name,
                    model_cfg.path, int(rollout_cfg.tensor_model_parallel_size))

    async def _start(self) -> None:
        await asyncio.gather(*[r.init_standalone() for r in self.replicas])

    async def _send(self, index: int, request: dict[str, Any]) -> Any:
        # Consecutive requests go to consecutive replicas; each server batches what it receives.
        return await self.servers[index % len(self.servers)].generate.remote(**request)

    def close(self) -> None:
        """Stop the replicas' servers (and Ray, when this generator started it)."""
        import ray

        if ray.is_initialized():  # another generator may have ended the Ray session (and its actors) already
            for replica in self.replicas:
                for actor in [*replica.servers, *replica.workers]:
                    ray.kill(actor)
                replica.servers.clear()
                replica.workers = []
        if self.own_ray and ray.is_initialized():
            ray.shutdown()
            self.own_ray = False
        super().close()
