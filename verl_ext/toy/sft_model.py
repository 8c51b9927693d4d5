"""The toy SFT model (stage 1 of the toy reproduction), built once on first use and cached.

``${verl_ext_asset:toy-sft/model}``: a tiny Qwen2.5-VL (4 layers, 128 wide) trained by verl's SFT trainer
(``recipes/sft_tiny.yaml``, ``torchrun`` in a subprocess, about 12 minutes on 2 cores) on the toy data
(``${verl_ext_asset:toy-sft/data/...}``, :mod:`verl_ext.toy.data`) of the positive-control regime
(:data:`TOY_DATA`), so a majority vote over its samples has something to agree on, and more often right than
its greedy answer. ``examples/toy_repro.sh`` builds the same model.

A build is not trusted on its loss: whether a 4-layer model learns to read the bars depends on the build's
seed. Each build diagnoses its own model on the held-out questions (``diagnosis.json``, the format of
``python -m verl_ext.eval.diagnose``) and holds each task's maj@8 against a floor (:data:`FLOORS`); a build
below it is retried with the next seed, and after ``attempts`` builds the command fails with one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from verl_ext.files import build_once, write_json
from verl_ext.toy.data import FILES, ToyDataConfig, ensure_toy_data
from verl_ext.toy.sft_data import StyleMix
from verl_ext.toy.tiny_model import TinyModelConfig, ensure_tiny_model
from verl_ext.toy.visual_math import VisualMathConfig

logger = logging.getLogger(__name__)

BUILD_VERSION = 2  # 2: diagnosed against FLOORS, retried with the next seed below them
MANIFEST_NAME = ".verl_ext_toy_sft.json"
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
SFT_RECIPE = "sft_tiny"

TOY_MODEL = TinyModelConfig(
    hidden_size=128, num_hidden_layers=4, intermediate_size=256, vision_hidden_size=64, vision_intermediate_size=128
)
"""The base model: the default tiny model is too small to learn the toy tasks."""
PLAIN_DATA = ToyDataConfig(
    n_sft=2048,
    n_rl=512,
    n_test=192,
    prompt="synth_in_context_short",
    difficulty=VisualMathConfig(n_train=0, n_test=0, tasks=("count", "compare"), max_count=4, max_distractors=3,
                                min_bar_gap=20),
)
"""The negative control: counting 1-4 shapes among up to 3 distractors and comparing two bars at least 20 px
apart, one careful answer style; its vote is below its greedy answer (docs/toy-plain.md). Question-writing rows use
the short synthesis prompt (the long one makes SFT 3x slower)."""
TOY_DATA = dataclasses.replace(
    PLAIN_DATA,
    n_sft=6144,
    difficulty=dataclasses.replace(PLAIN_DATA.difficulty, tasks=("compare",), min_bar_gap=30),
    styles=StyleMix(shortcut=0.4, careful=3, shortcut_margin=45),
)
"""The positive control (the default): bars only, at least 30 px apart, answered in three careful phrasings
(20 % of the rows each) and a quick shortcut (40 %) that says A unless bar B is longer by more than 45 px,
right on 70 % of the scenes. Greedy decoding takes the shortcut's opening words, most samples reason.
Bars 20 px apart were learned by one build in three; 30 px ends fall in different image tokens. More rows
than the plain mix: a style is drawn per row, and few repeats keep it a draw."""
SFT_STEPS = 600
"""SFT optimizer steps (batch 32, cosine decay to 0)."""
SFT_MAX_LENGTH = 192
"""Longest SFT sequence: the question-writing rows need more than the recipe's 128."""
FLOORS: dict[str, float] = {"compare": 0.70, "count": 0.30}
"""Least held-out maj@8 (temperature 1.0) per task of a trusted build: bars read (chance is 0.5), counts
above chance (0.25). The vote can teach only what the careful samples know."""
DIAGNOSIS = {"n": 8, "temperature": 1.0}
"""The build's own diagnosis: the vote's group size and the sampling temperature of the floors."""
ATTEMPTS = 3
"""Builds (seeds ``seed``, ``seed+1``, ...) tried before a model below its floors is an error."""


