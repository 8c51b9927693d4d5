"""``python -m verl_ext.eval``: evaluate a model on MathVision, MathVerse, MathVista and We-Math.

Usage::

    python -m verl_ext.eval --model Qwen/Qwen2.5-VL-7B-Instruct \\
        --benchmarks mathvision,mathverse,mathvista,wemath --output-dir outputs/eval/qwen7b

Writes into ``--output-dir``: ``samples.jsonl`` (one line per response: benchmark, prompt id,
response, extracted answer, verdict), ``results.json`` (accuracies), ``report.md`` (Table 1
comparison and per-category tables), ``accuracy.png`` (bar chart) and ``run.json`` (the settings).

The JSONL is append-only and fsync'ed after every batch; rerunning the same command skips the
questions already answered, so a killed run loses at most the batch it was working on. A rerun with
other model or sampling settings is refused: use another ``--output-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from verl_ext.data.manifest import write_manifest
from verl_ext.eval.benchmarks import BENCHMARKS, Sample, load_benchmark, parse_benchmarks
from verl_ext.eval.grading import (
    JUDGE_MODES,
    ApiJudge,
    GeneratorJudge,
    Grade,
    Judge,
    grade_batch,
    load_judge_prompt,
)
from verl_ext.eval.prompts import EvalProtocol, build_request
from verl_ext.eval.report import (
    DEFAULT_REFERENCE,
    PAPER_TABLE1,
    TABLE_BENCHMARKS,
    markdown_report,
    plot_accuracy,
    summarize,
)
from verl_ext.generation.base import BackendConfig, BatchedGenerator
from verl_ext.generation.factory import BACKENDS, make_generator
from verl_ext.model_path import model_path_problem

logger = logging.getLogger("verl_ext.eval")

SAMPLES_FILE = "samples.jsonl"
RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CHART_FILE = "accuracy.png"
JUDGES = ("none", "api", "local")

GeneratorFactory = Callable[..., BatchedGenerator]


class UsageError(ValueError):
    """A bad argument or input path: one line on stderr, exit status 2, before any generation."""


def _writable_dir(path: Path) -> Optional[str]:
    """Why ``path`` cannot be the output directory, or None when it can."""
    if path.exists() and not path.is_dir():
        return f"--output-dir {path} is a file, not a directory"
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        return f"--output-dir {path}: {probe} is not writable"
    return None


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
    judge_backend: str = "auto"
    """Generation backend of a local judge."""
    judge_max_new_tokens: int = 1024
    """Longest judge reply in tokens."""
    label: Optional[str] = None
    """Name of our row in the report (None: the model directory's name)."""
    compare_to: str = DEFAULT_REFERENCE
    """Paper row our differences are taken against."""
    plot: bool = True
    """Draw accuracy.png (needs matplotlib)."""

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.backend not in BACKENDS or self.judge_backend not in BACKENDS:
            raise ValueError(f"backends must be one of {BACKENDS}")
        if self.judge not in JUDGES:
            raise ValueError(f"judge must be one of {JUDGES}; got {self.judge!r}")
        if self.judge != "none" and not self.judge_model:
            raise ValueError(f"--judge {self.judge} needs --judge-model")
        if self.judge_mode not in JUDGE_MODES:
            raise ValueError(f"judge mode must be one of {JUDGE_MODES}; got {self.judge_mode!r}")
        if self.compare_to not in PAPER_TABLE1:
            raise ValueError(f"--compare-to must be one of: {', '.join(PAPER_TABLE1)}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError("--max-samples must be >= 1")
        if self.protocol.n < 1:
            raise ValueError(f"--n must be >= 1 (responses per question); got {self.protocol.n}")
        if self.protocol.temperature < 0:
            raise ValueError(f"--temperature must be >= 0 (0: greedy); got {self.protocol.temperature}")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"--data-dir {self.data_dir}: no such directory")
        problem = _writable_dir(self.output_dir)
        if problem:
            raise ValueError(problem)
        problem = model_path_problem(self.model)
        if problem:
            raise ValueError(f"--model {problem}")

    def split_of(self, benchmark: str) -> str:
        """The split evaluated for ``benchmark``."""
        return self.splits.get(benchmark, BENCHMARKS[benchmark].split)

    def run_fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run that wrote the JSONL."""
        return {"model": self.model, "protocol": self.protocol.fingerprint()}


# ------------------------------------------------------------------------------------------ JSONL store


def _well_formed(record: Any) -> bool:
    """A line this program wrote: the keys resume and the report read, with their types."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("benchmark"), str)
        and isinstance(record.get("prompt_id"), (str, int))
        and isinstance(record.get("response_index", 0), int)
        and isinstance(record.get("correct"), bool)
        and isinstance(record.get("response"), str)
    )


