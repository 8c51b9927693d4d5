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
import random
import sys
from dataclasses import dataclass
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


CAREFUL_STYLES: tuple[str, ...] = ("careful", "careful2", "careful3")
"""Phrasings that reason to the right answer, each opening with its own words (a first-token decision)."""
SHORTCUT = "shortcut"
"""The quick, biased style: right on some scenes only."""
STYLES: tuple[str, ...] = (*CAREFUL_STYLES, SHORTCUT)


@dataclass(frozen=True)
class StyleMix:
    """The answer styles of the SFT targets, drawn per row at random, independent of the answer.

    A constructed model organism: real reasoning models reach answers by several paths, and the single most
    likely path is not always the most common answer; the vote then beats greedy decoding. A one-line toy
    target has one path, so greedy decoding already returns the modal answer (the plain mix: ``shortcut=0``,
    ``careful=1``). With a shortcut more frequent than each careful phrasing but not than all of them,
    greedy decoding follows the shortcut's opening words on a tempting scene while most samples reason.
    """

    shortcut: float = 0.0
    """Share of a tempting scene's answer rows in the shortcut style; the careful phrasings share the rest."""
    careful: int = 1
    """Number of careful phrasings (1-3), equally frequent."""
    tempting_colors: tuple[str, ...] = tuple(sorted(vm.COLORS))
    """A scene tempts the shortcut when its key colour (bar A's; the counted shapes') is one of these;
    the other scenes are answered carefully. Colour is easy to see, so the model can learn where to hurry."""
    shortcut_margin: int = 45
    """``compare``'s shortcut answers A unless bar B is longer by more than this many pixels."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.shortcut < 1.0:
            raise ValueError(f"styles.shortcut must be in [0, 1), got {self.shortcut}")
        if not 1 <= self.careful <= len(CAREFUL_STYLES):
            raise ValueError(f"styles.careful must be in [1, {len(CAREFUL_STYLES)}], got {self.careful}")
        if unknown := set(self.tempting_colors) - set(vm.COLORS):
            raise ValueError(f"styles.tempting_colors: unknown colours {sorted(unknown)}; known: {sorted(vm.COLORS)}")
        # Without a shortcut no scene tempts: one canonical value, so equal mixes have equal manifests.
        colors = self.tempting_colors if self.shortcut else vm.COLORS
        object.__setattr__(self, "tempting_colors", tuple(sorted(set(colors))))

    def tempting(self, scene: Scene) -> bool:
        """Whether ``scene`` draws shortcut answers."""
        if scene.task == "compare":
            return scene.bars[0].color in self.tempting_colors
        if scene.task == "count":
            return scene.target["color"] in self.tempting_colors
        return True

    def style(self, scene: Scene, key: str) -> str:
        """The style of the row keyed ``key`` (a seeded draw, independent of the answer)."""
        u = random.Random(f"verl_ext.toy.sft_data.style:{key}").random()
        share = self.shortcut if self.tempting(scene) else 0.0
        if u < share:
            return SHORTCUT
        return CAREFUL_STYLES[min(int((u - share) / (1.0 - share) * self.careful), self.careful - 1)]


PLAIN = StyleMix()
"""One careful phrasing, no shortcut: greedy decoding returns the modal answer (the negative control)."""


def shortcut_answer(scene: Scene, margin: int = StyleMix.shortcut_margin) -> str:
    """The shortcut's answer: bar A unless B is far longer; every shape of the asked colour; the largest number."""
    if scene.task == "compare":
        a, b = (bar.length for bar in scene.bars)
        return "B" if b - a > margin else "A"
    if scene.task == "count":
        return str(sum(1 for s in scene.shapes if s.color == scene.target["color"]))
    if scene.task == "sum":
        return str(max(int(label.text) for label in scene.labels))
    raise ValueError(f"unknown task {scene.task!r}")


def reasoning_line(scene: Scene, style: str = "careful", margin: int = StyleMix.shortcut_margin) -> str:
    """The one-line rationale for ``scene`` in ``style``, ending in its answer (no ``\\boxed{}``)."""
    if style == SHORTCUT:
        answer = shortcut_answer(scene, margin)
        if scene.task == "compare":
            return f"At a glance, bar {answer} is longer."
        if scene.task == "count":
            return f"At a glance, there are {answer} {scene.target['color']} shapes."
        return f"At a glance, the total is {answer}."
    if style not in CAREFUL_STYLES:
        raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLES)}")
    phrasing = CAREFUL_STYLES.index(style)
    if scene.task == "count":
        n = int(scene.answer)
        color, kind = scene.target["color"], scene.target["kind"] + ("" if n == 1 else "s")
        verb = "is" if n == 1 else "are"
        return (f"There {verb} {n} {color} {kind}.", f"Counting each {scene.target['kind']} of that colour gives {n}.",
                f"Looking closely, I find {n} {color} {kind}.")[phrasing]
    if scene.task == "sum":
        terms = [label.text for label in scene.labels]
        return (f"{' + '.join(terms)} = {scene.answer}.", f"Adding {', '.join(terms)} gives {scene.answer}.",
                f"Looking closely, the numbers are {', '.join(terms)}, so the total is {scene.answer}.")[phrasing]
    if scene.task == "compare":
        other = "B" if scene.answer == "A" else "A"
        return (f"Bar {scene.answer} is longer than bar {other}.",
                f"Checking both ends, bar {other} is shorter than bar {scene.answer}.",
                f"Measuring from the left edge, bar {scene.answer} reaches further.")[phrasing]
    raise ValueError(f"unknown task {scene.task!r}")