SHIPPED_DIR = Path(__file__).resolve().with_name("sft_shipped")
"""Package data: the default build's model (``model/``) and ``build.json`` (its payload, seed and diagnosis), so
the quickstart starts in seconds. Used only where its payload is the one asked for; ``ship=true`` rewrites it."""
SHIPPED_BUILD = "build.json"


class BelowFloor(RuntimeError):
    """Every build attempt gave a model below its floors."""


_STEP = re.compile(r"\bstep:(\d+)\b")


def _payload(model: TinyModelConfig, data: ToyDataConfig, steps: int, seed: int, floors: dict[str, float]) -> dict:
    from verl_ext.prompts import load_prompt
    from verl_ext.toy import data as toy_data, sft_data, tiny_model, visual_math

    recipe = (RECIPES_DIR / f"{SFT_RECIPE}.yaml").read_bytes()
    return {
        "build_version": BUILD_VERSION,
        # What the model is made of: a change to any builder's output changes the payload (and stales the shipped copy).
        "builders": {"tiny_model": tiny_model.BUILD_VERSION, "toy_data": toy_data.BUILD_VERSION,
                     "sft_data": sft_data.BUILD_VERSION, "visual_math": visual_math.BUILD_VERSION,
                     "prompt_sha256": load_prompt(data.prompt).digest},
        "model": dataclasses.asdict(model),
        "data": dataclasses.asdict(data),
        "steps": steps,
        "seed": seed,
        "floors": floors,
        "diagnosis": DIAGNOSIS,
        "max_length": SFT_MAX_LENGTH,
        "recipe_sha256": hashlib.sha256(recipe).hexdigest(),
    }


def _run_sft(base: Path, data: dict[str, Path], steps: int, seed: int, ckpt: Path, log_path: Path) -> Path:
    """verl's SFT trainer in a subprocess; returns the Hugging Face copy of its last checkpoint."""
    from tqdm.auto import tqdm

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "-m", "verl.trainer.sft_trainer", f"--config-path={RECIPES_DIR}", f"--config-name={SFT_RECIPE}",
        f"model.path={base}", f"data.train_files={data['sft_train']}", f"data.val_files={data['sft_test']}",
        f"data.max_length={SFT_MAX_LENGTH}", f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={ckpt}", f"trainer.seed={seed + 1}",  # seed 0: verl's default data order
    ]
    # One BLAS thread: on 2 cores, two threads per process made SFT steps up to 10x slower.
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), HF_HUB_OFFLINE="1")
    logger.info("training the toy SFT model with verl's SFT trainer (%d steps, seed %d; log: %s)", steps, seed, log_path)
    with open(log_path, "w") as log, tqdm(total=steps, desc="toy SFT model", unit="step", mininterval=5) as bar:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            match = _STEP.search(line)
            if match and int(match.group(1)) > bar.n:
                bar.update(int(match.group(1)) - bar.n)
        status = proc.wait()
    if status != 0:
        raise RuntimeError(f"verl's SFT trainer exited with status {status} building the toy SFT model; see {log_path}")
    hf_dir = ckpt / f"global_step_{steps}" / "huggingface"
    if not (hf_dir / "config.json").is_file():
        raise RuntimeError(f"verl's SFT trainer wrote no Hugging Face checkpoint at {hf_dir}; see {log_path}")
    return hf_dir


