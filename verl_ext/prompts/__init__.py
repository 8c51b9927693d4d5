"""Prompt templates for question synthesis, stored as plain text files a user can edit.

A template is the text of one user message, a jinja2 template (``{{ name }}`` marks a field filled in
per seed row; a field no row provides is an error, never an empty string):

* ``{{question}}``: the seed's question (no ``<image>`` placeholders, no format instruction);
* ``{{answer}}``: the seed's answer;
* ``{{choices}}``: the seed's options as lines ``(A) text`` after a line break, or nothing when it has none.

The images go before the text unless the template marks their places with ``<image>`` (one per image).
Templates are chosen by name (a ``.txt`` file in this package, e.g. ``synth_in_context``) or by the path of
any text file; :func:`load_prompt` resolves both and lists the available names when neither matches.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import jinja2.meta

PROMPT_DIR = Path(__file__).resolve().parent
"""Where the built-in templates live."""
FIELDS: tuple[str, ...] = ("question", "answer", "choices")
"""The fields a template may use."""

FORMAT_INSTRUCTION = " Please reason step by step, and put your final answer within \\boxed{}."
"""MM-UPT's format instruction, appended to every question it trains and evaluates on (leading space kept)."""
IMAGE_PLACEHOLDER = "<image>"
"""Marks, inside a text message, where the next image goes (verl's multimodal rows use the same)."""

_SUFFIX = ".txt"
# StrictUndefined: a field the values do not provide raises instead of rendering as "".
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@functools.lru_cache(maxsize=64)
def _compiled(text: str) -> tuple[jinja2.Template, frozenset[str]]:
    try:
        return _JINJA.from_string(text), frozenset(jinja2.meta.find_undeclared_variables(_JINJA.parse(text)))
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"prompt template syntax error, line {exc.lineno}: {exc.message}") from None


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
        return _compiled(self.text)[1]

    @property
    def digest(self) -> str:
        """A short hash of the text: a resumed run must use the same wording."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    def render(self, values: Mapping[str, str]) -> str:
        """The template with every field replaced by ``values[field]`` (a missing value is an error)."""
        missing = sorted(self.fields - set(values))
        if missing:
            raise PromptError(f"prompt {self.name}: no value for {', '.join(missing)}")
        # Values are inserted as they are: braces inside them are never read as template syntax.
        return _compiled(self.text)[0].render({k: str(v) for k, v in values.items()})


def format_choices(choices: Sequence[str] | Mapping[str, str]) -> str:
    """Options as ``"\\n(A) x\\n(B) y"`` (texts in order A, B, ..., or a dict letter -> text); ``""`` without any.

    The ``{{choices}}`` field of the synthesis templates, and the option lines of evaluation prompts.
    """
    items = choices.items() if isinstance(choices, Mapping) else ((chr(ord("A") + i), c) for i, c in enumerate(choices))
    return "".join(f"\n({letter}) {text}" for letter, text in items)


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
    try:
        used = _compiled(text)[1]
    except PromptError as exc:
        raise PromptError(f"prompt template {path}: {exc}") from None
    unknown = sorted(used - set(FIELDS))
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
