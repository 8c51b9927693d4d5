"""The worker-side half of the ``hf`` rollout: verl's ``BaseRollout`` inside each FSDP worker.

verl calls ``update_weights`` on every rank with a lazy generator of full tensors; draining it is a
collective, so every rank iterates it, and rank 0 of the replica ships the tensors to its server.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Generator, Optional

import ray
import torch
from verl.workers.rollout.base import BaseRollout

from verl_ext.rollout.hf_replica import server_actor_name

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))


class HFServerAdapter(BaseRollout):
    """Pushes the actor's weights to the replica's ``HFRolloutServer``."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self.node_rank = self.rollout_rank // int(os.environ.get("RAY_LOCAL_WORLD_SIZE", 1))
        self._server: Optional[ray.actor.ActorHandle] = None

    async def _nothing(self, *args, **kwargs) -> None:
        """The weights live in the server, not in this worker: nothing to resume or release here."""

    resume = release = _nothing

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        global_steps: Optional[int] = None,
        peft_config=None,
        **kwargs,
    ):
        if wire_format != "named_tensors":
            raise ValueError(f"the hf rollout takes full tensors (wire_format='named_tensors'), got {wire_format!r}")
        if peft_config is not None:
            raise ValueError("the hf rollout needs merged LoRA weights: set actor_rollout_ref.model.lora.merge=True")
        start = time.time()
        ships = self.rollout_rank == 0  # every rank drains the generator (a collective); one ships the tensors
        state_dict = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights if ships}
        if not ships:
            return
        if self._server is None:
            # The server is launched after the workers, so it is looked up lazily.
            self._server = ray.get_actor(server_actor_name(self.replica_rank, self.node_rank))
        loaded = await self._server.update_weights.remote(state_dict, global_steps)
        took = time.time() - start
        logger.info("hf rollout: %d tensors synced to replica %d in %.2fs", loaded, self.replica_rank, took)
