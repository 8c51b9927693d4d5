"""The four benchmarks of MM-UPT's Table 1, loaded by hub name (or from local files in the same schema).

The columns read are those of each dataset card (AI4Math/MathVista, the MathVerse-lmmseval card for
AI4Math/MathVerse, MathLLMs/MathVision) and of lmms-eval's ``tasks/wemath/reasoning/utils.py``; what they
mean follows lmms-eval (``tasks/mathvista/mathvista_evals.py``: a multiple-choice answer is the option's
text, a float answer is compared at ``precision`` decimals; ``tasks/mathvision/utils.py``: a letter answer
indexes ``options``), MathVerse's ``output_templates/output_testmini.json`` (5 versions of each problem; a
Vision Only question is empty, the problem is drawn in the image; options follow ``Choices:`` as ``A:50°``
lines and the answer is the letter; a few write ``Choice:`` and give the option's text) and VLMEvalKit's
``vlmeval/dataset/utils/wemath.py`` (a problem's sub-questions and composite share ``ID``, ``key`` tells
them apart: ``2steps_1`` .. ``3steps_multi``).
"""

from __future__ import annotations

import logging
import os
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from verl_ext.generation.base import ImageSource
from verl_ext.prompts import format_choices

logger = logging.getLogger(__name__)

MATHVERSE_VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only", "Text Only")
"""MathVerse's problem versions, from most text to most vision (Text Only is its own config)."""

WEMATH_STEPS = ("S1 (one-step)", "S2 (two-step)", "S3 (three-step)")
"""We-Math's step categories: sub-questions are S1, the composites S2/S3."""

# A Vision Only MathVerse question is empty: the problem is drawn in the image. This asks for it in
# the dataset's own words (its query_wo/query_cot start "According to the question shown in the image").
VISION_ONLY_QUESTION = "According to the question shown in the image, answer the question."


@dataclass
class Sample:
    """One benchmark question, ready to prompt and to grade."""

    benchmark: str
    """Benchmark name (``mathvista``, ``mathverse``, ``wemath``, ``mathvision``)."""
    prompt_id: str
    """Identifier unique within the benchmark split."""
    question: str
    """The question text shown to the model, options included, without any format instruction."""
    answer: str
    """The gold answer as the dataset states it (a letter or an option text for multiple choice)."""
    images: list[ImageSource] = field(default_factory=list)
    """The question's images, undecoded."""
    choices: Optional[dict[str, str]] = None
    """Option letter -> option text for a multiple-choice question (None: free-form)."""
    answer_letter: Optional[str] = None
    """The gold option letter of a multiple-choice question."""
    answer_type: str = "text"
    """``choice``, ``integer``, ``float``, ``list`` or ``text`` (free-form answers of unknown type)."""
    precision: Optional[int] = None
    """Decimals a float answer is compared at (MathVista)."""
    category: Optional[str] = None
    """Group for per-category accuracy (MathVerse version, We-Math step, MathVision subject, MathVista task)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Further fields kept in the results (We-Math key and problem ID, MathVision level, ...)."""

    @property
    def is_choice(self) -> bool:
        return self.answer_type == "choice"

    def reference(self) -> str:
        """The gold answer as a grader reads it: ``"B (60°)"`` for multiple choice, else the answer."""
        if self.choices and self.answer_letter in self.choices:
            text = self.choices[self.answer_letter]
            return self.answer_letter if text == self.answer_letter else f"{self.answer_letter} ({text})"
        return self.answer


# ------------------------------------------------------------------------------------------ options


def choices_block(choices: Mapping[str, str]) -> str:
    """The options as shown to the model: ``Choices:`` then ``(A) text`` lines."""
    if all(text.strip().upper() == letter for letter, text in choices.items()):
        # The options are drawn in the image (MathVision does this): only the letters exist.
        return "Choices: " + ", ".join(f"({letter})" for letter in choices)
    return "Choices:" + format_choices(choices)


# Most questions write "Choices:", a few "Choice:"; the block may also open the question (the rest of
# the problem is then drawn in the image).
_MATHVERSE_CHOICES = re.compile(r"(?:^|\n)\s*Choices?\s*:\s*\n(?P<block>.*)$", re.IGNORECASE | re.DOTALL)
_MATHVERSE_OPTION = re.compile(r"^[ \t]*\(?([A-Z])(?:\)|[ \t]*[:.：)])[ \t]*", re.MULTILINE)
_WEMATH_LETTERS = "ABCDEFGH"
# ``{}``: the one letter an option may start with (the next one in order).
_WEMATH_OPTION = r"(?:^|;)\s*({})\s*[.．:：]\s*"


