"""The runtime patches: still needed (the patched code has not changed), and working.

When verl or torch change the code a patch works around, the source checks here fail: re-check then
whether the patch is still needed, and update ``verl_ext/patches.py`` and these tests together.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(code: str, **extra_env: str) -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), **extra_env)
    env.pop("VERL_PLATFORM", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- 1. gloo backend string


def test_verl_still_builds_the_duplicate_backend_string():
    import verl.utils.distributed as verl_dist

    source = inspect.getsource(verl_dist.initialize_global_process_group_ray)
    assert 'f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"' in source
    # ... and still calls torch's init_process_group with it by keyword (the patch handles both forms).
    assert "torch.distributed.init_process_group(\n            backend=backend," in source


def test_patched_function_is_imported_by_name_into_engine_workers():
    # The docstring's reason to patch torch rather than verl's function: a copy of the name lives here.
    import verl.utils.distributed as verl_dist
    import verl.workers.engine_workers as engine_workers

    assert engine_workers.initialize_global_process_group_ray is verl_dist.initialize_global_process_group_ray


def test_plain_torch_still_rejects_duplicate_backend_and_pin_memory_without_cuda():
    """Without the plugin (no verl import), both patched behaviours still fail: the patches are needed."""
    facts = _run(
        """
        import json, sys
        import torch, torch.distributed as dist
        out = {"verl_imported": "verl" in sys.modules, "cuda": torch.cuda.is_available()}
        try:
            dist.init_process_group("cpu:gloo,cpu:gloo", rank=0, world_size=1)
            out["backend_error"] = None
        except Exception as err:
            out["backend_error"] = f"{type(err).__name__}: {err}"
        try:
            torch.ones(2).pin_memory()
            out["pin_error"] = None
        except Exception as err:
            out["pin_error"] = f"{type(err).__name__}: {err}"
        print(json.dumps(out))
        """
    )
    assert facts["verl_imported"] is False
    assert facts["cuda"] is False
    assert facts["backend_error"] is not None and "Duplicate device type cpu" in facts["backend_error"]
    assert facts["pin_error"] is not None and facts["pin_error"].startswith("RuntimeError")


def test_verl_process_group_and_fsdp2_cpu_offload_work_with_the_plugin():
    """With verl imported: verl's own init succeeds on gloo, collectives work, FSDP2 pins memory."""
    facts = _run(
        """
        import json
        import torch, torch.distributed as dist
        import verl
        from verl.utils.distributed import initialize_global_process_group_ray

        initialize_global_process_group_ray()
        t = torch.tensor([3.0, 4.0])
        dist.all_reduce(t)
        out = {"backend": dist.get_backend(), "world": dist.get_world_size(), "sum": t.tolist()}

        # What verl's FSDP engine does for the reference policy: CPUOffloadPolicy(pin_memory=True).
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 3)
        expected = layer(torch.ones(2, 4)).detach()
        fully_shard(layer, mesh=init_device_mesh("cpu", (1,)), offload_policy=CPUOffloadPolicy(pin_memory=True))
        with torch.no_grad():
            out["fsdp_matches"] = torch.allclose(layer(torch.ones(2, 4)), expected)
        dist.destroy_process_group()
        print(json.dumps(out))
        """,
        RANK="0",
        WORLD_SIZE="1",
    )
    assert facts == {"backend": "gloo", "world": 1, "sum": [3.0, 4.0], "fsdp_matches": True}


@pytest.fixture
def fake_init_process_group(monkeypatch):
    """torch.distributed.init_process_group replaced by a recorder, with the patch not yet installed."""
    import torch.distributed as dist

    calls = []

    def init_process_group(*args, **kwargs):
        calls.append((args, kwargs))

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    return calls


