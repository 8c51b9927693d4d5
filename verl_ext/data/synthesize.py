"""Synthesize new training questions from seed rows with the model itself (MM-UPT's data synthesis; docs/data.md).

``in_context`` shows a seed row's image(s), question and answer and asks for a *different* question; ``direct``
shows only the image(s). Seed rows go in shards of ``synth.shard_size``, each written atomically, then recorded in
``OUT/synthesize_manifest.json`` with the run's settings, so a rerun skips finished shards and a rerun with other
settings is refused. Exit status: 0 if the output holds any row, 1 if not, 2 for usage errors. Every setting:
``verl_ext/config/command/synthesize.yaml``.

    python -m verl_ext.data.synthesize config=recipes/synth/in_context.yaml \\
        synth.seeds=[data/geometry3k/train.parquet] synth.out=data/synth/in_context \\
        actor_rollout_ref.model.path=Qwen/Qwen2.5-VL-7B-Instruct synth.num_per_seed=2 synth.answerability_k=10
    python -m verl_ext.data.synthesize config=recipes/synth/direct.yaml synth.seeds=[data/seeds/] \\
        synth.out=data/synth/direct synth.max_seeds=64 actor_rollout_ref.model.path=./my-model \\
        actor_rollout_ref.rollout.name=hf trainer.n_gpus_per_node=1 \\
        actor_rollout_ref.rollout.tensor_model_parallel_size=1
    python -m verl_ext.data.synthesize --list-prompts
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
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

from verl_ext.config.compose import CLIError, command_settings, compose_command, first_line, run_command
from verl_ext.data import prepare
from verl_ext.data.prepare import ReasonLog, RowRejected, answer_text, choice_texts, counts, image_bytes, image_items
from verl_ext.data.schema import IMAGE_PLACEHOLDER, RowWriter, SchemaError, build_row
from verl_ext.data.synth_filters import UNANSWERABLE, FilterSettings, answerability_ratio, image_key, is_answerable
from verl_ext.data.synth_filters import normalize_question, screen, tidy_question
from verl_ext.files import LockHeld, atomic_path, exclusive_lock, write_json
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
GENERATION_ERROR = "generation_error"
"""A shard whose generation failed (counted per shard; a rerun retries it). Seed reasons are prepare's."""

_MAX_CONSECUTIVE_FAILURES = 3  # a failure that repeats shard after shard (e.g. out of memory) is systematic
_SHARD_SEED_STRIDE = 100_003  # HF seeds batch b with seed + b: keep shards' streams apart
_ANSWER_SEED_OFFSET = 50_021
_PROVENANCE = {"seed_file": "string", "seed_row": "int64", "seed_index": "int64", "seed_question": "string",
               "strategy": "string", "prompt_name": "string", "answerability": "float64", "synthesis_step": "int64"}


def extra_info_fields() -> list[tuple[str, Any]]:
    """The provenance fields synthesized rows add to ``extra_info`` (name, Arrow type)."""
    import pyarrow as pa

    return [(name, getattr(pa, arrow_type)()) for name, arrow_type in _PROVENANCE.items()]


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class SynthesisSettings:
    """How questions are written and checked: the settings offline and online synthesis share."""

    strategy: str = "in_context"
    """``in_context`` (image + question + answer) or ``direct`` (image only)."""
    prompt: str | None = None
    """Template name or file path; default ``synth_<strategy>``."""
    num_per_seed: int = 1
    """Questions sampled per seed row."""
    temperature: float = 1.0
    """Sampling temperature of question generation."""
    max_new_tokens: int = 512
    """Longest question completion in tokens (a cut-off completion has no closing marker: unparseable)."""
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


