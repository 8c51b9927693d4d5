"""A rollout backend for verl built on transformers ``generate``, for machines without vLLM.

``hf_server`` holds the model and generates; ``hf_replica`` launches it the way verl launches a
vLLM server; ``hf_adapter`` is the worker-side client that pushes the actor's weights to it.
Selected with ``actor_rollout_ref.rollout.name=hf``.
"""

ROLLOUT_NAME = "hf"
