"""``python -m verl_ext.eval``: evaluate a model on MathVision, MathVerse, MathVista and We-Math.

The recipe composes verl's ``ppo_trainer`` (model, rollout engine, cluster) with every ``eval.*`` setting
(``verl_ext/config/command/evaluate.yaml``); ``key=value`` overrides follow::

    python -m verl_ext.eval config=recipes/eval/paper.yaml actor_rollout_ref.model.path=Qwen/Qwen2.5-VL-7B-Instruct \\
        eval.output_dir=outputs/eval/qwen7b
    python -m verl_ext.eval config=recipes/eval/paper.yaml actor_rollout_ref.model.path=./my-model \\
        eval.benchmarks=[mathvista] eval.max_samples=50 actor_rollout_ref.rollout.name=hf trainer.n_gpus_per_node=1

Writes ``samples.jsonl`` (fsync'ed after every batch; a rerun skips the questions answered), ``results.json``,
``report.md``, ``accuracy.png`` and ``run.json`` (a rerun with another model or protocol is refused).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from verl_ext.config.compose import CLIError, command_settings, compose_command, first_line, run_command
from verl_ext.eval.benchmarks import BENCHMARKS, Sample, load_benchmark, parse_benchmarks
from verl_ext.eval.grading import JUDGE_MODES, ApiJudge, GeneratorJudge, Grade, grade_batch, load_judge_prompt
from verl_ext.eval.prompts import EvalProtocol, build_request
from verl_ext.eval.report import (
    DEFAULT_REFERENCE,
    PAPER_TABLE1,
    TABLE_BENCHMARKS,
    markdown_report,
    plot_accuracy,
    summarize,
)
from verl_ext.files import atomic_path, write_json
from verl_ext.generation.base import BackendConfig, BatchedGenerator
from verl_ext.generation.factory import BACKENDS, make_generator
from verl_ext.voting.settings import check_one_of

logger = logging.getLogger("verl_ext.eval")

SAMPLES_FILE = "samples.jsonl"
RUN_FILE = "run.json"
JUDGES = ("none", "api", "local")

GeneratorFactory = Callable[..., BatchedGenerator]


@dataclass
class EvalConfig:
    """One evaluation run."""

    model: str
    """Model directory or hub name."""
    output_dir: Path
    """Where samples.jsonl, results.json, report.md, accuracy.png and run.json go."""
    benchmarks: list[str] = field(default_factory=lambda: list(TABLE_BENCHMARKS))
    """Benchmarks to run, in order."""
    splits: dict[str, str] = field(default_factory=dict)
    """Split per benchmark where it differs from the paper's (e.g. ``mathvision=testmini``)."""
    data_dir: Optional[Path] = None
    """Read benchmarks from local files in their hub schema instead of the hub."""
    cache_dir: Optional[str] = None
    """``datasets`` cache directory (None: its default)."""
    max_samples: Optional[int] = None
    """Evaluate only the first N questions of each benchmark."""
    backend: str = "auto"
    """Generation backend: auto, hf or vllm."""
    backend_config: BackendConfig = field(default_factory=BackendConfig)
    """Batching, dtype, device and vLLM engine settings (pixel bounds come from ``protocol``)."""
    protocol: EvalProtocol = field(default_factory=EvalProtocol)
    """Prompting and sampling."""
    judge: str = "none"
    """LLM judge: none, api (OpenAI-compatible endpoint) or local (a model through a generation backend)."""
    judge_model: Optional[str] = None
    """Judge model: the endpoint's model name (api) or a model path (local)."""
    judge_url: str = "https://api.openai.com/v1"
    """Base URL of the judge endpoint (``/chat/completions`` is appended)."""
    judge_api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the judge endpoint's key (unset: no Authorization header)."""
    judge_mode: str = "fallback"
    """fallback: the judge reviews only responses the rules mark wrong; always: it grades every response."""
    judge_prompt: Optional[Path] = None
    """Judge prompt template (None: verl_ext/eval/judge_prompt.txt)."""
    judge_max_new_tokens: int = 1024
    """Longest judge reply in tokens."""
    label: Optional[str] = None
    """Name of our row in the report (None: the model directory's name)."""
    compare_to: str = DEFAULT_REFERENCE
    """Paper row our differences are taken against."""
    plot: bool = True
    """Draw accuracy.png (needs matplotlib)."""

    def __post_init__(self) -> None:
        # The model path itself is checked where the recipe is composed (config.compose.compose_command).
        self.output_dir = Path(self.output_dir)
        self.data_dir, self.judge_prompt = (None if p is None else Path(p) for p in (self.data_dir, self.judge_prompt))
        for name, value, choices in (
            ("actor_rollout_ref.rollout.name", self.backend, BACKENDS),
            ("eval.judge", self.judge, JUDGES),
            ("eval.judge_mode", self.judge_mode, JUDGE_MODES),
            ("eval.compare_to", self.compare_to, tuple(PAPER_TABLE1)),
        ):
            check_one_of(name, value, choices)
        if self.judge != "none" and not self.judge_model:
            raise ValueError(f"eval.judge={self.judge} needs eval.judge_model")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError("eval.max_samples must be >= 1")
        if self.protocol.n < 1:
            raise ValueError(f"eval.n must be >= 1 (responses per question); got {self.protocol.n}")
        if self.protocol.temperature < 0:
            raise ValueError(f"eval.temperature must be >= 0 (0: greedy); got {self.protocol.temperature}")
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise ValueError(f"eval.data_dir {self.data_dir}: no such directory")
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise ValueError(f"eval.output_dir {self.output_dir} is a file, not a directory")
        probe = next(p for p in (self.output_dir, *self.output_dir.parents) if p.exists())  # the nearest that exists
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"eval.output_dir {self.output_dir}: {probe} is not writable")

    def split_of(self, benchmark: str) -> str:
        """The split evaluated for ``benchmark``."""
        return self.splits.get(benchmark, BENCHMARKS[benchmark].split)

    def run_fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run that wrote the JSONL."""
        return {"model": self.model, "protocol": dataclasses.asdict(self.protocol)}


# ------------------------------------------------------------------------------------------ JSONL store


def _key(benchmark: str, split: Any, prompt_id: Any) -> tuple[str, str, str]:
    return benchmark, str(split), str(prompt_id)


# The keys resume and the report read, with their types (response_index may be absent).
_RECORD_TYPES = {"benchmark": str, "prompt_id": (str, int), "correct": bool, "response": str}


class ResultStore:
    """The append-only JSONL of graded responses, durable after every batch."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        # A run killed mid-write can leave a partial last line; appending after it would glue the
        # next record onto it, so cut the file back to its last complete line.
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                logger.warning("%s ends in a partial line (%d bytes); dropping it", self.path, len(data) - keep)
                handle.truncate(keep)

    def load(self) -> list[dict[str, Any]]:
        """Every record written so far; lines not written by this program are skipped with a warning."""
        if not self.path.exists():
            return []
        records = []
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    record = None
                well_formed = isinstance(record, dict) and isinstance(record.get("response_index", 0), int)
                if well_formed and all(isinstance(record.get(k), t) for k, t in _RECORD_TYPES.items()):
                    records.append(record)
                else:
                    what = "not JSON text" if record is None else "not a sample record"
                    logger.warning("%s:%d is %s; ignored (its question is generated again)", self.path, number, what)
        return records

    def finished(self, n: int) -> set[tuple[str, str, str]]:
        """``(benchmark, split, prompt_id)`` of the prompts with all ``n`` responses on disk."""
        seen: dict[tuple[str, str, str], set[int]] = {}
        for r in self.load():
            seen.setdefault(_key(r["benchmark"], r.get("split"), r["prompt_id"]), set()).add(r.get("response_index", 0))
        return {key for key, indices in seen.items() if set(range(n)) <= indices}

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Write ``records`` and force them to disk before returning."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())


