"""Benchmark evaluation of MM-UPT's Table 1 (``python -m verl_ext.eval``), paper tables (``.compare``) and the
greedy / mean@N / maj@N diagnosis (``.diagnose``): loaders in ``benchmarks``, the prompting protocol in
``prompts``, rule and LLM-judge grading in ``grading``, summaries, reports and charts in ``report``.
"""
