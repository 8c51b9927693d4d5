"""``python -m verl.trainer.main config=RECIPE.yaml [key=value ...]``: EasyR1's command form for verl.

The recipe is composed with the overrides (:mod:`verl_ext.config.compose`: the override grammar and
its one-line errors), its values are checked before Ray starts, relative paths are made absolute
(Ray workers do not run in the caller's directory) and verl's own ``main_ppo.main`` runs it.
``python -m verl_ext.main`` is the same command.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from verl_ext.config.compose import CLIError, absolutize_paths, check_model_path, compose, first_line, split_args

USAGE = "usage: python -m verl.trainer.main config=RECIPE.yaml [key=value ...]"

#: Settings that must be positive integers (null allowed where verl allows it), checked before Ray.
POSITIVE = {
    "actor_rollout_ref.rollout.n": False,
    "data.train_batch_size": False,
    "actor_rollout_ref.actor.ppo_mini_batch_size": False,
    "trainer.total_epochs": False,
    "trainer.n_gpus_per_node": False,
    "trainer.nnodes": False,
    "trainer.total_training_steps": True,
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": True,
}


def check_values(cfg: DictConfig) -> None:
    """Impossible sizes and a micro-batch that does not divide the mini-batch (verl then hangs)."""
    for key, nullable in POSITIVE.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            allowed = "a positive integer" + (" or null" if nullable else "")
            raise CLIError(f"{key} must be {allowed}; got {value!r}")
    micro = OmegaConf.select(cfg, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", default=None)
    # With dynamic batch sizes verl packs micro-batches by tokens and ignores this setting.
    if micro and not OmegaConf.select(cfg, "actor_rollout_ref.actor.use_dynamic_bsz", default=False):
        world = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
        per_rank = cfg.actor_rollout_ref.actor.ppo_mini_batch_size * cfg.actor_rollout_ref.rollout.n // world
        if per_rank < 1:
            raise CLIError(
                f"ppo_mini_batch_size x rollout.n ({cfg.actor_rollout_ref.actor.ppo_mini_batch_size} x "
                f"{cfg.actor_rollout_ref.rollout.n}) is smaller than the {world} workers: each needs a response"
            )
        if per_rank % micro:
            raise CLIError(
                f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro} does not divide the {per_rank} "
                f"responses per worker of a mini-batch (ppo_mini_batch_size x rollout.n / workers): pick a divisor"
            )


def check_verl_schema(cfg: DictConfig) -> None:
    """verl's own config validation, run here so its errors come before Ray starts (it runs again in verl)."""
    import contextlib
    import io
    import warnings

    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    try:
        # Its notes (stdout) and warnings come again when verl validates in its own process.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    except (ValueError, AssertionError, TypeError, KeyError) as err:
        raise CLIError(f"verl's config check: {first_line(err)}") from None


def check_paths(cfg: DictConfig) -> None:
    """Data files and a local model that do not exist (a hub id such as Org/Name stays allowed)."""
    for key in ("data.train_files", "data.val_files"):
        value = OmegaConf.select(cfg, key, default=None)
        for path in list(value) if OmegaConf.is_list(value) else [value]:
            if isinstance(path, str) and path and "://" not in path and not Path(path).exists():
                raise CLIError(f"{key}: no such file: {path}")
    check_model_path(cfg)