class ResultStore:
    """The append-only JSONL of graded responses, durable after every batch."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()

    def _repair_tail(self) -> None:
        # A run killed mid-write can leave a partial last line; appending after it would glue the
        # next record onto it, so cut the file back to its last complete line.
        if not self.path.exists():
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if not data or data.endswith(b"\n"):
                return
            keep = data.rfind(b"\n") + 1
            logger.warning("%s ends in a partial line (%d bytes); dropping it", self.path, len(data) - keep)
            handle.truncate(keep)

    def load(self) -> list[dict[str, Any]]:
        """Every record written so far (unparseable lines are skipped with a warning)."""
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
                    logger.warning("%s:%d is not JSON text; ignored (its question is generated again)", self.path, number)
                    continue
                if not _well_formed(record):
                    logger.warning("%s:%d is not a sample record; ignored (its question is generated again)", self.path, number)
                    continue
                records.append(record)
        return records

    def finished(self, n: int) -> set[tuple[str, str, str]]:
        """``(benchmark, split, prompt_id)`` of the prompts with all ``n`` responses on disk."""
        seen: dict[tuple[str, str, str], set[int]] = {}
        for record in self.load():
            key = (record["benchmark"], str(record.get("split")), str(record["prompt_id"]))
            seen.setdefault(key, set()).add(int(record.get("response_index", 0)))
        return {key for key, indices in seen.items() if all(i in indices for i in range(n))}

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Write ``records`` and force them to disk before returning."""
        if not records:
            return
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


# ------------------------------------------------------------------------------------------ run


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
        "extracted": grade.extracted,
        "correct": grade.correct,
        "rule_correct": grade.rule_correct,
        "judge": grade.judge,
        "graded_by": grade.method,
        "meta": sample.meta,
    }


def _check_run_file(config: EvalConfig) -> bool:
    """Refuse an output directory holding a run with other settings; True if its run.json exists."""
    path = config.output_dir / RUN_FILE
    fingerprint = config.run_fingerprint()
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if (config.output_dir / SAMPLES_FILE).exists():
                raise UsageError(
                    f"{path} is unreadable, so the settings of {config.output_dir / SAMPLES_FILE} are unknown: "
                    "pass another --output-dir (or delete the folder)"
                ) from None
            logger.warning("%s is unreadable; it is written again", path)
            return False
        if not isinstance(previous, dict) or previous.get("fingerprint") != fingerprint:
            raise UsageError(
                f"{config.output_dir} holds a run with other settings ({path}: "
                f"{json.dumps(previous.get('fingerprint') if isinstance(previous, dict) else previous, sort_keys=True)[:200]}); "
                "resuming would mix them: pass another --output-dir"
            )
        return True
    return False


def _write_run_file(config: EvalConfig) -> None:
    """The run's settings, written atomically once its data and model have loaded (so a failed
    first try never blocks the corrected command)."""
    config.output_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "fingerprint": config.run_fingerprint(),
        "backend": config.backend,
        "backend_config": dataclasses.asdict(config.backend_config),
        "judge": {"kind": config.judge, "model": config.judge_model, "mode": config.judge_mode},
    }
    write_manifest(config.output_dir / RUN_FILE, payload)