def _slices(text: str, found: Sequence[re.Match[str]]) -> dict[str, str]:
    """Letter -> text between each option marker (group 1: the letter) and the next, wrapped lines joined."""
    ends = [m.start() for m in found[1:]] + [len(text)]
    return {m.group(1): " ".join(text[m.end() : end].split()).rstrip(";").strip() for m, end in zip(found, ends)}


def _options(text: str, marker: re.Pattern[str]) -> dict[str, str]:
    """Letter -> text of the options ``marker`` (group 1: the letter) starts in ``text``, wrapped lines joined."""
    return _slices(text, list(marker.finditer(text)))


def _markers_in_order(text: str, marker: str, letters: str) -> list[re.Match[str]]:
    """The option markers of ``letters`` found one after another, each after the previous one.

    Option texts may hold letter-period strings of their own ("3 cm;C. is wrong"); looking only for
    the next letter in order keeps those inside their option, where a search for any letter would cut
    them out as options (overwriting a real one, or adding one the question does not have).
    """
    first = re.search(marker.format(f"[{letters}]"), text)
    if first is None:
        return []
    found, position = [first], first.end()
    for letter in letters[letters.index(first.group(1)) + 1 :]:
        match = re.compile(marker.format(letter)).search(text, position)
        if match is None:
            break
        found.append(match)
        position = match.end()
    return found


def parse_mathverse_choices(question: str) -> Optional[dict[str, str]]:
    """The ``A:50°`` option lines after ``Choices:`` (or ``Choice:``) in a MathVerse question, or None."""
    match = _MATHVERSE_CHOICES.search(question)
    return (_options(match.group("block"), _MATHVERSE_OPTION) or None) if match else None


def parse_wemath_options(option: str) -> dict[str, str]:
    """We-Math's ``"A. 200.96;B. 3215.36;C. 6280;D. 32; E. No correct answer"`` as letter -> text.

    Options follow one another in letter order; an option starts only at the next letter (see
    :func:`_markers_in_order`).
    """
    option = option or ""
    return _slices(option, _markers_in_order(option, _WEMATH_OPTION, _WEMATH_LETTERS))


def _listed(options: Optional[Sequence[str]]) -> Optional[dict[str, str]]:
    return dict(zip(string.ascii_uppercase, map(str, options))) if options else None


def _gold_letter(answer: str) -> Optional[str]:
    """The option letter a gold answer names: ``"B"``, ``"(B)"`` or ``"B: 60°"``."""
    m = re.match(r"^\(?([A-Za-z])\)?(?:$|[\s.:：)])", answer.strip())
    return m.group(1).upper() if m else None


def _option_letter(answer: str, choices: Mapping[str, str]) -> Optional[str]:
    """The letter of the option a gold answer names: its letter (``"B"``, ``"(B)"``), else the option
    whose text it is (``"False"``), else a letter leading a text (``"B: 60°"``); None if none is an option."""
    bare = re.fullmatch(r"\(?([A-Za-z])\)?[.:：]?", answer.strip())
    if bare and bare.group(1).upper() in choices:
        # Checked before the texts: an option's text may itself be a letter (a point's name).
        return bare.group(1).upper()
    key = " ".join(answer.split())
    if letter := next((k for k, text in choices.items() if " ".join(text.split()) == key), None):
        return letter
    letter = _gold_letter(answer)
    return letter if letter in choices else None


def _join(question: str, choices: Optional[Mapping[str, str]]) -> str:
    question = question.strip()
    return f"{question}\n{choices_block(choices)}" if choices else question


def _answer(row: Mapping[str, Any]) -> str:
    return str(row.get("answer") or "").strip()


# ------------------------------------------------------------------------------------------ row converters
# Each turns a row into the fields of its Sample other than benchmark and images.


