"""Compose a recipe (a verl Hydra config) with ``key=value`` overrides: training, synthesis and evaluation.

All of them give the same one-line errors for a missing recipe, an unknown key (with the closest key,
or the verl key of an EasyR1 key) and a value of the wrong type. ``key=value`` sets an existing key, its
value read as YAML as EasyR1 reads it (``data.format_prompt=\\boxed{}`` stays a string,
``trainer.logger=[console]`` is a list); ``+key=value``, ``++key=value``, ``~key``, ``hydra.*`` keys and
config-group choices (``group/sub=option``, ``mmupt=option``) use Hydra's override grammar.

The small commands (data preparation, toy builders, reports) set a config dataclass from ``key=value``
with :func:`settings_from_argv` / :func:`builder_command`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from verl_ext.model_path import model_path_problem

#: Common EasyR1 keys and the verl keys that mean the same thing.
EASYR1_KEYS = {
    "worker.actor.model.model_path": "actor_rollout_ref.model.path",
    "worker.actor.global_batch_size": "actor_rollout_ref.actor.ppo_mini_batch_size",
    "worker.actor.micro_batch_size_per_device_for_update": "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
    "worker.actor.optim.lr": "actor_rollout_ref.actor.optim.lr",
    "worker.actor.optim.weight_decay": "actor_rollout_ref.actor.optim.weight_decay",
    "worker.actor.max_grad_norm": "actor_rollout_ref.actor.grad_clip",
    "worker.actor.use_kl_loss": "actor_rollout_ref.actor.use_kl_loss",
    "worker.actor.kl_coef": "actor_rollout_ref.actor.kl_loss_coef",
    "worker.rollout.n": "actor_rollout_ref.rollout.n",
    "worker.rollout.temperature": "actor_rollout_ref.rollout.temperature",
    "worker.rollout.top_p": "actor_rollout_ref.rollout.top_p",
    "worker.rollout.tensor_parallel_size": "actor_rollout_ref.rollout.tensor_model_parallel_size",
    "worker.rollout.gpu_memory_utilization": "actor_rollout_ref.rollout.gpu_memory_utilization",
    "worker.reward.reward_type": "reward.reward_manager.name",
    "worker.reward.reward_function": "reward.custom_reward_function.path",
    "data.rollout_batch_size": "data.train_batch_size",
    "data.max_pixels": "data.mm_processor_kwargs.max_pixels",
    "data.min_pixels": "data.mm_processor_kwargs.min_pixels",
    "data.answer_key": "data.reward_fn_key",
    "algorithm.kl_coef": "actor_rollout_ref.actor.kl_loss_coef",
    "trainer.save_checkpoint_path": "trainer.default_local_dir",
    "trainer.val_freq": "trainer.test_freq",
    "trainer.max_steps": "trainer.total_training_steps",
    "trainer.save_limit": "trainer.max_actor_ckpt_to_keep",
}

#: Keys holding local paths: made absolute when relative.
PATH_KEYS = (
    "data.train_files",
    "data.val_files",
    "actor_rollout_ref.model.path",
    "actor_rollout_ref.model.tokenizer_path",
    "critic.model.path",
    "reward.custom_reward_function.path",
    "trainer.default_local_dir",
    "trainer.rollout_data_dir",
    "trainer.validation_data_dir",
    "trainer.resume_from_path",
)
#: Of PATH_KEYS, those that name outputs: absolute even when they do not exist yet.
OUTPUT_KEYS = {"trainer.default_local_dir", "trainer.rollout_data_dir", "trainer.validation_data_dir"}


#: verl-ext's config groups: ``mmupt=online_synthesis`` changes a recipe's choice (Hydra's override).
CONFIG_GROUPS = frozenset(
    p.name for p in Path(__file__).resolve().parent.iterdir() if p.is_dir() and not p.name.startswith("_")
)


class CLIError(Exception):
    """A usage error of a command (its arguments, settings or inputs): one line, exit status 2."""


def split_args(
    argv: Sequence[str], usage: str = "usage: COMMAND config=RECIPE.yaml [key=value ...]"
) -> tuple[Path, list[str], list[str]]:
    """Split argv into the recipe path, plain ``key=value`` overrides and Hydra overrides."""
    recipe = None
    plain, hydra_style = [], []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if key == "config" and sep:
            if recipe is not None:
                raise CLIError("config= given twice")
            recipe = value
        elif arg.startswith("~"):
            hydra_style.append(arg)
        elif not sep or not key.lstrip("+"):
            raise CLIError(f"malformed override {arg!r}: expected key=value")
        elif key.startswith(("+", "hydra.")) or "/" in key or "@" in key or key in CONFIG_GROUPS:
            hydra_style.append(arg)
        elif not all(part.isidentifier() or part.isdigit() for part in key.split(".")):
            raise CLIError(f"malformed override {arg!r}: {key!r} is not a dotted key")
        else:
            plain.append(arg)
    if recipe is None:
        raise CLIError(f"no recipe given. {usage}")
    return Path(recipe), plain, hydra_style


_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _parse_value(key: str, text: str) -> Any:
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        if text.lstrip()[:1] in "[{":
            problem = f"{text!r} is not a valid list or mapping ({first_line(err)})"
            raise CLIError(f"malformed value for {key}: {problem}") from None
        # Not YAML (e.g. a LaTeX fragment with a colon): keep the text as written.
        return text
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
        # YAML 1.1 reads "1e-6" (no dot) as a string; every trainer user means the number.
        return float(value)
    return value


def _check_type(cfg: DictConfig, key: str, value: Any) -> None:
    """A number or a switch set to text (``trainer.total_epochs=abc``) is refused with the expected type."""
    node = _node(cfg, key)
    if value is None or node._is_interpolation() or node._is_none() or OmegaConf.is_config(node):
        return
    old = node._value()
    if type(old) is bool:
        if not isinstance(value, bool):
            raise CLIError(f"{key} must be true or false (like {str(old).lower()}); got {value!r}")
    elif type(old) in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        # An int default may be a float setting written "0" (a temperature): numbers pass for numbers.
        raise CLIError(f"{key} must be a number (like {old}); got {value!r}")


def _node(cfg: DictConfig, dotted: str) -> Any:
    """The node at a dotted key (list items by index), or None when there is none."""
    node: Any = cfg
    for part in dotted.split("."):
        # keys(), not `in node`: DictConfig.__contains__ resolves the value, which would build an asset
        # (the toy SFT model: minutes) just to check that an override's key exists.
        if isinstance(node, DictConfig) and part in node.keys():
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return None
    return node


def unknown_key_message(cfg: DictConfig, key: str) -> str:
    """One line naming an unknown key, with the verl key to use instead when one is known."""
    if key in EASYR1_KEYS:
        return f"unknown key {key!r} (an EasyR1 key); in verl use {EASYR1_KEYS[key]!r}"
    parts = key.split(".")
    # The first part that does not exist is the one to correct ("trainerr.x" -> "trainer").
    depth = next(i for i in range(len(parts)) if _node(cfg, ".".join(parts[: i + 1])) is None)
    parent = ".".join(parts[:depth])
    node = OmegaConf.select(cfg, parent) if parent else cfg
    siblings = [str(s) for s in node.keys()] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(parts[depth], siblings, n=1)
    hint = f"; did you mean {'.'.join([*parts[:depth], close[0], *parts[depth + 1 :]])!r}?" if close else ""
    return f"unknown key {key!r}{hint} (use +{key}=... to add a new key)"


def compose(recipe: Path, plain: list[str], hydra_style: list[str]) -> DictConfig:
    """Compose a recipe with verl's config groups, apply the overrides, and check every key exists."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from verl_ext.config.searchpath import register

    register()  # the mmupt config group, also when verl (whose plugin hook registers it) is not imported yet
    if recipe.suffix not in (".yaml", ".yml"):
        raise CLIError(f"recipe {str(recipe)!r} is not a .yaml file")
    if not recipe.is_file():
        siblings = sorted(p.name for p in recipe.parent.glob("*.yaml")) if recipe.parent.is_dir() else []
        where = f" (in {recipe.parent}/: {', '.join(siblings)})" if siblings else ""
        raise CLIError(f"recipe file not found: {recipe}{where}")
    check_recipe_text(recipe)
    try:
        with initialize_config_dir(config_dir=str(recipe.parent.resolve()), version_base=None):
            cfg = hydra_compose(config_name=recipe.stem, overrides=hydra_style)
    except (HydraException, OmegaConfBaseException) as err:
        raise CLIError(f"cannot compose {recipe}: {first_line(err)}") from None
    for arg in plain:
        key, _, text = arg.partition("=")
        if _node(cfg, key) is None:
            raise CLIError(unknown_key_message(cfg, key))
        value = _parse_value(key, text)
        _check_type(cfg, key, value)
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as err:
            raise CLIError(f"cannot set {key}: {first_line(err)}") from None
    return cfg


