"""A CPU platform for verl: gloo collectives, no CUDA.

verl 0.9.1 ships CUDA, NPU and ROCm platforms only. On a machine without an accelerator its
auto-detection falls back to CUDA and fails at the first collective. This platform is registered
last, so it is picked only when no accelerator platform claims the machine (or when
``VERL_PLATFORM=cpu`` asks for it). Ray still schedules workers on the ``GPU`` resource, so a CPU
run declares logical GPUs with ``ray_kwargs.ray_init.num_gpus``.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from verl_ext.platform import cpu_device

PLATFORM_NAME = "cpu"


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """Runs verl's workers on the CPU with the gloo backend."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return cpu_device

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Probed after the accelerator platforms: claim the machine only when none of them did.
        return not torch.cuda.is_available()

    def current_device(self) -> str:
        # verl passes this value straight to ``.to()`` / ``device=``; as ``torch.cpu`` does, name
        # the device instead of giving an index (an int would mean cuda:<index> to torch).
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        # verl's resource pools count GPUs only; a CPU run declares logical ones.
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def is_active() -> bool:
    """True when verl's platform in this process is this CPU platform."""
    from verl.plugin.platform import get_platform

    return isinstance(get_platform(), PlatformCPU)