def test_gloo_patch_rewrites_only_the_duplicate_string(fake_init_process_group):
    import torch.distributed as dist

    from verl_ext import patches

    assert patches.install_cpu_gloo_backend_patch() is True
    assert patches.install_cpu_gloo_backend_patch() is False  # idempotent
    dist.init_process_group(backend="cpu:gloo,cpu:gloo", rank=0, world_size=1)
    dist.init_process_group("cpu:gloo,cpu:gloo", None, 5)
    dist.init_process_group(backend="cpu:gloo,cuda:nccl")
    dist.init_process_group("nccl")
    dist.init_process_group()
    assert fake_init_process_group == [
        ((), {"backend": "gloo", "rank": 0, "world_size": 1}),
        (("gloo", None, 5), {}),
        ((), {"backend": "cpu:gloo,cuda:nccl"}),
        (("nccl",), {}),
        ((), {}),
    ]


# ---------------------------------------------------------------------------------------- 2. pin_memory


def test_fsdp2_still_pins_memory_under_an_offload_policy():
    from torch.distributed.fsdp._fully_shard import _fsdp_param

    source = inspect.getsource(_fsdp_param)
    assert "self.offload_to_cpu and cast(CPUOffloadPolicy, offload_policy).pin_memory" in source
    assert "padded_sharded_param.pin_memory()" in source


@pytest.mark.filterwarnings("ignore:.* engine is not available:UserWarning")  # optional verl engines
def test_verl_fsdp_engine_still_pins_memory_for_forward_only_modules():
    import verl.workers.engine.fsdp.transformer_impl as transformer_impl

    source = inspect.getsource(transformer_impl)
    assert "if self.engine_config.offload_policy or self.engine_config.forward_only:" in source
    assert "offload_policy = CPUOffloadPolicy(pin_memory=True)" in source


@pytest.fixture
def unpatched_pin_memory(monkeypatch):
    """Tensor.pin_memory as torch ships it (``import verl`` installed the patch in this process)."""
    import verl  # noqa: F401

    current = torch.Tensor.pin_memory
    original = getattr(current, "__wrapped__", current)
    monkeypatch.setattr(torch.Tensor, "pin_memory", original)
    return original


def test_pin_memory_patch_is_identity_without_cuda_and_idempotent(unpatched_pin_memory):
    from verl_ext import patches

    assert not torch.cuda.is_available()
    assert patches.install_cpu_pin_memory_patch() is True
    assert patches.install_cpu_pin_memory_patch() is False
    t = torch.ones(2)
    pinned = t.pin_memory()
    assert pinned is t
    assert torch.equal(pinned, torch.ones(2))


def test_pin_memory_patch_defers_to_torch_when_cuda_is_available(monkeypatch):
    from verl_ext import patches

    seen = []

    def fake_original(self, *args, **kwargs):
        seen.append(args)
        return "pinned by torch"

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_original)
    assert patches.install_cpu_pin_memory_patch() is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch.ones(1).pin_memory("cuda") == "pinned by torch"
    assert seen == [("cuda",)]


def test_import_verl_installs_both_patches_on_the_cpu_platform():
    import torch.distributed as dist
    import verl  # noqa: F401

    from verl_ext import patches
    from verl_ext.platform import cpu

    assert cpu.is_active()
    assert getattr(dist.init_process_group, patches._PATCH_MARKER, False)
    assert getattr(torch.Tensor.pin_memory, patches._PATCH_MARKER, False)


# ----------------------------------------------------------------------------- freeze_vision_tower


def test_verl_fsdp_engine_still_has_no_vision_freeze():
    """The patch exists because verl ignores freeze_vision_tower; when verl reads it, drop the patch."""
    import inspect

    import verl  # noqa: F401
    from verl.workers.engine.fsdp import transformer_impl

    source = inspect.getsource(transformer_impl)
    assert "freeze_vision" not in source.replace("verl_ext", "")
    assert "def _build_module(self)" in source


def test_freeze_patch_wraps_the_engine_when_it_loads():
    import verl  # noqa: F401
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

    from verl_ext import patches

    assert getattr(FSDPEngine._build_module, patches._PATCH_MARKER, False)
    assert patches.install_freeze_vision_tower_patch() is False  # idempotent