def _mathvista(row: Mapping[str, Any]) -> dict[str, Any]:
    choices = _listed(row.get("choices")) if row.get("question_type") == "multi_choice" else None
    answer, metadata, precision = _answer(row), row.get("metadata") or {}, row.get("precision")
    letter = next((k for k, text in (choices or {}).items() if text.strip() == answer), None)
    if choices and letter is None:
        logger.warning("mathvista %s: answer %r is none of its choices", row["pid"], answer)
    return dict(
        prompt_id=str(row["pid"]),
        question=_join(row["question"], choices),
        answer=answer,
        choices=choices,
        answer_letter=letter,
        answer_type="choice" if choices else str(row.get("answer_type") or "text"),
        precision=int(precision) if precision is not None and precision == precision else None,  # NaN: none
        category=metadata.get("task"),
        meta={"unit": row.get("unit"), "category": metadata.get("category"), "source": metadata.get("source")},
    )


def _mathverse_letter(row: Mapping[str, Any], choices: Optional[Mapping[str, str]]) -> Optional[str]:
    """The gold letter of a multiple-choice row; a few state the option's text instead of its letter."""
    answer = _answer(row)
    if not choices:
        return _gold_letter(answer)  # Vision Only: the options are in the image
    letter = _option_letter(answer, choices)
    if letter is None:
        logger.warning("mathverse %s: answer %r is none of its options", row["sample_index"], answer)
    return letter


def _mathverse(row: Mapping[str, Any]) -> dict[str, Any]:
    question = str(row.get("question") or "").strip()
    is_choice = row.get("question_type") == "multi-choice"
    choices = parse_mathverse_choices(question) if is_choice else None
    return dict(
        prompt_id=str(row["sample_index"]),
        question=question or VISION_ONLY_QUESTION,  # the options are already part of the question's text
        answer=_answer(row),
        choices=choices,
        answer_letter=_mathverse_letter(row, choices) if is_choice else None,
        answer_type="choice" if is_choice else "text",
        category=row.get("problem_version"),
        meta={"problem_index": str(row.get("problem_index")), "subject": (row.get("metadata") or {}).get("subject")},
    )


def _wemath(row: Mapping[str, Any]) -> dict[str, Any]:
    choices = parse_wemath_options(str(row.get("option") or "")) or None
    key = str(row.get("key") or "")
    step = WEMATH_STEPS[(1 if key.startswith("2steps") else 2) if key.endswith("_multi") else 0]
    return dict(
        prompt_id=f"{row['ID']}@{key}",  # a problem's sub-questions share ID; the key tells them apart
        question=_join(str(row["question"]), choices),
        answer=_answer(row),
        choices=choices,
        answer_letter=_gold_letter(_answer(row)),
        answer_type="choice",
        category=step,
        meta={"key": key, "problem_id": str(row["ID"]), "knowledge_concept": row.get("knowledge concept")},
    )


def _mathvision(row: Mapping[str, Any]) -> dict[str, Any]:
    choices = _listed(row.get("options"))
    return dict(
        prompt_id=str(row["id"]),
        question=_join(re.sub(r"<image\d*>", "", str(row["question"])), choices),
        answer=_answer(row),
        choices=choices,
        answer_letter=_gold_letter(_answer(row)) if choices else None,
        answer_type="choice" if choices else "text",
        category=row.get("subject"),
        meta={"level": row.get("level")},
    )


# ------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives on the hub and how its rows become samples."""

    name: str
    """Short name used on the command line and in results."""
    title: str
    """Display name (the paper's column header)."""
    hub_name: str
    """Hugging Face dataset repository."""
    split: str
    """Default split (the paper's)."""
    image_columns: tuple[str, ...]
    """Columns holding images, tried in order."""
    convert: Callable[[Mapping[str, Any]], dict[str, Any]]
    """Row -> the sample's fields other than benchmark and images."""
    config_is_split: bool = False
    """The hub config is named like the split (MathVerse: config ``testmini_text_only`` has that split)."""

    def config_for(self, split: str) -> Optional[str]:
        """The hub config holding ``split`` (None: the default config)."""
        return split if self.config_is_split else None


_VISION = ("decoded_image", "image")
BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("mathvision", "MathVision", "MathLLMs/MathVision", "test", _VISION, _mathvision),
        BenchmarkSpec(
            "mathverse", "MathVerse", "AI4Math/MathVerse", "testmini", ("image",), _mathverse, config_is_split=True
        ),
        BenchmarkSpec("mathvista", "MathVista", "AI4Math/MathVista", "testmini", _VISION, _mathvista),
        BenchmarkSpec("wemath", "We-Math", "We-Math/We-Math", "testmini", ("image_path",), _wemath),
    )
}

_ALIASES = {"we-math": "wemath", "we_math": "wemath", "math-vision": "mathvision", "mathv": "mathvision"}


