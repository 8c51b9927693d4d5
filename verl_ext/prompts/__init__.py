"""Prompt templates for question synthesis, stored as plain text files a user can edit.

A template is the text of one user message. ``{{name}}`` marks a field filled in per seed row:

* ``{{question}}``: the seed's question (no ``<image>`` placeholders, no format instruction);
* ``{{answer}}``: the seed's answer;
* ``{{choices}}``: the seed's options as lines ``(A) text`` after a line break, or nothing when it has none.

The images go before the text unless the template marks their places with ``<image>`` (one per image).
Templates are chosen by name (a ``.txt`` file in this package, e.g. ``synth_in_context``) or by the path of
any text file; :func:`load_prompt` resolves both and lists the available names when neither matches.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FIELDS",
    "PROMPT_DIR",
    "PromptError",
    "PromptTemplate",
    "available_prompts",
    "format_choices",
    "load_prompt",
]

PROMPT_DIR = Path(__file__).resolve().parent
"""Where the built-in templates live."""
FIELDS: tuple[str, ...] = ("question", "answer", "choices")
"""The fields a template may use."""

_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SUFFIX = ".txt"


class PromptError(ValueError):
    """A template cannot be found, read or used."""


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template."""

    name: str
    """The built-in name, or the file path for a template given by path (recorded as provenance)."""
    path: Path
    """The file it was read from."""
    text: str
    """The template text, ``{{field}}`` markers included."""

    @property
    def fields(self) -> frozenset[str]:
        """The fields the template uses."""
        return frozenset(_FIELD.findall(self.text))

    @property
    def digest(self) -> str:
        """A short hash of the text: a resumed run must use the same wording."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    def render(self, values: Mapping[str, str]) -> str:
        """The template with every field replaced by ``values[field]`` (a missing value is an error)."""
        missing = sorted(self.fields - set(values))
        if missing:
            raise PromptError(f"prompt {self.name}: no value for {', '.join(missing)}")
        # One pass with a function: braces inside the values are never read as markers.
        return _FIELD.sub(lambda m: str(values[m.group(1)]), self.text)


def format_choices(choices: list[str] | tuple[str, ...]) -> str:
    """The ``{{choices}}`` value: ``"\\n(A) x\\n(B) y"``, or ``""`` without options."""
    return "".join(f"\n({chr(ord('A') + i)}) {choice}" for i, choice in enumerate(choices))


def available_prompts() -> list[str]:
    """Names of the built-in templates, sorted."""
    return sorted(p.stem for p in PROMPT_DIR.glob(f"*{_SUFFIX}") if p.is_file())


def _read(path: Path, name: str) -> PromptTemplate:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"cannot read prompt template {path}: {exc}") from None
    text = text.strip()
    if not text:
        raise PromptError(f"prompt template {path} is empty")
    unknown = sorted(set(_FIELD.findall(text)) - set(FIELDS))
    if unknown:
        raise PromptError(
            f"prompt template {path} uses unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}"
        )
    return PromptTemplate(name=name, path=path, text=text)


def load_prompt(name_or_path: str | os.PathLike[str]) -> PromptTemplate:
    """Load a built-in template by name (with or without ``.txt``) or any template file by path."""
    value = os.fspath(name_or_path)
    path = Path(value).expanduser()
    if path.is_file():
        return _read(path.absolute(), str(path.absolute()))
    if path.is_dir():
        raise PromptError(f"prompt template {value} is a directory, not a template file")
    stem = value[: -len(_SUFFIX)] if value.endswith(_SUFFIX) else value
    if stem in available_prompts():
        return _read(PROMPT_DIR / f"{stem}{_SUFFIX}", stem)
    names = ", ".join(available_prompts()) or "none"
    if os.sep in value or value.endswith(_SUFFIX) or value.startswith(("~", ".")):
        raise PromptError(f"prompt template file {value} does not exist (built-in prompts: {names})")
    raise PromptError(f"unknown prompt {value!r}: give a file path or one of the built-in prompts: {names}")
