"""A ``torch.<device>``-like namespace for the CPU.

verl calls ``get_torch_device().<fn>()`` for memory statistics, RNG state, streams and cache
management. ``torch.cpu`` has only some of these, so this module adds CPU meanings for the rest:
memory figures come from the process's resident set, cache operations are no-ops.
"""

from __future__ import annotations

import os

import torch

Stream = torch.cpu.Stream
Event = torch.cpu.Event
StreamContext = torch.cpu.StreamContext
stream = torch.cpu.stream
current_stream = torch.cpu.current_stream
synchronize = torch.cpu.synchronize


def is_available() -> bool:
    return True


def current_device() -> str:
    # As torch.cpu: a device name, since callers pass it to ``.to()`` (an int would mean CUDA).
    return "cpu"


def device_count() -> int:
    return 1


def get_device_name(device=None) -> str:
    return "cpu"


def _noop(*args, **kwargs) -> None:
    """Device selection, cache and peak-statistics calls have nothing to do on a CPU."""


set_device = empty_cache = ipc_collect = set_per_process_memory_fraction = reset_peak_memory_stats = _noop


def manual_seed(seed: int) -> None:
    torch.manual_seed(seed)


manual_seed_all = manual_seed


def get_rng_state(device=None) -> torch.Tensor:
    return torch.get_rng_state()


def set_rng_state(state: torch.Tensor, device=None) -> None:
    torch.set_rng_state(state)


def memory_allocated(device=None) -> int:
    """The process's resident set in bytes: what a CPU run has allocated, reserved and peaked at."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated


def mem_get_info(device=None) -> tuple[int, int]:
    """(free, total) bytes of system memory, as ``torch.cuda.mem_get_info`` reports for a GPU."""
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page