def _build_judge(
    config: EvalConfig, generator: Optional[BatchedGenerator], factory: GeneratorFactory
) -> tuple[Optional[Judge], Optional[BatchedGenerator]]:
    """The judge, plus a generator the caller must close (a local judge's own model)."""
    if config.judge == "none":
        return None, None
    template = load_judge_prompt(config.judge_prompt)
    if config.judge == "api":
        api_key = os.environ.get(config.judge_api_key_env) or None
        return ApiJudge(config.judge_model, config.judge_url, api_key=api_key, prompt_template=template), None
    if generator is not None and config.judge_model == config.model:
        return GeneratorJudge(generator, prompt_template=template, max_new_tokens=config.judge_max_new_tokens), None
    judge_backend = dataclasses.replace(config.backend_config, min_pixels=None, max_pixels=None, show_progress=False)
    own = factory(config.judge_backend, config.judge_model, judge_backend)
    return GeneratorJudge(own, prompt_template=template, max_new_tokens=config.judge_max_new_tokens), own


def run(config: EvalConfig, generator_factory: GeneratorFactory = make_generator) -> dict[str, Any]:
    """Generate the missing responses, grade them, and write the results, report and chart."""
    has_run_file = _check_run_file(config)
    if config.plot and importlib.util.find_spec("matplotlib") is None:
        logger.warning("matplotlib is not installed: accuracy.png will be skipped (pip install matplotlib)")
    samples: list[tuple[Sample, str]] = []
    for name in config.benchmarks:
        split = config.split_of(name)
        try:
            loaded = load_benchmark(
                name, split=split, data_dir=config.data_dir, max_samples=config.max_samples, cache_dir=config.cache_dir
            )
        except (FileNotFoundError, ValueError) as err:  # datasets: unknown split, missing files
            raise UsageError(f"{name} split {split!r}: {str(err).splitlines()[0]}") from None
        samples += [(s, split) for s in loaded]
    store = ResultStore(config.output_dir / SAMPLES_FILE)
    done = store.finished(config.protocol.n)
    pending = [(s, split) for s, split in samples if (s.benchmark, split, s.prompt_id) not in done]
    logger.info(
        "%d questions: %d already answered, %d to generate", len(samples), len(samples) - len(pending), len(pending)
    )

    if pending:
        backend_config = dataclasses.replace(
            config.backend_config, min_pixels=config.protocol.min_pixels, max_pixels=config.protocol.max_pixels
        )
        try:
            generator = generator_factory(config.backend, config.model, backend_config)
        except (OSError, ValueError) as err:  # not a model directory, unknown architecture
            raise UsageError(f"--model {config.model} does not load: {str(err).splitlines()[0]}") from None
        if not has_run_file:
            _write_run_file(config)
        judge, judge_generator = None, None
        try:
            judge, judge_generator = _build_judge(config, generator, generator_factory)
            requests = [build_request(s, config.protocol) for s, _ in pending]

            def save(start: int, outputs: list[list[str]]) -> None:
                batch = pending[start : start + len(outputs)]
                items = [(s, text) for (s, _), texts in zip(batch, outputs) for text in texts]
                grades = iter(grade_batch(items, judge, config.judge_mode))
                records = [
                    _record(s, split, k, text, next(grades))
                    for (s, split), texts in zip(batch, outputs)
                    for k, text in enumerate(texts)
                ]
                store.append(records)

            generator.generate(requests, config.protocol.sampling(), on_batch=save)
        finally:
            # The judge first: the policy's generator may own the Ray session the judge's replicas live in.
            if judge_generator is not None:
                judge_generator.close()
            generator.close()
            if isinstance(judge, ApiJudge):
                judge.close()

    elif not has_run_file:
        _write_run_file(config)

    wanted = {(s.benchmark, split, s.prompt_id) for s, split in samples}
    records = [r for r in store.load() if (r["benchmark"], str(r.get("split")), str(r["prompt_id"])) in wanted]
    summary = summarize(records)
    outputs = write_outputs(config, summary)
    return {"generated": len(pending), "skipped": len(samples) - len(pending), "summary": summary, **outputs}