def test_freeze_vision_parameters_freezes_exactly_the_vision_encoder(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    from verl_ext.patches import freeze_vision_parameters

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    count = freeze_vision_parameters(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert count == len(frozen) > 0
    assert all(".visual." in f".{n}" for n in frozen)
    assert any("language_model" in n for n, p in model.named_parameters() if p.requires_grad)


# ------------------------------------------------------------------ 4. a step between log-probs and advantages


def test_verl_still_has_no_hook_between_entropy_and_advantages():
    """The facts patch 4 rests on; when one changes, re-check whether the wrap is still needed."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    step = inspect.getsource(PPOTrainer._step_once)
    # The sampler runs first, then the old log-probs (with entropy), then advantages.
    order = [step.index(s) for s in ("self.replay_buffer.sample(", "self._compute_old_log_prob(", "self._compute_advantage(")]
    assert order == sorted(order)
    old_log_prob = inspect.getsource(PPOTrainer._compute_old_log_prob)
    assert '"calculate_entropy": True' in old_log_prob and 'fields=data.select("old_log_probs", "entropy")' in old_log_prob
    # Advantages read the rewards from TransferQueue, so rewriting rm_scores before them is enough.
    assert '"rm_scores"' in inspect.getsource(PPOTrainer._compute_advantage)
    # Every sampler gets the trainer's bound method: the way the sampler finds its trainer.
    assert "refill_fn=self._add_prompts_to_generate" in inspect.getsource(PPOTrainer._build_replay_buffer)


def test_the_advantage_wrap_runs_the_hook_first_and_only_on_that_trainer():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from verl_ext.patches import run_before_advantages, trainer_of_sampler

    class Trainer(PPOTrainer):
        def __init__(self):  # no verl setup: only the two methods the wrap touches
            self.calls = []

        def _add_prompts_to_generate(self, num_prompts):
            return num_prompts

        def _compute_advantage(self, batch, metrics):
            self.calls.append(("advantage", batch))
            return batch

        on_sample_end = on_step_end = lambda self: None

    trainer, other = Trainer(), Trainer()
    assert trainer_of_sampler(trainer._add_prompts_to_generate) is trainer
    assert trainer_of_sampler(lambda n: n) is None

    def hook(batch, metrics):
        trainer.calls.append(("hook", batch))
        return batch + "!"

    assert run_before_advantages(trainer, hook) is True
    assert run_before_advantages(trainer, hook) is False  # once per trainer
    assert trainer._compute_advantage("b", {}) == "b!"
    assert trainer.calls == [("hook", "b"), ("advantage", "b!")]
    other._compute_advantage("c", {})
    assert other.calls == [("advantage", "c")]


def test_every_new_prompt_still_passes_through_next_train_batch():
    """The facts patch 5 rests on: the step's batch and the refills both come from ``_next_train_batch``."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert "self._next_train_batch()" in inspect.getsource(PPOTrainer._add_batch_to_generate)
    assert "self._next_train_batch(num_prompts)" in inspect.getsource(PPOTrainer._add_prompts_to_generate)
    # The step's prompts are fetched before its rollouts, after the previous step's weight sync.
    assert "self._add_batch_to_generate()" in inspect.getsource(PPOTrainer.prepare_step)
    # A v1 dataset has no per-batch hook any more (the legacy trainer's on_batch_end).
    assert "on_batch_end" not in inspect.getsource(PPOTrainer)


def test_the_next_batch_wrap_routes_through_the_hook_and_only_on_that_trainer():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from verl_ext.patches import run_around_next_batch

    class Trainer(PPOTrainer):
        def __init__(self):  # no verl setup: only the method the wrap touches
            pass

        def _next_train_batch(self, num_prompts=None):
            return ["row"] * (num_prompts or 2)

        on_sample_end = on_step_end = lambda self: None

    trainer, other = Trainer(), Trainer()
    seen = []

    def hook(original, num_prompts):
        seen.append(num_prompts)
        return original(num_prompts) + ["synthesized"]

    assert run_around_next_batch(trainer, hook) is True
    assert run_around_next_batch(trainer, hook) is False  # once per trainer
    assert trainer._next_train_batch() == ["row", "row", "synthesized"]
    assert trainer._next_train_batch(1) == ["row", "synthesized"] and seen == [None, 1]
    assert other._next_train_batch() == ["row", "row"]
