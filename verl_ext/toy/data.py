"""All data of the toy reproduction of "First SFT, Second RL, Third UPT" (``examples/toy_repro.sh``).

One command writes every file the three stages read, from visual-math scenes that never overlap between files::

    OUT/sft/train.parquet     stage 1 (SFT): answer rows + question-writing rows, verl's multi-turn SFT layout
    OUT/sft/test.parquet      the same mix on held-out SFT scenes (SFT validation loss)
    OUT/rl/unlabeled.parquet  stage 3 (MM-UPT): RL questions, empty ground truth, answer only in extra_info
    OUT/rl/labeled.parquet    stage 2 (supervised GRPO): the same questions with their labels
    OUT/test.parquet          held-out questions with labels: validation of every RL run

Answer rows are :mod:`verl_ext.toy.sft_data`'s (in ``OUT/sft/answers``). A question-writing row sends the
in-context synthesis prompt rendered for its scene as ``verl_ext.data.synthesize`` renders it for a seed row;
its target is another question about the image (:func:`verl_ext.toy.visual_math.alternative_questions`) in
``<question>`` tags: a tiny model only writes questions in stage 3 if its SFT taught it to. The RL and test
files are visual-math data in the hub layout (``OUT/rl/source``) passed through :mod:`verl_ext.data.prepare`,
with each scene's task in ``extra_info.task``. SFT scenes come from visual-math seed ``2*seed+1``, RL and
test scenes from seed ``2*seed``, all with the ``difficulty.*`` settings.

    python -m verl_ext.toy.data out=data/toy n_sft=2048 n_rl=256 n_test=128 seed=0
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_ext.data import prepare as prep
from verl_ext.toy import sft_data
from verl_ext.toy import visual_math as vm
from verl_ext.data.schema import IMAGE_PLACEHOLDER
from verl_ext.data.synth_filters import QUESTION_CLOSE, QUESTION_OPEN
from verl_ext.data.synthesize import seed_from_row, seed_prompt
from verl_ext.files import build_once, write_parquet
from verl_ext.prompts import PromptTemplate, load_prompt

logger = logging.getLogger("verl_ext.toy.data")  # stable under python -m

# Bump when the output changes so ensure_toy_data rewrites stale files.
BUILD_VERSION = 2  # 2: extra_info.task in the RL and test rows
MANIFEST_NAME = ".verl_ext_toy_data.json"
"""Written last into the output directory: the settings the files were generated with."""
DATA_SOURCE = "verl_ext/toy_visual_math"
"""``data_source`` of the RL and test rows (validation metrics are named after it)."""
QUESTION_TASK_PREFIX = "write_question/"
"""``extra_info.task`` of a question-writing SFT row is this plus the scene's task."""
DEFAULT_PROMPT = "synth_in_context"
"""The template in-context synthesis (``synth.strategy=in_context``) uses by default."""

FILES: dict[str, str] = {
    "sft_train": "sft/train.parquet",
    "sft_test": "sft/test.parquet",
    "rl_unlabeled": "rl/unlabeled.parquet",
    "rl_labeled": "rl/labeled.parquet",
    "test": "test.parquet",
}
"""Output name -> path relative to the output directory."""


