"""Answer equivalence: cheap string rules first, then a cached, time-bounded symbolic check.

Two answers are equivalent when their :func:`normalize` forms are equal, or when mathruler's
``grade_answer`` accepts them in either direction. Most pairs are decided without sympy (see
:func:`_cheap_verdict`); the rest go to grader processes (:mod:`verl_ext.voting.grader`) under a
per-pair timeout and a per-call budget (module-wide, see :func:`set_timeouts`), their verdicts kept
in an LRU cache keyed on the normalised pair.

:func:`grade_against` is mathruler's one-way grading of raw strings (the public MM-UPT reward),
through the same processes and limits.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

from verl_ext.voting.grader import Deadline, Grader, Verdict
from verl_ext.voting.normalize import MAX_ANSWER_LEN, MAX_GRADER_LEN, grader_safe, is_number, is_plain_text, normalize
from verl_ext.voting.numeric import constants_equal, numerically_different

logger = logging.getLogger(__name__)

CACHE_SIZE = 1 << 16
_DEADLINE_EVERY = 32  # cheap checks between two looks at the clock
_WARNED_MAX = 4096

_timeouts = {"per_pair": 1.0, "per_vote": 2.0}
_grader = Grader()
os.register_at_fork(after_in_child=_grader.forget_after_fork)


class _LRU(OrderedDict):
    """A thread-safe LRU map from a pair of answers to its verdict; unless ``ordered``, a pair and its
    reverse are one entry."""

    def __init__(self, maxsize: int, *, ordered: bool = False) -> None:
        super().__init__()
        self.maxsize = maxsize
        self.ordered = ordered
        self.lock = threading.Lock()

    def _pair(self, a: str, b: str) -> tuple[str, str]:
        return (a, b) if self.ordered or a <= b else (b, a)

    def get(self, a: str, b: str) -> bool | None:
        pair = self._pair(a, b)
        with self.lock:
            if pair in self:
                self.move_to_end(pair)
            return super().get(pair)

    def put(self, a: str, b: str, value: bool) -> None:
        with self.lock:
            pair = self._pair(a, b)
            self[pair] = value
            self.move_to_end(pair)
            if len(self) > self.maxsize:
                self.popitem(last=False)


_cache = _LRU(CACHE_SIZE)
# grade_against's verdicts: (given answer, reference) as written, in that order.
_one_way_cache = _LRU(CACHE_SIZE, ordered=True)
_warned: set[str] = set()
_budget_warned = False


def set_timeouts(*, per_pair: float | None = None, per_vote: float | None = None) -> tuple[float, float]:
    """Set the process-wide grader limits (seconds) and return the new ``(per_pair, per_vote)``.

    ``per_pair`` (default 1.0) bounds one symbolic check; a pair that gets that long without an
    answer is unequal, and cached so. ``per_vote`` (default 2.0) bounds all checks of one
    :func:`~verl_ext.voting.vote` or :func:`is_equivalent` call, waiting for other threads' checks
    included; pairs it cuts short are unequal but not cached, so they are tried again next time.
    Only the grader's first start in a process (importing sympy, ~0.5 s) is not counted.
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


def clear_cache() -> None:
    """Forget all cached symbolic verdicts (and the kinds of answers seen)."""
    _cache.clear()
    _one_way_cache.clear()
    kind.cache_clear()


# Kinds of normalised answers. A STRING answer (over MAX_GRADER_LEN characters, a number included,
# or hostile for the grader) equals only its own string; two NUMBERs (reduced fractions) are equal
# only as strings; two TEXTs compare case-insensitively; a NUMBER never equals a TEXT. Only pairs
# with an EXPR need checks.
NUMBER, TEXT, STRING, EXPR = "number", "text", "string", "expr"


@functools.lru_cache(maxsize=CACHE_SIZE)
def kind(normalized: str) -> str:
    """The kind of a normalised answer (computed once per string: a vote compares it with many)."""
    if len(normalized) > MAX_GRADER_LEN:
        return STRING
    if is_number(normalized):
        return NUMBER
    if is_plain_text(normalized):
        return TEXT
    return EXPR if grader_safe(normalized) else STRING


def _cheap_verdict(a: str, b: str) -> bool | None:
    """Decide a pair of normalised answers without sympy, or return ``None``: by kind, then by the
    values of both sides at sample points (different values, or equal constants like ``\\sqrt{2}``
    and ``2^{1/2}``)."""
    if a == b:
        return True
    ka, kb = kind(a), kind(b)
    if STRING in (ka, kb):
        return False
    if ka != EXPR and kb != EXPR:
        return ka == kb == TEXT and a.casefold() == b.casefold()
    if numerically_different(a, b):
        return False
    return True if constants_equal(a, b) else None


def _warn_timeout(a: str, b: str, per_pair: float) -> None:
    # Warn once per string: a hostile answer tends to come back step after step.
    for s, other in ((a, b), (b, a)):
        if s not in _warned and len(_warned) < _WARNED_MAX:
            _warned.add(s)
            logger.warning("answer check exceeded %.2fs; treating %r as unequal to %r", per_pair, s[:80], other[:80])
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
        key[:80],
    )


