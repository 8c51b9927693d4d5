"""Benchmark evaluation of MM-UPT's Table 1: MathVision, MathVerse, MathVista and We-Math.

Run it with ``python -m verl_ext.eval config=recipes/eval/paper.yaml actor_rollout_ref.model.path=PATH``;
the pieces are importable: benchmark loaders (:mod:`~verl_ext.eval.benchmarks`), the paper's prompting
protocol (:mod:`~verl_ext.eval.prompts`), rule and LLM-judge grading (:mod:`~verl_ext.eval.grading`) and reports (:mod:`~verl_ext.eval.report`).
"""

from verl_ext.eval.benchmarks import BENCHMARKS, Sample, load_benchmark
from verl_ext.eval.grading import Grade, grade_batch, grade_response
from verl_ext.eval.prompts import EvalProtocol, build_request
from verl_ext.eval.report import PAPER_TABLE1, markdown_report, plot_accuracy, summarize

__all__ = [
    "BENCHMARKS",
    "EvalProtocol",
    "Grade",
    "PAPER_TABLE1",
    "Sample",
    "build_request",
    "grade_batch",
    "grade_response",
    "load_benchmark",
    "markdown_report",
    "plot_accuracy",
    "summarize",
]