@dataclass(frozen=True)
class ToyDataConfig:
    """Sizes, mix, difficulty and seed of the toy data."""

    n_sft: int = 2048
    """SFT training rows, answer and question-writing rows together."""
    n_sft_test: int = 64
    """Held-out SFT rows (same mix), for the SFT validation loss."""
    n_rl: int = 256
    """RL questions (the same scenes in ``unlabeled.parquet`` and ``labeled.parquet``)."""
    n_test: int = 128
    """Held-out labelled questions (``test.parquet``)."""
    question_fraction: float = 0.3
    """Share of the SFT rows that teach question writing."""
    seed: int = 0
    """Base seed: SFT scenes come from visual-math seed ``2*seed+1``, RL and test scenes from ``2*seed``."""
    difficulty: vm.VisualMathConfig = field(default_factory=lambda: vm.VisualMathConfig(n_train=0, n_test=0))
    """Tasks and difficulty of every scene; its sizes and seed are ignored."""
    data_source: str = DATA_SOURCE
    """``data_source`` of the RL and test rows."""
    prompt: str = DEFAULT_PROMPT
    """Template of the question-writing rows: the one the synthesis run will use (name or path)."""
    styles: sft_data.StyleMix = field(default_factory=sft_data.StyleMix)
    """Answer styles of the SFT answer rows (default: the plain mix, one careful phrasing)."""

    def __post_init__(self) -> None:
        for name, least in (("n_sft", 0), ("n_sft_test", 0), ("n_rl", 1), ("n_test", 1), ("seed", 0)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}")
        if not 0.0 <= self.question_fraction < 1.0:
            raise ValueError(f"question_fraction must be in [0, 1), got {self.question_fraction}")
        if not self.data_source.strip():
            raise ValueError("data_source must not be empty")
        # One canonical difficulty per setting, so the manifest does not depend on ignored fields.
        object.__setattr__(self, "difficulty", dataclasses.replace(self.difficulty, n_train=0, n_test=0, seed=0))

    @property
    def sft_seed(self) -> int:
        """Visual-math seed of the SFT scenes."""
        return 2 * self.seed + 1

    @property
    def rl_seed(self) -> int:
        """Visual-math seed of the RL (``train`` split) and test (``test`` split) scenes."""
        return 2 * self.seed

    def question_rows(self, split: str) -> int:
        """Question-writing rows in SFT ``split``."""
        total = self.n_sft if split == "train" else self.n_sft_test
        return round(total * self.question_fraction)

    def answer_rows(self, split: str) -> int:
        """Answer rows in SFT ``split``."""
        total = self.n_sft if split == "train" else self.n_sft_test
        return total - self.question_rows(split)

    def sft_config(self) -> vm.VisualMathConfig:
        """The visual-math config of the SFT scenes (answer rows are its first scenes of each split)."""
        return dataclasses.replace(
            self.difficulty, n_train=self.answer_rows("train"), n_test=self.answer_rows("test"), seed=self.sft_seed
        )

    def rl_config(self) -> vm.VisualMathConfig:
        """The visual-math config of the RL (``train``) and held-out (``test``) scenes."""
        return dataclasses.replace(self.difficulty, n_train=self.n_rl, n_test=self.n_test, seed=self.rl_seed)


def question_target(question: str) -> str:
    """The assistant's target of a question-writing row: what the synthesis prompt asks the model to write."""
    return f"{QUESTION_OPEN}{question}{QUESTION_CLOSE}"


def question_writing_row(
    split: str, index: int, config: ToyDataConfig, template: PromptTemplate | None = None
) -> dict[str, Any]:
    """The question-writing SFT row for scene ``index`` of SFT ``split`` (same columns as the answer rows)."""
    template = template or load_prompt(config.prompt)
    vm_config = config.sft_config()
    example = vm.make_example(split, index, vm_config)
    seed_row = vm.example_to_row(example, vm_config)
    # The seed goes through synthesize's own reader, so the prompt sees the question/answer synthesis will see.
    seed = seed_from_row(
        seed_row, position=index, file=Path(f"{split}.parquet"), row=index, needs=frozenset(template.fields)
    )
    rng = random.Random(f"verl_ext.toy.data.question:{config.sft_seed}:{split}:{index}")
    question, answer = rng.choice(vm.alternative_questions(example.scene))
    target = question_target(question)
    user = {"role": "user", "content": IMAGE_PLACEHOLDER * len(seed.images) + seed_prompt(template, seed)}
    return {
        **seed_row,  # data_source, images and ability
        "prompt": [user],
        "reward_model": {"style": "rule", "ground_truth": ""},  # the target is a question, not a \boxed{} answer
        "extra_info": {**seed_row["extra_info"], "task": QUESTION_TASK_PREFIX + example.scene.task,
                       "answer": answer, "question": question},
        sft_data.MESSAGES_KEY: [dict(user), {"role": "assistant", "content": target}],
        sft_data.RESPONSE_KEY: target,
    }


def _write_sft(out_dir: Path, config: ToyDataConfig, template: PromptTemplate) -> None:
    import pyarrow.parquet as pq

    answer_paths = sft_data.ensure_sft_dataset(out_dir / "sft" / "answers", config.sft_config(), config.styles)
    for split in vm.SPLITS:
        # The schema is the one sft_data wrote, so both kinds of rows land in exactly its layout.
        schema = pq.read_schema(answer_paths[split])
        rows = pq.read_table(answer_paths[split]).to_pylist()
        start = config.answer_rows(split)  # question rows use the scenes after the answer rows': no overlap
        stop = start + config.question_rows(split)
        rows += [question_writing_row(split, i, config, template) for i in range(start, stop)]
        random.Random(f"verl_ext.toy.data.mix:{config.sft_seed}:{split}").shuffle(rows)
        write_parquet(out_dir / FILES[f"sft_{split}"], rows, schema)