def write_outputs(config: EvalConfig, summary: dict[str, Any]) -> dict[str, Optional[Path]]:
    """results.json, report.md and (if matplotlib is there) accuracy.png."""
    label = config.label or Path(config.model.rstrip("/")).name or config.model
    results_path = config.output_dir / RESULTS_FILE
    results_path.write_text(
        json.dumps({"model": config.model, "label": label, "benchmarks": summary}, indent=2) + "\n", encoding="utf-8"
    )
    header = {
        "model": config.model,
        "protocol": ", ".join(f"{k}={v!r}" for k, v in config.protocol.fingerprint().items() if k != "system_prompt"),
        "system prompt": repr(config.protocol.system_prompt),
        "judge": "none" if config.judge == "none" else f"{config.judge} {config.judge_model} ({config.judge_mode})",
    }
    if config.max_samples is not None:
        header["max samples per benchmark"] = config.max_samples
    report_path = config.output_dir / REPORT_FILE
    report_path.write_text(
        markdown_report(summary, label=label, reference=config.compare_to, header=header), encoding="utf-8"
    )
    chart_path: Optional[Path] = None
    if config.plot and summary:
        try:
            chart_path = plot_accuracy(summary, config.output_dir / CHART_FILE, label=label)
        except ImportError as err:
            logger.error("%s", err)
    for name, result in summary.items():
        logger.info("%s: %.2f%% over %d questions", name, result["accuracy"], result["n_prompts"])
    logger.info("report: %s", report_path)
    return {"results": results_path, "report": report_path, "chart": chart_path}


# ------------------------------------------------------------------------------------------ command line


