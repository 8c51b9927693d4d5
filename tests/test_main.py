"""``python -m verl.trainer.main config=RECIPE.yaml key=value ...``: argument splitting, composition, paths, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from verl_ext.main import USAGE, CLIError, absolutize_paths, compose, split_args

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "grpo_supervised.yaml"


# ---------------------------------------------------------------------------------------------- split_args


def test_split_args_takes_config_anywhere():
    recipe, plain, hydra = split_args(["a.b=1", "config=recipes/x.yaml", "c=2"])
    assert recipe == Path("recipes/x.yaml")
    assert plain == ["a.b=1", "c=2"]
    assert hydra == []


def test_split_args_keeps_everything_after_the_first_equals_sign():
    recipe, plain, _ = split_args(["config=a=b.yaml", "data.prompt=x=y"])
    assert recipe == Path("a=b.yaml")
    assert plain == ["data.prompt=x=y"]


def test_split_args_config_twice_is_an_error():
    with pytest.raises(CLIError, match="twice"):
        split_args(["config=a.yaml", "x=1", "config=b.yaml"])


def test_split_args_missing_config_is_an_error():
    with pytest.raises(CLIError, match="no recipe") as info:
        split_args(["trainer.total_training_steps=3"], USAGE)
    assert USAGE in str(info.value)
    with pytest.raises(CLIError, match="no recipe"):
        split_args([], USAGE)


def test_split_args_sends_hydra_grammar_to_hydra():
    args = ["+ray_kwargs.foo=1", "++trainer.x=2", "~trainer.y", "algorithm/sub=opt", "model@pkg=z", "trainer.a.0=b"]
    recipe, plain, hydra = split_args(["config=r.yaml", *args])
    assert recipe == Path("r.yaml")
    assert hydra == args[:5]
    assert plain == ["trainer.a.0=b"]


@pytest.mark.parametrize("bad", ["foo", "a..b=1", "=1", "+=1", ".a=1", "a.=1", "a b=1", "a-b.c=1", "--help"])
def test_split_args_rejects_malformed_overrides(bad):
    with pytest.raises(CLIError, match="malformed override"):
        split_args(["config=r.yaml", bad])


# ------------------------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def composed():
    _, plain, hydra = split_args(
        [
            f"config={RECIPE}",
            "trainer.total_training_steps=3",
            "trainer.logger=[console,wandb]",
            r"trainer.experiment_name=\boxed{}",
            "+ray_kwargs.ray_init.foo=1",
            "actor_rollout_ref.rollout.temperature=0.7",
            "data.train_batch_size=null",
            "algorithm.use_kl_in_reward=true",
        ]
    )
    return compose(RECIPE, plain, hydra)


def test_compose_extends_verl_trainer_config(composed):
    # Keys the recipe does not state come from verl's ppo_trainer.
    assert composed.actor_rollout_ref.rollout.name == "hf"
    assert "critic" in composed and "reward" in composed
    assert OmegaConf.select(composed, "actor_rollout_ref.actor.ppo_epochs") == 1


def test_compose_applies_overrides_with_yaml_types(composed):
    steps = composed.trainer.total_training_steps
    assert steps == 3 and type(steps) is int
    assert OmegaConf.to_container(composed.trainer.logger) == ["console", "wandb"]
    assert composed.trainer.experiment_name == r"\boxed{}"
    assert composed.ray_kwargs.ray_init.foo == 1
    assert composed.actor_rollout_ref.rollout.temperature == pytest.approx(0.7)
    assert composed.data.train_batch_size is None
    assert composed.algorithm.use_kl_in_reward is True
    # Untouched recipe values survive.
    assert composed.ray_kwargs.ray_init.num_cpus == 8
    assert composed.trainer.project_name == "verl_ext"


def test_compose_keeps_interpolations_unresolved(composed):
    # The asset resolver runs later, in absolutize_paths, not while composing.
    raw = OmegaConf.to_container(composed.data, resolve=False)
    assert raw["train_files"] == "${verl_ext_asset:visual-math/train.parquet}"
    assert OmegaConf.to_container(composed.trainer, resolve=False)["default_local_dir"] == (
        "checkpoints/${trainer.project_name}/${trainer.experiment_name}"
    )


def test_compose_list_index_override():
    cfg = compose(RECIPE, ["trainer.logger.0=tensorboard"], [])
    assert list(cfg.trainer.logger) == ["tensorboard"]


def test_compose_unknown_key_suggests_the_close_one():
    with pytest.raises(CLIError) as info:
        compose(RECIPE, ["trainer.total_training_stepz=3"], [])
    message = str(info.value)
    assert "unknown key 'trainer.total_training_stepz'" in message
    assert "did you mean 'trainer.total_training_steps'" in message
    assert "\n" not in message


def test_compose_easyr1_key_names_the_verl_key():
    with pytest.raises(CLIError) as info:
        compose(RECIPE, ["worker.rollout.n=8"], [])
    assert "'actor_rollout_ref.rollout.n'" in str(info.value)
    assert "EasyR1" in str(info.value)


def test_compose_hydra_errors_become_one_line():
    with pytest.raises(CLIError, match=r"^cannot compose .*trainer\.nope") as info:
        compose(RECIPE, [], ["~trainer.nope"])
    assert "\n" not in str(info.value)


def test_compose_missing_recipe_lists_the_neighbours(tmp_path):
    (tmp_path / "real.yaml").write_text("a: 1\n")
    with pytest.raises(CLIError, match="recipe file not found") as info:
        compose(tmp_path / "reel.yaml", [], [])
    assert "real.yaml" in str(info.value)
    with pytest.raises(CLIError, match="not a .yaml file"):
        compose(tmp_path / "real.json", [], [])


# ---------------------------------------------------------------------------------------- absolutize_paths


def test_absolutize_paths(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.parquet").write_bytes(b"")
    (tmp_path / "data" / "val.parquet").write_bytes(b"")
    cfg = OmegaConf.create(
        {
            "data": {
                "train_files": "data/train.parquet",
                "val_files": ["data/val.parquet", "hf://datasets/x/y", "missing/file.parquet"],
            },
            "actor_rollout_ref": {"model": {"path": "Qwen/Qwen2.5-VL-7B-Instruct", "tokenizer_path": None}},
            "reward": {"custom_reward_function": {"path": "pkg://verl_ext.rewards.accuracy"}},
            "trainer": {
                "project_name": "p",
                "default_local_dir": "out/x",
                "rollout_data_dir": "dumps/${trainer.project_name}",
                "validation_data_dir": None,
                "resume_from_path": "/already/absolute",
            },
        }
    )
    changed = absolutize_paths(cfg, cwd=tmp_path)

    assert cfg.data.train_files == str(tmp_path / "data" / "train.parquet")
    assert list(cfg.data.val_files) == [
        str(tmp_path / "data" / "val.parquet"),
        "hf://datasets/x/y",
        "missing/file.parquet",  # not there: could be a hub id, left alone
    ]
    assert cfg.actor_rollout_ref.model.path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert cfg.actor_rollout_ref.model.tokenizer_path is None
    assert cfg.reward.custom_reward_function.path == "pkg://verl_ext.rewards.accuracy"
    # Output directories are made absolute although they do not exist yet.
    assert cfg.trainer.default_local_dir == str(tmp_path / "out" / "x")
    assert cfg.trainer.rollout_data_dir == str(tmp_path / "dumps" / "p")
    assert not (tmp_path / "out").exists()  # nothing is created
    assert cfg.trainer.resume_from_path == "/already/absolute"
    assert sorted(changed) == sorted(
        ["data.train_files", "data.val_files", "trainer.default_local_dir", "trainer.rollout_data_dir"]
    )
    # A second pass has nothing left to do.
    assert absolutize_paths(cfg, cwd=tmp_path) == []


def test_absolutize_paths_defaults_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"trainer": {"default_local_dir": "ckpt"}})
    assert absolutize_paths(cfg) == ["trainer.default_local_dir"]
    assert cfg.trainer.default_local_dir == str(tmp_path.resolve() / "ckpt")


# ------------------------------------------------------------------------------------- the real commands

COMMANDS = ["verl.trainer.main", "verl_ext.main"]
GRPO = "config=recipes/grpo_supervised.yaml"
ERROR_CASES = {
    "wrong_type": ([GRPO, "trainer.total_epochs=abc"], "trainer.total_epochs must be a number"),
    "wrong_switch": ([GRPO, "trainer.val_before_train=maybe"], "must be true or false"),
    "impossible_value": ([GRPO, "actor_rollout_ref.rollout.n=-1"], "actor_rollout_ref.rollout.n must be a positive"),
    "micro_batch_not_dividing": (
        [GRPO, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3"], "does not divide",
    ),
    "missing_train_file": ([GRPO, "data.train_files=/nonexistent/train.parquet"], "no such file"),
    "missing_model": ([GRPO, "actor_rollout_ref.model.path=./no_such_model"], "not a hub id"),
    "malformed_list": ([GRPO, "trainer.logger=[console"], "not a valid list"),
    "verl_schema": ([GRPO, "data.train_batch_size=2"], "verl's config check"),
    "empty_model": ([GRPO, "actor_rollout_ref.model.path="], "empty model path"),
    "wrong_recipe": (["config=recipes/does_not_exist.yaml"], "recipe file not found"),
    "malformed_override": (["config=recipes/grpo_supervised.yaml", "foo"], "malformed override 'foo'"),
    "unknown_key": (
        ["config=recipes/grpo_supervised.yaml", "trainer.total_training_stepz=3"],
        "did you mean 'trainer.total_training_steps'",
    ),
    "sampled_greedy_validation": (
        ["config=recipes/grpo_supervised.yaml", "actor_rollout_ref.rollout.val_kwargs.temperature=0.5"],
        "set val_kwargs.temperature=0",
    ),
}


def _run_command(module: str, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
@pytest.mark.parametrize("module", COMMANDS)
def test_command_reports_one_error_line(module, case):
    args, expected = ERROR_CASES[case]
    proc = _run_command(module, args)
    assert proc.returncode != 0
    # A first run builds the tiny model asset (its progress bar) before the data paths are checked.
    lines = [line for line in proc.stderr.strip().splitlines() if "%|" not in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize("module", COMMANDS)
def test_command_help(module):
    proc = _run_command(module, ["--help"])
    assert proc.returncode == 0, proc.stderr
    assert USAGE in proc.stdout
    assert "key=value" in proc.stdout


@pytest.mark.parametrize(
    "text, message",
    [
        ("defaults:\n  - ppo_trainer\n  bad: [\n", "YAML syntax error at line 3"),
        ("", "the recipe is empty"),
        ("- a\n- b\n", "a recipe is a mapping of keys, not a list"),
        (b"\xff\xfe", "invalid UTF-8"),
    ],
)
def test_bad_recipe_files_are_one_line(tmp_path, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CLIError, match=message) as info:
        compose(recipe, [], [])
    assert str(recipe) in str(info.value) and "\n" not in str(info.value)


RL_RECIPES = [p for p in sorted((REPO / "recipes").glob("*.yaml")) if "sft_trainer" not in p.read_text()]


@pytest.mark.parametrize("recipe", RL_RECIPES, ids=lambda p: p.stem)
def test_every_rl_recipe_passes_the_pre_ray_checks(recipe):
    from verl_ext.main import check_settings, check_values, check_verl_schema

    cfg = compose(recipe, [], [])
    check_values(cfg)
    check_settings(cfg)
    check_verl_schema(cfg)


def test_hub_ids_stay_allowed_as_model_paths():
    from omegaconf import OmegaConf

    from verl_ext.main import check_paths

    cfg = OmegaConf.create({"data": {"train_files": [], "val_files": []},
                            "actor_rollout_ref": {"model": {"path": "Qwen/Qwen2.5-VL-7B-Instruct"}}})
    check_paths(cfg)
    cfg.actor_rollout_ref.model.path = "/abs/Qwen2.5-VL-7B-Instruct"
    with pytest.raises(CLIError, match="not a hub id"):
        check_paths(cfg)


def test_exponent_numbers_without_a_dot_are_floats():
    from verl_ext.config.compose import _parse_value

    assert _parse_value("lr", "1e-6") == 1e-6 and isinstance(_parse_value("lr", "2e-4"), float)
    assert _parse_value("name", "1e5x") == "1e5x"


# ------------------------------------------------------------------------------ vote settings


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.v1.sampler.sampler_kwargs.collapse.guard=halt", "collapse.guard must be one of"),
        ("trainer.v1.sampler.sampler_kwargs.reward=entropy", "reward must be one of"),
        ("+trainer.v1.sampler.sampler_kwargs.min_ratoi=0.5", "unknown majority-vote setting"),
        ("trainer.v1.sampler.sampler_kwargs.reward=token_entropy", "bypass_mode"),
    ],
)
def test_bad_vote_settings_fail_before_ray(override, message):
    from verl_ext.main import check_settings

    quickstart = RECIPE.parent / "quickstart.yaml"
    _, plain, hydra = split_args([f"config={quickstart}", override])
    cfg = compose(quickstart, plain, hydra)
    if "token_entropy" in override:
        check_settings(cfg)  # fine as it is ...
        cfg.algorithm.rollout_correction.bypass_mode = True  # ... but not without verl's entropy
    with pytest.raises(CLIError, match=message):
        check_settings(cfg)


# ------------------------------------------------------------------------------ greedy validation


def test_greedy_validation_needs_temperature_zero():
    """do_sample=false with a positive temperature is refused: verl would sample (see the next test)."""
    from verl_ext.main import check_settings

    _, plain, hydra = split_args([f"config={RECIPE}"])
    cfg = compose(RECIPE, plain, hydra)
    check_settings(cfg)  # the CPU recipes validate greedily: temperature 0
    assert cfg.actor_rollout_ref.rollout.val_kwargs.temperature == 0
    cfg.actor_rollout_ref.rollout.val_kwargs.temperature = 0.5
    with pytest.raises(CLIError, match="ignores do_sample"):
        check_settings(cfg)
    cfg.actor_rollout_ref.rollout.val_kwargs.do_sample = True  # sampled validation, said so: fine
    check_settings(cfg)


def test_verl_agent_loop_still_ignores_val_do_sample():
    """Pins the cause the check above guards against: verl's validation sampling parameters take
    val_kwargs' temperature, top_p and top_k but not do_sample. When verl starts reading it, this
    fails and check_settings can go."""
    import inspect

    from verl.trainer.ppo.v1 import agent_loop_tq

    source = inspect.getsource(agent_loop_tq)
    assert 'sampling_params["temperature"] = config.val_kwargs.temperature' in source
    assert "val_kwargs.do_sample" not in source


def test_compose_does_not_resolve_the_values_it_overrides(monkeypatch):
    """Checking an override's key must not build the asset the recipe's value names (minutes for toy-sft)."""
    from verl_ext.toy import resolver

    monkeypatch.setitem(resolver.ASSETS, "toy-sft", lambda root, rest: pytest.fail(f"resolved toy-sft/{rest}"))
    recipe = REPO / "recipes" / "quickstart.yaml"
    _, plain, hydra = split_args(
        [f"config={recipe}", "actor_rollout_ref.model.path=/m", "data.train_files=/t.parquet", "data.val_files=/v.parquet"]
    )
    cfg = compose(recipe, plain, hydra)
    assert cfg.actor_rollout_ref.model.path == "/m" and cfg.data.train_files == "/t.parquet"


def test_a_mini_batch_smaller_than_the_workers_is_refused():
    from verl_ext.main import check_values

    _, plain, hydra = split_args([f"config={RECIPE}", "trainer.n_gpus_per_node=64"])
    cfg = compose(RECIPE, plain, hydra)
    with pytest.raises(CLIError, match="smaller than the 64 workers"):
        check_values(cfg)


def test_run_summary_reads_verl_file_logger_lines(tmp_path):
    from verl_ext.main import run_summary

    metrics = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 0, "data": {"val-core/verl_ext/toy_visual_math/acc/mean@1": 0.62}},
        {"step": 1, "data": {"mmupt/majority_ratio": 0.8125, "mmupt/label_accuracy": 0.75, "critic/score/mean": 0.81}},
        {"step": 2, "data": {"mmupt/majority_ratio": 0.875, "mmupt/label_accuracy": 1.0, "critic/score/mean": 0.88}},
    ]
    metrics.write_text("\n".join(map(json.dumps, lines)) + "\nnot json\n")
    (tmp_path / "ckpt" / "global_step_2").mkdir(parents=True)
    cfg = OmegaConf.create({"trainer": {"default_local_dir": str(tmp_path / "ckpt"), "experiment_name": "quickstart"}})
    text = run_summary(metrics, cfg)
    rows = text.splitlines()
    assert rows[1].startswith("verl-ext summary (quickstart, 2 steps")
    assert rows[2].split() == ["step", "majority", "ratio", "pseudo-labels", "right", "reward", "held-out", "greedy",
                               "accuracy"]
    assert rows[3].split() == ["0", "62%"]
    assert rows[4].split() == ["1", "0.81", "75%", "0.81"]
    assert rows[5].split() == ["2", "0.88", "100%", "0.88"]
    assert f"checkpoint: {tmp_path / 'ckpt' / 'global_step_2'}" in text
    assert "bash examples/toy_repro.sh" in text


def test_metrics_path_only_with_the_file_logger(tmp_path, monkeypatch):
    from verl_ext.main import metrics_path

    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    cfg = OmegaConf.create({"trainer": {"logger": ["console"], "default_local_dir": str(tmp_path / "c")}})
    assert metrics_path(cfg) is None and "VERL_FILE_LOGGER_PATH" not in os.environ
    cfg.trainer.logger = ["console", "file"]
    assert metrics_path(cfg) == tmp_path / "c" / "metrics.jsonl"
    assert os.environ["VERL_FILE_LOGGER_PATH"] == str(tmp_path / "c" / "metrics.jsonl")  # Ray workers inherit it
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(tmp_path / "mine.jsonl"))
    assert metrics_path(cfg) == tmp_path / "mine.jsonl"  # the user's choice wins