def first_equivalent(key: str, candidates: Sequence[str], *, deadline: Deadline) -> int | None:
    """Index of the first of ``candidates`` equivalent to ``key`` (all normalised), or ``None``.

    Symbolic checks still needed are sent in one batch that stops at the first equal pair;
    ``deadline`` bounds them, and the cheap checks too (the clock is read before the first
    candidate and every ``_DEADLINE_EVERY`` after it).
    """
    pending: list[int] = []
    found: int | None = None
    for j, candidate in enumerate(candidates):
        if j % _DEADLINE_EVERY == 0 and deadline.remaining() <= 0:
            _log_budget_exhausted(key)  # the budget bounds the cheap checks too
            break
        verdict = _cheap_verdict(key, candidate)
        if verdict is None:
            verdict = _cache.get(key, candidate)
        if verdict:
            found = j
            break
        if verdict is None:
            pending.append(j)
    if not pending:
        return found
    per_pair = get_timeouts()[0]
    pairs = [(key, candidates[j]) for j in pending]
    verdicts = _grader.check(pairs, timeout=per_pair, deadline=deadline, stop_on_equal=True)
    if Verdict.SKIPPED in verdicts and Verdict.EQUAL not in verdicts:
        _log_budget_exhausted(key)  # skips after an EQUAL are just stop_on_equal
    for j, verdict in zip(pending, verdicts):
        if verdict is Verdict.SKIPPED:
            continue
        if verdict is Verdict.TIMED_OUT:
            _warn_timeout(key, candidates[j], per_pair)
        _cache.put(key, candidates[j], verdict is Verdict.EQUAL)
        if verdict is Verdict.EQUAL:
            return j
    return found


class Representatives:
    """The first answer of each cluster of a vote, indexed by kind so a new answer meets only the
    representatives it could equal: a number only expressions, a string-only answer nobody (it is
    found by its exact string), so groups of numbers and words cost about linear time. The lists
    are kept in order as they grow, so a look-up copies nothing."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        # Representatives that are not STRINGs (what an expression may equal), and the expressions.
        self._comparable: list[int] = []
        self._comparable_keys: list[str] = []
        self._exprs: list[int] = []
        self._expr_keys: list[str] = []
        self._texts: dict[str, int] = {}

    def add(self, key: str, *, indexed: bool = True) -> int:
        """Append ``key`` as the next cluster's representative and return its index; one not
        ``indexed`` is never found by :meth:`find` (it is matched by its exact text only)."""
        index = len(self.keys)
        self.keys.append(key)
        k = kind(key) if indexed else STRING
        if k != STRING:
            self._comparable.append(index)
            self._comparable_keys.append(key)
        if k == EXPR:
            self._exprs.append(index)
            self._expr_keys.append(key)
        elif k == TEXT:
            self._texts.setdefault(key.casefold(), index)
        return index

    def find(self, key: str, *, deadline: Deadline) -> int | None:
        """Index of the first representative equivalent to the normalised ``key``, or ``None``."""
        k = kind(key)
        if k == STRING:
            return None
        same_text = self._texts.get(key.casefold()) if k == TEXT else None
        if k == EXPR:
            indices, keys = self._comparable, self._comparable_keys
        else:  # only an expression before the first same text can come first
            indices, keys = self._exprs, self._expr_keys
            if same_text is not None:
                keys = keys[: bisect.bisect_left(indices, same_text)]
        found = first_equivalent(key, keys, deadline=deadline)
        return same_text if found is None else indices[found]


def is_equivalent(a: str | None, b: str | None) -> bool:
    """Whether two answers are the same answer (see module docstring); ``None`` equals nothing.

    A symbolic check, if needed, is bounded like a one-pair vote: the per-pair timeout
    and the per-vote budget of :func:`set_timeouts`.
    """
    key_a, key_b = normalize(a or ""), normalize(b or "")
    return bool(key_a and key_b) and first_equivalent(key_a, [key_b], deadline=Deadline(get_timeouts()[1])) == 0


def grade_against(answers: Sequence[str], reference: str, *, deadline: Deadline) -> list[bool]:
    """mathruler's ``grade_answer(answer, reference)`` for each of ``answers``: the strings as given (not
    normalised), in that direction only, as the public MM-UPT reward grades a response against its
    majority answer.

    An answer identical to ``reference`` is accepted without a check (``grade_answer`` accepts any string
    against itself). The others go to the grader processes, each pair under the per-pair timeout, all
    of them under ``deadline``: a pair that times out is not accepted (and cached so), one the deadline
    cuts short is not accepted (and not cached). Verdicts on answers up to ``MAX_ANSWER_LEN`` characters
    are cached, apart from :func:`is_equivalent`'s.
    """
    accepted = [answer == reference for answer in answers]
    pending: list[int] = []
    for i, answer in enumerate(answers):
        if not accepted[i]:
            cached = _one_way_cache.get(answer, reference)
            if cached is None:
                pending.append(i)
            else:
                accepted[i] = cached
    if not pending:
        return accepted
    per_pair = get_timeouts()[0]
    pairs = [(answers[i], reference) for i in pending]
    verdicts = _grader.check(pairs, timeout=per_pair, deadline=deadline, one_way=True)
    cacheable = len(reference) <= MAX_ANSWER_LEN
    for i, verdict in zip(pending, verdicts):
        if verdict is Verdict.SKIPPED:
            continue
        if verdict is Verdict.TIMED_OUT:
            _warn_timeout(answers[i], reference, per_pair)
        accepted[i] = verdict is Verdict.EQUAL
        if cacheable and len(answers[i]) <= MAX_ANSWER_LEN:
            _one_way_cache.put(answers[i], reference, accepted[i])
    if Verdict.SKIPPED in verdicts:
        _log_budget_exhausted(answers[pending[verdicts.index(Verdict.SKIPPED)]])
    return accepted