@dataclass(frozen=True, kw_only=True)
class SynthesizeConfig(SynthesisSettings):
    """What to synthesize, from which seeds, with which model."""

    seeds: tuple[Path, ...]
    """Seed parquet files (row layout), or directories whose ``*.parquet`` files are read in name order."""
    out: Path
    """Output directory for the shards, the manifest and (with ``merge``) ``train.parquet``."""
    model: str
    """Model directory or hub name; the same model writes the questions and answers them."""
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
    top_p: float = 1.0
    """Nucleus sampling mass of question generation."""
    top_k: int = -1
    """Top-k of question generation (-1: off)."""
    seed: int | None = 0
    """Sampling seed (None: unseeded); each shard derives its own from it, so shards are reproducible."""
    filters: FilterSettings = field(default_factory=FilterSettings)
    """Length bounds of the text filters."""
    data_source: str | None = None
    """``data_source`` of the rows; default ``verl_ext/synthesized/<strategy>``."""
    merge: bool = False
    """Also write ``train.parquet`` with every shard's rows once all shards are finished."""
    overwrite: bool = False
    """Delete an earlier run's shards and manifest in ``out`` instead of resuming it."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise CLIError("synth.seeds is required")
        if not self.model:
            raise CLIError("actor_rollout_ref.model.path is required")
        for key, value, allowed in (
            ("synth.strategy", self.strategy, STRATEGIES),
            ("actor_rollout_ref.rollout.name", self.backend, BACKENDS),
            ("synth.answer_style", self.answer_style, STYLES),
        ):
            if value not in allowed:
                raise CLIError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        minimum = {"num_per_seed": 1, "shard_size": 1, "max_new_tokens": 1, "answer_max_new_tokens": 1,
                   "max_seeds": 1, "first_seed": 0, "answerability_k": 0}
        for name, low in minimum.items():
            if getattr(self, name) is not None and getattr(self, name) < low:
                raise CLIError(f"synth.{name} must be >= {low}, got {getattr(self, name)}")
        if not 0.0 <= self.answerability_threshold <= 1.0:
            raise CLIError(f"synth.answerability_threshold must be in [0, 1], got {self.answerability_threshold}")
        if self.data_source is not None and not self.data_source.strip():
            raise CLIError("synth.data_source must not be empty")
        try:
            self.sampling(0, answers=True)
        except ValueError as exc:
            raise CLIError(str(exc)) from None

    def sampling(self, shard: int, answers: bool = False) -> SamplingSettings:
        """Sampling of the questions of ``shard`` or, with ``answers``, of its answerability check."""
        seed = None if self.seed is None else self.seed + shard * _SHARD_SEED_STRIDE
        questions = SamplingSettings(n=self.num_per_seed, temperature=self.temperature, top_p=self.top_p,
                                     top_k=self.top_k, max_new_tokens=self.max_new_tokens, seed=seed)
        if not answers:
            return questions
        return dataclasses.replace(
            questions, n=max(1, self.answerability_k), temperature=self.answer_temperature,
            max_new_tokens=self.answer_max_new_tokens, seed=None if seed is None else seed + _ANSWER_SEED_OFFSET,
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


class SeedSet:
    """The rows of the seed files, addressed by one position over all files; row groups are read lazily."""

    def __init__(self, paths: Sequence[Path], max_rows: int | None, failures: Counter) -> None:
        import pyarrow.parquet as pq

        self.files: list[tuple[Path, Any, int, int]] = []
        """``(path, ParquetFile, position of its first row, rows used)`` of each readable file."""
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
                failures[prepare.UNREADABLE_FILE] += 1
                logger.warning("%s: %s: %s", prepare.UNREADABLE_FILE, path, exc)
                continue
            rows = parquet.metadata.num_rows
            rows = rows if max_rows is None else min(rows, max_rows - self.length)
            self.files.append((path, parquet, self.length, rows))
            self.length += rows
        # A shard smaller than a row group reads the group once, not once per shard.
        self.read_group = functools.lru_cache(maxsize=1)(self._read_group)

    @staticmethod
    def _read_group(parquet: Any, group: int) -> tuple[Any, str]:
        try:
            return parquet.read_row_group(group), ""
        except Exception as exc:  # a damaged row group loses its rows, not the file
            return None, f"row group {group}: {type(exc).__name__}: {exc}"

    def rows(self, start: int, stop: int) -> Iterator[tuple[int, Path, int, Any, str]]:
        """``(position, file, row in file, values or None, error detail)`` for positions ``start..stop-1``."""
        for path, parquet, offset, rows in self.files:
            group_start = offset
            for group in range(parquet.num_row_groups):
                group_stop = group_start + parquet.metadata.row_group(group).num_rows
                lo, hi = max(start, group_start), min(stop, group_stop, offset + rows)
                if lo < hi:
                    table, detail = self.read_group(parquet, group)
                    for position in range(lo, hi):
                        # Rows become Python objects one at a time: a row group can hold thousands of images.
                        value = None if table is None else table.slice(position - group_start, 1).to_pylist()[0]
                        yield position, path, position - offset, value, detail
                group_start = group_stop

    def close(self) -> None:
        """Close the file handles."""
        self.read_group.cache_clear()
        for _, parquet, _, _ in self.files:
            parquet.close()


def seed_from_row(
    values: Any, *, position: int, file: Path, row: int, needs: frozenset[str], max_aspect_ratio: float = 200.0
) -> Seed:
    """Turn a seed row into a :class:`Seed`, or raise :class:`RowRejected` with the bad-input reason.

    ``needs`` are the template fields the row must provide (``question``, ``answer``).
    """
    info = values.get("extra_info") or {}
    question = info.get("question")
    if not isinstance(question, str) or not question.strip():
        question = prepare.question_text(values.get("prompt")) or ""
    question = tidy_question(question)
    if "question" in needs and not question:
        raise RowRejected(prepare.MISSING_QUESTION)
    answer = answer_text(info.get("answer")) or answer_text(values.get("reward_model"))
    answer = answer.replace(IMAGE_PLACEHOLDER, " ").strip()
    if "answer" in needs and not answer:
        raise RowRejected(prepare.MISSING_ANSWER, "the prompt template shows the seed's answer")
    items = image_items(values.get("images"))
    if not items:
        raise RowRejected(prepare.MISSING_IMAGE, "no images")
    images = tuple(image_bytes(item, file.parent, max_aspect_ratio) for item in items)
    index = info.get("index")
    return Seed(
        position=position,
        file=file,
        row=row,
        index=index if isinstance(index, int) else row,
        source=info.get("source") or str(file),
        question=question,
        answer=answer,
        choices=tuple(c.replace(IMAGE_PLACEHOLDER, " ") for c in choice_texts(info.get("choices"))),
        images=images,
        images_key=image_key(images),
    )


def seed_prompt(template: PromptTemplate, seed: Seed) -> str:
    """The user text that asks for a question about ``seed`` (its images go with the request)."""
    return template.render({"question": seed.question, "answer": seed.answer, "choices": format_choices(seed.choices)})


def _resolve_seed_paths(values: Sequence[Path]) -> list[Path]:
    paths: list[Path] = []
    for value in values:
        path = Path(value).expanduser().absolute()
        if path.is_dir():
            found = sorted(p for p in path.glob("*.parquet") if p.is_file())
            if not found:
                raise CLIError(f"no .parquet files in seed directory {value}")
            paths.extend(found)
        elif path.suffix.lower() != ".parquet":
            raise CLIError(f"seed files must be .parquet row files (verl_ext.data.prepare output): {value}")
        else:
            paths.append(path)  # a missing file is counted as unreadable, like any other unreadable file
    return paths


def _check_template(template: PromptTemplate, strategy: str) -> frozenset[str]:
    """The seed fields the template needs; raises CLIError when it does not fit the strategy."""
    fields = template.fields
    if strategy == "direct" and fields:
        raise CLIError(f"prompt {template.name} uses {', '.join(sorted(fields))}, but direct synthesis shows only "
                         "the image")
    if strategy == "in_context" and "question" not in fields:
        raise CLIError(f"prompt {template.name} has no {{{{question}}}}: in-context synthesis shows the seed "
                         "question")
    return fields


# ------------------------------------------------------------------------------------------------ run


@dataclass
class _Shard:
    """The seed range and outcome of one shard."""

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
        return {"file": self.file, "seed_range": [self.start, self.stop], "seeds": self.seeds,
                "candidates": self.candidates, "kept": self.kept, "dropped": self.dropped, "bad_input": self.bad_input}


class _Run:
    """One invocation: plans the shards, skips finished ones, runs the rest."""

    def __init__(self, config: SynthesizeConfig, generator: Generator | None, factory: Callable[..., Generator]):
        self.config = config
        self.out = config.out.expanduser().absolute()
        try:
            self.template = load_prompt(config.prompt or f"synth_{config.strategy}")
        except PromptError as exc:
            raise CLIError(str(exc)) from None
        self.needs = _check_template(self.template, config.strategy)
        # Only for the real loader: tests and callers with their own factory may name models freely.
        problem = model_path_problem(config.model) if generator is None and factory is make_generator else None
        if problem:
            raise CLIError(f"actor_rollout_ref.model.path: {problem}")
        self.seed_paths = _resolve_seed_paths(config.seeds)
        self.generator, self.factory, self.own_generator = generator, factory, False
        self.data_source = config.data_source or f"verl_ext/synthesized/{config.strategy}"
        self.result = SynthesizeResult(out=self.out)
        self.seen: set[tuple[str, str]] = set()
        self.seed_log = ReasonLog(logger, logging.WARNING, "seed")
        self.candidate_log = ReasonLog(logger, logging.INFO, "question")

    # ---- settings and manifest

    def fingerprint(self, seeds: SeedSet) -> dict[str, Any]:
        """The settings that decide the output; a resumed run must match them."""
        c = self.config
        return {
            **{name: getattr(c, name) for name in ("strategy", "model", "num_per_seed", "shard_size", "first_seed",
                                                    "round_step")},
            "prompt": {"name": self.template.name, "digest": self.template.digest},
            "seeds": [[str(path), rows] for path, _, _, rows in seeds.files],
            "sampling": dataclasses.asdict(c.sampling(0)),
            "filters": dataclasses.asdict(c.filters),
            "answerability": {
                "k": c.answerability_k,
                "threshold": c.answerability_threshold,
                "style": c.answer_style,
                "sampling": dataclasses.asdict(c.sampling(0, answers=True)) if c.answerability_k else None,
            },
            "data_source": self.data_source,
        }

    def load_manifest(self, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest of an earlier run in ``out`` (or a fresh one); CLIError if its settings differ."""
        path = self.out / MANIFEST_NAME
        # Round-trip through JSON so tuples and lists compare equal.
        expected = json.loads(json.dumps(fingerprint, default=str))
        if not path.exists():
            return {"version": MANIFEST_VERSION, "settings": expected, "shards": {}}
        try:
            manifest = json.loads(path.read_text())
            settings, shards = manifest["settings"], dict(manifest["shards"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CLIError(f"{path} cannot be read ({exc}); use synth.overwrite=true or another synth.out") from None
        if settings != expected:
            differ = sorted(k for k in set(settings) | set(expected) if settings.get(k) != expected.get(k))
            raise CLIError(
                f"{self.out} holds a synthesis run with other settings (differs in: {', '.join(differ)}); "
                "use another synth.out, or synth.overwrite=true to start over"
            )
        return {"version": MANIFEST_VERSION, "settings": settings, "shards": shards}

    def finished_shards(self, shards: Mapping[str, Any]) -> dict[str, Any]:
        """The recorded shards whose file (if they kept rows) is still there and readable; their questions go into
        the duplicate filter's memory. A missing or damaged file is generated again rather than trusted."""
        import pyarrow.parquet as pq

        finished = {}
        for key, entry in shards.items():
            keys = set()
            try:
                if entry.get("file"):
                    parquet = pq.ParquetFile(self.out / entry["file"])
                    for batch in parquet.iter_batches(columns=["images", "extra_info"], batch_size=256):
                        for row in batch.to_pylist():
                            images = image_key([image["bytes"] for image in row["images"]])
                            keys.add((images, normalize_question(row["extra_info"]["question"])))
            except Exception as exc:
                logger.warning("shard %s: %s cannot be read (%s); it will be generated again", key, entry["file"], exc)
                continue
            self.seen |= keys
            finished[key] = entry
        return finished

    def overwrite(self) -> None:
        """Delete an earlier run's shards, manifest and merged file."""
        paths = [p for p in [*self.out.glob("shard-*.parquet"), self.out / MANIFEST_NAME, self.out / MERGED_NAME]
                 if p.is_file()]
        for path in paths:
            path.unlink()
        logger.info("overwrite: removed %d file(s) of an earlier run from %s", len(paths), self.out)

    # ---- one shard

    def question_requests(self, seeds: SeedSet, shard: _Shard) -> tuple[list[Seed], list[GenerationRequest]]:
        """The shard's usable seeds and their question-writing requests; bad ones go to ``shard.bad_input``."""
        usable, requests = [], []
        for position, path, row, values, detail in seeds.rows(shard.start, shard.stop):
            shard.seeds += 1
            where = f"{path} row {row}"
            try:
                if values is None:
                    raise RowRejected(prepare.UNREADABLE_ROW, detail)
                seed = seed_from_row(values, position=position, file=path, row=row, needs=self.needs)
                messages = [{"role": "user", "content": seed_prompt(self.template, seed)}]
                try:
                    requests.append(GenerationRequest(messages, list(seed.images)))
                except ValueError as exc:  # the template marks a different number of images than the seed has
                    raise RowRejected(prepare.IMAGE_COUNT_MISMATCH, str(exc)) from None
                usable.append(seed)
            except RowRejected as exc:
                shard.bad_input[exc.reason] += 1
                self.seed_log(exc.reason, where, exc.detail)
            except Exception as exc:  # one odd row must not end the run; the traceback goes to the debug log
                shard.bad_input[prepare.ERROR] += 1
                self.seed_log(prepare.ERROR, where, f"{type(exc).__name__}: {exc}")
                logger.debug("seed %s failed", where, exc_info=exc)
        return usable, requests

    def build(self, seed: Seed, j: int, question: str) -> dict[str, Any]:
        """The row of question ``j`` of ``seed``."""
        c = self.config
        provenance = {"seed_file": str(seed.file), "seed_row": seed.row, "seed_index": seed.index,
                      "seed_question": seed.question, "strategy": c.strategy, "prompt_name": self.template.name,
                      "answerability": None, "synthesis_step": c.round_step}
        return build_row(data_source=self.data_source, question=question, images=list(seed.images), split="train",
                         index=seed.position * c.num_per_seed + j, answer="", source=seed.source,
                         extra_info=provenance)

    def check_answerability(self, candidates: list[tuple[Seed, dict]], shard: _Shard) -> list[tuple[Seed, dict]]:
        """Keep the candidates whose k sampled answers agree enough; record each ratio in the row."""
        c = self.config
        requests = [GenerationRequest([{"role": "user", "content": row["prompt"][0]["content"]}], list(seed.images))
                    for seed, row in candidates]
        responses = self.generator.generate(requests, c.sampling(shard.index, answers=True))
        kept = []
        for (seed, row), answers in zip(candidates, responses, strict=True):
            ratio = row["extra_info"]["answerability"] = answerability_ratio(answers, style=c.answer_style)
            if is_answerable(ratio, c.answerability_threshold):
                kept.append((seed, row))
            else:
                shard.dropped[UNANSWERABLE] += 1
                self.candidate_log(UNANSWERABLE, f"for {seed.file} row {seed.row}", f"majority ratio {ratio:.2f}")
        return kept

    def run_shard(self, seeds: SeedSet, shard: _Shard, bar: tqdm) -> None:
        """Generate, filter and write one shard; its file appears complete or not at all."""
        c = self.config
        usable, requests = self.question_requests(seeds, shard)
        outputs: list[list[str]] = []
        if requests:
            outputs = self.generator.generate(
                requests, c.sampling(shard.index), on_batch=lambda _start, texts: bar.update(len(texts))
            )
        candidates: list[tuple[Seed, dict[str, Any]]] = []
        for seed, texts in zip(usable, outputs, strict=True):  # too few results: a generation error
            for j, text in enumerate(texts[: c.num_per_seed]):
                shard.candidates += 1
                verdict = screen(
                    text, seed_question=seed.question, images_key=seed.images_key, seen=self.seen, settings=c.filters
                )
                where = f"for {seed.file} row {seed.row}"
                if not verdict.kept:
                    shard.dropped[verdict.reason] += 1
                    self.candidate_log(verdict.reason, where, repr(str(text)[:120]))
                    continue
                try:
                    candidates.append((seed, self.build(seed, j, verdict.question)))
                except SchemaError as exc:
                    shard.dropped[prepare.ERROR] += 1
                    self.candidate_log(prepare.ERROR, where, str(exc))
        if candidates and c.answerability_k:
            bar.set_postfix_str("checking answerability", refresh=True)
            candidates = self.check_answerability(candidates, shard)
            bar.set_postfix_str("", refresh=False)
        path = self.out / f"shard-{shard.index:05d}.parquet"
        with RowWriter(path, extra_info_fields=extra_info_fields()) as writer:
            for _, row in candidates:
                writer.add(row)
            shard.file = writer.commit() and path.name
        if shard.file is None:
            # A shard file left by a run killed before it could record the shard would contradict the manifest.
            path.unlink(missing_ok=True)
        shard.kept = len(candidates)

    # ---- whole run

    def totals(self, shards: Mapping[str, Any]) -> None:
        """Recount the result from the manifest's finished shards."""
        r = self.result
        entries = [shards[key] for key in sorted(shards, key=int)]
        r.files = [self.out / entry["file"] for entry in entries if entry.get("file")]
        for name in ("kept", "seeds", "candidates"):
            setattr(r, name, sum(int(entry.get(name, 0)) for entry in entries))
        r.dropped = sum((Counter(entry.get("dropped", {})) for entry in entries), Counter())
        r.bad_input = sum((Counter(entry.get("bad_input", {})) for entry in entries), Counter())

    def write_manifest(self, manifest: Mapping[str, Any], seconds: float) -> None:
        """The manifest with its ``summary`` section."""
        r = self.result
        names = ("complete", "seeds", "bad_input", "candidates", "kept", "dropped", "failures", "merged")
        summary = {name: getattr(r, name) for name in names}  # JSON writes Counters as objects, Paths as strings
        summary.update(shards={"total": r.shards_total, "finished": r.shards_done + r.shards_skipped},
                       train_files=[str(p) for p in r.files], last_run_seconds=round(seconds, 2))
        write_json(self.out / MANIFEST_NAME, {**manifest, "summary": summary}, default=str)

    def merge(self) -> None:
        """Write every shard's rows into ``train.parquet`` (atomically)."""
        import pyarrow.parquet as pq

        files, path = self.result.files, self.out / MERGED_NAME
        with atomic_path(path) as tmp, pq.ParquetWriter(tmp, pq.read_schema(files[0])) as writer:
            for shard_path in files:  # one shard in memory at a time
                writer.write_table(pq.read_table(shard_path))
        self.result.merged = path

    def run(self) -> SynthesizeResult:
        """Run every unfinished shard under the output directory's lock."""
        start_time = time.perf_counter()
        c, r = self.config, self.result
        self.out.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            try:  # two runs must not interleave shards in one output directory
                stack.enter_context(exclusive_lock(self.out / LOCK_NAME, blocking=False))
            except LockHeld:
                raise CLIError(f"another synthesis run is writing to {self.out}") from None
            if c.overwrite:
                self.overwrite()
            # A killed run (SIGKILL, power loss) cannot clean up after itself; under the lock nobody else writes here.
            stale = [p for p in self.out.glob(".*.tmp-*") if p.is_file()]
            for path in stale:
                path.unlink(missing_ok=True)
            if stale:
                logger.info("removed %d temporary file(s) left by an interrupted run", len(stale))
            seeds = SeedSet(self.seed_paths, None if c.max_seeds is None else c.first_seed + c.max_seeds, r.failures)
            try:
                self.run_shards(seeds, start_time)
            finally:
                seeds.close()
                if self.own_generator and hasattr(self.generator, "close"):
                    self.generator.close()
        self.log_summary()
        return r

    def run_shards(self, seeds: SeedSet, start_time: float) -> None:
        """Skip finished shards, run the others in order, record each, merge if asked."""
        c, r = self.config, self.result
        span = max(0, seeds.length - c.first_seed)
        r.shards_total = n_shards = math.ceil(span / c.shard_size)
        if not n_shards:
            logger.error("no readable seed rows in %s", ", ".join(map(str, self.seed_paths)))
            return
        manifest = self.load_manifest(self.fingerprint(seeds))
        # The fingerprint fixes the seed rows and the shard size, so recorded shards are all below n_shards.
        manifest["shards"] = self.finished_shards(manifest["shards"])
        finished = {int(key) for key in manifest["shards"]}
        r.shards_skipped = len(finished)
        if finished:
            logger.info("resuming: %d of %d shard(s) already finished in %s", len(finished), n_shards, self.out)
        if len(finished) < n_shards and self.generator is None:
            try:  # before the first shard, so a model that does not load is a usage error; a finished run loads none
                self.generator, self.own_generator = self.factory(c.backend, c.model, c.backend_config), True
            except (OSError, ValueError) as exc:
                raise CLIError(f"actor_rollout_ref.model.path={c.model} does not load: {first_line(exc)}") from None
        done_seeds = sum(min(span, (i + 1) * c.shard_size) - i * c.shard_size for i in finished)
        consecutive_failures = 0
        with tqdm(total=span, initial=done_seeds, desc=f"synthesize {c.strategy}", unit="seed", disable=None,
                  dynamic_ncols=True) as bar:
            for index in sorted(set(range(n_shards)) - finished):
                start = c.first_seed + index * c.shard_size
                shard = _Shard(index, start, min(seeds.length, start + c.shard_size))
                bar_stop = bar.n + shard.stop - shard.start  # bad seeds never reach the generator's batches
                try:
                    self.run_shard(seeds, shard, bar)
                except KeyboardInterrupt:
                    r.interrupted = True
                    logger.warning("interrupted: shard %d is not written; rerun the command to resume", index)
                    break
                except Exception as exc:  # this shard is lost for now; the shards before it are safe
                    reason = prepare.WRITE_ERROR if isinstance(exc, OSError) else GENERATION_ERROR
                    r.failures[reason] += 1
                    consecutive_failures += 1
                    logger.error("shard %d failed (%s); a rerun will retry it", index, reason, exc_info=exc)
                    if consecutive_failures >= _MAX_CONSECUTIVE_FAILURES:
                        r.interrupted = True
                        logger.error("%d shards in a row failed: stopping", consecutive_failures)
                        break
                    continue
                finally:  # the bar counts seeds gone through, kept or not
                    bar.update(bar_stop - bar.n)
                consecutive_failures = 0
                manifest["shards"][str(index)] = shard.record()
                r.shards_done += 1
                r.kept_this_run += shard.kept
                self.totals(manifest["shards"])
                bar.set_postfix(kept=r.kept, refresh=False)
                self.write_manifest(manifest, 0.0)
        self.totals(manifest["shards"])
        if c.merge and not (r.complete and r.kept):
            logger.warning("merge skipped: %s", "no rows were kept" if r.complete else
                           f"{n_shards - r.shards_done - r.shards_skipped} shard(s) are not finished yet")
        elif c.merge:
            try:
                self.merge()
            except OSError as exc:  # the shards are complete and usable on their own
                r.failures[prepare.WRITE_ERROR] += 1
                logger.error("could not write %s: %s", self.out / MERGED_NAME, exc)
        try:
            self.write_manifest(manifest, time.perf_counter() - start_time)
        except OSError as exc:  # every finished shard is already recorded; only the closing counts are lost
            logger.warning("could not write %s: %s", self.out / MANIFEST_NAME, exc)

    def log_summary(self) -> None:
        """The closing log lines: counts per reason, and what to train on."""
        r = self.result
        state = "done" if r.complete else "interrupted" if r.interrupted else "incomplete"
        logger.info("synthesize %s (%s, prompt %s): %d/%d shard(s) finished (%d skipped as already done)", state,
                    self.config.strategy, self.template.name, r.shards_done + r.shards_skipped, r.shards_total,
                    r.shards_skipped)
        logger.info("seed rows: %d, bad input %d (%s)", r.seeds, r.bad_input.total(), counts(r.bad_input))
        logger.info("questions: generated %d, kept %d, dropped %d (%s)", r.candidates, r.kept, r.dropped.total(),
                    counts(r.dropped))
        if r.failures:
            logger.info("failures: %s", counts(r.failures))
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
    try:
        # The synthesis bar counts seeds; a second bar per call would only add noise.
        backend = (functools.partial(BackendConfig, show_progress=False), _BACKEND_KEYS)
        settings = command_settings(cfg, "synth", SynthesizeConfig, "synthesize", backend_config=backend,
                                    filters=(FilterSettings, ("min_chars", "max_chars")))
        seeds, out = settings.pop("seeds"), settings.pop("out")
        seeds = [seeds] if isinstance(seeds, str) else list(seeds or [])
        return SynthesizeConfig(seeds=tuple(Path(p) for p in seeds), out=Path(out), **settings)
    except (ValueError, TypeError) as exc:
        raise CLIError(first_line(exc)) from None


def main(argv: Sequence[str] | None = None, generator_factory: Callable[..., Generator] | None = None) -> int:
    """CLI entry point; returns the exit status (0 rows in the output, 1 none, 2 usage error).

    ``generator_factory(backend, model, backend_config)`` replaces the rollout replicas the recipe
    describes (tests, stand-ins).
    """

    def command(argv: list[str]) -> int:
        if argv[:1] == ["--list-prompts"]:
            logger.info("built-in prompt templates (in %s): %s", PROMPT_DIR, ", ".join(available_prompts()))
            return 0
        cfg = compose_command(argv, USAGE, REQUIRED)
        factory = generator_factory
        if factory is None:
            from verl_ext.generation.replicas import ReplicaGenerator

            def factory(backend: str, model: str, backend_config: BackendConfig) -> Generator:
                return ReplicaGenerator(cfg, backend_config)

        return synthesize(config_from(cfg), generator_factory=factory).exit_code

    return run_command(argv, __doc__, USAGE, command)


if __name__ == "__main__":
    sys.exit(main())
