"""Settings dataclasses from plain config mappings: unknown keys and values are errors that name the known ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Optional, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], values: Optional[Mapping[str, Any]], what: str) -> T:
    """``cls(**values)``, refusing keys that are not fields of ``cls`` (``what`` names the settings)."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def check_one_of(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