def check_recipe_text(recipe: Path) -> None:
    """A recipe that is not YAML, empty, or not a mapping: one line naming the file (and line)."""
    try:
        data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CLIError(f"{recipe}: not a text file (invalid UTF-8)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or first_line(err)
        raise CLIError(f"{recipe}: YAML syntax error{where}: {problem}") from None
    if data is None:
        raise CLIError(f"{recipe}: the recipe is empty (it needs at least the defaults list of ppo_trainer)")
    if not isinstance(data, dict):
        raise CLIError(f"{recipe}: a recipe is a mapping of keys, not a {type(data).__name__}")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def absolutize_paths(cfg: DictConfig, cwd: Path | None = None) -> list[str]:
    """Make the relative local paths of PATH_KEYS absolute; returns the keys changed.

    Values are resolved first (``checkpoints/${trainer.experiment_name}`` is relative too), which
    builds any ``${verl_ext_asset:...}`` asset here, in the driver, before Ray starts.
    """
    cwd = cwd or Path.cwd()
    changed = []
    for key in PATH_KEYS:
        if _node(cfg, key) is None:
            continue
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_list(value):
            value = list(value)
        new = _absolute(value, cwd, must_exist=key not in OUTPUT_KEYS)
        if new != value:
            OmegaConf.update(cfg, key, new, merge=False)
            changed.append(key)
    return changed


def _absolute(value: Any, cwd: Path, must_exist: bool) -> Any:
    if isinstance(value, list):
        return [_absolute(v, cwd, must_exist) for v in value]
    if not isinstance(value, str) or not value or "://" in value:
        return value
    path = Path(os.path.expanduser(value))
    if path.is_absolute():
        return str(path)  # "~/x" expanded here: Ray workers would not expand it
    candidate = cwd / path
    # A relative value that does not exist may be a hub id ("Qwen/Qwen2.5-VL-7B-Instruct"): leave it.
    if must_exist and not candidate.exists():
        return value
    return str(candidate.resolve())


def compose_command(argv: Sequence[str], usage: str, required: Sequence[str] = ()) -> DictConfig:
    """``config=RECIPE [key=value ...]`` of a verl-ext command (synthesis, evaluation): the recipe composed
    with the overrides as for training, the ``required`` keys set, the local model found; raises CLIError."""
    recipe, plain, hydra_style = split_args(argv, usage)
    cfg = compose(recipe, plain, hydra_style)
    for key in required:
        if OmegaConf.select(cfg, key, default=None, throw_on_missing=False) in (None, "???"):
            raise CLIError(f"{key} is required: set {key}=... ({recipe})")
    absolutize_paths(cfg)
    check_model_path(cfg)
    return cfg


def command_settings(cfg: DictConfig, section: str, cls: type, listed_in: str, **parts: Any) -> dict[str, Any]:
    """The keyword arguments of the run dataclass ``cls`` of a composed command recipe: ``cfg.<section>``'s
    settings, verl's model path and rollout engine as ``model`` and ``backend``, and each nested field of
    ``parts`` (``name=(constructor, keys)``) built from its keys. A key ``cls`` does not take is a ValueError
    naming ``verl_ext/config/command/<listed_in>.yaml``."""
    settings = OmegaConf.to_container(cfg[section], resolve=True)
    nested = {key for _, keys in parts.values() for key in keys}
    own = {f.name for f in dataclasses.fields(cls)} - {"model", "backend", *parts}
    unknown = sorted(set(settings) - own - nested)
    if unknown:
        listing = f"verl_ext/config/command/{listed_in}.yaml lists the settings"
        raise ValueError(f"unknown key {section}.{unknown[0]} ({listing})")
    built = {name: build(**{key: settings.pop(key) for key in keys}) for name, (build, keys) in parts.items()}
    rollout = cfg.actor_rollout_ref
    return {**settings, **built, "model": str(rollout.model.path), "backend": str(rollout.rollout.name)}


def check_model_path(cfg: DictConfig) -> None:
    """A local model path that does not exist is a CLIError (a hub id such as Org/Name is allowed)."""
    model = OmegaConf.select(cfg, "actor_rollout_ref.model.path", default=None)
    problem = model_path_problem(model) if isinstance(model, str) else None
    if problem:
        raise CLIError(f"actor_rollout_ref.model.path: {problem}")


def run_command(argv: Sequence[str] | None, doc: str, usage: str, body: Callable[[list[str]], Any]) -> Any:
    """A verl-ext command: :func:`start_command`, then ``body(argv)``'s result (0 after ``-h``); a CLIError is
    one line ``error: ...`` on stderr and the result 2 (the exit status)."""
    argv = start_command(argv, doc, usage)
    if argv is None:
        return 0
    try:
        return body(argv)
    except CLIError as err:
        sys.stderr.write(f"error: {first_line(err)}\n")
        return 2


def start_command(argv: Sequence[str] | None, doc: str, usage: str) -> list[str] | None:
    """A command's arguments (``sys.argv`` by default), with logging set up for its progress lines;
    None once ``-h``/``--help`` has printed the command's docstring and usage."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(doc.strip() + "\n\n" + usage)
        return None
    return argv


# ------------------------------------------------------------------------------------------ small commands


def _writable(node: DictConfig) -> None:
    # A frozen dataclass makes its node read-only; the command line must still set its fields.
    OmegaConf.set_readonly(node, False)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _writable(child)


def _tuples(obj: Any) -> Any:
    # OmegaConf hands back lists; a field declared as a tuple gets a tuple again (configs stay hashable).
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            value = _tuples(getattr(obj, f.name))
            if isinstance(value, list) and str(f.type).startswith("tuple"):
                value = tuple(value)
            object.__setattr__(obj, f.name, value)
    return obj


def _listed(schema: DictConfig, arg: str) -> str:
    # A list setting given one plain value (dataset=geometry3k) means a list of that one value.
    key, _, value = arg.partition("=")
    if isinstance(_node(schema, key), ListConfig) and value and not value.lstrip().startswith("["):
        return f"{key}=[{value}]"
    return arg


def settings_from_argv(cls: type, argv: Sequence[str], usage: str) -> Any:
    """The dataclass ``cls`` set from ``key=value ...`` (its fields; nested ones dotted: ``data.seed=1``),
    values read as YAML and checked against the field types; a CLIError of one line for a malformed,
    unknown, mistyped or missing setting. The way every small verl-ext command is configured."""
    from omegaconf.errors import OmegaConfBaseException

    bad = [arg for arg in argv if "=" not in arg]
    if bad:
        raise CLIError(f"malformed setting {bad[0]!r}: expected key=value. {usage}")
    schema = OmegaConf.structured(cls)
    _writable(schema)
    try:
        cfg = OmegaConf.merge(schema, OmegaConf.from_dotlist([_listed(schema, arg) for arg in argv]))
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise CLIError(f"missing setting(s) {', '.join(missing)}. {usage}")
        return _tuples(OmegaConf.to_object(cfg))
    except OmegaConfBaseException as err:
        known = ", ".join(f.name for f in dataclasses.fields(cls))
        raise CLIError(f"{first_line(err)} (settings: {known})") from None
    except (TypeError, ValueError) as err:  # a dataclass's own validation
        raise CLIError(first_line(err)) from None


def builder_command(
    argv: Sequence[str] | None,
    doc: str,
    prog: str,
    config_cls: type,
    build: Callable[..., Any],
    *,
    defaults: Any = None,
    extra: Sequence[tuple[str, type, Any]] = (),
) -> int:
    """The command of a cached builder of laptop assets: ``out=DIR [force=true] [key=value ...]``.

    ``prog`` is the command (``python -m verl_ext.toy.visual_math``). The keys are ``config_cls``'s fields
    (their defaults ``defaults``'s values, a ``config_cls`` instance) and ``extra`` (``(name, type, default)``).
    ``build(out, config, force=..., **extra)`` returns a path or ``{name: path}``, printed one per line.
    Exit status 0, or 2 with one line for a bad setting.
    """
    usage = f"usage: {prog} out=DIR [force=true] [key=value ...]"
    base = defaults if defaults is not None else config_cls()
    hints = typing.get_type_hints(config_cls)
    fields = [("out", str, dataclasses.field(default=MISSING)), ("force", bool, dataclasses.field(default=False))]
    fields += [(name, kind, dataclasses.field(default=default)) for name, kind, default in extra]
    for f in dataclasses.fields(config_cls):
        value = getattr(base, f.name)
        fields.append((f.name, hints[f.name], dataclasses.field(default_factory=lambda v=value: v)))
    command = dataclasses.make_dataclass(f"{config_cls.__name__}Command", fields)

    def body(argv: list[str]) -> int:
        settings = settings_from_argv(command, argv, usage)
        try:
            config = config_cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(config_cls)})
        except (TypeError, ValueError) as err:  # config_cls's own validation
            raise CLIError(first_line(err)) from None
        extras = {name: getattr(settings, name) for name, _, _ in extra}
        made = build(Path(settings.out), config, force=settings.force, **extras)
        for name, path in (made.items() if isinstance(made, dict) else [("out", made)]):
            print(f"{name}: {path}")
        return 0

    return run_command(argv, doc, usage, body)
