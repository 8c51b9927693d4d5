"""A sympy-free numeric probe: evaluate two normalised answers in floating point at a few sample points.

Most pairs that reach the symbolic grader are simply different answers (``\\frac{\\sqrt{3}}{2}`` vs
``\\sqrt{3}``): sympy needs milliseconds per direction to say so, the probe microseconds. It understands
a small LaTeX subset: decimal numbers, single lower-case letters (free variables), ``\\pi``, ``+ - * / ^``,
``\\cdot``, ``\\times``, implicit products, ``( )``/``{ }`` groups, ``\\frac{}{}`` and ``\\sqrt{}``; anything
else, and any domain problem at a sample point, gives no verdict. It reads ``\\frac{x+1}{2}`` as a
fraction where mathruler's LaTeX conversion reads ``x+1/2``, so it keeps ``\\frac{x+1}{2}`` and
``x+\\frac{1}{2}`` apart where ``grade_answer`` alone would (wrongly) merge them.
"""

from __future__ import annotations

import math
import operator
import re
from functools import lru_cache

# Relative gap above which two values are different; float noise on equal expressions is ~1e-13.
_REL_TOL = 1e-7
_MAX_EXPONENT = 64.0
# Any other character (comma, bracket, '!', '=', ...) is outside the subset.
_TOKEN = re.compile(r"\d+(?:\.\d*)?|\.\d+|\\[a-zA-Z]+|[a-z]|[-+*/^(){}]|(?P<other>\S)")
# Words and capitals (units, names, sympy constants), checked with commands masked out.
_WORDS = re.compile(r"[A-Z]|[a-z]\s*[a-z]")
# Mixed numbers: mathruler reads "7 3/4" and "7\frac{3}{4}" as 7 + 3/4, not as a product.
_MIXED = re.compile(r"[\d.]\s+[\d.]|[\d.]\s*\\frac")
_COMMANDS = re.compile(r"\\[a-zA-Z]+")
_SAMPLES = 3
_SUMS = {"+": operator.add, "-": operator.sub}
_PRODUCTS = {"*": operator.mul, r"\cdot": operator.mul, r"\times": operator.mul, "/": operator.truediv}


class _Unsupported(Exception):
    """The expression is outside the subset the probe evaluates."""


def _variable_value(letter: str, sample: int) -> float:
    # Distinct, irrational-looking positive values: square roots stay real, products do not collide.
    return 0.5 + math.modf((ord(letter) - 96) * 0.6180339887498949 + sample * 0.4142135623730951)[0] * 1.5


_VALUES = {chr(c): tuple(_variable_value(chr(c), s) for s in range(_SAMPLES)) for c in range(97, 123)}


class _Parser:
    """Recursive descent over the tokens, evaluating at one sample point."""

    def __init__(self, tokens: list[str], sample: int) -> None:
        self.tokens = tokens
        self.sample = sample
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise _Unsupported
        self.pos += 1
        return token

    def parse(self) -> float:
        value = self.expr()
        if self.peek() is not None:
            raise _Unsupported
        return value

    def expr(self) -> float:
        value = self.term()
        while self.peek() in _SUMS:
            value = _SUMS[self.take()](value, self.term())
        return value

    def term(self) -> float:
        value = self.unary()
        while True:
            token = self.peek()
            if token in _PRODUCTS:
                self.take()
                value = _PRODUCTS[token](value, self.unary())
            elif token not in (None, ")", "}", "+", "-"):
                value *= self.power()  # implicit product binds like '*', as in sympy
            else:
                return value

    def unary(self) -> float:
        if self.peek() in ("-", "+"):
            return -self.unary() if self.take() == "-" else self.unary()
        return self.power()

    def power(self) -> float:
        base = self.primary()
        if self.peek() != "^":
            return base
        self.take()
        exponent = self.unary()
        if abs(exponent) > _MAX_EXPONENT:
            raise _Unsupported
        return math.pow(base, exponent)  # raises instead of going complex for (-8)^(1/3)

    def group(self) -> float:
        self.take("{")
        value = self.expr()
        self.take("}")
        return value

    def primary(self) -> float:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return float(token)
        if len(token) == 1 and token.isalpha():
            return _VALUES[token][self.sample]
        if token == r"\pi":
            return math.pi
        if token in ("(", "{"):
            value = self.expr()
            self.take(")" if token == "(" else "}")
            return value
        if token == r"\frac":
            return self.group() / self.group()
        if token == r"\sqrt":
            return math.sqrt(self.group())
        raise _Unsupported


@lru_cache(maxsize=4096)
def _values(text: str) -> tuple[float, ...] | None:
    matches = list(_TOKEN.finditer(text))
    if _MIXED.search(text) or _WORDS.search(_COMMANDS.sub("#", text)) or any(m.lastgroup for m in matches):
        return None
    tokens = [m.group() for m in matches]
    try:
        values = tuple(_Parser(tokens, s).parse() for s in range(_SAMPLES))
    except (_Unsupported, ArithmeticError, ValueError, RecursionError):
        return None
    return values if all(math.isfinite(v) for v in values) else None


def numerically_different(a: str, b: str) -> bool:
    """True when normalised answers ``a`` and ``b`` both evaluate and differ at a sample point.

    ``False`` means "no verdict", not "equal".
    """
    va, vb = _values(a), _values(b)
    if va is None or vb is None:
        return False
    return any(abs(x - y) > _REL_TOL * max(1.0, abs(x), abs(y)) for x, y in zip(va, vb))


_CONSTANT_TOL = 1e-12
# Above this magnitude 1e-12 relative is more than 1e-6 absolute: 10^{13} and 10000000000001 would merge.
_CONSTANT_MAX = 1e6


def constants_equal(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` have no variables and evaluate to the same value (to 1e-12 relative).

    Decides radicals and powers such as ``\\sqrt{2}`` and ``2^{1/2}`` without sympy. The tolerance
    is far below any rounding a model writes, so ``1.4142136`` is not ``\\sqrt{2}``; values of magnitude
    1e6 or more get no verdict (float64 cannot separate ``10^{13}`` from ``10^{13}+1`` at that tolerance).
    """
    letters = _COMMANDS.sub("", a + " " + b)
    if letters.lower() != letters.upper():
        return False  # a letter outside a command: a variable
    va, vb = _values(a), _values(b)
    if va is None or vb is None or max(abs(v) for v in va + vb) >= _CONSTANT_MAX:
        return False
    return all(abs(x - y) <= _CONSTANT_TOL * max(1.0, abs(x), abs(y)) for x, y in zip(va, vb))