def parse_benchmarks(text: str) -> list[str]:
    """``"mathvista,We-Math"`` -> ``["mathvista", "wemath"]``; unknown names are an error."""
    given = [raw.strip() for raw in text.split(",")]
    names = [_ALIASES.get(raw.lower(), raw.lower()) for raw in given]
    if unknown := [raw for raw, name in zip(given, names) if name and name not in BENCHMARKS]:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}")
    names = list(dict.fromkeys(name for name in names if name))
    if not names:
        raise ValueError("no benchmark given")
    return names


# ------------------------------------------------------------------------------------------ loading


def _image_source(value: Any, base_dir: Optional[Path]) -> Optional[ImageSource]:
    """An undecoded image cell (``{"bytes", "path"}``, a path string or a PIL image) as a loadable source."""
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return {"bytes": value["bytes"], "path": value.get("path")}
        value = value.get("path")
    if value is None or isinstance(value, (str, os.PathLike)):
        if value is None or not str(value).strip():
            return None
        return str(Path(base_dir or "", value))  # an absolute value stays as it is
    return value  # a decoded PIL image


def _load_dataset(
    spec: BenchmarkSpec, split: str, data_dir: Optional[Path], cache_dir: Optional[str]
) -> tuple[Any, Optional[Path]]:
    import datasets

    if data_dir is None:
        logger.info("loading %s (config %s, split %s) from the hub", spec.hub_name, spec.config_for(split), split)
        return datasets.load_dataset(spec.hub_name, spec.config_for(split), split=split, cache_dir=cache_dir), None
    names = [f"{spec.name}/{split}.parquet", f"{spec.name}/{split}.jsonl", f"{spec.name}.parquet", f"{spec.name}.jsonl"]
    if path := next((data_dir / n for n in names if (data_dir / n).is_file()), None):
        logger.info("loading %s split %s from %s", spec.name, split, path)
        kind = "parquet" if path.suffix == ".parquet" else "json"
        return datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=cache_dir), path.parent
    snapshot = data_dir / spec.name
    if not snapshot.is_dir():
        raise FileNotFoundError(
            f"no local copy of {spec.name} in {data_dir}: expected {', '.join(names)} or a {spec.name}/ hub snapshot"
        )
    # A hub repository downloaded as is (README.md declares its configs and data files).
    logger.info("loading %s split %s from %s", spec.name, split, snapshot)
    return datasets.load_dataset(str(snapshot), spec.config_for(split), split=split, cache_dir=cache_dir), snapshot


def load_benchmark(
    name: str,
    *,
    split: Optional[str] = None,
    data_dir: Optional[str | os.PathLike[str]] = None,
    max_samples: Optional[int] = None,
    cache_dir: Optional[str] = None,
) -> list[Sample]:
    """The samples of benchmark ``name`` (its first ``max_samples`` rows, in dataset order).

    Without ``data_dir`` the split is read from the hub. With it, the same schema is read from
    ``DIR/NAME/SPLIT.parquet``, ``DIR/NAME/SPLIT.jsonl``, ``DIR/NAME.parquet``, ``DIR/NAME.jsonl`` or a
    hub snapshot directory ``DIR/NAME/``; relative image paths are resolved against the file's directory.
    """
    from datasets import Image as ImageFeature

    spec = BENCHMARKS[parse_benchmarks(name)[0]]
    split = split or spec.split
    dataset, base_dir = _load_dataset(spec, split, Path(data_dir) if data_dir is not None else None, cache_dir)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    for column in spec.image_columns:
        # Decoding every image up front would hold the whole benchmark's pixels in memory; the
        # generator decodes a batch's images when it runs.
        feature = dataset.features.get(column)
        if isinstance(feature, ImageFeature) and feature.decode:
            dataset = dataset.cast_column(column, ImageFeature(decode=False))
    samples = []
    for row in dataset:
        images = [s for s in (_image_source(row.get(c), base_dir) for c in spec.image_columns) if s is not None][:1]
        samples.append(Sample(benchmark=spec.name, images=images, **spec.convert(row)))
    if twice := [pid for pid, count in Counter(s.prompt_id for s in samples).items() if count > 1]:
        raise ValueError(f"{spec.name}: prompt id {twice[0]!r} occurs twice; results would collide")
    logger.info("%s/%s: %d samples", spec.name, split, len(samples))
    return samples