def _key_values(pairs: Iterable[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise argparse.ArgumentTypeError(f"expected BENCHMARK=SPLIT, got {pair!r}")
        name, split = pair.split("=", 1)
        out[parse_benchmarks(name)[0]] = split.strip()
    return out


def _pixels(text: str) -> Optional[int]:
    # "0" or "none": leave the bound to the processor's own configuration.
    return None if text.lower() in ("0", "none") else int(text)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    defaults = EvalProtocol()
    backend = BackendConfig()
    p = argparse.ArgumentParser(
        prog="python -m verl_ext.eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model directory or hub name")
    p.add_argument("--benchmarks", default=",".join(TABLE_BENCHMARKS), help="comma-separated: " + ", ".join(BENCHMARKS))
    p.add_argument(
        "--output-dir", type=Path, default=None, help="results directory (default: outputs/eval/<model name>)"
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="read benchmarks from local parquet/jsonl files or hub snapshots"
    )
    p.add_argument("--cache-dir", default=None, help="datasets cache directory")
    p.add_argument("--split", action="append", default=[], metavar="BENCHMARK=SPLIT", help="e.g. mathvision=testmini")
    p.add_argument("--max-samples", type=int, default=None, help="first N questions of each benchmark")

    g = p.add_argument_group("generation")
    g.add_argument("--backend", choices=BACKENDS, default="auto")
    g.add_argument("--batch-size", type=int, default=backend.batch_size)
    g.add_argument("--dtype", default=backend.dtype)
    g.add_argument("--tensor-parallel-size", type=int, default=backend.tensor_parallel_size)
    g.add_argument("--replicas", type=int, default=1, help="rollout replicas (data parallel over the cluster's devices)")
    g.add_argument("--gpu-memory-utilization", type=float, default=backend.gpu_memory_utilization)
    g.add_argument("--max-model-len", type=int, default=None)
    g.add_argument("--enforce-eager", action="store_true")
    g.add_argument("--trust-remote-code", action="store_true")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = p.add_argument_group("protocol (defaults: the paper's)")
    s.add_argument("--system-prompt", default=defaults.system_prompt, help="'' for none")
    s.add_argument("--format-instruction", default=defaults.format_instruction)
    s.add_argument("--temperature", type=float, default=defaults.temperature)
    s.add_argument("--top-p", type=float, default=defaults.top_p)
    s.add_argument("--top-k", type=int, default=defaults.top_k)
    s.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    s.add_argument("--n", type=int, default=defaults.n, help="responses per question (accuracy averages them)")
    s.add_argument("--seed", type=int, default=defaults.seed)
    s.add_argument("--min-pixels", type=_pixels, default=defaults.min_pixels, help="0: the processor's own")
    s.add_argument("--max-pixels", type=_pixels, default=defaults.max_pixels, help="0: the processor's own")

    j = p.add_argument_group("LLM judge")
    j.add_argument("--judge", choices=JUDGES, default="none")
    j.add_argument("--judge-model", default=None, help="endpoint model name (api) or model path (local)")
    j.add_argument("--judge-url", default="https://api.openai.com/v1", help="OpenAI-compatible base URL")
    j.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with the key")
    j.add_argument("--judge-mode", choices=JUDGE_MODES, default="fallback")
    j.add_argument("--judge-prompt", type=Path, default=None, help="prompt template file")
    j.add_argument("--judge-backend", choices=BACKENDS, default="auto")
    j.add_argument("--judge-max-new-tokens", type=int, default=1024)

    r = p.add_argument_group("report")
    r.add_argument("--label", default=None, help="our row's name (default: the model directory name)")
    r.add_argument("--compare-to", choices=list(PAPER_TABLE1), default=DEFAULT_REFERENCE)
    r.add_argument("--no-plot", action="store_true", help="skip accuracy.png")
    p.add_argument("--log-level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The run configuration of parsed arguments."""
    output_dir = args.output_dir or Path("outputs") / "eval" / (Path(args.model.rstrip("/")).name or "model")
    return EvalConfig(
        model=args.model,
        output_dir=output_dir,
        benchmarks=parse_benchmarks(args.benchmarks),
        splits=_key_values(args.split),
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        max_samples=args.max_samples,
        backend=args.backend,
        backend_config=BackendConfig(
            batch_size=args.batch_size,
            dtype=args.dtype,
            trust_remote_code=args.trust_remote_code,
            tensor_parallel_size=args.tensor_parallel_size,
            replicas=args.replicas,
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=args.max_model_len,
            enforce_eager=args.enforce_eager,
            show_progress=not args.no_progress,
        ),
        protocol=EvalProtocol(
            system_prompt=args.system_prompt,
            format_instruction=args.format_instruction,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            max_new_tokens=args.max_new_tokens,
            n=args.n,
            seed=args.seed,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
        ),
        judge=args.judge,
        judge_model=args.judge_model,
        judge_url=args.judge_url,
        judge_api_key_env=args.judge_api_key_env,
        judge_mode=args.judge_mode,
        judge_prompt=args.judge_prompt,
        judge_backend=args.judge_backend,
        judge_max_new_tokens=args.judge_max_new_tokens,
        label=args.label,
        compare_to=args.compare_to,
        plot=not args.no_plot,
    )


def main(argv: Optional[Sequence[str]] = None, generator_factory: GeneratorFactory = make_generator) -> dict[str, Any]:
    """Entry point; returns the run summary (what was generated and skipped, accuracies, output paths)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except (ValueError, argparse.ArgumentTypeError) as err:  # the arguments themselves
        _usage_exit(err)
    try:
        return run(config, generator_factory)
    except UsageError as err:  # inputs found wrong before any generation; other errors keep their traceback
        _usage_exit(err)


def _usage_exit(err: BaseException) -> None:
    sys.stderr.write(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}\n")
    raise SystemExit(2) from None


if __name__ == "__main__":
    main(sys.argv[1:])
