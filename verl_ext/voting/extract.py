"""Extraction of the final answer from a model response."""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from typing import Optional

from verl_ext.voting.normalize import normalize, partners
from verl_ext.voting.settings import check_one_of

STYLES = ("boxed", "answer_tag", "choice")
# Options: their texts in order A, B, ..., or a dict letter -> text.
Choices = Optional[Sequence[str] | Mapping[str, str]]

_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BLANKS = re.compile(r"[ \t]*")
_BARE_ARGUMENT = re.compile(r"\s*(\\[a-zA-Z]+|[^\s$]+)")
_OPEN_TAG = re.compile(r"<answer\s*>", re.IGNORECASE)
_CLOSE_TAG = re.compile(r"</answer\s*>", re.IGNORECASE)
_PHRASE = re.compile(r"(?i:\banswer\b(?:\s+is)?)\s*[:：]?\s*\**\s*\(?([A-Z])\)?(?![A-Za-z0-9])")
_MARKUP = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}|[$*]")
# "B", "(B)", "(b)", "B.", "B)", "B:" alone, or before the option's text: "(B) 5", "B. 5" (not "A man").
_LETTER = re.compile(r"^(?:\(([A-Za-z])\)|([A-Z])[.:)]?)$|^(?:\(([A-Za-z])\)|([A-Z])[.:)])\s+\S")


def _boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{}``/``\\fbox{}``; a truncated box is skipped.

    ``\\boxed 5`` (no braces) counts only when there is no braced box, so a box mentioned in
    prose after the answer does not win.
    """
    boxes = list(_BOX.finditer(text))
    if not boxes:
        return None
    pairs = partners(text)
    for m in reversed(boxes):
        start = _BLANKS.match(text, m.end()).end()
        if start in pairs:
            return text[start + 1 : pairs[start]]
    for m in reversed(boxes):
        start = _BLANKS.match(text, m.end()).end()
        if start > m.end() or text[start : start + 1].isdigit() or text.startswith("\\", start):
            bare = _BARE_ARGUMENT.match(text, start)
            if bare is not None and not bare.group(1).startswith("{"):
                return bare.group(1).rstrip(".,;:")
    return None


def _answer_tag(text: str) -> str | None:
    """Content of the last ``<answer>`` that is closed, up to its first ``</answer>``; a box inside is unwrapped."""
    starts = [c.start() for c in _CLOSE_TAG.finditer(text)]
    for opening in reversed(list(_OPEN_TAG.finditer(text))):
        k = bisect.bisect_left(starts, opening.end())  # the first closing tag after this opening
        if k < len(starts):
            content = text[opening.end() : starts[k]]
            boxed = _boxed(content)
            return boxed if boxed is not None else content
    return None


def option_map(choices: Choices) -> dict[str, str] | None:
    """Options as letter -> text (texts in order A, B, ... or a dict); None for no or empty choices."""
    if choices is None or len(choices) == 0:
        return None
    if isinstance(choices, Mapping):
        options = {str(k).strip().upper(): v for k, v in choices.items()}
        bad = [k for k in options if len(k) != 1 or not "A" <= k <= "Z"]
        if bad:
            raise ValueError(f"choice keys must be single letters A-Z, got {bad!r}")
        return options
    if isinstance(choices, str) or len(choices) > 26:
        raise ValueError("choices must be a list of at most 26 option texts or a dict letter -> text")
    return {chr(ord("A") + i): text for i, text in enumerate(choices)}


def to_letter(candidate: str, options: dict[str, str] | None) -> str | None:
    """The option letter ``candidate`` names ("B", "(B)", "B. 5") or whose text it equals; else None."""
    s = _MARKUP.sub(lambda m: m.group(1) or "", candidate).strip()
    m = _LETTER.match(s)
    if m is not None:
        letter = next(g for g in m.groups() if g).upper()
        if options is None or letter in options:
            return letter
    if options and (key := normalize(s)):
        return next((letter for letter, text in options.items() if normalize(str(text)) == key), None)
    return None


def _choice(text: str, options: dict[str, str] | None) -> str | None:
    # The first source present decides: a box, then an answer tag, then "answer: X", then the last line.
    for source in (_boxed, _answer_tag):
        candidate = source(text)
        if candidate is not None:
            return to_letter(candidate, options)
    phrases = list(_PHRASE.finditer(text))
    if phrases:
        letter = phrases[-1].group(1).upper()
        return letter if options is None or letter in options else None
    lines = [line for line in text.splitlines() if line.strip()]
    return to_letter(lines[-1], options) if lines else None


def extract_answer(text: str | None, style: str = "boxed", choices: Choices = None) -> str | None:
    """Return the final answer in ``text``, stripped, or ``None`` if there is none or it is empty.

    Styles: ``"boxed"``: the last complete ``\\boxed{...}``/``\\fbox{...}`` (nested braces
    handled; ``\\boxed 5`` accepted). ``"answer_tag"``: the last ``<answer>...</answer>``,
    unwrapping a box inside it. ``"choice"``: an upper-case option letter, read from a box,
    an answer tag, an ``Answer: B`` phrase or the last line (``B``, ``(B)``, ``B.``,
    ``(B) 5``). ``choices`` (option texts in order A, B, ..., or a dict letter -> text) is
    only used by ``"choice"``: it restricts letters to the options given and maps an answer
    equal to an option's text (after :func:`~verl_ext.voting.normalize`) to that letter.
    """
    check_one_of("answer style", style, STYLES)
    if text is None:
        return None
    if style == "choice":
        answer = _choice(text, option_map(choices))
    else:
        answer = (_boxed if style == "boxed" else _answer_tag)(text)
    return (answer or "").strip() or None