def diagnose_build(model_dir: Path, test_file: Path, out: Path, log_path: Path) -> dict[str, dict[str, float]]:
    """``python -m verl_ext.eval.diagnose`` of ``model_dir`` on the held-out file (in a subprocess: Ray starts and
    stops there); returns its per-task summary (``all`` and each task) and writes the report to ``out``."""
    cmd = [sys.executable, "-m", "verl_ext.eval.diagnose", f"model={model_dir}", f"data=[{test_file}]",
           f"n={DIAGNOSIS['n']}", f"temperature={DIAGNOSIS['temperature']}", f"out={out}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    logger.info("diagnosing the toy SFT model on the held-out questions (log: %s)", log_path)
    with open(log_path, "w") as log:
        status = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if status != 0:
        raise RuntimeError(f"the diagnosis of the toy SFT model exited with status {status}; see {log_path}")
    return json.loads(out.read_text())["summary"][str(test_file)]


def below_floors(summary: dict[str, dict[str, float]], floors: dict[str, float]) -> list[str]:
    """The floors a per-task diagnosis misses, as ``"compare maj@8 52.1 < 70.0"`` (empty: a trusted build); a
    task the diagnosis does not name misses its floor."""
    missed = []
    for task, floor in floors.items():
        maj = summary.get(task, {}).get("maj", 0.0)
        if maj < floor:
            missed.append(f"{task} maj@{DIAGNOSIS['n']} {100 * maj:.1f} < {100 * floor:.1f}")
    return missed


def ensure_toy_sft_model(
    root: str | os.PathLike[str],
    model: TinyModelConfig = TOY_MODEL,
    data: ToyDataConfig = TOY_DATA,
    steps: int = SFT_STEPS,
    seed: int = 0,
    floors: dict[str, float] | None = None,
    attempts: int = ATTEMPTS,
    use_shipped: bool = True,
) -> Path:
    """``root`` holding ``model/`` (the SFT model), ``data/`` (its toy data), ``base/`` and ``diagnosis.json``;
    built if missing. Seeds ``seed``, ``seed+1``, ... up to ``attempts`` builds, until one meets ``floors``
    (default :data:`FLOORS`, for the tasks the data has; ``{}`` trusts any build); raises :class:`BelowFloor`.
    With ``use_shipped`` and settings equal to the shipped build's, the shipped model is copied instead."""
    root = Path(root).absolute()
    floors = {task: f for task, f in (FLOORS if floors is None else floors).items() if task in data.difficulty.tasks}

    payload = _payload(model, data, steps, seed, floors)

    def build() -> None:
        files = ensure_toy_data(root / "data", data)
        if use_shipped and shipped_payload() == json.loads(json.dumps(payload)):  # JSON: tuples equal lists
            _copy_shipped(root)
            return
        missed: list[str] = []
        for build_seed in range(seed, seed + attempts):
            base = ensure_tiny_model(root / "base", dataclasses.replace(model, seed=build_seed))
            with tempfile.TemporaryDirectory(prefix=".sft-", dir=root, ignore_cleanup_errors=True) as work:
                # Each attempt keeps its log and diagnosis; sft.log and diagnosis.json are the last attempt's.
                hf_dir = _run_sft(base, files, steps, build_seed, Path(work, "ckpt"), root / f"sft-seed{build_seed}.log")
                shutil.copyfile(root / f"sft-seed{build_seed}.log", root / "sft.log")
                shutil.rmtree(root / "model", ignore_errors=True)
                os.rename(hf_dir, root / "model")
            report = root / f"diagnosis-seed{build_seed}.json"
            summary = _with_tasks(diagnose_build(root / "model", files["test"], report, root / "diagnosis.log"), data)
            shutil.copyfile(report, root / "diagnosis.json")
            missed = below_floors(summary, floors)
            if not missed:
                (root / "build_seed").write_text(f"{build_seed}\n")
                logger.info("toy SFT build with seed %d meets its floors: %s", build_seed, _figures(summary))
                return
            logger.warning("toy SFT build with seed %d is below its floor (%s): %s", build_seed, "; ".join(missed),
                           "retrying with the next seed" if build_seed + 1 < seed + attempts else "giving up")
        raise BelowFloor(f"the toy SFT model is below its floor after {attempts} builds (seeds {seed}-"
                         f"{seed + attempts - 1}): {'; '.join(missed)}; see {root / 'diagnosis.json'}")

    build_once(root, payload, build, expect=[root / "model", root / "build_seed"], manifest_name=MANIFEST_NAME)
    logger.info("toy SFT model ready at %s", root / "model")
    return root


def shipped_payload() -> dict | None:
    """The payload the shipped model was built with (None: nothing shipped)."""
    try:
        return json.loads((SHIPPED_DIR / SHIPPED_BUILD).read_text())["payload"]
    except (OSError, ValueError, KeyError):
        return None


def _copy_shipped(root: Path) -> None:
    build = json.loads((SHIPPED_DIR / SHIPPED_BUILD).read_text())
    shutil.rmtree(root / "model", ignore_errors=True)
    shutil.copytree(SHIPPED_DIR / "model", root / "model")
    write_json(root / "diagnosis.json", build["diagnosis"])
    (root / "build_seed").write_text(f"{build['build_seed']}\n")
    logger.info("using the shipped toy SFT model (build seed %d; %s): `python -m verl_ext.toy.sft_model out=DIR "
                "use_shipped=false` builds it from scratch", build["build_seed"], _figures(_with_tasks(
                    build["diagnosis"]["summary"][build["test_file"]], None)))


def ship_build(root: Path) -> Path:
    """Copy the build in ``root`` (its model, payload, seed and diagnosis) to :data:`SHIPPED_DIR`."""
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    diagnosis = json.loads((root / "diagnosis.json").read_text())
    test_file = str(root / "data" / FILES["test"])
    shutil.rmtree(SHIPPED_DIR, ignore_errors=True)
    shutil.copytree(root / "model", SHIPPED_DIR / "model")
    # The held-out summary keyed by a path that does not depend on where it was built.
    diagnosis = {"settings": {k: v for k, v in diagnosis["settings"].items() if k not in ("model", "data", "out")},
                 "summary": {FILES["test"]: diagnosis["summary"][test_file]}}
    write_json(SHIPPED_DIR / SHIPPED_BUILD, {"payload": manifest, "build_seed": int((root / "build_seed").read_text()),
                                             "diagnosis": diagnosis, "test_file": FILES["test"]})
    logger.info("shipped the toy SFT model of %s to %s", root, SHIPPED_DIR)
    return SHIPPED_DIR


def _with_tasks(summary: dict[str, dict[str, float]], data: ToyDataConfig | None) -> dict[str, dict[str, float]]:
    # diagnose names tasks only when a file has several: a one-task file's figures are its task's.
    if data is not None and len(data.difficulty.tasks) == 1 and set(summary) == {"all"}:
        return {**summary, data.difficulty.tasks[0]: summary["all"]}
    return summary


def _figures(summary: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{task} greedy {100 * s['greedy']:.1f} / maj@{DIAGNOSIS['n']} {100 * s['maj']:.1f}"
                     for task, s in summary.items())


def main(argv: list[str] | None = None) -> int:
    """``python -m verl_ext.toy.sft_model out=DIR [steps=N build_seed=0 attempts=3 check=true use_shipped=true
    ship=false] [force=true] [ToyDataConfig keys]``: build (or reuse) the model; every default is the asset's (the
    quickstart's model and the toy reproduction's stage 1). ``check=false`` trusts any build; ``use_shipped=false``
    builds from scratch even where the shipped model fits; ``ship=true`` then copies the build into the package
    (default settings only). Exit status 0, 2 for a bad setting, 1 with one line when every attempt is below its
    floors."""
    from verl_ext.config.compose import CLIError, builder_command

    def build(out: Path, data: ToyDataConfig, force: bool, steps: int, build_seed: int, attempts: int,
              check: bool, use_shipped: bool, ship: bool) -> dict[str, Path]:
        if steps < 1 or attempts < 1 or build_seed < 0:
            raise CLIError("steps and attempts must be >= 1, build_seed >= 0")
        if ship and (data, steps, build_seed, check) != (TOY_DATA, SFT_STEPS, 0, True):
            raise CLIError("ship=true ships the default build only: drop the other settings")
        if force:
            (out / MANIFEST_NAME).unlink(missing_ok=True)
        root = ensure_toy_sft_model(out, TOY_MODEL, data, steps, build_seed, None if check else {}, attempts,
                                    use_shipped=use_shipped and not ship)
        made = {"model": root / "model", "data": root / "data", "diagnosis": root / "diagnosis.json"}
        return {**made, "shipped": ship_build(root)} if ship else made

    try:
        return builder_command(
            argv, __doc__, "python -m verl_ext.toy.sft_model", ToyDataConfig, build, defaults=TOY_DATA,
            extra=[("steps", int, SFT_STEPS), ("build_seed", int, 0), ("attempts", int, ATTEMPTS), ("check", bool, True),
                   ("use_shipped", bool, True), ("ship", bool, False)],
        )
    except BelowFloor as err:
        sys.stderr.write(f"error: {err}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
