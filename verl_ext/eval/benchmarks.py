"""The four benchmarks of MM-UPT's Table 1, loaded by hub name (or from local files in the same schema).

Each row becomes a :class:`Sample`: the question text shown to the model (with its options), the
gold answer, the option letters and texts of a multiple-choice question, the answer type, a
category for per-group accuracy and the image sources (left undecoded until generation).

Schema facts and where they come from:

* MathVista ``AI4Math/MathVista``, config ``default``, split ``testmini`` (1,000 rows): columns
  ``pid, question, image (path str), decoded_image (Image), choices (list[str] | None), unit,
  precision (float), answer, question_type ("multi_choice" | "free_form"), answer_type ("text" |
  "integer" | "float" | "list"), metadata (struct: category, context, grade, img_height, img_width,
  language, skills, source, split, task), query`` -- the dataset card's ``dataset_info`` (huggingface.co/
  datasets/AI4Math/MathVista README.md). A multiple-choice ``answer`` is the option's text and a float
  answer is compared after rounding to ``precision`` decimals -- lmms-eval
  ``tasks/mathvista/mathvista_evals.py`` (``normalize_extracted_answer`` maps a letter to its choice
  text and rounds floats with ``precision``).
* MathVerse ``AI4Math/MathVerse``, config ``testmini``, split ``testmini`` (3,940 rows = 788 problems x
  5 versions); the Text Only version is config/split ``testmini_text_only``: columns ``sample_index,
  problem_index, problem_version, question, image (Image), answer, question_type ("multi-choice" |
  "free-form"), metadata (struct: split, source, subject, subfield), query_wo, query_cot,
  question_for_eval`` -- the MathVerse-lmmseval card (huggingface.co/datasets/CaraJ/MathVerse-lmmseval
  README.md), the file list of AI4Math/MathVerse (testmini.parquet, testmini_text_only.parquet, commit
  "Add question_for_eval") and ``load_dataset("AI4Math/MathVerse", "testmini", split="testmini")`` in
  public evaluation scripts. Versions: Text Dominant, Text Lite, Vision Intensive, Vision Dominant,
  Vision Only (+ Text Only) -- MathVerse's ``output_templates/output_testmini.json`` (github.com/
  ZrrSkywalker/MathVerse), where a Vision Only question is empty (the problem is drawn in the
  image). A multiple-choice question carries its options in its text after ``Choices:`` as ``A:50°``
  lines and its answer is the letter -- sample 9 (problem 2) as quoted in public evaluation code's
  few-shot examples; the config ``testmini_text_only`` with split of the same name -- public scripts
  calling ``load_dataset("AI4Math/MathVerse", "testmini_text_only", split="testmini_text_only")``.
* We-Math ``We-Math/We-Math``, split ``testmini`` (1,740 rows, per public loaders): columns ``ID, split, knowledge concept,
  question, option ("A. 200.96;B. 3215.36;...; E. No correct answer"), answer (letter), image_path
  (Image), key ("2steps_1" | "2steps_2" | "2steps_multi" | "3steps_1" .. "3steps_multi"), question
  number, knowledge concept description`` -- lmms-eval ``tasks/wemath/reasoning/utils.py`` (reads these
  columns, ``image_path.convert("RGB")``) and the We-Math2.0 README example row. Sub-questions and
  their composite share ``ID``; one-step accuracy is over the ``*_1..3`` sub-questions, two-/three-step
  over ``2steps_multi``/``3steps_multi``, and the four-dimensional metrics use 525 multi-step problems
  -- VLMEvalKit ``vlmeval/dataset/utils/wemath.py``.
* MathVision ``MathLLMs/MathVision``, split ``test`` (3,040 rows; ``testmini`` has 304): columns ``id,
  question, options (list[str], empty for free-form), image (path str), decoded_image (Image), answer,
  solution, level (int), subject`` -- the dataset card (huggingface.co/datasets/MathLLMs/MathVision
  README.md). A multiple-choice answer is a letter indexing ``options`` -- lmms-eval
  ``tasks/mathvision/utils.py`` (``options[ord(answer) - ord("A")]``); questions embed ``<image1>``
  tags, stripped here as public evaluation scripts do.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from verl_ext.generation.base import ImageSource
from verl_ext.prompts import format_choices

logger = logging.getLogger(__name__)

__all__ = [
    "BENCHMARKS",
    "BenchmarkSpec",
    "MATHVERSE_VERSIONS",
    "Sample",
    "WEMATH_STEPS",
    "choices_block",
    "load_benchmark",
    "parse_benchmarks",
    "parse_mathverse_choices",
    "parse_wemath_options",
]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

MATHVERSE_VERSIONS = (
    "Text Dominant",
    "Text Lite",
    "Vision Intensive",
    "Vision Dominant",
    "Vision Only",
    "Text Only",
)
"""MathVerse's problem versions, from most text to most vision (Text Only is its own config)."""

