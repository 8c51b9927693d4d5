"""The toy SFT model (stage 1 of the toy reproduction), built once on first use and cached.

``${verl_ext_asset:toy-sft/model}``: a tiny Qwen2.5-VL (4 layers, 128 wide) trained by verl's SFT trainer
(``recipes/sft_tiny.yaml``, ``torchrun`` in a subprocess, about 6 minutes on 2 cores) on the toy data
(``${verl_ext_asset:toy-sft/data/...}``, :mod:`verl_ext.toy.data`), so a majority vote over its samples has
something to agree on. ``examples/toy_repro.sh`` builds the same model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from verl_ext.files import build_once
from verl_ext.toy.data import ToyDataConfig, ensure_toy_data
from verl_ext.toy.tiny_model import TinyModelConfig, ensure_tiny_model
from verl_ext.toy.visual_math import VisualMathConfig

logger = logging.getLogger(__name__)

BUILD_VERSION = 1
MANIFEST_NAME = ".verl_ext_toy_sft.json"
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
SFT_RECIPE = "sft_tiny"

TOY_MODEL = TinyModelConfig(
    hidden_size=128, num_hidden_layers=4, intermediate_size=256, vision_hidden_size=64, vision_intermediate_size=128
)
"""The base model: the default tiny model is too small to learn the toy tasks."""
TOY_DATA = ToyDataConfig(
    n_sft=2048,
    n_rl=512,
    n_test=192,
    prompt="synth_in_context_short",
    difficulty=VisualMathConfig(n_train=0, n_test=0, tasks=("count", "compare"), max_count=4, max_distractors=3,
                                min_bar_gap=20),
)
"""The toy data the SFT model learns from, chosen from measurements (README, "the toy regime"): counting 1-4
shapes among up to 3 distractors and comparing two bars at least 20 px apart; the sum task stayed below 10 %
for this model. Question-writing rows use the short synthesis prompt (the long one makes SFT 3x slower)."""
SFT_STEPS = 600
"""SFT optimizer steps (batch 32, cosine decay to 0)."""
SFT_MAX_LENGTH = 192
"""Longest SFT sequence: the question-writing rows need more than the recipe's 128."""

_STEP = re.compile(r"\bstep:(\d+)\b")


def _payload(model: TinyModelConfig, data: ToyDataConfig, steps: int) -> dict:
    recipe = (RECIPES_DIR / f"{SFT_RECIPE}.yaml").read_bytes()
    return {
        "build_version": BUILD_VERSION,
        "model": dataclasses.asdict(model),
        "data": dataclasses.asdict(data),
        "steps": steps,
        "max_length": SFT_MAX_LENGTH,
        "recipe_sha256": hashlib.sha256(recipe).hexdigest(),
    }


def _run_sft(base: Path, data: dict[str, Path], steps: int, ckpt: Path, log_path: Path) -> Path:
    """verl's SFT trainer in a subprocess; returns the Hugging Face copy of its last checkpoint."""
    from tqdm.auto import tqdm

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "-m", "verl.trainer.sft_trainer", f"--config-path={RECIPES_DIR}", f"--config-name={SFT_RECIPE}",
        f"model.path={base}", f"data.train_files={data['sft_train']}", f"data.val_files={data['sft_test']}",
        f"data.max_length={SFT_MAX_LENGTH}", f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={ckpt}",
    ]
    # One BLAS thread: on 2 cores, two threads per process made SFT steps up to 10x slower.
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), HF_HUB_OFFLINE="1")
    logger.info("training the toy SFT model with verl's SFT trainer (%d steps; log: %s)", steps, log_path)
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


def ensure_toy_sft_model(
    root: str | os.PathLike[str],
    model: TinyModelConfig = TOY_MODEL,
    data: ToyDataConfig = TOY_DATA,
    steps: int = SFT_STEPS,
) -> Path:
    """``root`` holding ``model/`` (the SFT model), ``data/`` (its toy data) and ``base/``; built if missing."""
    root = Path(root).absolute()

    def build() -> None:
        base = ensure_tiny_model(root / "base", model)
        files = ensure_toy_data(root / "data", data)
        with tempfile.TemporaryDirectory(prefix=".sft-", dir=root, ignore_cleanup_errors=True) as work:
            hf_dir = _run_sft(base, files, steps, Path(work, "ckpt"), root / "sft.log")
            shutil.rmtree(root / "model", ignore_errors=True)
            os.rename(hf_dir, root / "model")

    build_once(root, _payload(model, data, steps), build, expect=[root / "model"], manifest_name=MANIFEST_NAME)
    logger.info("toy SFT model ready at %s", root / "model")
    return root


def main(argv: list[str] | None = None) -> int:
    """``python -m verl_ext.toy.sft_model out=DIR [steps=N] [force=true] [ToyDataConfig keys]``: build (or reuse)
    the model; every default is the asset's (the quickstart's model and the toy reproduction's stage 1)."""
    from verl_ext.config.compose import CLIError, builder_command

    def build(out: Path, data: ToyDataConfig, force: bool, steps: int) -> dict[str, Path]:
        if steps < 1:
            raise CLIError("steps must be >= 1")
        if force:
            (out / MANIFEST_NAME).unlink(missing_ok=True)
        root = ensure_toy_sft_model(out, TOY_MODEL, data, steps)
        return {"model": root / "model", "data": root / "data"}

    return builder_command(
        argv, __doc__, "python -m verl_ext.toy.sft_model", ToyDataConfig, build,
        defaults=TOY_DATA, extra=[("steps", int, SFT_STEPS)],
    )


if __name__ == "__main__":
    sys.exit(main())
