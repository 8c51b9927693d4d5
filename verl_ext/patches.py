"""The runtime patches this plugin needs, isolated here with their reasons.

``tests/test_patches.py`` fails when the code they work around changes. Patches 1 and 2 are
installed only on verl-ext's CPU platform; patch 3 everywhere, when the module it patches loads;
patch 4 only on the trainer instance of a run that asks for the entropy reward, patch 5 only on
the trainer instance of a run with online synthesis.

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

3. Freezing the vision tower. verl 0.9.1 declares ``actor.freeze_vision_tower`` but nothing reads
it, and its FSDP engine has no freeze option; a small vision encoder trained from scratch with the
language model collapses (its features become the same for every image: measured on the toy
task, held-out accuracy stays at chance). ``FSDPEngine._build_module`` is wrapped to set
``requires_grad=False`` on the vision parameters when the model's HF config carries
``freeze_vision_tower: true`` (set with ``model.override_config.freeze_vision_tower=true``; it is
saved into the checkpoint's config, so an RL stage started from it keeps the tower frozen). The
wrap runs before FSDP wrapping and optimizer creation, so frozen weights get no optimizer state.
Installed lazily, when verl imports its FSDP engine module, so ``import verl`` stays cheap.

4. A step between log-probs and advantages. A reward computed from the policy's own per-token
entropy (``reward=token_entropy``) needs the entropy that verl 0.9.1's v1 trainer computes in
``_compute_old_log_prob`` and writes to TransferQueue, and must be in ``rm_scores`` before
``_compute_advantage`` reads them. No extension point sits between the two: the custom sampler runs
before the log-probs, a registered advantage estimator receives neither the entropy nor the batch
keys, and a trainer registered under another mode name turns verl's async code paths on. The
sampler therefore reaches its own trainer (the ``refill_fn`` verl hands every sampler is the
trainer's bound method) and wraps that one instance's ``_compute_advantage``: nothing global is
replaced, and runs that do not ask for it are untouched. Installed only by ``MajorityVoteReplayBuffer``
when the entropy reward is configured.

5. New prompts between steps. Online synthesis (``verl_ext.data.online_synthesis``) must run a
synthesis round on the rollout servers between a step's weight sync and the next step's rollouts,
and put the questions it kept into the next batches. verl 0.9.1's v1 trainer has no dataset hook
for this (the legacy trainer's ``train_dataset.on_batch_end`` is gone; ``data.custom_cls`` builds the
dataset once, before any server exists, and its rows are fixed by the dataloader's sampler). Every
batch of new prompts passes through ``trainer._next_train_batch`` (the step's batch and the replay
buffer's refills alike), right after the previous step's weights reached the servers. The sampler
reaches its own trainer (as in patch 4) and wraps that one instance's ``_next_train_batch``; runs
without online synthesis are untouched.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import logging
import sys

logger = logging.getLogger(__name__)

DUPLICATE_CPU_BACKEND = "cpu:gloo,cpu:gloo"
_PATCH_MARKER = "__verl_ext_cpu_backend_patch__"


def _wrap(owner, name: str, wrap) -> bool:
    """Replace ``owner.<name>`` by ``wrap(original)``, marked so that installing twice is a no-op; False if done."""
    original = getattr(owner, name)
    if getattr(original, _PATCH_MARKER, False):
        return False
    wrapper = functools.wraps(original)(wrap(original))
    setattr(wrapper, _PATCH_MARKER, True)
    setattr(owner, name, wrapper)
    return True


def install_cpu_gloo_backend_patch() -> bool:
    """Wrap ``torch.distributed.init_process_group``; returns False if it was already wrapped."""
    import torch.distributed as dist

    def wrap(original):
        def init_process_group(*args, **kwargs):
            if kwargs.get("backend") == DUPLICATE_CPU_BACKEND:
                kwargs["backend"] = "gloo"
            elif args and args[0] == DUPLICATE_CPU_BACKEND:
                args = ("gloo", *args[1:])
            return original(*args, **kwargs)

        return init_process_group

    return _wrap(dist, "init_process_group", wrap)


def install_cpu_pin_memory_patch() -> bool:
    """Make ``Tensor.pin_memory`` the identity while CUDA is unavailable; False if already done."""
    import torch

    def wrap(original):
        def pin_memory(self, *args, **kwargs):
            return original(self, *args, **kwargs) if torch.cuda.is_available() else self

        return pin_memory

    return _wrap(torch.Tensor, "pin_memory", wrap)


FSDP_ENGINE_MODULE = "verl.workers.engine.fsdp.transformer_impl"
VISION_MODULE_NAMES = ("visual", "vision_tower", "vision_model")


def freeze_vision_parameters(module) -> int:
    """Set ``requires_grad=False`` on every vision-encoder parameter; returns how many there were."""
    frozen = [p for n, p in module.named_parameters() if any(part in VISION_MODULE_NAMES for part in n.split("."))]
    if not frozen:
        raise ValueError("freeze_vision_tower is set, but the model has no vision-encoder parameters")
    for param in frozen:
        param.requires_grad_(False)
    return len(frozen)


def _patch_fsdp_engine(engine_module) -> bool:
    def wrap(original):
        def _build_module(self, *args, **kwargs):
            module = original(self, *args, **kwargs)
            if getattr(self.model_config.hf_config, "freeze_vision_tower", False):
                count = freeze_vision_parameters(module)
                logger.info("verl_ext: vision tower frozen (%d parameter tensors)", count)
            return module

        return _build_module

    return _wrap(engine_module.FSDPEngine, "_build_module", wrap)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` right after ``name`` is imported (a post-import hook)."""

    def __init__(self, name: str, patch):
        self.name, self.patch, self._finding = name, patch, False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_then_patch
        return spec


def install_freeze_vision_tower_patch() -> bool:
    """Patch verl's FSDP engine now if it is loaded, else as soon as it is; False if already done."""
    if FSDP_ENGINE_MODULE in sys.modules:
        return _patch_fsdp_engine(sys.modules[FSDP_ENGINE_MODULE])
    if any(isinstance(f, _PatchOnImport) and f.name == FSDP_ENGINE_MODULE for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _PatchOnImport(FSDP_ENGINE_MODULE, _patch_fsdp_engine))
    return True


def trainer_of_sampler(refill_fn):
    """The v1 trainer that built a sampler: verl passes ``refill_fn=self._add_prompts_to_generate``."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    trainer = getattr(refill_fn, "__self__", None)
    return trainer if isinstance(trainer, PPOTrainer) else None


def run_before_advantages(trainer, hook) -> bool:
    """Call ``hook(batch, metrics)`` on ``trainer`` right before it computes advantages; False if already done."""
    def wrap(original):
        return lambda batch, metrics: original(hook(batch, metrics), metrics)

    return _wrap(trainer, "_compute_advantage", wrap)


def run_around_next_batch(trainer, hook) -> bool:
    """Route ``trainer._next_train_batch(n)`` through ``hook(original, n)``; False if already done."""
    return _wrap(trainer, "_next_train_batch", lambda original: lambda num_prompts=None: hook(original, num_prompts))