WEMATH_STEPS = ("S1 (one-step)", "S2 (two-step)", "S3 (three-step)")
"""We-Math's step categories as this module names them."""

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
        """Whether the question is multiple choice."""
        return self.answer_type == "choice"

    @property
    def key(self) -> tuple[str, str]:
        """``(benchmark, prompt_id)``, unique across benchmarks."""
        return self.benchmark, self.prompt_id

    def reference(self) -> str:
        """The gold answer as a grader reads it: ``"B (60°)"`` for multiple choice, else the answer."""
        if self.is_choice and self.answer_letter and self.choices and self.answer_letter in self.choices:
            text = self.choices[self.answer_letter]
            return self.answer_letter if text == self.answer_letter else f"{self.answer_letter} ({text})"
        return self.answer


# ------------------------------------------------------------------------------------------ option parsing


def choices_block(choices: Mapping[str, str]) -> str:
    """The options as shown to the model: ``Choices:`` then ``(A) text`` lines."""
    if all(text.strip().upper() == letter for letter, text in choices.items()):
        # The options are drawn in the image (MathVision does this): only the letters exist.
        return "Choices: " + ", ".join(f"({letter})" for letter in choices)
    return "Choices:" + format_choices(choices)


_MATHVERSE_CHOICES = re.compile(r"\n\s*Choices\s*:\s*\n(?P<block>.*)$", re.IGNORECASE | re.DOTALL)
_MATHVERSE_OPTION = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])\s*[:.：)])\s*(.*)$")


def parse_mathverse_choices(question: str) -> Optional[dict[str, str]]:
    """The ``A:50°`` option lines after ``Choices:`` in a MathVerse question, or None."""
    match = _MATHVERSE_CHOICES.search(question)
    if match is None:
        return None
    choices: dict[str, str] = {}
    last: Optional[str] = None
    for line in match.group("block").splitlines():
        option = _MATHVERSE_OPTION.match(line)
        letter = (option.group(1) or option.group(2)) if option is not None else None
        if letter is not None and letter not in choices:
            last = letter
            choices[last] = option.group(3).strip()
        elif last is not None and line.strip():
            choices[last] = f"{choices[last]} {line.strip()}"  # an option wrapped onto the next line
    return choices or None


_WEMATH_OPTION = re.compile(r"(?:^|;)\s*([A-H])\s*[.．:：]\s*")


def parse_wemath_options(option: str) -> dict[str, str]:
    """We-Math's ``"A. 200.96;B. 3215.36;C. 6280; E. No correct answer"`` as letter -> text."""
    matches = list(_WEMATH_OPTION.finditer(option or ""))
    choices: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(option)
        choices[m.group(1)] = option[m.end() : end].strip().rstrip(";").strip()
    return choices


def _choices_from_list(options: Optional[Sequence[str]]) -> Optional[dict[str, str]]:
    if not options:
        return None
    return {LETTERS[i]: str(text) for i, text in enumerate(options)}


def _gold_letter(answer: str) -> Optional[str]:
    """The option letter a gold answer names: ``"B"``, ``"(B)"`` or ``"B: 60°"``."""
    m = re.match(r"^\(?([A-Za-z])\)?(?:$|[\s.:：)])", answer.strip())
    return m.group(1).upper() if m else None


def _letter_of(choices: Mapping[str, str], text: str) -> Optional[str]:
    for letter, option in choices.items():
        if option.strip() == str(text).strip():
            return letter
    return None


# ------------------------------------------------------------------------------------------ row converters


