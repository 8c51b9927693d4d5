"""Parsing and filtering of synthesized questions: pure functions, no model, no torch.

A completion holds its question between ``<question>`` and ``</question>`` (the synthesis prompts ask for
exactly that). :func:`screen` parses it and applies the text filters in a fixed order, naming the first one
that fails; :func:`answerability_ratio` measures how strongly k sampled answers to a question agree (the
optional answerability filter, aimed at the hallucinated questions MM-UPT reports for direct synthesis).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from verl_ext.data.schema import FORMAT_INSTRUCTION, IMAGE_PLACEHOLDER
from verl_ext.voting import extract_answer, vote

QUESTION_OPEN = "<question>"
"""Opening marker the prompts ask the model to put before its question."""
QUESTION_CLOSE = "</question>"
"""Closing marker after the question."""

# Drop reasons of generated questions, in the order the filters run.
UNPARSEABLE = "unparseable"
"""No complete ``<question>...</question>`` pair (e.g. a completion cut off by the token limit)."""
EMPTY = "empty"
"""The markers enclose nothing but whitespace or punctuation."""
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
SAME_AS_SEED = "same_as_seed"
"""Equal to the seed's own question after :func:`normalize_question`."""
DUPLICATE = "duplicate"
"""Equal to a question already kept for the same image(s)."""
UNANSWERABLE = "unanswerable"
"""The model's own sampled answers do not agree enough (:func:`is_answerable`)."""

_OPEN = re.compile(r"<\s*question\s*>", re.IGNORECASE)
_CLOSE = re.compile(r"<\s*/\s*question\s*>", re.IGNORECASE)
# Models often repeat the instruction's wording as a label in front of the question.
_LABEL = re.compile(r"^(?:\*\*)?(?:new\s+)?(?:math\s+)?(?:question|problem)\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*", re.I)
_QUOTES = (('"', '"'), ("“", "”"), ("'", "'"), ("`", "`"), ("**", "**"))
_PLACEHOLDER = re.compile(r"\s*" + re.escape(IMAGE_PLACEHOLDER) + r"\s*")
_BLANK_LINES = re.compile(r"\n{3,}")
_SPACE_AROUND_SYMBOL = re.compile(r"\s*([^\w\s])\s*")
_EDGE_PUNCTUATION = ".?!,;:'\"“”` "
_RATIO_EPS = 1e-9  # 7/10 computed as a float must still pass a threshold typed as 0.7


@dataclass(frozen=True)
class FilterSettings:
    """Bounds of the text filters."""

    min_chars: int = 6
    """Shortest kept question in characters; 6 still admits terse geometry prompts such as "Find x."."""
    max_chars: int = 1000
    """Longest kept question in characters; longer ones are usually rambling or contain a solution."""

    def __post_init__(self) -> None:
        if self.min_chars < 1:
            raise ValueError(f"min_chars must be >= 1, got {self.min_chars}")
        if self.max_chars < self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) must be >= min_chars ({self.min_chars})")


@dataclass(frozen=True)
class Verdict:
    """What :func:`screen` decided about one completion."""

    question: str | None
    """The parsed question (``None`` when unparseable)."""
    reason: str | None
    """The drop reason, ``None`` when the question is kept."""

    @property
    def kept(self) -> bool:
        """True when no filter dropped the question."""
        return self.reason is None


def _unwrap(text: str) -> str:
    for opening, closing in _QUOTES:
        if len(text) > len(opening) + len(closing) and text.startswith(opening) and text.endswith(closing):
            return text[len(opening) : -len(closing)].strip()
    return text


def tidy_question(text: str) -> str:
    """``text`` without ``<image>`` placeholders (a row adds its own), a trailing format instruction and surplus
    whitespace; line breaks stay (options on their own lines), at most one blank line in a row."""
    text = _PLACEHOLDER.sub(" ", text).strip().removesuffix(FORMAT_INSTRUCTION.strip())
    return _BLANK_LINES.sub("\n\n", "\n".join(" ".join(line.split()) for line in text.splitlines())).strip()


def parse_question(text: str | None) -> str | None:
    """The question inside the last complete ``<question>...</question>`` pair, tidied; ``None`` if none.

    The last pair wins because a model may echo the instruction (which names the markers) before answering;
    the opening marker taken is the last one before that closing marker. Tidying (:func:`tidy_question`) also
    removes a leading "Question:" label and wrapping quotes. ``""`` means the markers were there but held nothing.
    """
    closes = list(_CLOSE.finditer(text or ""))
    opens = list(_OPEN.finditer(text, 0, closes[-1].start())) if closes else []
    if not opens:
        return None
    body = tidy_question(text[opens[-1].end() : closes[-1].start()])
    return _unwrap(_LABEL.sub("", body, count=1).strip())


def normalize_question(text: str) -> str:
    """The comparison key of a question: case, spacing, placeholders, the format instruction and edge
    punctuation do not matter; everything else (numbers, symbols, word order) does."""
    key = " ".join(tidy_question(unicodedata.normalize("NFKC", text)).casefold().split())
    # "x + 1" and "x+1" are the same question; a space only separates words.
    key = _SPACE_AROUND_SYMBOL.sub(r"\1", key)
    return key.strip(_EDGE_PUNCTUATION)


def image_key(images: Iterable[bytes]) -> str:
    """An identity of a row's images: the same question about other images is another question."""
    digest = hashlib.sha256()
    for data in images:
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:32]


def screen(
    output: str | None,
    *,
    seed_question: str,
    images_key: str,
    seen: set[tuple[str, str]],
    settings: FilterSettings = FilterSettings(),
) -> Verdict:
    """Parse one completion and apply the text filters; a kept question is added to ``seen``.

    Filters, first failure wins: unparseable, empty, too short, too long, same as the seed's question,
    duplicate of a question already in ``seen`` for the same images (``images_key``, see :func:`image_key`).
    """
    question = parse_question(output)
    if question is None:
        return Verdict(None, UNPARSEABLE)
    key = normalize_question(question)
    if not key:
        return Verdict(question, EMPTY)
    if len(question) < settings.min_chars:
        return Verdict(question, TOO_SHORT)
    if len(question) > settings.max_chars:
        return Verdict(question, TOO_LONG)
    if seed_question and key == normalize_question(seed_question):
        return Verdict(question, SAME_AS_SEED)
    if (images_key, key) in seen:
        return Verdict(question, DUPLICATE)
    seen.add((images_key, key))
    return Verdict(question, None)


def answerability_ratio(responses: Sequence[str | None], *, style: str = "boxed") -> float:
    """Share of ``responses`` whose final answer agrees with the most common one (0.0 if none answers).

    Responses without an extractable answer count in the denominator: a question the model cannot answer
    in the expected format is no better than one it answers inconsistently.
    """
    if not responses:
        raise ValueError("answerability needs at least one response")
    answers = [extract_answer(response, style) for response in responses]
    return vote(answers).ratio


def is_answerable(ratio: float, threshold: float) -> bool:
    """Whether a majority ratio reaches ``threshold``."""
    return ratio + _RATIO_EPS >= threshold
