"""The ``hf`` rollout replica: launches one ``HFRolloutServer`` actor per replica node.

Mirrors how verl launches its vLLM servers: the server is a named Ray actor pinned to the node of
the replica's first worker, so the worker-side adapter (``hf_adapter``) finds it by name.
"""

from __future__ import annotations

import asyncio

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutMode, RolloutReplica

from verl_ext.rollout.hf_server import HFRolloutServer


def server_actor_name(replica_rank: int, node_rank: int, suffix: str = "") -> str:
    """The Ray actor name of a replica's server on one node (shared with the adapter)."""
    return f"hf_server_{replica_rank}_{node_rank}{suffix}"


class HFReplica(RolloutReplica):
    """A rollout replica served by transformers ``generate`` on CPU (or one GPU)."""

    async def init_standalone(self):
        """Serve from the model path alone: no worker pool, hence no (logical) GPUs to reserve.

        verl's default builds a GPU resource pool of checkpoint-engine workers to receive weights; a
        standalone hf server loads its weights from ``model.path`` itself and never receives any.
        """
        self.rollout_mode = RolloutMode.STANDALONE
        await self.launch_servers()

    async def launch_servers(self):
        if self.workers:
            node_ids = await asyncio.gather(
                *[w.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()) for w in self.workers]
            )
        else:
            node_ids = [ray.get_runtime_context().get_node_id()] * self.world_size
        kind = "_reward" if self.is_reward_model else "_teacher" if self.is_teacher_model else ""
        server_cls = ray.remote(HFRolloutServer)
        for node_rank in range(self.nnodes):
            server = server_cls.options(
                name=server_actor_name(self.replica_rank, node_rank, kind + self.name_suffix),
                # Generation runs while the training workers are idle (hybrid engine): no CPU reserved.
                num_cpus=0,
                max_concurrency=self.max_concurrency,
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    node_id=node_ids[node_rank * self.gpus_per_replica_node], soft=False
                ),
            ).remote(
                config=self.config,
                model_config=self.model_config,
                replica_rank=self.replica_rank,
                node_rank=node_rank,
            )
            self.servers.append(server)
        # Constructing the actor loads the model; wait for it so failures surface here.
        await asyncio.gather(*[s.set_global_steps.remote(0) for s in self.servers])
        self._server_handle = self.servers[0]
        self._server_address = server_actor_name(self.replica_rank, 0, kind + self.name_suffix)
