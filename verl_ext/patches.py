"""The runtime patches the CPU platform needs, isolated here with their reasons.

Both are installed only when verl's platform in the process is verl-ext's CPU platform, and
``tests/test_patches.py`` fails when the code they work around changes.

1. The gloo backend string. ``verl.utils.distributed.initialize_global_process_group_ray`` (verl 0.9.1) always builds the
backend string ``f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"``. On the CPU platform that
is ``"cpu:gloo,cpu:gloo"``, which torch rejects ("Duplicate device type cpu"). verl offers no hook
for the backend string, and the function is imported by name into ``verl.workers.engine_workers``,
so wrapping verl's function would need a second patch. Instead ``torch.distributed.
init_process_group`` is wrapped to rewrite exactly that duplicate string to ``"gloo"``; any other
backend passes through untouched. Installed only when the CPU platform is active.

2. Pinned memory. verl gives FSDP2 modules that only run forward (the reference policy)
``CPUOffloadPolicy(pin_memory=True)``, and FSDP2 then calls ``Tensor.pin_memory()``, which raises
"Found no NVIDIA driver" on a machine without CUDA. Page-locking host memory only speeds up copies
to a GPU; with no GPU there is nothing to speed up, so ``pin_memory`` becomes the identity there,
and only while CUDA is unavailable (where the original can only raise).
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)

DUPLICATE_CPU_BACKEND = "cpu:gloo,cpu:gloo"
_PATCH_MARKER = "__verl_ext_cpu_backend_patch__"


def install_cpu_gloo_backend_patch() -> bool:
    """Wrap ``torch.distributed.init_process_group``; returns False if it was already wrapped."""
    import torch.distributed as dist

    original = dist.init_process_group
    if getattr(original, _PATCH_MARKER, False):
        return False

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        if kwargs.get("backend") == DUPLICATE_CPU_BACKEND:
            kwargs["backend"] = "gloo"
        elif args and args[0] == DUPLICATE_CPU_BACKEND:
            args = ("gloo", *args[1:])
        return original(*args, **kwargs)

    setattr(init_process_group, _PATCH_MARKER, True)
    dist.init_process_group = init_process_group
    logger.debug("verl_ext: torch.distributed.init_process_group wrapped for the CPU gloo backend")
    return True


def install_cpu_pin_memory_patch() -> bool:
    """Make ``Tensor.pin_memory`` the identity while CUDA is unavailable; False if already done."""
    import torch

    original = torch.Tensor.pin_memory
    if getattr(original, _PATCH_MARKER, False):
        return False

    @functools.wraps(original)
    def pin_memory(self, *args, **kwargs):
        if torch.cuda.is_available():
            return original(self, *args, **kwargs)
        return self

    setattr(pin_memory, _PATCH_MARKER, True)
    torch.Tensor.pin_memory = pin_memory
    return True
