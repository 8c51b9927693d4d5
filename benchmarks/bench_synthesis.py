"""Benchmark: question synthesis through verl's rollout replicas against the engine they replaced.

Runs ``verl_ext.data.synthesize`` (in-context strategy, the real pipeline: seed rows, prompts, images,
shards, filters) on the toy visual-math seeds with a small random Qwen2.5-VL, three ways in one run:

* baseline: the in-process transformers engine the package used before (``baseline_hf_generator.py``,
  frozen here), batches of 8 requests;
* one ``hf`` rollout replica (``trainer.n_gpus_per_node=1``), through verl's replica registry, whose server
  packs up to 64 completions into one ``generate`` call (``rollout.max_num_seqs``), and the same with 16;
* two ``hf`` replicas (``trainer.n_gpus_per_node=2``) sharing the machine's cores.

Each way runs ``--repeats`` times on fresh output folders; the table gives the median wall time of
synthesis (replica start-up reported apart: it is paid once per command) and its ratio to the baseline.
A random model seldom closes its ``<question>`` tag, so nearly every question is dropped: what is timed is
generation of ``--seeds x --num-per-seed`` completions of ``--max-new-tokens`` tokens.

Usage: python benchmarks/bench_synthesis.py [--seeds 48] [--num-per-seed 2] [--max-new-tokens 48] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_hf_generator import HFGenerator  # noqa: E402

from verl_ext.toy.tiny_model import TinyModelConfig, ensure_tiny_model  # noqa: E402
from verl_ext.data.synthesize import SynthesizeConfig, synthesize  # noqa: E402
from verl_ext.toy.visual_math import ensure_dataset  # noqa: E402
from verl_ext.generation import BackendConfig  # noqa: E402
from verl_ext.generation.replicas import ReplicaGenerator, generation_config  # noqa: E402

#: A model big enough that generation, not request overhead, dominates (about 6M parameters).
BENCH_MODEL = TinyModelConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512)


def run_synthesis(generator, seeds: Path, out: Path, args: argparse.Namespace) -> float:
    config = SynthesizeConfig(
        seeds=(seeds,),
        out=out,
        model="benchmark",
        strategy="in_context",
        num_per_seed=args.num_per_seed,
        max_seeds=args.seeds,
        shard_size=args.seeds,
        max_new_tokens=args.max_new_tokens,
    )
    start = time.perf_counter()
    synthesize(config, generator)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=48, help="seed rows (one shard)")
    parser.add_argument("--num-per-seed", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="bench_synthesis_"))
    model = ensure_tiny_model(work / "model", BENCH_MODEL)
    seeds = ensure_dataset(work / "visual_math")["train"]
    rows = []

    def timed(name: str, build) -> None:
        start = time.perf_counter()
        generator = build()
        startup = time.perf_counter() - start
        try:
            times = [run_synthesis(generator, seeds, work / f"{name}-{i}", args) for i in range(args.repeats)]
        finally:
            generator.close()
        rows.append((name, startup, statistics.median(times), times))

    timed(
        "baseline (in-process transformers, batch 8)",
        lambda: HFGenerator(str(model), BackendConfig(batch_size=8, show_progress=False)),
    )
    # The server packs up to max_num_seqs completions into one generate call (64 by default); 16 is what
    # the baseline's batches of 8 requests x 2 questions hold.
    for replicas, max_seqs in ((1, 64), (1, 16), (2, 64)):
        cfg = generation_config(
            str(model), "hf", [f"trainer.n_gpus_per_node={replicas}", f"actor_rollout_ref.rollout.max_num_seqs={max_seqs}"]
        )
        timed(
            f"{replicas} hf replica{'s' if replicas > 1 else ''} (verl registry, batch 64, max_num_seqs {max_seqs})",
            lambda cfg=cfg: ReplicaGenerator(cfg, BackendConfig(batch_size=64, show_progress=False)),
        )

    base = rows[0][2]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"workload: {args.seeds} seed rows x {args.num_per_seed} questions x {args.max_new_tokens} new tokens, "
        f"random Qwen2.5-VL (hidden {BENCH_MODEL.hidden_size}, {BENCH_MODEL.num_hidden_layers} layers), "
        f"median of {args.repeats}\n"
    )
    print("| generation path | start-up (s) | synthesis (s, median) | runs (s) | speed vs baseline |")
    print("|---|---:|---:|---|---:|")
    for name, startup, median, times in rows:
        runs = ", ".join(f"{t:.1f}" for t in times)
        print(f"| {name} | {startup:.1f} | {median:.1f} | {runs} | {base / median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
