"""Grading responses against gold answers: rules first, an optional LLM judge second.

The rules read the final answer (``\\boxed{}``, then an ``<answer>`` tag; for multiple choice first "the
answer is (B)" phrases and a bare last line) and grade it with :func:`verl_ext.voting.score.is_correct`, the
scorer the training rewards use. The judge is an OpenAI-compatible endpoint (:class:`ApiJudge`) or a local
model (:class:`GeneratorJudge`); its prompt template must make it end its reply with ``Judgement: 1|0``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import httpx

from verl_ext.eval.benchmarks import Sample
from verl_ext.generation.base import GenerationRequest, Generator, SamplingSettings
from verl_ext.voting.score import is_correct, read_answer

logger = logging.getLogger(__name__)

DEFAULT_JUDGE_PROMPT = Path(__file__).with_name("judge_prompt.txt")
JUDGE_MODES = ("fallback", "always")
"""``fallback``: the judge only reviews responses the rules mark wrong; ``always``: it grades all."""


@dataclass(frozen=True)
class Grade:
    """The verdict on one response."""

    extracted: Optional[str]
    """The final answer read from the response (an option letter when it maps to one)."""
    correct: bool
    """The final verdict."""
    rule_correct: bool
    """The rule grader's verdict."""
    judge: Optional[bool] = None
    """The judge's verdict (None: not asked, or no parseable verdict)."""

    @property
    def method(self) -> str:
        """Which grader decided: ``judge`` when the judge gave a verdict (it then stands), else ``rule``."""
        return "rule" if self.judge is None else "judge"


def extract_prediction(response: Optional[str], sample: Sample) -> Optional[str]:
    """The response's final answer (boxed, else in an answer tag); for multiple choice the option letter
    whenever one can be found (a box, a tag, "the answer is (B)", a bare last line, or an option's text)."""
    if not response:
        return None
    styles = ("choice", "boxed", "answer_tag") if sample.is_choice else ("boxed", "answer_tag")
    return next((a for a in (read_answer(response, style, sample.choices) for style in styles) if a), None)


def grade_response(response: Optional[str], sample: Sample) -> Grade:
    """The rule grader's verdict on one response."""
    prediction = extract_prediction(response, sample)
    verdict = is_correct(
        prediction,
        sample.answer_letter or sample.answer,
        choices=sample.choices,
        answer_type=sample.answer_type,
        precision=sample.precision,
    )
    return Grade(extracted=prediction, correct=verdict, rule_correct=verdict)


# ------------------------------------------------------------------------------------------ judge


def load_judge_prompt(path: Optional[str | Path] = None) -> str:
    """The judge prompt template; it must contain ``{question}``, ``{reference}`` and ``{response}``."""
    template = Path(path or DEFAULT_JUDGE_PROMPT).read_text(encoding="utf-8")
    if missing := [name for name in ("{question}", "{reference}", "{response}") if name not in template]:
        raise ValueError(f"judge prompt {path or DEFAULT_JUDGE_PROMPT} lacks the placeholder(s) {missing}")
    return template


def format_judge_prompt(template: str, sample: Sample, response: str, max_response_chars: int = 6000) -> str:
    """Fill the template; only the tail of a long response is kept (its final answer is at the end)."""
    if len(response) > max_response_chars:
        response = "..." + response[-max_response_chars:]
    # Plain replacement: questions and responses are full of braces str.format would choke on.
    return (
        template.replace("{question}", sample.question)
        .replace("{reference}", sample.reference())
        .replace("{response}", response)
    )


_VERDICT = re.compile(r"judge?ment\s*[:：]\s*\**\s*([01])\b", re.IGNORECASE)


def parse_verdict(text: Optional[str]) -> Optional[bool]:
    """The last ``Judgement: 1|0`` in a judge reply, or None when there is none."""
    found = _VERDICT.findall(text or "")
    return found[-1] == "1" if found else None


class ApiJudge:
    """A judge behind an OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM serve, ...)."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: Optional[str] = None,
        prompt_template: Optional[str] = None,
        max_retries: int = 3,
        max_tokens: int = 1024,
    ):
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.template = prompt_template or load_judge_prompt()
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=120.0, headers=headers)

    def _ask(self, prompt: str) -> Optional[str]:
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(2.0 ** (attempt - 1), 30.0))
            try:
                reply = self._client.post(self.url, json=payload)
            except httpx.TransportError as err:
                problem = f"{type(err).__name__}: {err}"
                continue
            if reply.status_code == 429 or reply.status_code >= 500:
                problem = f"HTTP {reply.status_code}"  # rate limits and server hiccups pass
                continue
            if reply.status_code >= 400:
                logger.warning("judge request to %s refused: HTTP %d %s", self.url, reply.status_code, reply.text[:200])
                return None
            try:
                return reply.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                logger.warning("judge reply from %s is not a chat completion: %s", self.url, reply.text[:200])
                return None
        logger.warning("judge request to %s failed %d times; last: %s", self.url, self.max_retries + 1, problem)
        return None

    def judge_many(self, items: Sequence[tuple[Sample, str]]) -> list[Optional[bool]]:
        """One verdict per ``(sample, response)``: True correct, False wrong, None undecided."""
        return [parse_verdict(self._ask(format_judge_prompt(self.template, s, r))) for s, r in items]

    def close(self) -> None:
        self._client.close()


class GeneratorJudge:
    """A judge run on a local model through a generation backend (greedy decoding); ``close`` closes
    the generator only with ``owns_generator`` (a judge model of its own, not the evaluated one)."""

    def __init__(
        self,
        generator: Generator,
        *,
        prompt_template: Optional[str] = None,
        max_new_tokens: int = 1024,
        owns_generator: bool = False,
    ):
        self.generator = generator
        self.template = prompt_template or load_judge_prompt()
        self.max_new_tokens = max_new_tokens
        self.owns_generator = owns_generator

    def judge_many(self, items: Sequence[tuple[Sample, str]]) -> list[Optional[bool]]:
        """One verdict per ``(sample, response)``, generated in the backend's batches."""
        if not items:
            return []
        prompts = [format_judge_prompt(self.template, s, r) for s, r in items]
        requests = [GenerationRequest([{"role": "user", "content": prompt}]) for prompt in prompts]
        greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens)
        return [parse_verdict(texts[0]) for texts in self.generator.generate(requests, greedy)]

    def close(self) -> None:
        if self.owns_generator:
            self.generator.close()


def grade_batch(
    items: Sequence[tuple[Sample, str]], judge: Optional[ApiJudge | GeneratorJudge] = None, mode: str = "fallback"
) -> list[Grade]:
    """Grade ``(sample, response)`` pairs by rule, then let ``judge`` (if any) review them per ``mode``."""
    if mode not in JUDGE_MODES:
        raise ValueError(f"judge mode must be one of {JUDGE_MODES}; got {mode!r}")
    grades = [grade_response(response, sample) for sample, response in items]
    if judge is None:
        return grades
    review = [i for i, g in enumerate(grades) if (mode == "always" or not g.correct) and items[i][1]]
    verdicts = judge.judge_many([items[i] for i in review]) if review else []
    for i, verdict in zip(review, verdicts):
        if verdict is not None:  # an undecided judge leaves the rule verdict standing
            grades[i] = replace(grades[i], correct=verdict, judge=verdict)
    return grades
