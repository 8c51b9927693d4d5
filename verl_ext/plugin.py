"""verl plugin entry point: registers this package's components in every process that imports verl.

verl imports every ``verl.plugins`` entry point at ``import verl`` (driver, TaskRunner and each Ray
worker) and swallows any error at DEBUG level. A half-registered plugin would surface much later
as "Rollout hf with mode async not found" in some worker, so failures are logged here, loudly.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback

logger = logging.getLogger("verl_ext")

#: What ``register`` registered in this process, by kind; read by tests and ``python -m verl_ext.plugin``.
REGISTERED: dict[str, list[str]] = {}


def _note(kind: str, name: str) -> None:
    names = REGISTERED.setdefault(kind, [])
    if name not in names:
        names.append(name)


def _register_platform() -> None:
    from verl_ext import patches
    from verl_ext.platform import cpu

    _note("platform", cpu.PLATFORM_NAME)
    patches.install_freeze_vision_tower_patch()
    _note("patch", "freeze_vision_tower")
    if cpu.is_active():
        patches.install_cpu_gloo_backend_patch()
        patches.install_cpu_pin_memory_patch()
        # verl registers its FSDP engine for cuda/npu only, yet its code reaches the device through
        # the platform; VERL_ENGINE_DEVICE is verl's own switch to pick an engine of another device.
        os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
        _note("cpu_runtime", "gloo_backend_patch")
        _note("cpu_runtime", "pin_memory_patch")


def _register_rollout() -> None:
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from verl_ext.rollout import ROLLOUT_NAME

    # verl 0.9.1 has no public API for the adapter registry; the dict is the registry.
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = "verl_ext.rollout.hf_adapter.HFServerAdapter"
    # Loaded lazily, as verl's own replicas are: the replica module imports Ray and the server.
    replica_module = "verl_ext.rollout.hf_replica"
    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: importlib.import_module(replica_module).HFReplica)
    _note("rollout", ROLLOUT_NAME)


def _register_reward_managers() -> None:
    from verl_ext.rewards import majority_vote

    _note("reward_manager", majority_vote.NAME)


def _register_resolvers() -> None:
    from verl_ext.toy.resolver import register_resolvers

    for name in register_resolvers():
        _note("resolver", name)


def _register_hydra_searchpath() -> None:
    from verl_ext.config import searchpath

    searchpath.register()
    _note("hydra_searchpath", searchpath.PATH)


def _register_main_alias() -> None:
    from verl_ext import main

    main.install_alias()
    _note("command", main.ALIAS)


STEPS = (
    _register_platform,
    _register_rollout,
    _register_reward_managers,
    _register_resolvers,
    _register_hydra_searchpath,
    _register_main_alias,
)


def register() -> dict[str, list[str]]:
    """Register everything; a failing step is logged with its traceback and the others still run."""
    failed = []
    for step in STEPS:
        try:
            step()
        except Exception:  # noqa: BLE001 - verl would swallow it; we report it instead
            failed.append(step.__name__)
            message = f"verl_ext: plugin step {step.__name__} FAILED; verl-ext components will be missing:\n"
            logger.error(message + traceback.format_exc())
            # Logging may not be configured yet in a fresh Ray worker: make sure it is seen.
            if not logger.hasHandlers():
                sys.stderr.write(message + traceback.format_exc())
    if failed:
        REGISTERED["failed"] = failed
    return REGISTERED


if __name__ == "__main__":
    # Run as a script, this file is not the module verl loads: importing verl registers through
    # that one, and registering here as well would import verl_ext.plugin twice, half-initialised.
    import json

    importlib.import_module("verl")
    from verl_ext.plugin import REGISTERED as LOADED

    print(json.dumps(LOADED, indent=2))
else:
    register()
