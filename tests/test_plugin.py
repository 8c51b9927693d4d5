"""The ``verl.plugins`` entry point: what ``import verl`` registers, in a fresh process and in a Ray worker."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Collects, after nothing but ``import verl``, the facts the trainer relies on; prints them as JSON.
FACTS_SCRIPT = r"""
import json
import os
import verl  # loads every verl.plugins entry point, verl_ext.plugin among them
from omegaconf import OmegaConf
from verl.plugin.platform import PlatformRegistry, get_platform
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.replica import RolloutReplicaRegistry

def facts():
    replica = RolloutReplicaRegistry.get("hf")
    import verl_ext.plugin as plugin
    return {
        "adapter": rollout_base._ROLLOUT_REGISTRY.get(("hf", "async")),
        "replica": f"{replica.__module__}.{replica.__qualname__}",
        "platforms": list(PlatformRegistry.registered_names()),
        "device_name": get_platform().device_name,
        "platform_class": type(get_platform()).__name__,
        "resolver": OmegaConf.has_resolver("verl_ext_asset"),
        "registered": plugin.REGISTERED,
        "pid": os.getpid(),
    }
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("VERL_PLATFORM", None)
    return env


def _check_facts(facts: dict) -> None:
    assert facts["adapter"] == "verl_ext.rollout.hf_adapter.HFServerAdapter"
    assert facts["replica"] == "verl_ext.rollout.hf_replica.HFReplica"
    assert "cpu" in facts["platforms"]
    assert facts["device_name"] == "cpu"
    assert facts["platform_class"] == "PlatformCPU"
    assert facts["resolver"] is True
    registered = facts["registered"]
    assert "failed" not in registered, registered
    assert registered["platform"] == ["cpu"]
    assert registered["rollout"] == ["hf"]
    assert registered["resolver"] == ["verl_ext_asset"]
    assert set(registered["cpu_runtime"]) == {"gloo_backend_patch", "pin_memory_patch"}


def test_import_verl_registers_everything_in_a_fresh_process():
    code = FACTS_SCRIPT + "\nprint(json.dumps(facts()))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    _check_facts(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "FAILED" not in proc.stderr, proc.stderr


def test_python_m_plugin_prints_registrations_without_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "verl_ext.plugin"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["rollout"] == ["hf"] and printed["platform"] == ["cpu"]
    assert "failed" not in printed
    assert "FAILED" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_import_verl_registers_everything_in_a_ray_worker():
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    namespace: dict = {}
    exec(compile(FACTS_SCRIPT, "<facts>", "exec"), namespace)
    # The worker gets the driver's environment (offline, sandboxed cache) when Ray starts here.
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        facts = ray.get(ray.remote(namespace["facts"]).remote(), timeout=180)
    finally:
        ray.shutdown()
    assert facts["pid"] != os.getpid()  # it did run in a worker process
    _check_facts(facts)


# ---------------------------------------------------------------------------------------------- failing steps


@pytest.fixture
def plugin_module(monkeypatch):
    import verl  # noqa: F401  (the plugin is imported through verl, as in production)
    from verl_ext import plugin

    # register() writes into the module-level REGISTERED: give it a scratch dict.
    monkeypatch.setattr(plugin, "REGISTERED", {})
    return plugin


def _with_failing_step(plugin, monkeypatch, failing_name: str):
    ran = []
    names = [s.__name__ for s in plugin.STEPS]
    assert failing_name in names, names
    index = names.index(failing_name)

    def counted(step):
        @functools.wraps(step)
        def wrapper():
            ran.append(step.__name__)
            return step()

        return wrapper

    def failing():
        ran.append(failing_name)
        raise RuntimeError("simulated registration failure")

    failing.__name__ = failing_name
    steps = [counted(s) for s in plugin.STEPS]
    steps[index] = failing
    monkeypatch.setattr(plugin, "STEPS", tuple(steps))
    return failing_name, ran


def test_failing_step_is_logged_as_error_and_other_steps_still_run(plugin_module, monkeypatch, caplog):
    plugin = plugin_module
    failing_name, ran = _with_failing_step(plugin, monkeypatch, "_register_rollout")

    with caplog.at_level(logging.DEBUG, logger="verl_ext"):
        result = plugin.register()

    assert result is plugin.REGISTERED
    assert result["failed"] == [failing_name]
    # Every step ran, in order, the failing one included.
    assert ran == [s.__name__ for s in plugin.STEPS]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "verl_ext"]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert failing_name in message and "FAILED" in message
    assert "simulated registration failure" in message  # the traceback is in the record
    # The other steps registered their parts.
    assert result["platform"] == ["cpu"]
    assert result["resolver"] == ["verl_ext_asset"]
    assert "rollout" not in result


def test_failing_step_reaches_stderr_when_logging_is_not_configured(plugin_module, monkeypatch, capsys):
    plugin = plugin_module
    failing_name, _ = _with_failing_step(plugin, monkeypatch, "_register_platform")
    # A fresh Ray worker: no handler anywhere on the logger's path.
    monkeypatch.setattr(plugin.logger, "propagate", False)
    monkeypatch.setattr(plugin.logger, "handlers", [])
    assert not plugin.logger.hasHandlers()

    result = plugin.register()

    assert result["failed"] == [failing_name]
    err = capsys.readouterr().err
    assert f"plugin step {failing_name} FAILED" in err
    assert "simulated registration failure" in err


def test_register_without_failures_records_no_failed_key(plugin_module):
    result = plugin_module.register()
    assert "failed" not in result
    assert result["rollout"] == ["hf"]
    assert result["command"] == ["verl.trainer.main"]
