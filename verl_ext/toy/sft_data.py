"""The SFT warm-start data (stage 1 teaches the answer format): the visual-math RL parquet as verl's SFT parquet.

Each RL row gains ``messages`` (read by verl's ``MultiTurnSFTDataset``): its user turn, then the assistant's
``response``, a reasoning line and the answer, e.g. ``There are 3 red circles. The answer is \\boxed{3}.``
The SFT scenes use another seed than the RL data (1 versus 0): the warm start never sees the RL scenes.

    python -m verl_ext.toy.sft_data out=/tmp/visual_math_sft
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from verl_ext.files import build_once, write_parquet
from verl_ext.toy import visual_math as vm
from verl_ext.toy.visual_math import SPLITS, Scene, VisualMathConfig

logger = logging.getLogger(__name__)

# Bump when the conversion changes so ensure_sft_dataset rewrites stale files.
BUILD_VERSION = 1
MANIFEST_NAME = ".verl_ext_visual_math_sft.json"
"""Written last into the output directory; lists the config the SFT files were generated with."""
RL_SUBDIR = "rl"
"""Sub-directory of the output directory holding the RL parquet the SFT files are converted from."""
MESSAGES_KEY = "messages"
"""Column verl's SFT dataset reads (its ``data.messages_key`` default)."""
RESPONSE_KEY = "response"
"""Column holding the assistant's target text alone (also the last message's content)."""

DEFAULT_SFT_CONFIG = VisualMathConfig(n_train=2048, n_test=192, seed=1)
"""Enough distinct scenes for a few hundred steps without repeats; seed 1 keeps them disjoint from the RL data."""


def reasoning_line(scene: Scene) -> str:
    """The one-line rationale for ``scene``, ending in its answer (no ``\\boxed{}``)."""
    if scene.task == "count":
        n = int(scene.answer)
        kind = scene.target["kind"] + ("" if n == 1 else "s")
        verb = "is" if n == 1 else "are"
        return f"There {verb} {n} {scene.target['color']} {kind}."
    if scene.task == "sum":
        terms = [label.text for label in scene.labels]
        return f"{' + '.join(terms)} = {scene.answer}."
    if scene.task == "compare":
        other = "B" if scene.answer == "A" else "A"
        return f"Bar {scene.answer} is longer than bar {other}."
    raise ValueError(f"unknown task {scene.task!r}")


def response_text(scene: Scene) -> str:
    """The assistant's target: the reasoning line, then the answer in ``\\boxed{}``."""
    return f"{reasoning_line(scene)} The answer is \\boxed{{{scene.answer}}}."


def rl_row_to_sft_row(row: dict[str, Any], config: VisualMathConfig) -> dict[str, Any]:
    """Add ``messages`` and ``response`` to an RL row of a visual-math dataset generated with ``config``; its
    scene, re-sampled from ``(split, index)``, must match the row's label (another config's row is refused)."""
    info = row["extra_info"]
    scene = vm.sample_scene(info["split"], int(info["index"]), config)
    label = str(row["reward_model"]["ground_truth"])
    if scene.answer != label or scene.question != info["question"]:
        raise ValueError(
            f"row {info['split']}/{info['index']} does not match its scene under {config}: "
            f"label {label!r} vs {scene.answer!r}; was the RL parquet generated with another config?"
        )
    response = response_text(scene)
    messages = [dict(m) for m in row["prompt"]] + [{"role": "assistant", "content": response}]
    return {**row, MESSAGES_KEY: messages, RESPONSE_KEY: response}


def write_sft_dataset(
    out_dir: str | os.PathLike[str], config: VisualMathConfig = DEFAULT_SFT_CONFIG
) -> dict[str, Path]:
    """Generate the RL data into ``out_dir/rl`` and convert it to ``out_dir/{train,test}.parquet``, each
    atomically (no manifest: see :func:`ensure_sft_dataset`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir).absolute()
    rl_paths = vm.ensure_dataset(out_dir / RL_SUBDIR, config)
    paths = {split: out_dir / f"{split}.parquet" for split in SPLITS}
    for split, path in paths.items():
        rl_table = pq.read_table(rl_paths[split])
        rows = [rl_row_to_sft_row(row, config) for row in rl_table.to_pylist()]
        # The RL parquet's schema plus the messages and response columns.
        message = pa.struct([("role", pa.string()), ("content", pa.string())])
        schema = rl_table.schema.remove_metadata().append(pa.field(MESSAGES_KEY, pa.list_(message)))
        write_parquet(path, rows, schema.append(pa.field(RESPONSE_KEY, pa.string())))
    logger.info("wrote visual-math SFT data to %s (%d train, %d test)", out_dir, config.n_train, config.n_test)
    return paths


def ensure_sft_dataset(
    out_dir: str | os.PathLike[str], config: VisualMathConfig = DEFAULT_SFT_CONFIG, *, force: bool = False
) -> dict[str, Path]:
    """``{"train": path, "test": path}`` under ``out_dir``, written first unless complete for ``config``
    (or ``force``)."""
    out_dir = Path(out_dir).absolute()
    paths = {split: out_dir / f"{split}.parquet" for split in SPLITS}
    manifest = {"build_version": BUILD_VERSION, "rl_build_version": vm.BUILD_VERSION,
                "config": dataclasses.asdict(config)}
    build_once(
        out_dir, manifest, lambda: write_sft_dataset(out_dir, config),
        expect=paths.values(), force=force, manifest_name=MANIFEST_NAME,
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m verl_ext.toy.sft_data out=DIR [force=true] [n_train=... seed=...]``: write (or reuse) the SFT
    data; the keys are ``VisualMathConfig``'s, defaults :data:`DEFAULT_SFT_CONFIG`'s (its seed is not the RL's)."""
    from verl_ext.config.compose import builder_command

    return builder_command(
        argv, __doc__, "python -m verl_ext.toy.sft_data", VisualMathConfig,
        lambda out, config, force: ensure_sft_dataset(out, config, force=force), defaults=DEFAULT_SFT_CONFIG,
    )


if __name__ == "__main__":
    sys.exit(main())
