"""The datasets MM-UPT trains on, by hub name, and where their image, question and answer fields are.

The paper (arXiv 2505.22453) and its code (github.com/waltonfuture/MM-UPT, built on EasyR1) train on three
public datasets in EasyR1's layout: ``images`` (a list), ``problem`` (may carry ``<image>`` placeholders) and
``answer``. Where each fact comes from is noted next to it. Any other dataset is read with :data:`GENERIC`,
which tries common column names in order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

DATA_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".parquet")
"""Local file types that can be prepared."""


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


GEOMETRY3K = SourceSpec(
    # Dataset card (huggingface.co/datasets/hiyouga/geometry3k, dataset_info): images (sequence of image),
    # problem, answer, id, choices (sequence of string), ground_truth; splits train (2101 rows), validation (300),
    # test (601). `problem` starts with <image>: verl's examples/data_preprocess/geo3k.py keeps it next to
    # `images`, and verl's geo3k reward scores `answer` (not `ground_truth`). MM-UPT's
    # examples/qwen2_5_vl_7b_mmr1.sh validates on the test split (val_split=test), as verl's geo3k.py does.
    name="geometry3k",
    hub_name="hiyouga/geometry3k",
    image_columns=("images",),
    question_columns=("problem",),
    answer_columns=("answer",),
    choices_columns=("choices",),
)

GEOQA = SourceSpec(
    # Linked as "GeoQA" from the MM-UPT README, which trains through EasyR1 with examples/config.yaml
    # `prompt_key: problem`, `answer_key: answer`, `image_key: images` (inferred from that config: the card is
    # not in our references; the co-authors' derivatives such as Yuting6/geoqa-r1v-noise list the same columns).
    # Fallbacks `image` and `solution` are the original R1-V upload's (leonardPKU/GEOQA_R1V_Train_8K: "Fields:
    # image, problem, solution" in R1-V's data code and the ms-swift GRPO docs; `solution` is <answer>x</answer>).
    # "Train_8K": a training set only, no held-out split is published with it (no val_split).
    name="geoqa",
    hub_name="WaltonFuture/GEOQA_R1V_Train_8K",
    image_columns=("images", "image"),
    question_columns=("problem",),
    answer_columns=("answer", "solution"),
)

MMR1 = SourceSpec(
    # MM-UPT's examples/qwen2_5_vl_7b_mmr1.sh trains on MMR1/MMR1-Math-RL-Data-v0@train with the EasyR1 keys;
    # public verl preprocessing of it pops example['problem'], ['images'] and ['answer'] and strips "<image>".
    # Hub files data/train-00000-of-00001.parquet (5782 rows, per the hub viewer) and
    # data/validation-00000-of-00001.parquet: val_split=validation.
    name="mmr1",
    hub_name="MMR1/MMR1-Math-RL-Data-v0",
    image_columns=("images",),
    question_columns=("problem",),
    answer_columns=("answer",),
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
    return next((spec for spec in KNOWN.values() if key in (spec.name, spec.hub_name.lower())), None)


def looks_like_path(value: str) -> bool:
    """Whether ``value`` has the form of a local path (rather than a dataset name or hub id)."""
    return value.startswith((".", "/", "~")) or value.lower().endswith(DATA_SUFFIXES)


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
    overrides = {"image": image, "question": question, "answer": answer, "choices": choices}
    picked = {what: _pick(available, name, getattr(spec, f"{what}_columns"), what) for what, name in overrides.items()}
    missing = [
        f"{what} (tried {', '.join(getattr(spec, f'{what}_columns'))}; name it with {what}_column=)"
        for what in ("image", "question")
        if picked[what] is None
    ]
    if missing:
        raise ColumnError(f"no {' and no '.join(missing)} among the columns {sorted(available)}")
    chosen = [column for column in picked.values() if column is not None]
    if len(set(chosen)) < len(chosen):
        raise ColumnError("the image, question, answer and choices columns must all be different")
    return Columns(**picked)


def data_source_name(dataset: str) -> str:
    """The ``data_source`` of prepared data: ``verl_ext/prepared/<name>``.

    A name of our own keeps verl from routing these rows to a built-in scorer meant for labelled data (verl
    scores ``hiyouga/geometry3k`` with its geo3k reward, for instance).
    """
    spec = lookup(dataset)
    name = spec.name if spec else dataset.strip().rstrip("/")
    # Hub ids keep their owner/name; file paths are reduced to the file's stem, or to the directory's name
    # when the stem only names a split (data/geo/train.jsonl -> geo).
    if spec is None and looks_like_path(name):
        parts = [part for part in name.split("/") if part not in ("", ".", "..", "~")]
        name = parts[-1].split(".", 1)[0] if parts else ""
        if name.lower() in {"train", "test", "val", "valid", "validation", "dev", "data"} and len(parts) > 1:
            name = parts[-2]
    slug = re.sub(r"[^A-Za-z0-9_.\-/]+", "_", name).strip("_") or "dataset"
    return f"verl_ext/prepared/{slug}"