def _image_source(value: Any, base_dir: Optional[Path]) -> Optional[ImageSource]:
    """An undecoded image cell (``{"bytes", "path"}``, a path string or a PIL image) as a loadable source."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return {"bytes": value["bytes"], "path": value.get("path")}
        value = value.get("path")
        if not value:
            return None
    if isinstance(value, (str, os.PathLike)):
        if not str(value).strip():
            return None
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return str(path)
    return value  # a decoded PIL image


def _first_image(row: Mapping[str, Any], columns: Sequence[str], base_dir: Optional[Path]) -> list[ImageSource]:
    for column in columns:
        source = _image_source(row.get(column), base_dir)
        if source is not None:
            return [source]
    return []


def _join(question: str, choices: Optional[Mapping[str, str]]) -> str:
    question = question.strip()
    return f"{question}\n{choices_block(choices)}" if choices else question


def _mathvista(row: Mapping[str, Any], base_dir: Optional[Path]) -> Sample:
    # Columns: the AI4Math/MathVista card; MC answers are option texts (lmms-eval mathvista_evals.py).
    choices = _choices_from_list(row.get("choices")) if row.get("question_type") == "multi_choice" else None
    answer = str(row.get("answer") if row.get("answer") is not None else "")
    metadata = row.get("metadata") or {}
    precision = row.get("precision")
    sample = Sample(
        benchmark="mathvista",
        prompt_id=str(row["pid"]),
        question=_join(row["question"], choices),
        answer=answer,
        images=_first_image(row, ("decoded_image", "image"), base_dir),
        choices=choices,
        answer_letter=_letter_of(choices, answer) if choices else None,
        answer_type="choice" if choices else str(row.get("answer_type") or "text"),
        precision=int(precision) if precision is not None and precision == precision else None,  # NaN check
        category=metadata.get("task"),
        meta={"unit": row.get("unit"), "category": metadata.get("category"), "source": metadata.get("source")},
    )
    if choices and sample.answer_letter is None:
        logger.warning("mathvista %s: answer %r is none of its choices", sample.prompt_id, answer)
    return sample


def _mathverse(row: Mapping[str, Any], base_dir: Optional[Path]) -> Sample:
    # Columns: the MathVerse-lmmseval card; "multi-choice"/"free-form" and empty Vision Only questions:
    # MathVerse's output_templates/output_testmini.json.
    question = str(row.get("question") or "")
    version = row.get("problem_version")
    is_choice = row.get("question_type") == "multi-choice"
    choices = parse_mathverse_choices(question) if is_choice else None
    answer = str(row.get("answer") or "").strip()
    metadata = row.get("metadata") or {}
    return Sample(
        benchmark="mathverse",
        prompt_id=str(row["sample_index"]),
        # The options are already part of a MathVerse question's text.
        question=question.strip() or VISION_ONLY_QUESTION,
        answer=answer,
        images=_first_image(row, ("image",), base_dir),
        choices=choices,
        answer_letter=_gold_letter(answer) if is_choice else None,
        answer_type="choice" if is_choice else "text",
        category=version,
        meta={"problem_index": str(row.get("problem_index")), "subject": metadata.get("subject")},
    )


def wemath_step(key: str) -> str:
    """The step category of a We-Math ``key``: sub-questions are S1, composites S2/S3."""
    if key.endswith("_multi"):
        return WEMATH_STEPS[1] if key.startswith("2steps") else WEMATH_STEPS[2]
    return WEMATH_STEPS[0]


def _wemath(row: Mapping[str, Any], base_dir: Optional[Path]) -> Sample:
    # Columns and the "A. x;B. y" option string: lmms-eval tasks/wemath and the We-Math README example;
    # key/ID semantics: VLMEvalKit vlmeval/dataset/utils/wemath.py.
    choices = parse_wemath_options(str(row.get("option") or "")) or None
    answer = str(row.get("answer") or "").strip()
    key = str(row.get("key") or "")
    return Sample(
        benchmark="wemath",
        # A problem's sub-questions share ID; the key tells them apart.
        prompt_id=f"{row['ID']}@{key}",
        question=_join(str(row["question"]), choices),
        answer=answer,
        images=_first_image(row, ("image_path",), base_dir),
        choices=choices,
        answer_letter=_gold_letter(answer),
        answer_type="choice",
        category=wemath_step(key),
        meta={"key": key, "problem_id": str(row["ID"]), "knowledge_concept": row.get("knowledge concept")},
    )


_IMAGE_TAG = re.compile(r"<image\d*>")


def _mathvision(row: Mapping[str, Any], base_dir: Optional[Path]) -> Sample:
    # Columns: the MathLLMs/MathVision card; a letter answer indexes options: lmms-eval tasks/mathvision.
    choices = _choices_from_list(row.get("options"))
    answer = str(row.get("answer") or "").strip()
    question = _IMAGE_TAG.sub("", str(row["question"])).strip()
    return Sample(
        benchmark="mathvision",
        prompt_id=str(row["id"]),
        question=_join(question, choices),
        answer=answer,
        images=_first_image(row, ("decoded_image", "image"), base_dir),
        choices=choices,
        answer_letter=_gold_letter(answer) if choices else None,
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
    convert: Callable[[Mapping[str, Any], Optional[Path]], Sample]
    """Row -> sample; the path resolves relative image paths of local files."""
    config: Optional[str] = None
    """Hub config name (None: the default config)."""
    config_is_split: bool = False
    """The config is named like the split (MathVerse: config ``testmini_text_only`` has that split)."""

    def config_for(self, split: str) -> Optional[str]:
        """The hub config holding ``split``."""
        return split if self.config_is_split else self.config


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "mathvision", "MathVision", "MathLLMs/MathVision", "test", ("decoded_image", "image"), _mathvision
        ),
        BenchmarkSpec(
            "mathverse", "MathVerse", "AI4Math/MathVerse", "testmini", ("image",), _mathverse, config_is_split=True
        ),
        BenchmarkSpec(
            "mathvista", "MathVista", "AI4Math/MathVista", "testmini", ("decoded_image", "image"), _mathvista
        ),
        BenchmarkSpec("wemath", "We-Math", "We-Math/We-Math", "testmini", ("image_path",), _wemath),
    )
}

_ALIASES = {"we-math": "wemath", "we_math": "wemath", "math-vision": "mathvision", "mathv": "mathvision"}


def parse_benchmarks(text: str) -> list[str]:
    """``"mathvista,We-Math"`` -> ``["mathvista", "wemath"]``; unknown names are an error."""
    names = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        name = _ALIASES.get(name, name)
        if name not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {raw.strip()!r}; known: {', '.join(BENCHMARKS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no benchmark given")
    return names


# ------------------------------------------------------------------------------------------ loading


def _local_source(data_dir: Path, spec: BenchmarkSpec, split: str) -> Optional[tuple[str, Path]]:
    """``(kind, path)`` of the local copy of a benchmark: a parquet/jsonl file or a hub snapshot directory."""
    candidates = [
        ("parquet", data_dir / spec.name / f"{split}.parquet"),
        ("json", data_dir / spec.name / f"{split}.jsonl"),
        ("parquet", data_dir / f"{spec.name}.parquet"),
        ("json", data_dir / f"{spec.name}.jsonl"),
    ]
    for kind, path in candidates:
        if path.is_file():
            return kind, path
    snapshot = data_dir / spec.name
    if snapshot.is_dir():
        return "snapshot", snapshot
    return None


def _keep_images_undecoded(dataset: Any, columns: Sequence[str]) -> Any:
    # Decoding every image up front would hold the whole benchmark's pixels in memory; the
    # generator decodes a batch's images when it runs.
    from datasets import Image as ImageFeature

    for column in columns:
        feature = dataset.features.get(column)
        if isinstance(feature, ImageFeature) and feature.decode:
            dataset = dataset.cast_column(column, ImageFeature(decode=False))
    return dataset


def _load_dataset(
    spec: BenchmarkSpec, split: str, data_dir: Optional[Path], cache_dir: Optional[str]
) -> tuple[Any, Optional[Path]]:
    import datasets

    if data_dir is None:
        config = spec.config_for(split)
        logger.info("loading %s (config %s, split %s) from the hub", spec.hub_name, config, split)
        return datasets.load_dataset(spec.hub_name, config, split=split, cache_dir=cache_dir), None
    found = _local_source(data_dir, spec, split)
    if found is None:
        raise FileNotFoundError(
            f"no local copy of {spec.name} in {data_dir}: expected {spec.name}/{split}.parquet, "
            f"{spec.name}/{split}.jsonl, {spec.name}.parquet, {spec.name}.jsonl or a {spec.name}/ hub snapshot"
        )
    kind, path = found
    logger.info("loading %s split %s from %s", spec.name, split, path)
    if kind == "snapshot":
        # A hub repository downloaded as is (README.md declares its configs and data files).
        return datasets.load_dataset(str(path), spec.config_for(split), split=split, cache_dir=cache_dir), path
    dataset = datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=cache_dir)
    return dataset, path.parent


def load_benchmark(
    name: str,
    *,
    split: Optional[str] = None,
    data_dir: Optional[str | os.PathLike[str]] = None,
    max_samples: Optional[int] = None,
    cache_dir: Optional[str] = None,
) -> list[Sample]:
    """The samples of benchmark ``name`` (its first ``max_samples`` rows, in dataset order).

    Without ``data_dir`` the split is read from the hub with ``datasets.load_dataset``. With it, the
    same schema is read from ``DIR/NAME/SPLIT.parquet``, ``DIR/NAME/SPLIT.jsonl``, ``DIR/NAME.parquet``,
    ``DIR/NAME.jsonl`` or a hub snapshot directory ``DIR/NAME/``; relative image paths in local files
    are resolved against the file's directory.
    """
    spec = BENCHMARKS[parse_benchmarks(name)[0]]
    split = split or spec.split
    dataset, base_dir = _load_dataset(spec, split, Path(data_dir) if data_dir is not None else None, cache_dir)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    dataset = _keep_images_undecoded(dataset, spec.image_columns)
    samples = [spec.convert(row, base_dir) for row in dataset]
    seen: set[str] = set()
    for sample in samples:
        if sample.prompt_id in seen:
            raise ValueError(f"{spec.name}: prompt id {sample.prompt_id!r} occurs twice; results would collide")
        seen.add(sample.prompt_id)
    logger.info("%s/%s: %d samples", spec.name, split, len(samples))
    return samples
