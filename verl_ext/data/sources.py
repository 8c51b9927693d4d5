"""The datasets MM-UPT trains on, by hub name, and where their image, question and answer fields are.

The paper (arXiv 2505.22453) and its code (github.com/waltonfuture/MM-UPT, built on EasyR1) train on three
public datasets. All three use EasyR1's layout: an ``images`` column (a list of images), a ``problem`` column
whose text may carry ``<image>`` placeholders, and an ``answer`` column. Where each fact comes from is noted
next to it. Any other dataset is read with :data:`GENERIC`, which tries common column names in order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SourceSpec:
    """Where a dataset lives and which columns hold its fields."""

    name: str
    """Short name accepted by ``dataset=``."""
    hub_name: str
    """Hugging Face hub id passed to ``datasets.load_dataset``; empty for :data:`GENERIC`."""
    image_columns: tuple[str, ...]
    """Candidate image columns; the first one the data has is used."""
    question_columns: tuple[str, ...]
    """Candidate question columns, in order."""
    answer_columns: tuple[str, ...] = ()
    """Candidate answer columns, in order; the answer is optional."""
    choices_columns: tuple[str, ...] = ()
    """Candidate columns with the option texts of multiple-choice questions."""
    splits: tuple[str, ...] = ("train",)
    """The splits the dataset has (for messages; ``datasets`` is the authority)."""
    eval_split: str | None = None
    """The labelled held-out split to pass as ``val_split=``, if the dataset has one."""


GEOMETRY3K = SourceSpec(
    name="geometry3k",
    hub_name="hiyouga/geometry3k",
    # Dataset card (huggingface.co/datasets/hiyouga/geometry3k, README.md dataset_info): features
    # images (sequence of image), problem (string), answer (string), id (int64), choices (sequence of string),
    # ground_truth (string). `problem` starts with an <image> placeholder: verl's
    # examples/data_preprocess/geo3k.py passes it to the chat content unchanged next to `images`, and verl's
    # geo3k reward compares against `answer` (the value; `ground_truth` is not what verl scores).
    image_columns=("images",),
    question_columns=("problem",),
    answer_columns=("answer",),
    choices_columns=("choices",),
    # Same card: splits train (2101 rows), validation (300), test (601). MM-UPT's
    # examples/qwen2_5_vl_7b_mmr1.sh validates on hiyouga/geometry3k@test, as verl's geo3k.py does.
    splits=("train", "validation", "test"),
    eval_split="test",
)

GEOQA = SourceSpec(
    name="geoqa",
    hub_name="WaltonFuture/GEOQA_R1V_Train_8K",
    # Linked as "GeoQA" from the MM-UPT README. MM-UPT trains through EasyR1 with examples/config.yaml
    # `prompt_key: problem`, `answer_key: answer`, `image_key: images`, so the re-upload uses those columns
    # (its card is not in our references; this is inferred from the config, like the co-authors' GeoQA
    # derivatives such as Yuting6/geoqa-r1v-noise whose card lists images/problem/answer).
    # Fallbacks `image` and `solution` are the columns of the original R1-V upload
    # leonardPKU/GEOQA_R1V_Train_8K ("Fields: image, problem, solution" in public R1-V data code and the
    # ms-swift GRPO docs), whose `solution` wraps the answer in <answer></answer> tags.
    image_columns=("images", "image"),
    question_columns=("problem",),
    answer_columns=("answer", "solution"),
    # "Train_8K": the dataset is a training set only; no held-out split is published with it.
    splits=("train",),
    eval_split=None,
)

MMR1 = SourceSpec(
    name="mmr1",
    hub_name="MMR1/MMR1-Math-RL-Data-v0",
    # MM-UPT's examples/qwen2_5_vl_7b_mmr1.sh trains on MMR1/MMR1-Math-RL-Data-v0@train with the EasyR1
    # keys above (problem / answer / images); public verl preprocessing of this dataset pops
    # example['problem'], example['images'] and example['answer'] and strips "<image>" from the problem.
    image_columns=("images",),
    question_columns=("problem",),
    answer_columns=("answer",),
    # Hub file listing: data/train-00000-of-00001.parquet and data/validation-00000-of-00001.parquet
    # (5782 train rows, per the hub viewer).
    splits=("train", "validation"),
    eval_split="validation",
)

KNOWN: dict[str, SourceSpec] = {spec.name: spec for spec in (GEOMETRY3K, GEOQA, MMR1)}
"""Known datasets by short name."""

GENERIC = SourceSpec(
    name="",
    hub_name="",
    image_columns=("images", "image", "image_path", "image_paths"),
    question_columns=("problem", "question", "query", "prompt"),
    # reward_model / extra_info: an already converted verl parquet nests the answer there.
    answer_columns=("answer", "ground_truth", "solution", "label", "reward_model", "extra_info"),
    choices_columns=("choices", "options"),
)
"""Column guesses for any other hub dataset or local file."""


class ColumnError(ValueError):
    """A required column is missing, or a column named on the command line does not exist."""


@dataclass(frozen=True)
class Columns:
    """The columns one source is read from."""

    image: str
    """Column with the image(s) of a row."""
    question: str
    """Column with the question text."""
    answer: str | None = None
    """Column with the original answer, if any."""
    choices: str | None = None
    """Column with multiple-choice option texts, if any."""


def lookup(name: str) -> SourceSpec | None:
    """The known dataset called ``name`` (short name or hub id, any case), or ``None``."""
    key = name.strip().lower()
    for spec in KNOWN.values():
        if key in (spec.name, spec.hub_name.lower()):
            return spec
    return None


def _pick(available: Sequence[str], override: str | None, candidates: Sequence[str], what: str) -> str | None:
    if override is not None:
        if override not in available:
            raise ColumnError(f"{what} column {override!r} not found; the data has {sorted(available)}")
        return override
    return next((column for column in candidates if column in available), None)


def resolve_columns(
    available: Sequence[str],
    spec: SourceSpec = GENERIC,
    *,
    image: str | None = None,
    question: str | None = None,
    answer: str | None = None,
    choices: str | None = None,
) -> Columns:
    """Choose the columns to read among ``available``: explicit names win, else ``spec``'s candidates."""
    image_column = _pick(available, image, spec.image_columns, "image")
    question_column = _pick(available, question, spec.question_columns, "question")
    missing = [
        f"{what} (tried {', '.join(tried)}; name it with --{what}-column)"
        for what, column, tried in (
            ("image", image_column, spec.image_columns),
            ("question", question_column, spec.question_columns),
        )
        if column is None
    ]
    if missing:
        raise ColumnError(f"no {' and no '.join(missing)} among the columns {sorted(available)}")
    answer_column = _pick(available, answer, spec.answer_columns, "answer")
    choices_column = _pick(available, choices, spec.choices_columns, "choices")
    if len({image_column, question_column, answer_column, choices_column} - {None}) < sum(
        c is not None for c in (image_column, question_column, answer_column, choices_column)
    ):
        raise ColumnError("the image, question, answer and choices columns must all be different")
    return Columns(image=image_column, question=question_column, answer=answer_column, choices=choices_column)


