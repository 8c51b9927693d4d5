"""Cheap, sympy-free normalisation of final answers, plus guards for the grader.

Two answers whose normalised forms are equal are the same vote without any
symbolic work; :func:`grader_safe` tells whether a normalised answer may be
handed to the symbolic grader at all.
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction
from itertools import accumulate

# Unicode math symbols (minus sign, en dash, middle dot, times, pi, infinity, degree) to LaTeX.
_UNICODE = str.maketrans({
    "\u2212": "-", "\u2013": "-", "\u00b7": r"\cdot ", "\u00d7": r"\times ", "\u03c0": r"\pi ", "\u221e": r"\infty ",
    "\u00b0": r"^\circ",
})
_DROP = re.compile(
    r"\\left\.|\\right\.|\\left(?![a-zA-Z])|\\right(?![a-zA-Z])"
    r"|\\[bB]ig{1,2}[lr]?(?![a-zA-Z])|\\displaystyle|\\textstyle"
    r"|\\[,;:! ]|\\q?quad(?![a-zA-Z])|~|\\?\$"
)
# Aliases to one spelling; degrees and percent signs dropped.
_ALIASES = (
    (re.compile(r"\\[dtc]frac(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![a-zA-Z])"), r"\\binom"),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])"), ""),
    (re.compile(r"\\?%"), ""),
)
_WRAPPERS = ("text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mathit", "mbox", "operatorname")
_WRAPPER = re.compile(r"\\(?:" + "|".join(_WRAPPERS) + r")\s*\{")
# A number written plainly or as a LaTeX fraction of integers; used to recognise "number + unit".
_NUM = r"[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:/\d+)?|[+-]?\\frac\{\d+\}\{\d+\}"
_TEXT_UNIT = re.compile(rf"^({_NUM})\s*\\(?:text|mbox|mathrm|textrm)\s*\{{\s*[a-zA-Z][a-zA-Z .]*\}}(\^\{{?[23]\}}?)?$")
_UNITS = (
    "mm|cm|km|m|meters?|metres?|kg|g|grams?|mg|s|sec|seconds?|min|minutes?|h|hrs?|hours?|days?|weeks?|months?"
    "|years?|ft|feet|foot|in|inch(?:es)?|yd|yards?|miles?|mph|units?|sq|square units|degrees?|dollars?|cents?"
    "|l|liters?|litres?|ml|mL|L|lbs?|pounds?|oz|ounces?|cups?|people|students|ways|times|points|cm2|m2"
)
_WORD_UNIT = re.compile(rf"^({_NUM})\s+(?:{_UNITS})(\^\{{?[23]\}}?)?$")
_GLUED_UNIT = re.compile(rf"^({_NUM})(?:mm|cm|km|kg|mg|ft|sec|min|hrs?|mph|ml|lbs?)(\^\{{?[23]\}}?)?$")
_SPACE = re.compile(r"\s+")
# A space only matters between two letters ("New York", "\cdot x") or two digits (the mixed
# number "7 3/4"); elsewhere LaTeX ignores it.
_SPACE_DROP = re.compile(r"(?<![a-zA-Z0-9]) | (?![a-zA-Z0-9])|(?<=[a-zA-Z]) (?=[0-9])|(?<=[0-9]) (?=[a-zA-Z])")
_THIN_THOUSANDS = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")
_LHS = re.compile(r"^[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)? ?= ?")
# One-character arguments braced: \frac12, \frac1{x}, \frac{x}2, \sqrt2.
_BRACED_ARGUMENTS = (
    (re.compile(r"\\frac\s*([0-9a-zA-Z])\s*([0-9a-zA-Z])"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*([0-9a-zA-Z])\s*\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac(\{[^{}]*\})\s*([0-9a-zA-Z])"), r"\\frac\1{\2}"),
    (re.compile(r"\\sqrt\s*([0-9a-zA-Z])"), r"\\sqrt{\1}"),
)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_SLASH_NUMBER = re.compile(r"^([+-]?\d+)/([+-]?\d+)$")
_LATEX_NUMBER = re.compile(r"^([+-]?)\\frac\{([+-]?(?:\d+(?:\.\d*)?|\.\d+))\}\{([+-]?(?:\d+(?:\.\d*)?|\.\d+))\}$")
_CANONICAL_NUMBER = re.compile(r"^-?\d+(?:/\d+)?$")
_PLAIN_TEXT = re.compile(r"^[a-zA-Z]+(?: [a-zA-Z]+)*$")
# Longest number (in characters) turned into a Fraction; longer numbers stay as written (int() and
# str() of big integers cost quadratic time, and Python refuses over 4,300 digits).
MAX_NUMBER_LEN = 100
# Longest answer (in characters, surrounding whitespace excluded) that is normalised at all. A
# longer one is returned stripped but otherwise as written, so it only equals the same text: the
# rules below are linear but run in Python (~1-2 us a character), and a response is untrusted input.
MAX_ANSWER_LEN = 1000

# Guards: forms on which sympy (through mathruler) can run for minutes or exhaust memory.
MAX_GRADER_LEN = 300
MAX_GRADER_DEPTH = 10
_HOSTILE = re.compile(
    r"\*\*"  # Python power: mathruler's own '^' guards do not see it
    r"|\^\s*\{[^{}]*\^|\^\s*\([^()]*\^|\^\s*[\w.]+\s*\^"  # towers: a^{b^c}, a^(b^c), a^b^c
    r"|\^\s*\{[^{}]*\}\s*\^|\^\s*\([^()]*\)\s*\^"  # towers: a^{b}^{c}, a^(b)^c
    r"|\^\s*[{(]?\s*[+-]?\d{4,}"  # exponents >= 1000
    r"|\d{5,}\s*\)*\s*!"  # factorial of a number >= 10000
    r"|!\s*\)*\s*!"  # iterated factorials such as (9!)!
)


def _unwrap(text: str, opener: re.Pattern[str]) -> str:
    """Drop every ``opener`` (which ends in ``{``) and its matching ``}``, in one linear pass."""
    out: list[str] = []
    # One flag per open brace: True when its closing brace is kept.
    stack: list[bool] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            m = opener.match(text, i)
            if m is not None:
                stack.append(False)
                i = m.end()
                continue
            out.append(text[i : i + 2])
            i += 2
            continue
        if ch == "{":
            stack.append(True)
        elif ch == "}" and stack and not stack.pop():
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=8)
def _brackets(opening: str, closing: str) -> re.Pattern[str]:
    # A backslash escapes the character after it (a pair the scan steps over), else a bracket.
    return re.compile(r"\\.|" + re.escape(opening) + "|" + re.escape(closing), re.DOTALL)


def partners(text: str, opening: str = "{", closing: str = "}") -> dict[int, int]:
    """Map each ``opening`` index to its matching ``closing`` index, in one pass; escaped ones are literals.

    The scan jumps from bracket to bracket (a regex), so text between them costs C speed: a
    response of a million digits in a box is matched in milliseconds.
    """
    found: dict[int, int] = {}
    stack: list[int] = []
    for m in _brackets(opening, closing).finditer(text):
        ch = m.group()
        if ch == opening:
            stack.append(m.start())
        elif ch == closing:
            if stack:
                found[stack.pop()] = m.start()
    return found


def _strip_enclosing(s: str, opening: str = "{", closing: str = "}") -> str:
    """Remove ``opening``/``closing`` pairs enclosing the whole string, however many layers, in linear time."""
    partner = partners(s, opening, closing)
    lo, hi = 0, len(s) - 1
    while lo < hi and partner.get(lo) == hi:
        lo += 1
        hi -= 1
        while lo < hi and s[lo] == " ":
            lo += 1
        while hi > lo and s[hi] == " ":
            hi -= 1
    return s[lo : hi + 1]


def _tidy(s: str) -> str:
    return _SPACE.sub(" ", s).strip().rstrip(".").rstrip()


def _strip_lhs(s: str) -> str:
    return _LHS.sub("", s) if s.count("=") == 1 else s


def _strip_units(s: str) -> str:
    for pattern in (_TEXT_UNIT, _WORD_UNIT, _GLUED_UNIT):
        m = pattern.match(s)
        if m is not None:
            return m.group(1)
    return s


def _as_fraction(s: str) -> Fraction | None:
    if len(s) > MAX_NUMBER_LEN:
        return None
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    try:
        if _PLAIN_NUMBER.match(s):
            return Fraction(s)
        if m := _SLASH_NUMBER.match(s):
            return Fraction(int(m.group(1)), int(m.group(2)))
        if m := _LATEX_NUMBER.match(s):
            value = Fraction(m.group(2)) / Fraction(m.group(3))
            return -value if m.group(1) == "-" else value
    except ZeroDivisionError:
        return None
    return None


def normalize(answer: str) -> str:
    """Return a canonical string for ``answer`` using string rules only (never sympy).

    Rules, in order: unicode math symbols to LaTeX; drop ``$``, ``\\left``/``\\right``,
    ``\\big`` sizes, ``\\displaystyle`` and spacing commands (``\\!``, ``\\,``, ``~``,
    ``\\quad``; ``\\,`` in ``1\\,000`` is a thousands separator); ``\\dfrac``/``\\tfrac`` to
    ``\\frac``; drop degrees (``^\\circ``, ``°``) and ``%``; drop a leading single-variable
    ``x =`` (so ``x=3`` and ``3`` are one answer); drop a unit after a plain number
    (``5 \\text{cm}``, ``5 meters``, ``5cm``); unwrap ``\\text{}``, ``\\mathrm{}``,
    ``\\textbf{}``...; drop a trailing period; drop whitespace except between two letters or
    two digits; drop enclosing braces, and enclosing parentheses that do not make a tuple;
    brace ``\\frac12``/``\\sqrt2``; and write plain numbers (integers, decimals, ``a/b``,
    ``\\frac{a}{b}``, ``1,000``) as a reduced fraction: ``0.5``, ``1/2``, ``\\frac{1}{2}`` and
    ``\\dfrac12`` all become ``"1/2"``; ``3.0`` becomes ``"3"``; the elements of a set written
    ``\\{...\\}`` are sorted. What this decides on purpose (``10%`` is ``10``, tuples are ordered)
    is listed in docs/vote.md.

    An answer longer than ``MAX_ANSWER_LEN`` (1,000) characters once stripped is returned stripped
    and otherwise unchanged, so the cost is bounded by the input's size before any rule runs.
    """
    s = answer.strip()
    if len(s) > MAX_ANSWER_LEN:
        return s
    s = _DROP.sub(" ", _THIN_THOUSANDS.sub("", s.translate(_UNICODE)))
    for pattern, replacement in _ALIASES:
        s = pattern.sub(replacement, s)
    s = _strip_units(_strip_enclosing(_strip_lhs(_tidy(s))))
    s = _strip_units(_tidy(_unwrap(s, _WRAPPER)))
    s = _strip_enclosing(_strip_lhs(_SPACE_DROP.sub("", s)))
    if "," not in s:  # parentheses around a tuple are part of it
        s = _strip_enclosing(s, "(", ")")
    for pattern, replacement in _BRACED_ARGUMENTS:
        s = pattern.sub(replacement, s)
    value = _as_fraction(s)
    if value is not None:
        return str(value)  # Fraction prints "3" or "-1/2": already canonical
    return _sorted_set(s)


def _top_level_split(s: str) -> list[str]:
    """Split at commas outside any brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _sorted_set(s: str) -> str:
    """``\\{3,2\\}`` -> ``\\{2,3\\}``: a set written as one is unordered (tuples and intervals stay ordered)."""
    if not (s.startswith("\\{") and s.endswith("\\}")) or len(s) > MAX_GRADER_LEN:
        return s
    inner = s[2:-2]
    if "\\{" in inner or "\\}" in inner:
        return s  # nested sets: left as written
    elements = [normalize(part) for part in _top_level_split(inner)]
    return "\\{" + ",".join(sorted(set(elements))) + "\\}"  # a set: order and repeats do not count


def is_number(normalized: str) -> bool:
    """Whether a :func:`normalize` output is a canonical rational number like ``"-1/2"``."""
    return _CANONICAL_NUMBER.match(normalized) is not None


def is_plain_text(normalized: str) -> bool:
    """Whether a :func:`normalize` output is only words (letters and single spaces)."""
    return len(normalized) <= MAX_GRADER_LEN and _PLAIN_TEXT.match(normalized) is not None


def grader_safe(normalized: str) -> bool:
    """Whether a normalised answer may be given to the symbolic grader.

    Over-long strings, deep nesting, exponent towers, huge exponents, ``**`` and big or
    iterated factorials are refused: such an answer then only equals answers with the same
    normalised string.
    """
    if len(normalized) > MAX_GRADER_LEN or _HOSTILE.search(normalized) is not None:
        return False
    depth = accumulate(((ch in "{([") - (ch in "})]") for ch in normalized), initial=0)
    return max(depth) <= MAX_GRADER_DEPTH
