"""Every recipe, the GPU-cluster ones included, composes and passes verl's own config validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from verl_ext.main import compose

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
COMMAND_RECIPES = sorted((REPO / "recipes").glob("*/*.yaml"))
"""Recipes of the synthesis and evaluation commands (recipes/base/ holds fragments, not recipes)."""
COMMAND_RECIPES = [p for p in COMMAND_RECIPES if p.parent.name != "base"]


SFT_RECIPES = [p for p in RECIPES if "sft_trainer" in p.read_text()]
RL_RECIPES = [p for p in RECIPES if p not in SFT_RECIPES]


def test_recipes_exist():
    assert {p.stem for p in RL_RECIPES} >= {"quickstart", "grpo_supervised", "mmupt", "grpo_supervised_7b"}
    assert {p.stem for p in SFT_RECIPES} >= {"sft_tiny"}
    assert {f"{p.parent.name}/{p.stem}" for p in COMMAND_RECIPES} >= {"synth/in_context", "synth/direct", "eval/paper"}


@pytest.mark.parametrize("recipe", COMMAND_RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_command_recipe_passes_verl_validation_and_builds_its_run(recipe):
    """A synthesis or evaluation recipe is a verl config whose rollout and model sections pass verl's checks
    (its config dataclasses validate on construction), and its own section builds the command's run settings.

    verl's ``validate_config`` is for training: it checks actor, critic and batch sections that a generation
    command never reads (verl's stock ``ppo_trainer`` itself fails it: no micro-batch size is set).
    """
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import HFModelConfig, RolloutConfig

    from verl_ext.generation.replicas import replica_count

    cfg = compose(recipe, ["actor_rollout_ref.model.path=${verl_ext_asset:tiny-qwen2.5-vl}"], [])
    assert isinstance(omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout), RolloutConfig)
    assert isinstance(omega_conf_to_dataclass(cfg.actor_rollout_ref.model, dataclass_type=HFModelConfig), HFModelConfig)
    assert cfg.actor_rollout_ref.rollout.name == "vllm" and replica_count(cfg) >= 4  # the 8-GPU node
    if recipe.parent.name == "synth":
        from verl_ext.data.synthesize import config_from

        cfg.synth.seeds = ["seeds.parquet"]
        cfg.synth.out = "out"
        run = config_from(cfg)
        assert run.strategy == recipe.stem and run.backend == "vllm" and run.merge
    else:
        from verl_ext.eval.__main__ import config_from

        run = config_from(cfg)
        assert run.backend == "vllm" and run.protocol.max_new_tokens <= cfg.actor_rollout_ref.rollout.max_model_len


def test_command_defaults_are_the_dataclass_defaults():
    """verl_ext/config/command/*.yaml restate the run dataclasses' defaults for Hydra: they must not drift apart."""
    import dataclasses

    from verl_ext.data.synth_filters import FilterSettings
    from verl_ext.data.synthesize import SynthesizeConfig
    from verl_ext.eval.__main__ import EvalConfig
    from verl_ext.eval.prompts import EvalProtocol
    from verl_ext.generation.base import BackendConfig

    def defaults(*classes):
        out = {}
        for cls in classes:
            for f in dataclasses.fields(cls):
                if f.default is not dataclasses.MISSING:
                    out[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    out[f.name] = f.default_factory()
        return out

    for name, section, classes, own_defaults in (
        ("synthesize", "synth", (SynthesizeConfig, FilterSettings), {"batch_size": 8}),
        ("evaluate", "eval", (EvalConfig, EvalProtocol), {"output_dir": None}),  # null: outputs/eval/<model name>
    ):
        yaml_defaults = OmegaConf.to_container(OmegaConf.load(REPO / "verl_ext" / "config" / "command" / f"{name}.yaml"))[section]
        expected = {**defaults(BackendConfig), **defaults(*classes), **own_defaults}
        for key, value in yaml_defaults.items():
            if value == "???":
                continue
            assert key in expected, (name, key)
            if key in ("benchmarks",):
                value = list(value)
            assert value == expected[key] or (value is None and expected[key] is None), (name, key, value, expected[key])


@pytest.mark.parametrize("recipe", SFT_RECIPES, ids=lambda p: p.stem)
def test_sft_recipe_builds_verl_sft_configs(recipe):
    """What verl's SFT trainer converts first (``SFTTrainer._build_config``), converted here."""
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose(recipe, [], [])
    for section in ("model", "engine", "optim", "checkpoint", "profiler"):
        assert omega_conf_to_dataclass(cfg[section]) is not None, section
    assert cfg.engine.strategy == "fsdp2"


@pytest.mark.parametrize("recipe", RL_RECIPES, ids=lambda p: p.stem)
def test_recipe_passes_verl_validation(recipe, capsys):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config
    from verl.workers.config import RolloutConfig

    cfg = compose(recipe, [], [])
    if OmegaConf.to_container(cfg.actor_rollout_ref.model)["path"] == "${verl_ext_asset:toy-sft/model}":
        # The quickstart's toy SFT model takes verl's SFT trainer ~6 minutes to build: the slow e2e test
        # that runs the quickstart builds and loads it for real. Here the same-family tiny model stands in.
        from verl_ext.toy.resolver import ASSETS

        assert "toy-sft" in ASSETS
        cfg.actor_rollout_ref.model.path = "${verl_ext_asset:tiny-qwen2.5-vl}"
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert "All configuration checks passed" in capsys.readouterr().out

    rollout = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    assert isinstance(rollout, RolloutConfig)
    assert rollout.name in ("hf", "vllm")
    # Every other key resolves (assets are built here for the CPU recipes; hub paths are left alone).
    model = OmegaConf.to_container(cfg.actor_rollout_ref.model, resolve=True)
    assert model["path"]
    if rollout.name == "hf":
        # The CPU recipes run here: their model config loads for real.
        omega_conf_to_dataclass(cfg.actor_rollout_ref.model)

    if cfg.reward.reward_manager.name == "majority_vote":
        from verl_ext.rewards.majority_vote import check_vote_enabled, vote_config_from

        check_vote_enabled(cfg)
        vote_config_from(cfg)


GROUP_OPTIONS = sorted(p.stem for p in (REPO / "verl_ext" / "config" / "mmupt").glob("*.yaml"))


@pytest.mark.parametrize("option", GROUP_OPTIONS)
def test_each_reward_is_one_override_on_a_stock_grpo_recipe(option, capsys):
    """``+mmupt=<option>`` on the supervised GRPO recipe: verl validates it and the vote settings parse."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from verl_ext.rewards.majority_vote import check_vote_enabled, vote_config_from

    cfg = compose(REPO / "recipes" / "grpo_supervised.yaml", [], [f"+mmupt={option}"])
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert "All configuration checks passed" in capsys.readouterr().out
    assert cfg.reward.reward_manager.name == "majority_vote"
    check_vote_enabled(cfg)
    vote = vote_config_from(cfg)
    expected = {"majority_vote": ("majority_vote", False), "soft_vote": ("majority_vote", True),
                "token_entropy": ("token_entropy", False), "online_synthesis": ("majority_vote", False)}
    assert (vote.reward, vote.soft) == expected[option]
    if option == "online_synthesis":
        from verl_ext.data.online_synthesis import OnlineSynthesisConfig, settings_problem

        assert settings_problem(cfg) is None and OnlineSynthesisConfig.from_config(cfg).every > 0
        assert cfg.trainer.v1.sampler.custom_sampler.name.endswith("MajorityVoteReplayBuffer")