# ------------------------------------------------------------------------------------------ run


def _check_run_file(config: EvalConfig) -> bool:
    """Refuse an output directory holding a run with other settings; True if it holds this run's run.json."""
    path = config.output_dir / RUN_FILE
    if not path.exists():
        return False
    try:
        found = json.loads(path.read_text(encoding="utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        if (config.output_dir / SAMPLES_FILE).exists():
            raise CLIError(
                f"{path} is unreadable, so the settings of {config.output_dir / SAMPLES_FILE} are unknown: "
                "set another eval.output_dir (or delete the folder)"
            ) from None
        logger.warning("%s is unreadable; it is written again", path)
        return False
    if found != config.run_fingerprint():
        raise CLIError(
            f"{config.output_dir} holds a run with other settings ({path}: {json.dumps(found, sort_keys=True)[:200]}); "
            "resuming would mix them: set another eval.output_dir"
        )
    return True


def _record(sample: Sample, split: str, index: int, response: str, grade: Grade) -> dict[str, Any]:
    return {
        "benchmark": sample.benchmark,
        "split": split,
        "prompt_id": sample.prompt_id,
        "response_index": index,
        "category": sample.category,
        "answer_type": sample.answer_type,
        "answer": sample.reference(),
        "response": response,
        **dataclasses.asdict(grade),  # extracted, correct, rule_correct, judge
        "graded_by": grade.method,
        "meta": sample.meta,
    }


def _build_judge(
    config: EvalConfig, generator: BatchedGenerator, factory: GeneratorFactory
) -> Optional[ApiJudge | GeneratorJudge]:
    if config.judge == "none":
        return None
    template = load_judge_prompt(config.judge_prompt)
    if config.judge == "api":
        key = os.environ.get(config.judge_api_key_env) or None
        tokens = config.judge_max_new_tokens
        return ApiJudge(config.judge_model, config.judge_url, api_key=key, prompt_template=template, max_tokens=tokens)
    shared = config.judge_model == config.model
    if not shared:
        backend = dataclasses.replace(config.backend_config, min_pixels=None, max_pixels=None, show_progress=False)
        generator = factory(config.backend, config.judge_model, backend)
    return GeneratorJudge(
        generator, prompt_template=template, max_new_tokens=config.judge_max_new_tokens, owns_generator=not shared
    )


def run(config: EvalConfig, generator_factory: GeneratorFactory = make_generator) -> dict[str, Any]:
    """Generate the missing responses, grade them, and write the results, report and chart."""
    has_run_file = _check_run_file(config)
    if config.plot and importlib.util.find_spec("matplotlib") is None:
        logger.warning("matplotlib is not installed: accuracy.png will be skipped (pip install matplotlib)")
    samples: dict[tuple[str, str, str], tuple[Sample, str]] = {}  # by _key
    for name in config.benchmarks:
        split = config.split_of(name)
        try:
            loaded = load_benchmark(
                name, split=split, data_dir=config.data_dir, max_samples=config.max_samples, cache_dir=config.cache_dir
            )
        except (FileNotFoundError, ValueError) as err:  # datasets: unknown split, missing files
            raise CLIError(f"{name} split {split!r}: {first_line(err)}") from None
        samples.update({_key(s.benchmark, split, s.prompt_id): (s, split) for s in loaded})
    store = ResultStore(config.output_dir / SAMPLES_FILE)
    done = store.finished(config.protocol.n)
    pending = [question for key, question in samples.items() if key not in done]
    skipped = len(samples) - len(pending)
    logger.info("%d questions: %d already answered, %d to generate", len(samples), skipped, len(pending))

    if pending:
        pixels = {"min_pixels": config.protocol.min_pixels, "max_pixels": config.protocol.max_pixels}
        backend_config = dataclasses.replace(config.backend_config, **pixels)
        try:
            generator = generator_factory(config.backend, config.model, backend_config)
        except (OSError, ValueError) as err:  # not a model directory, unknown architecture
            raise CLIError(f"actor_rollout_ref.model.path={config.model} does not load: {first_line(err)}") from None
    if not has_run_file:  # once the data and the model have loaded: a failed first try never blocks the next
        write_json(config.output_dir / RUN_FILE, {
            "fingerprint": config.run_fingerprint(),
            "backend": config.backend,
            "backend_config": dataclasses.asdict(config.backend_config),
            "judge": {"kind": config.judge, "model": config.judge_model, "mode": config.judge_mode},
        })
    if pending:
        judge = None
        try:
            judge = _build_judge(config, generator, generator_factory)

            def save(start: int, outputs: list[list[str]]) -> None:
                answered = zip(pending[start : start + len(outputs)], outputs)
                batch = [(s, split, k, text) for (s, split), texts in answered for k, text in enumerate(texts)]
                grades = grade_batch([(s, text) for s, _, _, text in batch], judge, config.judge_mode)
                store.append([_record(*entry, grade) for entry, grade in zip(batch, grades)])

            requests = [build_request(s, config.protocol) for s, _ in pending]
            generator.generate(requests, config.protocol.sampling(), on_batch=save)
        finally:
            # The judge first: the policy's generator may own the Ray session the judge's replicas live in.
            if judge is not None:
                judge.close()
            generator.close()

    summary = summarize(r for r in store.load() if _key(r["benchmark"], r.get("split"), r["prompt_id"]) in samples)
    return {"generated": len(pending), "skipped": skipped, "summary": summary, **write_outputs(config, summary)}


def write_outputs(config: EvalConfig, summary: dict[str, Any]) -> dict[str, Optional[Path]]:
    """results.json, report.md and (if matplotlib is there) accuracy.png."""
    label = config.label or Path(config.model.rstrip("/")).name or config.model
    results_path = config.output_dir / "results.json"
    write_json(results_path, {"model": config.model, "label": label, "benchmarks": summary})
    protocol = dataclasses.asdict(config.protocol)
    header = {
        "model": config.model,
        "protocol": ", ".join(f"{k}={v!r}" for k, v in protocol.items() if k != "system_prompt"),
        "system prompt": repr(config.protocol.system_prompt),
        "judge": "none" if config.judge == "none" else f"{config.judge} {config.judge_model} ({config.judge_mode})",
    }
    if config.max_samples is not None:
        header["max samples per benchmark"] = config.max_samples
    report_path = config.output_dir / "report.md"
    report = markdown_report(summary, label=label, reference=config.compare_to, header=header)
    with atomic_path(report_path) as tmp:  # a reader never sees half a report
        tmp.write_text(report, encoding="utf-8")
    chart_path: Optional[Path] = None
    if config.plot and summary:
        try:
            chart_path = plot_accuracy(summary, config.output_dir / "accuracy.png", label=label)
        except ImportError as err:
            logger.error("%s", err)
    for name, result in summary.items():
        logger.info("%s: %.2f%% over %d questions", name, result["accuracy"], result["n_prompts"])
    logger.info("report: %s", report_path)
    return {"results": results_path, "report": report_path, "chart": chart_path}


# ------------------------------------------------------------------------------------------ command line


USAGE = "usage: python -m verl_ext.eval config=recipes/eval/paper.yaml actor_rollout_ref.model.path=MODEL [key=value ...]"
_PROTOCOL_KEYS = tuple(f.name for f in dataclasses.fields(EvalProtocol))
_BACKEND_KEYS = ("batch_size", "batch_timeout_s", "show_progress")
"""``eval.*`` settings of how requests are sent (:class:`BackendConfig`; the pixel bounds are the protocol's)."""


def config_from(cfg: Any) -> EvalConfig:
    """The run of a composed evaluation recipe: its ``eval`` section, verl's model path and rollout engine."""
    settings = command_settings(cfg, "eval", EvalConfig, "evaluate", backend_config=(BackendConfig, _BACKEND_KEYS),
                                protocol=(EvalProtocol, _PROTOCOL_KEYS))
    model, benchmarks = settings["model"], settings.pop("benchmarks")
    output_dir = settings.pop("output_dir") or Path("outputs") / "eval" / (Path(model.rstrip("/")).name or "model")
    return EvalConfig(
        output_dir=output_dir,
        benchmarks=parse_benchmarks(benchmarks if isinstance(benchmarks, str) else ",".join(benchmarks)),
        splits={parse_benchmarks(name)[0]: str(split) for name, split in (settings.pop("splits") or {}).items()},
        **settings,
    )


def main(argv: Optional[Sequence[str]] = None, generator_factory: Optional[GeneratorFactory] = None) -> dict[str, Any]:
    """Entry point; returns the run summary (what was generated and skipped, accuracies, output paths).

    ``generator_factory(backend, model, backend_config)`` replaces the rollout replicas the recipe
    describes (tests, stand-ins). ``-h`` and usage errors end in SystemExit (0, 2).
    """

    def command(argv: list[str]) -> dict[str, Any]:
        cfg = compose_command(argv, USAGE, ("actor_rollout_ref.model.path",))
        try:
            config = config_from(cfg)
        except (ValueError, TypeError) as err:  # the command line itself
            raise CLIError(first_line(err)) from None
        factory = generator_factory
        if factory is None:
            from omegaconf import OmegaConf

            from verl_ext.generation.replicas import ReplicaGenerator

            def factory(backend: str, model: str, backend_config: BackendConfig) -> BatchedGenerator:
                # A local judge is another model on the same engine and cluster settings.
                path = {"actor_rollout_ref": {"model": {"path": model}}}
                return ReplicaGenerator(cfg if model == config.model else OmegaConf.merge(cfg, path), backend_config)

        return run(config, factory)  # inputs found wrong before any generation are CLIErrors: exit 2

    summary = run_command(argv, __doc__, USAGE, command)
    if isinstance(summary, int):
        raise SystemExit(summary)
    return summary


if __name__ == "__main__":
    main()