def check_settings(cfg: DictConfig) -> None:
    """Refuse, before Ray starts, settings the workers would refuse late and settings verl accepts but does not do.

    verl 0.9.1's agent loop reads ``rollout.val_kwargs.temperature``, ``top_p``, ``top_k`` and ``n``
    but never ``val_kwargs.do_sample`` (``verl/trainer/ppo/v1/agent_loop_tq.py``): with
    ``do_sample=false`` and a positive temperature, "greedy" validation samples, and its figures
    carry sampling noise (a few points on 100 questions). Greedy decoding is temperature 0.
    """
    if OmegaConf.select(cfg, "reward.reward_manager.name", default=None) == "majority_vote":
        from verl_ext.rewards.majority_vote import vote_config_from

        try:  # the vote's settings (trainer.v1.sampler.sampler_kwargs) are parsed in the workers
            vote_config_from(cfg)
        except (ValueError, TypeError) as err:
            raise CLIError(f"trainer.v1.sampler.sampler_kwargs: {first_line(err)}") from None
    if OmegaConf.select(cfg, "online_synthesis", default=None) is not None:
        import warnings

        with warnings.catch_warnings():  # verl's import warns about engines it cannot load: not ours to print
            warnings.simplefilter("ignore")
            from verl_ext.data.online_synthesis import settings_problem

        problem = settings_problem(cfg)
        if problem:
            raise CLIError(problem)
    val = OmegaConf.select(cfg, "actor_rollout_ref.rollout.val_kwargs")
    if val is None or val.get("do_sample", True):
        return
    temperature = val.get("temperature", 0)
    if temperature:
        raise CLIError(
            f"actor_rollout_ref.rollout.val_kwargs.do_sample=false with temperature={temperature}: verl 0.9.1 "
            "ignores do_sample and would sample; for greedy validation set val_kwargs.temperature=0"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Compose the recipe and run verl's PPO main with it; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0
    try:
        recipe, plain, hydra_style = split_args(argv, USAGE)
        cfg = compose(recipe, plain, hydra_style)
        check_values(cfg)
        check_settings(cfg)
        check_verl_schema(cfg)
        absolutize_paths(cfg)
        check_paths(cfg)
    except CLIError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    from verl.trainer.main_ppo import main as verl_main

    metrics = metrics_path(cfg)
    # A @hydra.main function called with a config runs its body on that config.
    verl_main(cfg)
    if metrics is not None and metrics.is_file():
        import ray

        if ray.is_initialized():
            ray.shutdown()  # Ray's workers print until it stops: the summary is the last thing on the console
        print(run_summary(metrics, cfg))
    return 0


def metrics_path(cfg: DictConfig) -> Path | None:
    """Where verl's ``file`` logger writes this run's metrics: ``$VERL_FILE_LOGGER_PATH``, set here to
    ``<trainer.default_local_dir>/metrics.jsonl`` when unset (Ray workers inherit it; their working directory
    is not the caller's). None without the ``file`` logger."""
    loggers = OmegaConf.select(cfg, "trainer.logger", default=[]) or []
    if "file" not in (list(loggers) if not isinstance(loggers, str) else [loggers]):
        return None
    if "VERL_FILE_LOGGER_PATH" not in os.environ:
        path = Path(str(cfg.trainer.default_local_dir)).absolute() / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.environ["VERL_FILE_LOGGER_PATH"] = str(path)
    return Path(os.environ["VERL_FILE_LOGGER_PATH"])


#: The summary's columns: metric key -> (header, format).
SUMMARY_COLUMNS = {
    "mmupt/majority_ratio": ("majority ratio", "{:.2f}"),
    "mmupt/label_accuracy": ("pseudo-labels right", "{:.0%}"),
    "critic/score/mean": ("reward", "{:.2f}"),
}


def run_summary(metrics: Path, cfg: DictConfig) -> str:
    """A few lines a newcomer can read after verl's console lines: per step the vote's majority ratio, how often
    its pseudo-labels were right, the reward; held-out greedy accuracy where validated; the checkpoint; what next."""
    import json

    steps: dict[int, dict] = {}
    for line in metrics.read_text().splitlines():
        try:
            entry = json.loads(line)
            steps.setdefault(int(entry["step"]), {}).update(entry["data"])
        except (ValueError, KeyError, TypeError):
            continue
    accuracy = {step: value for step, data in steps.items() for key, value in data.items()
                if key.startswith("val-core/") and "/acc/" in key}
    header = ["step", *(name for name, _ in SUMMARY_COLUMNS.values()), "held-out greedy accuracy"]
    rows = []
    for step in sorted(steps):
        data = steps[step]
        cells = [fmt.format(data[key]) if key in data else "" for key, (_, fmt) in SUMMARY_COLUMNS.items()]
        held = f"{accuracy[step]:.0%}" if step in accuracy else ""
        if any(cells) or held:
            rows.append([str(step), *cells, held])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    table = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    last = max(steps, default=0)
    checkpoint = Path(str(cfg.trainer.default_local_dir)).absolute() / f"global_step_{last}"
    lines = [f"\nverl-ext summary ({cfg.trainer.experiment_name}, {last} steps; every metric in {metrics}):", *table]
    if checkpoint.is_dir():
        lines.append(f"checkpoint: {checkpoint}")
    lines += [
        "pseudo-labels right: how often the group's majority answer equals the hidden true answer (training never "
        "reads it); held-out greedy accuracy: validation before training and where trainer.test_freq asks",
        "next: more steps with trainer.total_training_steps=12; the whole laptop experiment with "
        "bash examples/toy_repro.sh; your own data: docs/data.md",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ alias
# verl 0.9.1 has no verl.trainer.main: ``python -m`` imports ``verl.trainer`` (and with it verl, which loads
# this package's plugin) before it looks the module up, so a finder the plugin appends to sys.meta_path
# answers for that one name with this file. Last on the path, it never shadows a module verl may ship.

ALIAS = "verl.trainer.main"


class MainAliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``verl.trainer.main`` as the source of this file."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_file_location(fullname, __file__) if fullname == ALIAS else None


def install_alias() -> bool:
    """Append the finder to ``sys.meta_path`` once; returns False if it was there already."""
    if any(isinstance(f, MainAliasFinder) for f in sys.meta_path):
        return False
    sys.meta_path.append(MainAliasFinder())
    return True


if __name__ == "__main__":
    sys.exit(main())
