"""End to end through verl's own SFT trainer (torchrun, FSDP2, gloo) on CPU with recipes/sft_tiny.yaml.

Each test runs the user's command in a subprocess, in a scratch working directory, and checks what
it wrote: a transformers-loadable checkpoint whose weights moved away from the initial model.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.slow

STEP_LINE = re.compile(r"^step:(\d+) - .*train/loss:([-+0-9.eE]+|nan|inf)", re.MULTILINE)


def _env(**extra: str) -> dict[str, str]:
    # OMP_NUM_THREADS=1: two intra-op threads on two busy cores slow every step down ~10x.
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)


def _run(cmd: list[str], cwd: Path, log: Path, timeout: int = 900, **env: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    log.write_text(out)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-6000:]}"
    return out


def _load(path: Path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(path)


def _assert_trained_copy(initial: Path, trained: Path) -> None:
    """``trained`` loads with transformers, has ``initial``'s parameters, different language-model weights, and generates."""
    import torch

    before, _ = _load(initial)
    after, processor = _load(trained)
    sd_before, sd_after = before.state_dict(), after.state_dict()
    assert sd_before.keys() == sd_after.keys()
    assert all(t.dtype == torch.float32 for t in sd_after.values())
    assert all(torch.isfinite(t).all() for t in sd_after.values())
    lm = [k for k in sd_before if "visual" not in k]
    changed = [k for k in lm if not torch.equal(sd_before[k], sd_after[k])]
    assert len(changed) >= len(lm) // 2, f"only {len(changed)}/{len(lm)} language-model tensors changed"

    from PIL import Image

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many red circles?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.new("RGB", (112, 112), "white")], return_tensors="pt")
    with torch.no_grad():
        out = after.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_verl_sft_trainer_on_cpu(tmp_path: Path, tiny_model_dir: Path) -> None:
    from verl_ext.toy.sft_data import DEFAULT_SFT_CONFIG, write_sft_dataset

    data = write_sft_dataset(tmp_path / "data", dataclasses.replace(DEFAULT_SFT_CONFIG, n_train=32, n_test=8))
    ckpt = tmp_path / "ckpt"
    steps = 4
    out = _run(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc_per_node=1",
            "-m",
            "verl.trainer.sft_trainer",
            f"--config-path={REPO / 'recipes'}",
            "--config-name=sft_tiny",
            f"data.train_files={data['train']}",
            f"data.val_files={data['test']}",
            f"model.path={tiny_model_dir}",
            f"trainer.default_local_dir={ckpt}",
            f"trainer.total_training_steps={steps}",
            "data.train_batch_size=8",
            "data.micro_batch_size_per_gpu=8",
            "data.num_workers=0",
        ],
        cwd=tmp_path,
        log=tmp_path / "sft.log",
    )
    losses = {int(s): float(v) for s, v in STEP_LINE.findall(out)}
    assert sorted(losses) == list(range(1, steps + 1)), out[-3000:]
    assert all(math.isfinite(v) and v > 0 for v in losses.values())
    assert re.search(r"val/loss:\d", out), "the held-out split's loss is logged at the last step"

    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == str(steps)
    hf_dir = ckpt / f"global_step_{steps}" / "huggingface"
    assert (hf_dir / "model.safetensors").is_file()
    # Hydra's log goes next to the checkpoints (recipe's hydra.run.dir), not into ./outputs of the caller.
    assert (ckpt / "hydra" / "sft_trainer.log").is_file()
    assert not (tmp_path / "outputs").exists()
    _assert_trained_copy(tiny_model_dir, hf_dir)


def test_example_script(tmp_path: Path) -> None:
    """examples/sft_tiny.sh, shortened to 2 steps, builds everything and prints the model's path."""
    work = tmp_path / "work"
    out = _run(
        [
            "bash",
            str(REPO / "examples" / "sft_tiny.sh"),
            "trainer.total_training_steps=2",
            "data.val_files=null",
        ],
        cwd=tmp_path,
        log=tmp_path / "example.log",
        WORK=str(work),
        PYTHON=sys.executable,
        TORCHRUN=str(TORCHRUN),
    )
    match = re.search(r"^SFT model \(transformers format\): (.+)$", out, re.MULTILINE)
    assert match, out[-3000:]
    hf_dir = Path(match.group(1))
    assert hf_dir == work.resolve() / "checkpoints" / "global_step_2" / "huggingface"
    assert (work / "data" / "train.parquet").is_file()
    assert (work / "checkpoints" / "hydra" / "sft_trainer.log").is_file()
    _assert_trained_copy(work / "tiny-qwen2.5-vl-h128", hf_dir)