def response_text(scene: Scene, style: str = "careful", margin: int = StyleMix.shortcut_margin) -> str:
    """The assistant's target in ``style``: the reasoning line, then its answer in ``\\boxed{}``."""
    answer = shortcut_answer(scene, margin) if style == SHORTCUT else scene.answer
    return f"{reasoning_line(scene, style, margin)} The answer is \\boxed{{{answer}}}."


_OPENINGS = {"At a glance": SHORTCUT, "Checking": "careful2", "Counting": "careful2", "Adding": "careful2",
             "Measuring": "careful3", "Looking closely": "careful3"}


def response_style(text: str) -> str:
    """The style a sampled response is written in, read from its opening words (``careful`` otherwise)."""
    stripped = text.lstrip()
    return next((style for opening, style in _OPENINGS.items() if stripped.startswith(opening)), "careful")


def rl_row_to_sft_row(row: dict[str, Any], scene: Scene, styles: StyleMix = PLAIN, key: str = "") -> dict[str, Any]:
    """Add ``messages`` and ``response`` (in the style ``styles`` draws for ``key``) to an RL row of a visual-math
    dataset whose scene is ``scene``; a row that does not match the scene is refused."""
    info = row["extra_info"]
    label = str(row["reward_model"]["ground_truth"])
    if scene.answer != label or scene.question != info["question"]:
        raise ValueError(
            f"row {info['split']}/{info['index']} does not match its scene: label {label!r} vs {scene.answer!r}; "
            "was the RL parquet generated with another config?"
        )
    response = response_text(scene, styles.style(scene, key), styles.shortcut_margin)
    messages = [dict(m) for m in row["prompt"]] + [{"role": "assistant", "content": response}]
    return {**row, MESSAGES_KEY: messages, RESPONSE_KEY: response}


def write_sft_dataset(
    out_dir: str | os.PathLike[str], config: VisualMathConfig = DEFAULT_SFT_CONFIG, styles: StyleMix = PLAIN
) -> dict[str, Path]:
    """Generate the RL data into ``out_dir/rl`` and convert it to ``out_dir/{train,test}.parquet``, each
    atomically (no manifest: see :func:`ensure_sft_dataset`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir).absolute()
    rl_paths = vm.ensure_dataset(out_dir / RL_SUBDIR, config)
    paths = {split: out_dir / f"{split}.parquet" for split in SPLITS}
    scenes = vm.dataset_scenes(config)
    for split, path in paths.items():
        rl_table = pq.read_table(rl_paths[split])
        rows = [rl_row_to_sft_row(row, scene, styles, f"{config.seed}:{split}:{i}")
                for i, (row, scene) in enumerate(zip(rl_table.to_pylist(), scenes[split], strict=True))]
        # The RL parquet's schema plus the messages and response columns.
        message = pa.struct([("role", pa.string()), ("content", pa.string())])
        schema = rl_table.schema.remove_metadata().append(pa.field(MESSAGES_KEY, pa.list_(message)))
        write_parquet(path, rows, schema.append(pa.field(RESPONSE_KEY, pa.string())))
    logger.info("wrote visual-math SFT data to %s (%d train, %d test)", out_dir, config.n_train, config.n_test)
    return paths


def ensure_sft_dataset(
    out_dir: str | os.PathLike[str], config: VisualMathConfig = DEFAULT_SFT_CONFIG, styles: StyleMix = PLAIN, *,
    force: bool = False,
) -> dict[str, Path]:
    """``{"train": path, "test": path}`` under ``out_dir``, written first unless complete for ``config``
    (or ``force``)."""
    out_dir = Path(out_dir).absolute()
    paths = {split: out_dir / f"{split}.parquet" for split in SPLITS}
    manifest = {"build_version": BUILD_VERSION, "rl_build_version": vm.BUILD_VERSION,
                "config": dataclasses.asdict(config)}
    if styles != PLAIN:  # no key for the plain mix, so its data built before styles existed stays valid
        manifest["styles"] = dataclasses.asdict(styles)
    build_once(
        out_dir, manifest, lambda: write_sft_dataset(out_dir, config, styles),
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
