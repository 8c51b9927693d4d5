"""Synthesize new training questions from seed rows with the model itself (MM-UPT's data synthesis).

Two strategies (arXiv 2505.22453, section on synthetic data):

* ``in_context``: the model sees a seed row's image(s), its question and its answer, and writes a *different*
  question about the same image(s);
* ``direct``: the model sees only the image(s) and writes a question.

The prompt is a template file (``verl_ext/prompts/synth_<strategy>.txt`` by default; ``synth.prompt`` takes another
built-in name or any file path, see :mod:`verl_ext.prompts`) that asks for the question between ``<question>``
and ``</question>``. Each completion is parsed and filtered (:mod:`verl_ext.data.synth_filters`): unparseable,
empty, too short, too long, same as the seed's question, duplicate of a question already kept for the same
image(s). With ``synth.answerability_k=K`` the model also answers each surviving question K times (the training
prompt, format instruction included) and the question is kept only if the majority ratio of the extracted
answers reaches ``synth.answerability_threshold``; the ratio is recorded in ``extra_info["answerability"]``.

Kept questions are rows of :mod:`verl_ext.data.schema` (the seed's images, an empty ground truth,
``extra_info["answer"] == ""``) with provenance in ``extra_info``: ``seed_file``, ``seed_row`` (position in that
file), ``seed_index`` (the seed's own ``extra_info.index``), ``seed_question``, ``strategy``, ``prompt_name`` and
``answerability`` (null when not computed); ``extra_info["source"]`` is the seed's source.

Seeds are parquet files in the row layout (``verl_ext.data.prepare`` output, ``verl_ext.toy.visual_math``, or
earlier synthesis output) or directories of them. Seed rows are processed in shards of ``synth.shard_size``:
shard ``i`` writes ``OUT/shard-0000i.parquet`` atomically and is then recorded in ``OUT/synthesize_manifest.json``
(also written atomically, together with the run's settings and counts). A rerun of the same command skips the
recorded shards, so a killed run loses at most the shard it was working on and leaves no half-written file; a
rerun with other settings is refused (use another ``synth.out`` or ``synth.overwrite=true``).

Bad seed input (an unreadable file or row group, a missing or corrupt image, a row without the question or
answer the template needs) is counted per reason and skipped; a shard whose generation fails is logged, left
unrecorded (a rerun retries it) and the run goes on. Exit status: 0 if the output holds any row (including
shards finished by earlier runs), 1 if not, 2 for usage errors.

Train on all shards with ``data.train_files="[OUT/shard-00000.parquet,OUT/shard-00001.parquet]"`` (the closing
log line and the manifest's ``train_files`` give the full list), or set ``synth.merge=true`` to also write
``OUT/train.parquet`` once every shard is done and use ``data.train_files=OUT/train.parquet`` (not both: the
rows would count twice).

Configured like training: a recipe (``recipes/synth/in_context.yaml``, ``recipes/synth/direct.yaml``) composes
verl's ``ppo_trainer`` (the model, rollout engine and cluster keys) with every ``synth.*`` setting
(``verl_ext/config/command/synthesize.yaml``), and ``key=value`` overrides follow. The questions are written and
answered on verl's rollout replicas (:mod:`verl_ext.generation.replicas`)::

    python -m verl_ext.data.synthesize config=recipes/synth/in_context.yaml \\
        synth.seeds=[data/geometry3k/train.parquet] synth.out=data/synth/in_context \\
        actor_rollout_ref.model.path=Qwen/Qwen2.5-VL-7B-Instruct synth.num_per_seed=2 synth.answerability_k=10
    python -m verl_ext.data.synthesize config=recipes/synth/direct.yaml synth.seeds=[data/seeds/] \\
        synth.out=data/synth/direct synth.max_seeds=64 actor_rollout_ref.model.path=./my-model \\
        actor_rollout_ref.rollout.name=hf trainer.n_gpus_per_node=1 actor_rollout_ref.rollout.tensor_model_parallel_size=1
    python -m verl_ext.data.synthesize --list-prompts
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from verl_ext.data import prepare
from verl_ext.data.prepare import (
    RowRejected,
    UsageError,
    answer_text,
    choice_texts,
    image_bytes,
    image_items,
    question_text,
)
from verl_ext.data.schema import FORMAT_INSTRUCTION, IMAGE_PLACEHOLDER, RowWriter, SchemaError, build_row
from verl_ext.data.synth_filters import (
    UNANSWERABLE,
    FilterSettings,
    answerability_ratio,
    image_key,
    is_answerable,
    normalize_question,
    screen,
)
from verl_ext.files import LockHeld, exclusive_lock, write_json
from verl_ext.generation.base import BackendConfig, GenerationRequest, Generator, SamplingSettings
from verl_ext.generation.factory import BACKENDS, make_generator
from verl_ext.model_path import model_path_problem
from verl_ext.prompts import PROMPT_DIR, PromptError, PromptTemplate, available_prompts, format_choices, load_prompt
from verl_ext.voting import STYLES

logger = logging.getLogger("verl_ext.data.synthesize")  # stable under python -m

STRATEGIES: tuple[str, ...] = ("in_context", "direct")
MANIFEST_NAME = "synthesize_manifest.json"
"""Settings, finished shards and counts of the run(s) writing an output directory."""
MERGED_NAME = "train.parquet"
"""Written with ``merge`` once every shard is finished."""
LOCK_NAME = ".synthesize.lock"
MANIFEST_VERSION = 1
SHARD_GLOB = "shard-*.parquet"

# Seed (bad input) reasons; the names are shared with verl_ext.data.prepare.
MISSING_QUESTION = prepare.MISSING_QUESTION
MISSING_ANSWER = prepare.MISSING_ANSWER
MISSING_IMAGE = prepare.MISSING_IMAGE
CORRUPT_IMAGE = prepare.CORRUPT_IMAGE
IMAGE_COUNT_MISMATCH = prepare.IMAGE_COUNT_MISMATCH
UNREADABLE_ROW = prepare.UNREADABLE_ROW
UNREADABLE_FILE = prepare.UNREADABLE_FILE
ERROR = prepare.ERROR
"""A candidate row that the schema refused, or an unexpected error on a seed row."""
WRITE_ERROR = prepare.WRITE_ERROR
GENERATION_ERROR = "generation_error"
"""A shard whose generation failed (counted per shard; a rerun retries it)."""

_WARN_PER_REASON = 3  # individual log lines per reason before only the summary counts them
_MAX_CONSECUTIVE_FAILURES = 3  # a failure that repeats shard after shard (e.g. out of memory) is systematic
_SHARD_SEED_STRIDE = 100_003  # HF seeds batch b with seed + b: keep shards' streams apart
_ANSWER_SEED_OFFSET = 50_021


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard-{index:05d}.parquet"


def extra_info_fields() -> list[tuple[str, Any]]:
    """The provenance fields synthesized rows add to ``extra_info`` (name, Arrow type)."""
    import pyarrow as pa

    return [
        ("seed_file", pa.string()),
        ("seed_row", pa.int64()),
        ("seed_index", pa.int64()),
        ("seed_question", pa.string()),
        ("strategy", pa.string()),
        ("prompt_name", pa.string()),
        ("answerability", pa.float64()),
        ("synthesis_step", pa.int64()),
    ]


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class SynthesizeConfig:
    """What to synthesize, from which seeds, with which model."""

    seeds: tuple[Path, ...]
    """Seed parquet files (row layout), or directories whose ``*.parquet`` files are read in name order."""
    out: Path
    """Output directory for the shards, the manifest and (with ``merge``) ``train.parquet``."""
    model: str
    """Model directory or hub name; the same model writes the questions and answers them."""
    strategy: str = "in_context"
    """``in_context`` (image + question + answer) or ``direct`` (image only)."""
    prompt: str | None = None
    """Template name or file path; default ``synth_<strategy>``."""
    num_per_seed: int = 1
    """Questions sampled per seed row."""
    shard_size: int = 256
    """Seed rows per output shard: the unit of resumption."""
    max_seeds: int | None = None
    """Use only the first N seed rows (counted from ``first_seed``)."""
    first_seed: int = 0
    """Skip the seed rows before this position (online synthesis takes a window of rows per round)."""
    round_step: int | None = None
    """Training step of an online synthesis round, recorded as ``extra_info["synthesis_step"]`` (None offline)."""
    backend: str = "auto"
    """Generation backend: ``auto`` (vLLM on a GPU if installed, else transformers), ``hf`` or ``vllm``."""
    backend_config: BackendConfig = field(default_factory=lambda: BackendConfig(show_progress=False))
    """Batch size, dtype, pixel bounds, replicas and engine settings (tensor parallel size, memory)."""
    temperature: float = 1.0
    """Sampling temperature of question generation."""
    top_p: float = 1.0
    """Nucleus sampling mass of question generation."""
    top_k: int = -1
    """Top-k of question generation (-1: off)."""
    max_new_tokens: int = 512
    """Longest question completion in tokens (a cut-off completion has no closing marker: unparseable)."""
    seed: int | None = 0
    """Sampling seed (None: unseeded); each shard derives its own from it, so shards are reproducible."""
    filters: FilterSettings = field(default_factory=FilterSettings)
    """Length bounds of the text filters."""
    answerability_k: int = 0
    """Answers sampled per kept question for the answerability filter; 0 turns the filter off."""
    answerability_threshold: float = 0.5
    """Keep a question when the majority ratio of its k answers is at least this."""
    answer_temperature: float = 0.7
    """Sampling temperature of the answers (MM-UPT's rollout temperature)."""
    answer_max_new_tokens: int = 2048
    """Longest answer in tokens (MM-UPT's response length)."""
    answer_style: str = "boxed"
    """How final answers are read: ``boxed`` (matches the format instruction), ``answer_tag`` or ``choice``."""
    data_source: str | None = None
    """``data_source`` of the rows; default ``verl_ext/synthesized/<strategy>``."""
    merge: bool = False
    """Also write ``train.parquet`` with every shard's rows once all shards are finished."""
    overwrite: bool = False
    """Delete an earlier run's shards and manifest in ``out`` instead of resuming it."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise UsageError("synth.seeds is required")
        if self.strategy not in STRATEGIES:
            raise UsageError(f"synth.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.backend not in BACKENDS:
            raise UsageError(f"actor_rollout_ref.rollout.name must be one of {', '.join(BACKENDS)} for synthesis, got {self.backend!r}")
        if not self.model:
            raise UsageError("actor_rollout_ref.model.path is required")
        for name in ("num_per_seed", "shard_size", "max_new_tokens", "answer_max_new_tokens"):
            if getattr(self, name) < 1:
                raise UsageError(f"synth.{name} must be >= 1, got {getattr(self, name)}")
        if self.first_seed < 0:
            raise UsageError(f"first_seed must be >= 0, got {self.first_seed}")
        if self.max_seeds is not None and self.max_seeds < 1:
            raise UsageError(f"synth.max_seeds must be >= 1, got {self.max_seeds}")
        if self.answerability_k < 0:
            raise UsageError(f"synth.answerability_k must be >= 0, got {self.answerability_k}")
        if not 0.0 <= self.answerability_threshold <= 1.0:
            raise UsageError(f"synth.answerability_threshold must be in [0, 1], got {self.answerability_threshold}")
        if self.answer_style not in STYLES:
            raise UsageError(f"synth.answer_style must be one of {', '.join(STYLES)}, got {self.answer_style!r}")
        if self.data_source is not None and not self.data_source.strip():
            raise UsageError("synth.data_source must not be empty")
        try:
            self.question_sampling(0)
            self.answer_sampling(0)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    @property
    def prompt_spec(self) -> str:
        """The template to load: ``prompt`` or the strategy's default."""
        return self.prompt or f"synth_{self.strategy}"

    @property
    def source_name(self) -> str:
        """The ``data_source`` value of the rows."""
        return self.data_source or f"verl_ext/synthesized/{self.strategy}"

    def _shard_seed(self, shard: int, offset: int = 0) -> int | None:
        return None if self.seed is None else self.seed + shard * _SHARD_SEED_STRIDE + offset

    def question_sampling(self, shard: int) -> SamplingSettings:
        """Sampling of the questions of ``shard``."""
        return SamplingSettings(
            n=self.num_per_seed,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens,
            seed=self._shard_seed(shard),
        )

    def answer_sampling(self, shard: int) -> SamplingSettings:
        """Sampling of the answerability check of ``shard``."""
        return SamplingSettings(
            n=max(1, self.answerability_k),
            temperature=self.answer_temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.answer_max_new_tokens,
            seed=self._shard_seed(shard, _ANSWER_SEED_OFFSET),
        )


@dataclass
class SynthesizeResult:
    """What a run did, and what the output directory holds."""

    out: Path
    """The output directory."""
    files: list[Path] = field(default_factory=list)
    """Shard files holding rows, in shard order (including shards finished by earlier runs)."""
    kept: int = 0
    """Rows in the output (all finished shards)."""
    kept_this_run: int = 0
    """Rows written by this run."""
    seeds: int = 0
    """Seed rows in the finished shards."""
    candidates: int = 0
    """Questions generated in the finished shards."""
    dropped: Counter = field(default_factory=Counter)
    """Drop reason -> generated questions dropped (finished shards)."""
    bad_input: Counter = field(default_factory=Counter)
    """Reason -> seed rows skipped as bad input (finished shards)."""
    failures: Counter = field(default_factory=Counter)
    """Reason -> whole seed files unreadable, or shards that failed in this run."""
    shards_total: int = 0
    """Shards the seed rows make up."""
    shards_done: int = 0
    """Shards finished by this run."""
    shards_skipped: int = 0
    """Shards finished by earlier runs and skipped."""
    interrupted: bool = False
    """The run was stopped (Ctrl-C or repeated failures) before every shard was finished."""
    merged: Path | None = None
    """``train.parquet``, when written."""

    @property
    def complete(self) -> bool:
        """Every shard is finished."""
        return self.shards_done + self.shards_skipped == self.shards_total

    @property
    def exit_code(self) -> int:
        """0 if the output holds any row, else 1."""
        return 0 if self.kept else 1


# ------------------------------------------------------------------------------------------------ seeds


@dataclass(frozen=True)
class Seed:
    """A usable seed row."""

    position: int
    """Position among all seed rows (over the files, in order)."""
    file: Path
    """The seed file."""
    row: int
    """Row number in that file."""
    index: int
    """The seed's own ``extra_info.index`` (its row number when it has none)."""
    source: str
    """The seed's ``extra_info.source`` (the seed file when it has none)."""
    question: str
    """The seed's question without placeholders and format instruction (may be empty for ``direct``)."""
    answer: str
    """The seed's answer (may be empty unless the template needs it)."""
    choices: tuple[str, ...]
    """Option texts of a multiple-choice seed."""
    images: tuple[bytes, ...]
    """Checked PNG/JPEG bytes."""
    images_key: str
    """Identity of the images, for deduplication."""


@dataclass
class _SeedFile:
    path: Path
    parquet: Any
    offset: int
    rows: int
    group_starts: list[int]


class SeedSet:
    """The rows of the seed files, addressed by one position over all files; row groups are read lazily."""

    def __init__(self, paths: Sequence[Path], max_rows: int | None, failures: Counter) -> None:
        import pyarrow.parquet as pq

        self.files: list[_SeedFile] = []
        self.length = 0
        for path in paths:
            if max_rows is not None and self.length >= max_rows:
                break
            try:
                parquet = pq.ParquetFile(path)
                names = set(parquet.schema_arrow.names)
                if "images" not in names or not names & {"prompt", "extra_info"}:
                    raise ValueError(f"not a row file: columns are {sorted(names)}")
            except Exception as exc:  # OSError, Arrow errors, a wrong layout: the file cannot be used
                failures[UNREADABLE_FILE] += 1
                logger.warning("%s: %s: %s", UNREADABLE_FILE, path, exc)
                continue
            rows = parquet.metadata.num_rows
            if max_rows is not None:
                rows = min(rows, max_rows - self.length)
            starts, start = [], 0
            for g in range(parquet.num_row_groups):
                starts.append(start)
                start += parquet.metadata.row_group(g).num_rows
            self.files.append(_SeedFile(path, parquet, self.length, rows, starts))
            self.length += rows
        self._cache: tuple[Path, int, Any, str] | None = None

    def fingerprint(self) -> list[list[Any]]:
        """The files and row counts used: a resumed run must see the same seeds."""
        return [[str(f.path), f.rows] for f in self.files]

    def _group(self, seed_file: _SeedFile, group: int) -> tuple[Any, str]:
        cached = self._cache
        if cached is not None and cached[0] == seed_file.path and cached[1] == group:
            return cached[2], cached[3]
        try:
            table, detail = seed_file.parquet.read_row_group(group), ""
        except Exception as exc:  # a damaged row group loses its rows, not the file
            table, detail = None, f"row group {group}: {type(exc).__name__}: {exc}"
        self._cache = (seed_file.path, group, table, detail)
        return table, detail

    def rows(self, start: int, stop: int) -> Iterator[tuple[int, _SeedFile, int, Any, str]]:
        """``(position, file, row in file, values or None, error detail)`` for positions ``start..stop-1``."""
        for seed_file in self.files:
            lo, hi = max(start, seed_file.offset), min(stop, seed_file.offset + seed_file.rows)
            for position in range(lo, hi):
                row = position - seed_file.offset
                group = bisect.bisect_right(seed_file.group_starts, row) - 1
                table, detail = self._group(seed_file, group)
                # Rows become Python objects one at a time: a row group can hold thousands of images.
                value = None
                if table is not None:
                    value = table.slice(row - seed_file.group_starts[group], 1).to_pylist()[0]
                yield position, seed_file, row, value, detail

    def close(self) -> None:
        """Close the file handles."""
        for seed_file in self.files:
            close = getattr(seed_file.parquet, "close", None)
            if close is not None:
                close()
        self._cache = None


def _clean_question(text: str) -> str:
    text = text.replace(IMAGE_PLACEHOLDER, " ").strip()
    instruction = FORMAT_INSTRUCTION.strip()
    if text.endswith(instruction):
        text = text[: -len(instruction)]
    return "\n".join(" ".join(line.split()) for line in text.strip().split("\n")).strip()


def seed_from_row(
    values: Any, *, position: int, file: Path, row: int, needs: frozenset[str], max_aspect_ratio: float = 200.0
) -> Seed:
    """Turn a seed row into a :class:`Seed`, or raise :class:`RowRejected` with the bad-input reason.

    ``needs`` are the template fields the row must provide (``question``, ``answer``).
    """
    if not isinstance(values, Mapping):
        raise RowRejected(UNREADABLE_ROW, "not a row")
    info = values.get("extra_info") if isinstance(values.get("extra_info"), Mapping) else {}
    question = info.get("question") if isinstance(info.get("question"), str) else None
    if not question or not question.strip():
        question = question_text(values.get("prompt")) or ""
    question = _clean_question(question)
    if "question" in needs and not question:
        raise RowRejected(MISSING_QUESTION)
    answer = answer_text(info.get("answer"))
    if not answer and isinstance(values.get("reward_model"), Mapping):
        answer = answer_text(values["reward_model"].get("ground_truth"))
    answer = answer.replace(IMAGE_PLACEHOLDER, " ").strip()
    if "answer" in needs and not answer:
        raise RowRejected(MISSING_ANSWER, "the prompt template shows the seed's answer")
    items = image_items(values.get("images"))
    if not items:
        raise RowRejected(MISSING_IMAGE, "no images")
    images = tuple(image_bytes(item, file.parent, max_aspect_ratio) for item in items)
    index = info.get("index")
    source = info.get("source")
    return Seed(
        position=position,
        file=file,
        row=row,
        index=index if isinstance(index, int) and not isinstance(index, bool) else row,
        source=source if isinstance(source, str) and source else str(file),
        question=question,
        answer=answer,
        choices=tuple(c.replace(IMAGE_PLACEHOLDER, " ") for c in choice_texts(info.get("choices"))),
        images=images,
        images_key=image_key(images),
    )


# ------------------------------------------------------------------------------------------------ bookkeeping


class _ReasonLog:
    """Log the first few events of each reason; the rest only show up in the summary counts."""

    def __init__(self, level: int, what: str) -> None:
        self.level, self.what, self.seen = level, what, Counter()

    def __call__(self, reason: str, where: str, detail: str = "") -> None:
        self.seen[reason] += 1
        if self.seen[reason] <= _WARN_PER_REASON:
            logger.log(self.level, "%s %s: %s%s", self.what, where, reason, f" ({detail})" if detail else "")
        elif self.seen[reason] == _WARN_PER_REASON + 1:
            logger.log(self.level, "%s: more %s; from now on they are only counted in the summary", self.what, reason)


@contextlib.contextmanager
def _out_lock(out: Path) -> Iterator[None]:
    """Two runs must not interleave shards in one output directory."""
    try:
        with exclusive_lock(out / LOCK_NAME, blocking=False):
            yield
    except LockHeld:
        raise UsageError(f"another synthesis run is writing to {out}") from None


def _remove_stale_temporaries(out: Path) -> None:
    # A killed run (SIGKILL, power loss) cannot clean up after itself; under the lock nobody else writes here.
    stale = [p for p in out.glob(".*.tmp-*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d temporary file(s) left by an interrupted run", len(stale))


def _resolve_seed_paths(values: Sequence[Path]) -> list[Path]:
    paths: list[Path] = []
    for value in values:
        path = Path(value).expanduser().absolute()
        if path.is_dir():
            found = sorted(p for p in path.glob("*.parquet") if p.is_file())
            if not found:
                raise UsageError(f"no .parquet files in seed directory {value}")
            paths.extend(found)
        elif path.suffix.lower() != ".parquet":
            raise UsageError(f"seed files must be .parquet row files (verl_ext.data.prepare output): {value}")
        else:
            paths.append(path)  # a missing file is counted as unreadable, like any other unreadable file
    return paths


def _check_template(template: PromptTemplate, strategy: str) -> frozenset[str]:
    """The seed fields the template needs; raises UsageError when it does not fit the strategy."""
    fields = template.fields
    if strategy == "direct" and fields:
        raise UsageError(
            f"prompt {template.name} uses {', '.join(sorted(fields))}, but direct synthesis shows only the image"
        )
    if strategy == "in_context" and "question" not in fields:
        raise UsageError(
            f"prompt {template.name} has no {{{{question}}}}: in-context synthesis shows the seed question"
        )
    return frozenset(fields)


# ------------------------------------------------------------------------------------------------ run


@dataclass
class _Shard:
    """The outcome of one shard, as recorded in the manifest."""

    index: int
    start: int
    stop: int
    file: str | None = None
    seeds: int = 0
    candidates: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    bad_input: Counter = field(default_factory=Counter)

    def record(self) -> dict[str, Any]:
        """The manifest entry."""
        return {
            "file": self.file,
            "seed_range": [self.start, self.stop],
            "seeds": self.seeds,
            "candidates": self.candidates,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "bad_input": dict(sorted(self.bad_input.items())),
        }


class _Run:
    """One invocation: plans the shards, skips finished ones, runs the rest."""

    def __init__(
        self, config: SynthesizeConfig, generator: Generator | None, factory: Callable[..., Generator]
    ) -> None:
        self.config = config
        self.out = config.out.expanduser().absolute()
        try:
            self.template = load_prompt(config.prompt_spec)
        except PromptError as exc:
            raise UsageError(str(exc)) from None
        self.needs = _check_template(self.template, config.strategy)
        # Only for the real loader: tests and callers with their own factory may name models freely.
        problem = model_path_problem(config.model) if generator is None and factory is make_generator else None
        if problem:
            raise UsageError(f"actor_rollout_ref.model.path: {problem}")
        self.seed_paths = _resolve_seed_paths(config.seeds)
        self.generator = generator
        self.factory = factory
        self.own_generator = False
        self.result = SynthesizeResult(out=self.out)
        self.seen: set[tuple[str, str]] = set()
        self.seed_log = _ReasonLog(logging.WARNING, "seed")
        self.candidate_log = _ReasonLog(logging.INFO, "question")
        self.writer_fields = extra_info_fields()
        self.advanced = 0
        """Seeds of the current shard the progress bar has already counted."""

    # ---- settings and manifest

    def fingerprint(self, seeds: SeedSet) -> dict[str, Any]:
        """The settings that decide the output; a resumed run must match them."""
        c = self.config
        return {
            "strategy": c.strategy,
            "prompt": {"name": self.template.name, "digest": self.template.digest},
            "model": c.model,
            "seeds": seeds.fingerprint(),
            "num_per_seed": c.num_per_seed,
            "shard_size": c.shard_size,
            "first_seed": c.first_seed,
            "round_step": c.round_step,
            "sampling": dataclasses.asdict(c.question_sampling(0)),
            "filters": dataclasses.asdict(c.filters),
            "answerability": {
                "k": c.answerability_k,
                "threshold": c.answerability_threshold,
                "style": c.answer_style,
                "sampling": dataclasses.asdict(c.answer_sampling(0)) if c.answerability_k else None,
            },
            "data_source": c.source_name,
        }

    def load_manifest(self, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest of an earlier run in ``out`` (or a fresh one); UsageError if its settings differ."""
        path = self.out / MANIFEST_NAME
        fresh = {"version": MANIFEST_VERSION, "settings": fingerprint, "shards": {}}
        if not path.exists():
            return fresh
        try:
            manifest = json.loads(path.read_text())
            settings, shards = manifest["settings"], manifest["shards"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path} cannot be read ({exc}); use synth.overwrite=true or another synth.out") from None
        # Round-trip through JSON so tuples and lists compare equal.
        expected = json.loads(json.dumps(fingerprint, default=str))
        if settings != expected:
            differ = sorted(k for k in set(settings) | set(expected) if settings.get(k) != expected.get(k))
            raise UsageError(
                f"{self.out} holds a synthesis run with other settings (differs in: {', '.join(differ)}); "
                "use another synth.out, or synth.overwrite=true to start over"
            )
        return {"version": MANIFEST_VERSION, "settings": settings, "shards": shards}

    def finished_shards(self, manifest: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
        """Recorded shards whose file (if they kept rows) is still there."""
        finished: dict[int, dict[str, Any]] = {}
        for key, entry in manifest["shards"].items():
            name = entry.get("file")
            if name and not (self.out / name).is_file():
                logger.warning("shard %s: %s is missing; it will be generated again", key, name)
                continue
            finished[int(key)] = entry
        return finished

    def remember_kept(self, path: Path) -> None:
        """Put the questions of a finished shard into the duplicate filter's memory."""
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(columns=["images", "extra_info"], batch_size=256):
            for row in batch.to_pylist():
                key = image_key([image["bytes"] for image in row["images"]])
                self.seen.add((key, normalize_question(row["extra_info"]["question"])))

    def overwrite(self) -> None:
        """Delete an earlier run's shards, manifest and merged file."""
        removed = 0
        for path in [*self.out.glob(SHARD_GLOB), self.out / MANIFEST_NAME, self.out / MERGED_NAME]:
            if path.is_file():
                path.unlink()
                removed += 1
        logger.info("overwrite: removed %d file(s) of an earlier run from %s", removed, self.out)

    # ---- one shard

    def get_generator(self) -> Generator:
        """The generator, built on first use so a finished run loads no model."""
        if self.generator is None:
            c = self.config
            self.generator = self.factory(c.backend, c.model, c.backend_config)
            self.own_generator = True
        return self.generator

    def load_seeds(self, seeds: SeedSet, shard: _Shard) -> list[Seed]:
        """The shard's usable seeds; bad ones are counted in ``shard.bad_input``."""
        usable: list[Seed] = []
        for position, seed_file, row, values, detail in seeds.rows(shard.start, shard.stop):
            shard.seeds += 1
            where = f"{seed_file.path} row {row}"
            try:
                if values is None:
                    raise RowRejected(UNREADABLE_ROW, detail)
                usable.append(seed_from_row(values, position=position, file=seed_file.path, row=row, needs=self.needs))
            except RowRejected as exc:
                shard.bad_input[exc.reason] += 1
                self.seed_log(exc.reason, where, exc.detail)
            except Exception as exc:  # one odd row must not end the run; the traceback goes to the debug log
                shard.bad_input[ERROR] += 1
                self.seed_log(ERROR, where, f"{type(exc).__name__}: {exc}")
                logger.debug("seed %s failed", where, exc_info=exc)
        return usable

    def question_requests(self, seeds: list[Seed], shard: _Shard) -> tuple[list[Seed], list[GenerationRequest]]:
        """One question-writing request per seed (the seeds whose request could be built, and the requests)."""
        kept, requests = [], []
        for seed in seeds:
            text = self.template.render(
                {"question": seed.question, "answer": seed.answer, "choices": format_choices(list(seed.choices))}
            )
            try:
                request = GenerationRequest([{"role": "user", "content": text}], list(seed.images))
            except ValueError as exc:  # the template marks a different number of images than the seed has
                shard.bad_input[IMAGE_COUNT_MISMATCH] += 1
                self.seed_log(IMAGE_COUNT_MISMATCH, f"{seed.file} row {seed.row}", str(exc))
                continue
            kept.append(seed)
            requests.append(request)
        return kept, requests

    def build(self, seed: Seed, j: int, question: str) -> dict[str, Any]:
        """The row of question ``j`` of ``seed``."""
        c = self.config
        return build_row(
            data_source=c.source_name,
            question=question,
            images=list(seed.images),
            split="train",
            index=seed.position * c.num_per_seed + j,
            answer="",
            source=seed.source,
            extra_info={
                "seed_file": str(seed.file),
                "seed_row": seed.row,
                "seed_index": seed.index,
                "seed_question": seed.question,
                "strategy": c.strategy,
                "prompt_name": self.template.name,
                "answerability": None,
                "synthesis_step": c.round_step,
            },
        )

    def check_answerability(
        self, candidates: list[tuple[Seed, dict[str, Any]]], shard: _Shard
    ) -> list[tuple[Seed, dict[str, Any]]]:
        """Keep the candidates whose k sampled answers agree enough; record each ratio in the row."""
        c = self.config
        requests = [
            GenerationRequest([{"role": "user", "content": row["prompt"][0]["content"]}], list(seed.images))
            for seed, row in candidates
        ]
        responses = self.get_generator().generate(requests, c.answer_sampling(shard.index))
        kept = []
        for (seed, row), answers in zip(candidates, responses, strict=True):
            ratio = answerability_ratio(answers, style=c.answer_style)
            row["extra_info"]["answerability"] = ratio
            if is_answerable(ratio, c.answerability_threshold):
                kept.append((seed, row))
            else:
                shard.dropped[UNANSWERABLE] += 1
                self.candidate_log(UNANSWERABLE, f"for {seed.file} row {seed.row}", f"majority ratio {ratio:.2f}")
        return kept

    def run_shard(self, seeds: SeedSet, shard: _Shard, bar: tqdm) -> None:
        """Generate, filter and write one shard; its file appears complete or not at all."""
        c = self.config
        self.advanced = 0
        usable, requests = self.question_requests(self.load_seeds(seeds, shard), shard)

        def on_batch(_start: int, outputs: list[list[str]]) -> None:
            bar.update(len(outputs))
            self.advanced += len(outputs)

        outputs: list[list[str]] = []
        if requests:
            outputs = self.get_generator().generate(requests, c.question_sampling(shard.index), on_batch=on_batch)
        if len(outputs) != len(requests):
            raise RuntimeError(f"the generator returned {len(outputs)} results for {len(requests)} requests")
        # Bad seeds never reach the generator, and a generator may not report batches at all.
        bar.update(shard.stop - shard.start - self.advanced)
        self.advanced = shard.stop - shard.start
        candidates: list[tuple[Seed, dict[str, Any]]] = []
        for seed, texts in zip(usable, outputs):
            for j, text in enumerate(texts[: c.num_per_seed]):
                shard.candidates += 1
                verdict = screen(
                    text, seed_question=seed.question, images_key=seed.images_key, seen=self.seen, settings=c.filters
                )
                if not verdict.kept:
                    shard.dropped[verdict.reason] += 1
                    self.candidate_log(verdict.reason, f"for {seed.file} row {seed.row}", repr(str(text)[:120]))
                    continue
                try:
                    candidates.append((seed, self.build(seed, j, verdict.question)))
                except SchemaError as exc:
                    shard.dropped[ERROR] += 1
                    self.candidate_log(ERROR, f"for {seed.file} row {seed.row}", str(exc))
        if candidates and c.answerability_k:
            bar.set_postfix_str("checking answerability", refresh=True)
            candidates = self.check_answerability(candidates, shard)
            bar.set_postfix_str("", refresh=False)
        path = self.out / shard_name(shard.index)
        with RowWriter(path, extra_info_fields=self.writer_fields) as writer:
            for _, row in candidates:
                writer.add(row)
            written = writer.commit()
        if written is None:
            # A shard file left by a run killed before it could record the shard would contradict the manifest.
            path.unlink(missing_ok=True)
        shard.kept = len(candidates)
        shard.file = path.name if written is not None else None

    # ---- whole run

    def totals(self, manifest: Mapping[str, Any], n_shards: int) -> None:
        """Recount the result from the manifest's finished shards."""
        r = self.result
        r.files, r.kept, r.seeds, r.candidates = [], 0, 0, 0
        r.dropped, r.bad_input = Counter(), Counter()
        for key in sorted(manifest["shards"], key=int):
            if int(key) >= n_shards:
                continue
            entry = manifest["shards"][key]
            if entry.get("file"):
                r.files.append(self.out / entry["file"])
            r.kept += int(entry.get("kept", 0))
            r.seeds += int(entry.get("seeds", 0))
            r.candidates += int(entry.get("candidates", 0))
            r.dropped.update(entry.get("dropped", {}))
            r.bad_input.update(entry.get("bad_input", {}))

    def summary(self, seconds: float) -> dict[str, Any]:
        """The manifest's ``summary`` section."""
        r = self.result
        return {
            "complete": r.complete,
            "shards": {"total": r.shards_total, "finished": r.shards_done + r.shards_skipped},
            "seeds": r.seeds,
            "bad_input": dict(sorted(r.bad_input.items())),
            "candidates": r.candidates,
            "kept": r.kept,
            "dropped": dict(sorted(r.dropped.items())),
            "failures": dict(sorted(r.failures.items())),
            "train_files": [str(p) for p in r.files],
            "merged": str(r.merged) if r.merged else None,
            "last_run_seconds": round(seconds, 2),
        }

    def merge(self) -> None:
        """Write every shard's rows into ``train.parquet`` (atomically)."""
        import pyarrow.parquet as pq

        path = self.out / MERGED_NAME
        with RowWriter(path, extra_info_fields=self.writer_fields, batch_size=256) as writer:
            for shard_path in self.result.files:
                for batch in pq.ParquetFile(shard_path).iter_batches(batch_size=256):
                    for row in batch.to_pylist():
                        writer.add(row)
            self.result.merged = writer.commit()

    def run(self) -> SynthesizeResult:
        """Run every unfinished shard under the output directory's lock."""
        start_time = time.perf_counter()
        c, r = self.config, self.result
        self.out.mkdir(parents=True, exist_ok=True)
        with _out_lock(self.out):
            if c.overwrite:
                self.overwrite()
            _remove_stale_temporaries(self.out)
            limit = None if c.max_seeds is None else c.first_seed + c.max_seeds
            seeds = SeedSet(self.seed_paths, limit, r.failures)
            try:
                self._run_shards(seeds, start_time)
            finally:
                seeds.close()
                if self.own_generator:
                    close = getattr(self.generator, "close", None)
                    if close is not None:
                        close()
        _log_summary(r, self.template.name, c.strategy)
        return r

    def _run_shards(self, seeds: SeedSet, start_time: float) -> None:
        """Skip finished shards, run the others in order, record each, merge if asked."""
        c, r = self.config, self.result
        base = c.first_seed
        span = max(0, seeds.length - base)
        n_shards = math.ceil(span / c.shard_size)
        r.shards_total = n_shards
        if not n_shards:
            logger.error("no readable seed rows in %s", ", ".join(map(str, self.seed_paths)))
            return
        manifest = self.load_manifest(self.fingerprint(seeds))
        finished = self.finished_shards(manifest)
        for index in sorted(finished):
            if not finished[index].get("file"):
                continue
            try:
                self.remember_kept(self.out / finished[index]["file"])
            except Exception as exc:  # a damaged shard file is generated again rather than trusted
                logger.warning("shard %d: %s cannot be read (%s); it will be generated again",
                               index, finished[index]["file"], exc)
                del finished[index]
        manifest["shards"] = {str(k): v for k, v in finished.items()}
        r.shards_skipped = sum(1 for index in finished if index < n_shards)
        if r.shards_skipped:
            logger.info("resuming: %d of %d shard(s) already finished in %s", r.shards_skipped, n_shards, self.out)
        if len([i for i in finished if i < n_shards]) < n_shards:
            try:  # load the model before the first shard, so a model that does not load is a usage error
                self.get_generator()
            except (OSError, ValueError) as exc:
                raise UsageError(f"actor_rollout_ref.model.path={c.model} does not load: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
        done_seeds = sum(min(span, (i + 1) * c.shard_size) - i * c.shard_size for i in finished if i < n_shards)
        consecutive_failures = 0
        bar = tqdm(total=span, initial=done_seeds, desc=f"synthesize {c.strategy}", unit="seed",
                   disable=None, dynamic_ncols=True)
        try:
            for index in range(n_shards):
                if index in finished:
                    continue
                shard = _Shard(index, base + index * c.shard_size, min(seeds.length, base + (index + 1) * c.shard_size))
                try:
                    self.run_shard(seeds, shard, bar)
                except KeyboardInterrupt:
                    r.interrupted = True
                    logger.warning("interrupted: shard %d is not written; rerun the command to resume", index)
                    break
                except Exception as exc:  # this shard is lost for now; the shards before it are safe
                    reason = WRITE_ERROR if isinstance(exc, OSError) else GENERATION_ERROR
                    r.failures[reason] += 1
                    consecutive_failures += 1
                    logger.error("shard %d failed (%s); a rerun will retry it", index, reason, exc_info=exc)
                    # The bar counts seeds gone through; the failed shard's are gone through, not kept.
                    bar.update(shard.stop - shard.start - self.advanced)
                    if consecutive_failures >= _MAX_CONSECUTIVE_FAILURES:
                        r.interrupted = True
                        logger.error("%d shards in a row failed: stopping", consecutive_failures)
                        break
                    continue
                consecutive_failures = 0
                manifest["shards"][str(index)] = shard.record()
                r.shards_done += 1
                r.kept_this_run += shard.kept
                self.totals(manifest, n_shards)
                bar.set_postfix(kept=r.kept, refresh=False)
                write_json(self.out / MANIFEST_NAME, {**manifest, "summary": self.summary(0.0)}, default=str)
        finally:
            bar.close()
        self.totals(manifest, n_shards)
        if c.merge:
            if not r.complete:
                unfinished = n_shards - r.shards_done - r.shards_skipped
                logger.warning("merge skipped: %d shard(s) are not finished yet", unfinished)
            elif not r.kept:
                logger.warning("merge skipped: no rows were kept")
            else:
                try:
                    self.merge()
                except OSError as exc:  # the shards are complete and usable on their own
                    r.failures[WRITE_ERROR] += 1
                    logger.error("could not write %s: %s", self.out / MERGED_NAME, exc)
        try:
            write_json(
                self.out / MANIFEST_NAME,
                {**manifest, "summary": self.summary(time.perf_counter() - start_time)},
                default=str,
            )
        except OSError as exc:  # every finished shard is already recorded; only the closing counts are lost
            logger.warning("could not write %s: %s", self.out / MANIFEST_NAME, exc)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in sorted(counter.items())) or "none"


def _log_summary(r: SynthesizeResult, prompt_name: str, strategy: str) -> None:
    state = "done" if r.complete else "interrupted" if r.interrupted else "incomplete"
    logger.info(
        "synthesize %s (%s, prompt %s): %d/%d shard(s) finished (%d skipped as already done)",
        state,
        strategy,
        prompt_name,
        r.shards_done + r.shards_skipped,
        r.shards_total,
        r.shards_skipped,
    )
    logger.info("seed rows: %d, bad input %d (%s)", r.seeds, sum(r.bad_input.values()), _counts(r.bad_input))
    logger.info(
        "questions: generated %d, kept %d, dropped %d (%s)",
        r.candidates,
        r.kept,
        sum(r.dropped.values()),
        _counts(r.dropped),
    )
    if r.failures:
        logger.info("failures: %s", _counts(r.failures))
    if r.merged is not None:
        logger.info("train on it with: data.train_files=%s", r.merged)
    elif r.files:
        logger.info("train on it with: data.train_files=\"[%s]\"", ",".join(str(p) for p in r.files))
    else:
        logger.info("no rows kept: nothing to train on in %s", r.out)


def synthesize(
    config: SynthesizeConfig,
    generator: Generator | None = None,
    generator_factory: Callable[..., Generator] = make_generator,
) -> SynthesizeResult:
    """Run the synthesis described by ``config``; see the module docstring.

    ``generator`` answers every request when given; otherwise ``generator_factory(backend, model, backend_config)``
    builds one, only if some shard still has to be generated.
    """
    return _Run(config, generator, generator_factory).run()


# ------------------------------------------------------------------------------------------------ CLI


USAGE = (
    "usage: python -m verl_ext.data.synthesize config=recipes/synth/in_context.yaml "
    "synth.seeds=[FILE.parquet] synth.out=DIR actor_rollout_ref.model.path=MODEL [key=value ...]"
)
REQUIRED = ("synth.seeds", "synth.out", "actor_rollout_ref.model.path")
_BACKEND_KEYS = ("batch_size", "batch_timeout_s", "min_pixels", "max_pixels")
"""``synth.*`` settings of how requests are sent (:class:`BackendConfig`)."""


def config_from(cfg: Any) -> SynthesizeConfig:
    """The run of a composed synthesis recipe: its ``synth`` section, verl's model path and rollout engine."""
    from omegaconf import OmegaConf

    section = OmegaConf.to_container(cfg.synth, resolve=True)
    known = {f.name for f in dataclasses.fields(SynthesizeConfig)} | {"min_chars", "max_chars", *_BACKEND_KEYS}
    unknown = sorted(set(section) - known - {"model", "backend", "backend_config", "filters"})
    if unknown:
        raise UsageError(f"unknown key synth.{unknown[0]} (verl_ext/config/command/synthesize.yaml lists the settings)")
    seeds = section.pop("seeds")
    seeds = [seeds] if isinstance(seeds, str) else list(seeds or [])
    try:
        # The synthesis bar counts seeds; a second bar per call would only add noise.
        backend_config = BackendConfig(show_progress=False, **{k: section.pop(k) for k in _BACKEND_KEYS})
        filters = FilterSettings(min_chars=section.pop("min_chars"), max_chars=section.pop("max_chars"))
        return SynthesizeConfig(
            seeds=tuple(Path(p) for p in seeds),
            out=Path(section.pop("out")),
            model=str(cfg.actor_rollout_ref.model.path),
            backend=str(cfg.actor_rollout_ref.rollout.name),
            backend_config=backend_config,
            filters=filters,
            **section,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None


def main(argv: Sequence[str] | None = None, generator_factory: Callable[..., Generator] | None = None) -> int:
    """CLI entry point; returns the exit status (0 rows in the output, 1 none, 2 usage error).

    ``generator_factory(backend, model, backend_config)`` replaces the rollout replicas the recipe
    describes (tests, stand-ins).
    """
    from verl_ext.config.compose import CLIError, compose_command, start_command

    argv = start_command(argv, __doc__, USAGE)
    if argv is None:
        return 0
    if argv[:1] == ["--list-prompts"]:
        logger.info("built-in prompt templates (in %s): %s", PROMPT_DIR, ", ".join(available_prompts()))
        return 0
    try:
        cfg = compose_command(argv, USAGE, REQUIRED)
        config = config_from(cfg)
        if generator_factory is None:
            from verl_ext.generation.replicas import ReplicaGenerator

            def generator_factory(backend: str, model: str, backend_config: BackendConfig) -> Generator:
                return ReplicaGenerator(cfg, backend_config)

        result = synthesize(config, generator_factory=generator_factory)
    except (CLIError, UsageError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
