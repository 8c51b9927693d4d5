"""Answer equivalence: cheap string rules first, then a cached, time-bounded symbolic check.

Two answers are equivalent when their :func:`normalize` forms are equal, or when mathruler's
``grade_answer`` accepts them in either direction. Many pairs are decided without sympy:
two different plain numbers (normalised to reduced fractions) are unequal, two plain words
compare case-insensitively, an answer that :func:`grader_safe` refuses (exponent towers,
huge strings...) only equals its own normalised string, and two expressions whose values
differ at sample points (:func:`numerically_different`) are unequal, and two constant
expressions with the same value (``\\sqrt{2}`` and ``2^{1/2}``) are equal. The remaining pairs go
to grader processes (:mod:`verl_ext.voting.grader`) under a per-pair timeout and a
per-call budget; results are kept in an LRU cache keyed on the normalised pair.

Timeouts are module-wide, see :func:`set_timeouts`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

from verl_ext.voting.grader import Deadline, Grader, Verdict
from verl_ext.voting.normalize import grader_safe, is_number, is_plain_text, normalize
from verl_ext.voting.numeric import constants_equal, numerically_different

logger = logging.getLogger(__name__)

__all__ = [
    "is_equivalent",
    "first_equivalent",
    "Representatives",
    "Deadline",
    "set_timeouts",
    "get_timeouts",
    "warm_up",
    "shutdown_grader",
    "clear_cache",
]

CACHE_SIZE = 1 << 16
_DEADLINE_EVERY = 32  # cheap checks between two looks at the clock
_WARNED_MAX = 4096
_WARN_CHARS = 80

_timeouts = {"per_pair": 1.0, "per_vote": 2.0}
_grader = Grader()
os.register_at_fork(after_in_child=_grader.forget_after_fork)


class _LRU:
    """A small thread-safe LRU map from a normalised pair to its verdict."""

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bool | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[str, str], value: bool) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if len(self._data) > self._maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_cache = _LRU(CACHE_SIZE)
_warned: set[str] = set()
_budget_warned = False


def set_timeouts(*, per_pair: float | None = None, per_vote: float | None = None) -> tuple[float, float]:
    """Set the grader limits (seconds) and return the new ``(per_pair, per_vote)``.

    ``per_pair`` (default 1.0) bounds one symbolic check; a pair that gets that long
    without an answer is treated as unequal, and cached so (its worker process is
    replaced by a warm fork in milliseconds). ``per_vote`` (default 2.0) bounds all
    symbolic checks of one :func:`~verl_ext.voting.vote` or :func:`is_equivalent` call,
    waiting for other threads' checks included; pairs it cuts short are treated as
    unequal but not cached, so they are tried again next time. Only the grader's first
    start in a process (importing sympy, ~0.5 s) is not counted. The limits are
    process-wide.
    """
    for name, value in (("per_pair", per_pair), ("per_vote", per_vote)):
        if value is not None:
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
            _timeouts[name] = float(value)
    return get_timeouts()


def get_timeouts() -> tuple[float, float]:
    """Return the current ``(per_pair, per_vote)`` grader limits in seconds."""
    return _timeouts["per_pair"], _timeouts["per_vote"]


def warm_up() -> None:
    """Start the grader processes now (they otherwise start on the first symbolic check)."""
    _grader.start()


def shutdown_grader() -> None:
    """Stop the grader processes; they are also stopped at interpreter exit."""
    _grader.close()


def clear_cache() -> None:
    """Forget all cached symbolic verdicts (and the kinds of answers seen)."""
    _cache.clear()
    kind.cache_clear()


#: Kinds of normalised answers. A ``STRING`` answer (too long or hostile for the grader) equals only
#: its own string; two ``NUMBER``s (reduced fractions) are equal only as strings; two ``TEXT``s
#: compare case-insensitively; a NUMBER never equals a TEXT. Only pairs with an ``EXPR`` need checks.
NUMBER, TEXT, STRING, EXPR = "number", "text", "string", "expr"


@functools.lru_cache(maxsize=CACHE_SIZE)
def kind(normalized: str) -> str:
    """The kind of a normalised answer (computed once per string: a vote compares it with many)."""
    if is_number(normalized):
        return NUMBER
    if is_plain_text(normalized):
        return TEXT
    return EXPR if grader_safe(normalized) else STRING


def _cheap_verdict(a: str, b: str) -> bool | None:
    """Decide a pair of normalised answers without sympy, or return ``None``."""
    if a == b:
        return True
    ka, kb = kind(a), kind(b)
    if STRING in (ka, kb):
        return False
    if ka != EXPR and kb != EXPR:
        return ka == kb == TEXT and a.casefold() == b.casefold()
    if numerically_different(a, b):
        return False
    if constants_equal(a, b):
        return True
    return None


def _pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _warn_timeout(a: str, b: str, per_pair: float) -> None:
    # Warn once per string: a hostile answer tends to come back step after step.
    for s in (a, b):
        if s not in _warned and len(_warned) < _WARNED_MAX:
            _warned.add(s)
            logger.warning(
                "answer check exceeded %.2fs; treating %r as unequal to %r",
                per_pair,
                s[:_WARN_CHARS],
                (b if s is a else a)[:_WARN_CHARS],
            )
            return


def _log_budget_exhausted(key: str) -> None:
    global _budget_warned
    level = logging.DEBUG if _budget_warned else logging.WARNING
    _budget_warned = True
    logger.log(
        level,
        "answer checks ran out of the per-vote budget (%.2fs); %r treated as unequal to the rest "
        "(further occurrences are logged at DEBUG)",
        get_timeouts()[1],
        key[:_WARN_CHARS],
    )


def _check_pairs(
    pairs: Sequence[tuple[str, str]], *, timeout: float, deadline: Deadline, stop_on_equal: bool
) -> list[Verdict]:
    """Symbolic check of normalised pairs (a seam for tests that count grader calls)."""
    return _grader.check(pairs, timeout=timeout, deadline=deadline, stop_on_equal=stop_on_equal)


def first_equivalent(key: str, candidates: Sequence[str], *, deadline: Deadline) -> int | None:
    """Index of the first of ``candidates`` equivalent to ``key`` (all normalised), or ``None``.

    Symbolic checks still needed are sent in one batch that stops at the first equal pair;
    ``deadline`` bounds them.
    """
    pending: list[int] = []
    found: int | None = None
    for j, candidate in enumerate(candidates):
        if j % _DEADLINE_EVERY == _DEADLINE_EVERY - 1 and deadline.remaining() <= 0:
            _log_budget_exhausted(key)  # the budget bounds the cheap checks too
            break
        verdict = _cheap_verdict(key, candidate)
        if verdict is None:
            verdict = _cache.get(_pair_key(key, candidate))
        if verdict:
            found = j
            break
        if verdict is None:
            pending.append(j)
    if not pending:
        return found
    per_pair, _ = get_timeouts()
    verdicts = _check_pairs(
        [(key, candidates[j]) for j in pending], timeout=per_pair, deadline=deadline, stop_on_equal=True
    )
    if Verdict.SKIPPED in verdicts and Verdict.EQUAL not in verdicts:
        _log_budget_exhausted(key)  # skips after an EQUAL are just stop_on_equal
    for j, verdict in zip(pending, verdicts):
        if verdict is Verdict.SKIPPED:
            continue
        if verdict is Verdict.TIMED_OUT:
            _warn_timeout(key, candidates[j], per_pair)
        equal = verdict is Verdict.EQUAL
        _cache.put(_pair_key(key, candidates[j]), equal)
        if equal:
            return j
    return found


class Representatives:
    """The first answer of each cluster of a vote, indexed by kind so a new answer meets only the
    representatives it could equal: a number only expressions, a string-only answer nobody (it is
    found by its exact string), so groups of numbers and words cost about linear time."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._by_kind: dict[str, list[int]] = {NUMBER: [], TEXT: [], EXPR: [], STRING: []}
        self._texts: dict[str, int] = {}

    def add(self, key: str) -> int:
        index = len(self.keys)
        self.keys.append(key)
        k = kind(key)
        self._by_kind[k].append(index)
        if k == TEXT:
            self._texts.setdefault(key.casefold(), index)
        return index

    def find(self, key: str, *, deadline: Deadline) -> int | None:
        """Index of the first representative equivalent to the normalised ``key``, or ``None``."""
        k = kind(key)
        if k == STRING:
            return None
        if k == NUMBER:
            indices = self._by_kind[EXPR]
        elif k == TEXT:
            same_text = self._texts.get(key.casefold())
            indices = [i for i in self._by_kind[EXPR] if same_text is None or i < same_text]
            found = first_equivalent(key, [self.keys[i] for i in indices], deadline=deadline)
            return indices[found] if found is not None else same_text
        else:
            indices = sorted(self._by_kind[NUMBER] + self._by_kind[TEXT] + self._by_kind[EXPR])
        found = first_equivalent(key, [self.keys[i] for i in indices], deadline=deadline)
        return None if found is None else indices[found]


def is_equivalent(a: str | None, b: str | None) -> bool:
    """Whether two answers are the same answer (see module docstring); ``None`` equals nothing.

    A symbolic check, if needed, is bounded like a one-pair vote: the per-pair timeout
    and the per-vote budget of :func:`set_timeouts`.
    """
    if a is None or b is None:
        return False
    key_a, key_b = normalize(a), normalize(b)
    if not key_a or not key_b:
        return False
    return first_equivalent(key_a, [key_b], deadline=Deadline(get_timeouts()[1])) == 0
