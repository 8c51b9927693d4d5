"""verl-ext's CPU platform and its torch.cuda-like device module."""

from __future__ import annotations

import pytest
import torch

import verl  # noqa: F401  (loads the plugin, which registers the platform)
from verl.plugin.platform import PlatformBase, PlatformRegistry, get_platform
from verl_ext.platform import cpu, cpu_device
from verl_ext.platform.cpu import PlatformCPU


@pytest.fixture
def platform() -> PlatformCPU:
    return PlatformCPU()


def test_registered_under_cpu_and_selected_on_this_machine():
    assert PlatformRegistry.get("cpu") is PlatformCPU
    assert issubclass(PlatformCPU, PlatformBase)
    # Registered after verl's built-in platforms, so it is probed last.
    assert PlatformRegistry.registered_names()[-1] == "cpu"
    assert isinstance(get_platform(), PlatformCPU)
    assert cpu.is_active()


def test_platform_properties(platform):
    assert platform.device_name == "cpu"
    assert platform.vendor_name == "cpu"
    assert platform.communication_backend_name() == "gloo"
    assert platform.ray_resource_name() == "GPU"
    assert platform.visible_devices_envvar() == "CUDA_VISIBLE_DEVICES"
    assert platform.device_module is cpu_device
    assert platform.device_count() == 1
    assert platform.is_available() is True
    assert platform.is_ipc_supported() is False
    assert platform.get_device_capability() == (None, None)


def test_current_device_is_usable_as_a_torch_device(platform):
    device = platform.current_device()
    assert device == "cpu"
    moved = torch.ones(1).to(device)
    assert moved.device.type == "cpu"
    assert torch.zeros(2, device=device).device == torch.device("cpu")
    # The device module answers the same (verl uses both).
    assert cpu_device.current_device() == device


def test_is_platform_available_claims_only_machines_without_cuda(platform, monkeypatch):
    assert not torch.cuda.is_available()
    assert platform.is_platform_available() is True
    assert platform.is_platform_available(use_smi_check=True) is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert platform.is_platform_available(use_smi_check=True) is False


def test_platform_seed_and_noops(platform):
    platform.manual_seed(123)
    a = torch.rand(3)
    platform.manual_seed_all(123)
    assert torch.equal(torch.rand(3), a)
    assert platform.set_device(0) is None
    assert platform.synchronize() is None
    assert platform.empty_cache() is None
    assert platform.set_allocator_settings("expandable_segments:True") is None
    with platform.nvtx_range("region"):
        pass


def test_mem_get_info_reports_system_memory():
    free, total = cpu_device.mem_get_info()
    assert isinstance(free, int) and isinstance(total, int)
    assert 0 < free <= total
    assert total > 256 * 2**20  # a machine that runs these tests has more than 256 MiB


def test_memory_figures_are_the_resident_set():
    allocated = cpu_device.memory_allocated()
    assert allocated > 0
    _, total = cpu_device.mem_get_info()
    assert allocated < total
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    try:
        assert cpu_device.memory_allocated() >= allocated + 32 * 2**20
    finally:
        del big
    for fn in (cpu_device.memory_reserved, cpu_device.max_memory_allocated, cpu_device.max_memory_reserved):
        assert fn() > 0


def test_rng_state_round_trip():
    state = cpu_device.get_rng_state()
    assert isinstance(state, torch.Tensor)
    first = torch.rand(4)
    cpu_device.set_rng_state(state)
    assert torch.equal(torch.rand(4), first)
    cpu_device.manual_seed(7)
    a = torch.randn(3)
    cpu_device.manual_seed_all(7)
    assert torch.equal(torch.randn(3), a)


def test_device_module_noops_and_streams():
    assert cpu_device.empty_cache() is None
    assert cpu_device.ipc_collect() is None
    assert cpu_device.reset_peak_memory_stats() is None
    assert cpu_device.set_per_process_memory_fraction(0.5) is None
    assert cpu_device.set_device(0) is None
    assert cpu_device.is_available() is True
    assert cpu_device.device_count() == 1
    assert cpu_device.get_device_name() == "cpu"
    cpu_device.synchronize()
    with cpu_device.stream(cpu_device.current_stream()):
        assert torch.ones(1).item() == 1.0


def test_verl_device_helpers_resolve_to_the_cpu_platform():
    from verl.utils import device

    assert device.get_device_name() == "cpu"
    assert device.get_torch_device() is cpu_device
    assert device.get_nccl_backend() == "gloo"