def _write_rl(out_dir: Path, config: ToyDataConfig) -> None:
    import pyarrow.parquet as pq

    rl_dir = out_dir / "rl"
    source = vm.ensure_dataset(rl_dir / "source", config.rl_config(), layout="hub")
    prepared = {}
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out_dir, ignore_cleanup_errors=True) as stage:
        for name, options, expected in (
            ("unlabeled", {"val_split": str(source["test"])}, {"train": config.n_rl, "test": config.n_test}),
            ("labeled", {"keep_labels": True}, {"train": config.n_rl}),
        ):
            out = Path(stage, name)
            result = prep.prepare(prep.PrepareConfig(
                dataset=(str(source["train"]),), out=out, data_source=config.data_source, **options
            ))
            got = {split: stats.written for split, stats in result.stats.items()}
            dropped = {split: dict(stats.dropped) for split, stats in result.stats.items() if stats.dropped}
            if result.interrupted or result.failures or dropped or got != expected:
                raise RuntimeError(
                    f"verl_ext.data.prepare did not convert every row into {out}: wrote {got}, expected {expected}, "
                    f"dropped {dropped}, failures {dict(result.failures)}"
                )
            prepared[name] = result.paths
            os.replace(out / prep.SUMMARY_NAME, rl_dir / f"prepare_{name}.json")
        # prepare keeps only a public set's columns: the task goes back in, for the per-task figures.
        for file, name, split in (
            ("rl_unlabeled", "unlabeled", "train"), ("rl_labeled", "labeled", "train"), ("test", "unlabeled", "test")
        ):
            tasks = pq.read_table(source[split], columns=["task"]).column("task").to_pylist()
            rows = pq.read_table(prepared[name][split]).to_pylist()
            for row in rows:
                row["extra_info"]["task"] = tasks[row["extra_info"]["index"]]
            write_parquet(out_dir / FILES[file], rows, vm.row_schema())


def _paths(out_dir: Path) -> dict[str, Path]:
    return {name: out_dir / rel for name, rel in FILES.items()}


def write_toy_data(out_dir: str | os.PathLike[str], config: ToyDataConfig = ToyDataConfig()) -> dict[str, Path]:
    """Write every file of the toy data into ``out_dir`` (each atomically; no manifest: see
    :func:`ensure_toy_data`); returns ``{name: path}`` (names of :data:`FILES`)."""
    out_dir = Path(out_dir).absolute()
    template = load_prompt(config.prompt)
    if "question" not in template.fields:
        raise ValueError(f"prompt {template.name} has no {{{{question}}}}: it is not an in-context synthesis prompt")
    start = time.perf_counter()
    _write_sft(out_dir, config, template)
    _write_rl(out_dir, config)
    logger.info("wrote toy data to %s in %.1fs: SFT %d train (%d question-writing) + %d test, RL %d, held-out %d",
                out_dir, time.perf_counter() - start, config.n_sft, config.question_rows("train"), config.n_sft_test,
                config.n_rl, config.n_test)
    return _paths(out_dir)


def ensure_toy_data(
    out_dir: str | os.PathLike[str], config: ToyDataConfig = ToyDataConfig(), *, force: bool = False
) -> dict[str, Path]:
    """The file paths under ``out_dir``, written first unless complete for ``config`` (or ``force``); a cached
    build (:func:`verl_ext.files.build_once`)."""
    out_dir = Path(out_dir).absolute()
    paths = _paths(out_dir)
    template = load_prompt(config.prompt)
    manifest = {
        "build_version": BUILD_VERSION,
        "visual_math_build_version": vm.BUILD_VERSION,
        "sft_build_version": sft_data.BUILD_VERSION,
        "prompt": {"name": template.name, "digest": template.digest},
        "config": dataclasses.asdict(config),
        "files": dict(FILES),
    }
    if not build_once(
        out_dir, manifest, lambda: write_toy_data(out_dir, config),
        expect=paths.values(), force=force, manifest_name=MANIFEST_NAME,
    ):
        logger.info("toy data in %s is complete for these settings: nothing to do", out_dir)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m verl_ext.toy.data out=DIR [force=true] [n_sft=... difficulty.max_number=...]``: write (or
    reuse) the toy data; the keys are :class:`ToyDataConfig`'s fields. Prints ``name: path`` per file."""
    from verl_ext.config.compose import builder_command

    return builder_command(
        argv, __doc__, "python -m verl_ext.toy.data", ToyDataConfig,
        lambda out, config, force: ensure_toy_data(out, config, force=force),
    )


if __name__ == "__main__":
    sys.exit(main())