_SPLIT_STEMS = frozenset({"train", "test", "val", "valid", "validation", "dev", "data"})


def data_source_name(dataset: str) -> str:
    """The ``data_source`` of prepared data: ``verl_ext/prepared/<name>``.

    A name of our own keeps verl from routing these rows to a built-in scorer meant for labelled data (verl
    scores ``hiyouga/geometry3k`` with its geo3k reward, for instance).
    """
    spec = lookup(dataset)
    if spec is not None:
        name = spec.name
    else:
        # Hub ids keep their owner/name; file paths are reduced to the file's stem, or to the directory's name
        # when the stem only names a split (data/geo/train.jsonl -> geo).
        stripped = dataset.strip().rstrip("/")
        looks_like_path = stripped.startswith((".", "/", "~")) or re.search(r"\.(jsonl?|parquet)$", stripped)
        name = stripped
        if looks_like_path:
            parts = [part for part in stripped.split("/") if part not in ("", ".", "..", "~")]
            name = parts[-1].split(".", 1)[0] if parts else ""
            if name.lower() in _SPLIT_STEMS and len(parts) > 1:
                name = parts[-2]
    slug = re.sub(r"[^A-Za-z0-9_.\-/]+", "_", name).strip("_") or "dataset"
    return f"verl_ext/prepared/{slug}"
