"""Grading responses against gold answers: rules first, an optional LLM judge second.

The rule grader reads the final answer (``\\boxed{}``, then an ``<answer>`` tag; for multiple choice
also "the answer is (B)" phrases and a bare last line) and grades it with the voting core's one scorer,
:func:`verl_ext.voting.score.is_correct`, the same one training rewards use.

The judge is any OpenAI-compatible chat endpoint (:class:`ApiJudge`) or a local model through a
generation backend (:class:`GeneratorJudge`); its prompt lives in ``judge_prompt.txt`` next to this
module (``eval.judge_prompt`` points at another file) and must end the reply with ``Judgement: 1|0``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from verl_ext.eval.benchmarks import Sample
from verl_ext.generation.base import GenerationRequest, Generator, SamplingSettings
from verl_ext.voting.score import is_correct, read_answer

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_JUDGE_PROMPT",
    "JUDGE_MODES",
    "ApiJudge",
    "Grade",
    "GeneratorJudge",
    "Judge",
    "extract_prediction",
    "format_judge_prompt",
    "grade_batch",
    "grade_response",
    "load_judge_prompt",
    "parse_verdict",
    "rule_correct",
]

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


# ------------------------------------------------------------------------------------------ rules


def extract_prediction(response: Optional[str], sample: Sample) -> Optional[str]:
    """The response's final answer (boxed, else in an answer tag); for multiple choice the option letter
    whenever one can be found (a box, a tag, "the answer is (B)", a bare last line, or an option's text)."""
    if not response:
        return None
    choices = sample.choices if sample.is_choice else None
    first = (read_answer(response, "choice", choices),) if sample.is_choice else ()
    return next(
        (a for a in (*first, read_answer(response, "boxed", choices), read_answer(response, "answer_tag", choices)) if a),
        None,
    )


def rule_correct(prediction: Optional[str], sample: Sample) -> bool:
    """Whether ``prediction`` (from :func:`extract_prediction`) is the gold answer of ``sample``."""
    return is_correct(
        prediction,
        sample.answer_letter or sample.answer,
        choices=sample.choices if sample.is_choice else None,
        answer_type=sample.answer_type,
        precision=sample.precision,
    )


def grade_response(response: Optional[str], sample: Sample) -> Grade:
    """The rule grader's verdict on one response."""
    prediction = extract_prediction(response, sample)
    verdict = rule_correct(prediction, sample)
    return Grade(extracted=prediction, correct=verdict, rule_correct=verdict)


# ------------------------------------------------------------------------------------------ judge


class Judge(Protocol):
    """Grades responses with a language model."""

    def judge_many(self, items: Sequence[tuple[Sample, str]]) -> list[Optional[bool]]:
        """One verdict per ``(sample, response)``: True correct, False wrong, None undecided."""
        ...


def load_judge_prompt(path: Optional[str | Path] = None) -> str:
    """The judge prompt template; it must contain ``{question}``, ``{reference}`` and ``{response}``."""
    template = Path(path or DEFAULT_JUDGE_PROMPT).read_text(encoding="utf-8")
    missing = [name for name in ("{question}", "{reference}", "{response}") if name not in template]
    if missing:
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
    if not text:
        return None
    found = _VERDICT.findall(text)
    if not found:
        return None
    return found[-1] == "1"


class ApiJudge:
    """A judge behind an OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM serve, ...)."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: Optional[str] = None,
        prompt_template: Optional[str] = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        max_tokens: int = 1024,
        max_response_chars: int = 6000,
    ):
        import httpx

        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.template = prompt_template or load_judge_prompt()
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.max_response_chars = max_response_chars
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def _ask(self, prompt: str) -> Optional[str]:
        import httpx

        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        problem = ""
        for attempt in range(self.max_retries + 1):
            try:
                reply = self._client.post(self.url, json=payload)
            except httpx.TransportError as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if reply.status_code == 429 or reply.status_code >= 500:
                    problem = f"HTTP {reply.status_code}"  # rate limits and server hiccups pass
                elif reply.status_code >= 400:
                    logger.warning(
                        "judge request to %s refused: HTTP %d %s", self.url, reply.status_code, reply.text[:200]
                    )
                    return None
                else:
                    try:
                        return reply.json()["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        logger.warning("judge reply from %s is not a chat completion: %s", self.url, reply.text[:200])
                        return None
            if attempt < self.max_retries:
                time.sleep(min(2.0**attempt, 30.0))
        logger.warning("judge request to %s failed %d times; last: %s", self.url, self.max_retries + 1, problem)
        return None

    def judge_many(self, items: Sequence[tuple[Sample, str]]) -> list[Optional[bool]]:
        """Ask the endpoint about each item in turn."""
        return [
            parse_verdict(self._ask(format_judge_prompt(self.template, s, r, self.max_response_chars)))
            for s, r in items
        ]

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


class GeneratorJudge:
    """A judge run on a local model through a generation backend (greedy decoding)."""

    def __init__(
        self,
        generator: Generator,
        *,
        prompt_template: Optional[str] = None,
        max_new_tokens: int = 1024,
        max_response_chars: int = 6000,
    ):
        self.generator = generator
        self.template = prompt_template or load_judge_prompt()
        self.max_new_tokens = max_new_tokens
        self.max_response_chars = max_response_chars

    def judge_many(self, items: Sequence[tuple[Sample, str]]) -> list[Optional[bool]]:
        """Judge all items in the backend's batches."""
        if not items:
            return []
        requests = [
            GenerationRequest(
                [{"role": "user", "content": format_judge_prompt(self.template, s, r, self.max_response_chars)}]
            )
            for s, r in items
        ]
        settings = SamplingSettings(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens)
        outputs = self.generator.generate(requests, settings)
        return [parse_verdict(texts[0]) for texts in outputs]


def grade_batch(
    items: Sequence[tuple[Sample, str]], judge: Optional[Judge] = None, mode: str = "fallback"
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
        g = grades[i]
        # An undecided judge leaves the rule verdict standing.
        grades[i] = Grade(g.extracted, g.correct if verdict is None else verdict, g.rule_correct, verdict)
    return grades
