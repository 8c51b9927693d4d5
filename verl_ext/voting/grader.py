"""mathruler's ``grade_answer`` in a child process, under a wall-clock timeout per pair.

sympy can run for minutes (or exhaust memory) on some inputs. A thread cannot be
interrupted, and SIGALRM only reaches the main thread (votes may run in a Ray actor
thread), so grading happens in other processes:

* the *supervisor*, started lazily with ``subprocess`` (a fresh interpreter: nothing of
  the trainer is inherited), imports mathruler once, warms sympy up, then forks a *worker*;
* the parent sends the supervisor JSON lines (a batch of pairs, or a cancel); the
  supervisor passes the batch to the worker and relays one JSON line per pair back;
* when a pair exceeds its timeout the supervisor kills the worker and forks a fresh,
  already warm one in milliseconds, instead of paying sympy's import again.

The parent waits on pipes with ``select``, so any thread can call :meth:`Grader.check`.
This file is also the supervisor's entry point: it is run by path (``runpy``) so that the
supervisor does not import ``verl_ext``.
"""

from __future__ import annotations

import atexit
import enum
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

logger = logging.getLogger(__name__)

__all__ = ["Deadline", "Grader", "Verdict"]

# Address-space cap for the worker: a runaway sympy computation gets a MemoryError
# (which mathruler swallows as "not equal") instead of pushing the trainer into swap.
MEMORY_LIMIT_BYTES = 2 << 30
# Importing sympy takes ~0.5 s on an idle machine; a busy training node can be much slower.
STARTUP_TIMEOUT = 60.0
# How long past a pair's timeout the parent waits for the supervisor's word before
# deciding that the supervisor itself is stuck.
_GRACE = 1.0
# One pair per costly code path of grade_answer: sympy simplify, LaTeX conversion, tuples.
_WARM_UP = (("(x+1)^2", "x^2+2x+1"), (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2"), ("(1,\\pi)", "(1,2)"))
_BOOTSTRAP = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"


class Verdict(enum.Enum):
    """Outcome of one pair check."""

    EQUAL = "equal"
    UNEQUAL = "unequal"
    TIMED_OUT = "timed_out"  # no answer within the pair's timeout, or the worker crashed on it
    SKIPPED = "skipped"  # not checked: the deadline came first, or an earlier pair was equal


class Deadline:
    """A ``time.monotonic()`` instant bounding a group of checks, e.g. all those of one vote.

    The grader pushes it back by the time spent waiting for its own first start, which is
    a once-per-process cost rather than the caller's.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - time.monotonic()


class _Closed(Exception):
    """The other end of a pipe is gone."""

    def __init__(self, source: _Lines) -> None:
        super().__init__(source.fd)
        self.source = source


class _Lines:
    """JSON messages, one per line, read from a file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""

    def pop(self) -> dict | None:
        if b"\n" not in self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def fill(self) -> None:
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            raise _Closed(self)
        self._buffer += chunk


def _next_message(sources: Sequence[_Lines], deadline: float | None) -> tuple[_Lines | None, dict | None]:
    """First complete message from any source, or ``(None, None)`` at ``deadline``."""
    while True:
        for source in sources:
            message = source.pop()
            if message is not None:
                return source, message
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            return None, None
        readable, _, _ = select.select([s.fd for s in sources], [], [], timeout)
        if not readable:
            return None, None
        for source in sources:
            if source.fd in readable:
                source.fill()


def _send(fd: int, message: dict) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(fd, data) :]


class _Child:
    """The parent's handle on one supervisor process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__), str(MEMORY_LIMIT_BYTES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.owner_pid = os.getpid()
        self.ready = False
        self.lines = _Lines(self.proc.stdout.fileno())

    def send(self, message: dict) -> bool:
        try:
            _send(self.proc.stdin.fileno(), message)
        except OSError:
            return False
        return True

    def read(self, deadline: float) -> dict | None:
        """Next message, or ``None`` at ``deadline``; raises ``_Closed`` if the supervisor died."""
        return _next_message([self.lines], deadline)[1]

    def kill(self) -> None:
        if self.owner_pid != os.getpid():
            return  # inherited through fork: the process belongs to our parent
        self.proc.kill()
        self.proc.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        self.proc.stdin.close()
        self.proc.stdout.close()


class Grader:
    """Thread-safe client of the grader processes, which start on first use.

    :meth:`check` sends all pairs of a request in one round trip and returns a
    :class:`Verdict` per pair. Requests from different threads are serialised.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._ever_ready = False
        self._next_id = 0
        self._atexit_registered = False

    def start(self) -> None:
        """Start the grader processes if needed and wait until they can answer."""
        with self._lock:
            if not self._wait_ready(self._current_child(), time.monotonic() + STARTUP_TIMEOUT):
                raise TimeoutError(f"the grader process did not start within {STARTUP_TIMEOUT:g} s")

    def close(self) -> None:
        """Stop the grader processes (a later :meth:`check` starts new ones)."""
        if not self._lock.acquire(timeout=5.0):
            return
        try:
            if self._child is not None:
                self._child.kill()
                self._child = None
        finally:
            self._lock.release()

    def forget_after_fork(self) -> None:
        """Drop state inherited through ``fork``: the lock may be held and the child is not ours."""
        self._lock = threading.Lock()
        if self._child is not None:
            self._child.close_pipes()  # our copies would keep the supervisor from seeing EOF
        self._child = None

    def check(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        timeout: float,
        deadline: Deadline,
        stop_on_equal: bool = False,
    ) -> list[Verdict]:
        """Grade each pair (``grade_answer`` in both directions), at most ``timeout`` s per pair.

        ``deadline`` bounds the whole call, waiting for the lock included; waiting for the
        grader's first start in this process (up to ``STARTUP_TIMEOUT``) pushes ``deadline``
        back by as much. With ``stop_on_equal`` the pairs after the first equal one are
        ``SKIPPED``.
        """
        verdicts = [Verdict.SKIPPED] * len(pairs)
        if not pairs or not self._lock.acquire(timeout=max(0.0, deadline.remaining())):
            return verdicts
        try:
            child = self._current_child()
            if not child.ready:
                waited_from = time.monotonic()
                first_start = not self._ever_ready
                if not self._wait_ready(child, waited_from + STARTUP_TIMEOUT if first_start else deadline.at):
                    return verdicts
                if first_start:
                    deadline.at += time.monotonic() - waited_from
            if deadline.remaining() > 0:
                self._run(child, pairs, verdicts, timeout, deadline.at, stop_on_equal)
        finally:
            self._lock.release()
        return verdicts

    def _run(
        self,
        child: _Child,
        pairs: Sequence[tuple[str, str]],
        verdicts: list[Verdict],
        timeout: float,
        deadline: float,
        stop_on_equal: bool,
    ) -> None:
        self._next_id += 1
        request_id = self._next_id
        if not child.send({"id": request_id, "pairs": list(pairs), "stop": stop_on_equal, "timeout": timeout}):
            self._replace_child("its input pipe is closed")
            return
        answered = 0
        while answered < len(pairs):
            wait_until = min(time.monotonic() + timeout + _GRACE, deadline)
            try:
                message = child.read(wait_until)
                while message is not None and message.get("id") != request_id:  # left over from a cancel
                    message = child.read(wait_until)
            except _Closed:
                self._replace_child("it exited")
                return
            if message is None:
                if wait_until >= deadline:
                    child.send({"cancel": request_id})  # out of budget: the rest stays SKIPPED
                else:
                    self._replace_child("it stopped answering")
                return
            index = message["i"]
            if message.get("timed_out"):
                verdicts[index] = Verdict.TIMED_OUT
            else:
                verdicts[index] = Verdict.EQUAL if message["equal"] else Verdict.UNEQUAL
                if message["equal"] and stop_on_equal:
                    return
            answered = index + 1

    def _current_child(self) -> _Child:
        if self._child is None or self._child.owner_pid != os.getpid():
            self._child = _Child()
            if not self._atexit_registered:
                atexit.register(self.close)
                self._atexit_registered = True
        return self._child

    def _replace_child(self, reason: str) -> None:
        # Only reached if the supervisor itself fails; a slow pair just costs the worker.
        logger.warning("restarting the grader supervisor process: %s", reason)
        if self._child is not None:
            self._child.kill()
        self._child = _Child()

    def _wait_ready(self, child: _Child, deadline: float) -> bool:
        if child.ready:
            return True
        try:
            message = child.read(deadline)
        except _Closed:
            message = {}
        if message is None:
            return False  # still importing; it keeps starting in the background
        if not message.get("ready"):
            code = child.proc.poll()
            self._child = None
            child.kill()
            if not self._ever_ready:
                raise RuntimeError(f"grader process failed to start (exit code {code}); see its stderr")
            logger.warning("grader process died while starting (exit code %s); will retry", code)
            return False
        child.ready = True
        self._ever_ready = True
        return True


# ---- Supervisor and worker side (runs in the child processes) ----


class _Cancelled(Exception):
    """The parent cancelled the request being served."""


class _Supervisor:
    """Serves the parent's requests through a forked worker, enforcing the per-pair timeout."""

    def __init__(self, grade, memory_limit: int, out_fd: int) -> None:
        self.grade = grade
        self.memory_limit = memory_limit
        self.out_fd = out_fd
        self.inbox = _Lines(0)
        self.parent_pid = os.getppid()
        self._fork_worker()

    def _fork_worker(self) -> None:
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        supervisor_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                for fd in (down_w, up_r, 0, self.out_fd):
                    os.close(fd)
                _die_with_parent(supervisor_pid)
                _work(self.grade, down_r, up_w, self.memory_limit)
            finally:
                os._exit(0)
        os.close(down_r)
        os.close(up_w)
        self.worker_pid, self.to_worker, self.from_worker = pid, down_w, _Lines(up_r)

    def _replace_worker(self) -> None:
        self._stop_worker()
        self._fork_worker()

    def _stop_worker(self) -> None:
        try:
            os.kill(self.worker_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.worker_pid, 0)
        os.close(self.to_worker)
        os.close(self.from_worker.fd)

    def serve(self) -> None:
        _send(self.out_fd, {"ready": True})
        try:
            while True:
                _, message = _next_message([self.inbox], time.monotonic() + 1.0)
                if message is None:
                    if os.getppid() != self.parent_pid:
                        return  # orphaned without EOF (our stdin is shared with someone else)
                elif "pairs" in message:
                    self._handle(message)
        except _Closed:
            return  # the parent is gone
        finally:
            self._stop_worker()

    def _handle(self, request: dict) -> None:
        pairs, request_id = request["pairs"], request["id"]
        todo = list(range(len(pairs)))
        while todo:
            try:
                _send(self.to_worker, {"pairs": [pairs[i] for i in todo], "stop": request["stop"]})
            except OSError:
                pass  # the worker died; _await_worker sees its EOF and it is replaced
            for position, index in enumerate(todo):
                try:
                    result = self._await_worker(request_id, time.monotonic() + request["timeout"])
                except _Cancelled:
                    self._replace_worker()
                    return
                if result is None:
                    self._replace_worker()
                    _send(self.out_fd, {"id": request_id, "i": index, "timed_out": True})
                    todo = todo[position + 1 :]
                    break
                _send(self.out_fd, {"id": request_id, "i": index, "equal": result["equal"]})
                if result["equal"] and request["stop"]:
                    return
            else:
                return

    def _await_worker(self, request_id: int, deadline: float) -> dict | None:
        """The worker's next result, or ``None`` if it timed out or died."""
        while True:
            try:
                source, message = _next_message([self.inbox, self.from_worker], deadline)
            except _Closed as closed:
                if closed.source is self.inbox:
                    raise
                return None
            if source is None or source is self.from_worker:
                return message
            if message.get("cancel") == request_id:
                raise _Cancelled


def _work(grade, in_fd: int, out_fd: int, memory_limit: int) -> None:
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_limit if hard == resource.RLIM_INFINITY else min(memory_limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass
    requests = _Lines(in_fd)
    while True:
        try:
            _, request = _next_message([requests], None)
        except _Closed:
            return
        for i, (a, b) in enumerate(request["pairs"]):
            try:
                equal = bool(grade(a, b) or grade(b, a))
            except Exception:  # noqa: BLE001 - whatever sympy raises, the pair was not shown equal
                equal = False
            _send(out_fd, {"i": i, "equal": equal})
            if equal and request["stop"]:
                break


def _die_with_parent(parent_pid: int) -> None:
    # A worker stuck in sympy never reads its pipe, so it would not notice the supervisor's death.
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, Linux only
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(0)  # the supervisor died before the signal was armed


def _serve(memory_limit: int) -> None:
    out_fd = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; it stops us at exit
    # pylatexenc warns on stderr for every malformed answer; the parent reports what matters.
    logging.disable(logging.WARNING)
    from mathruler.grader import grade_answer

    # sympy and pylatexenc set up lazily (~0.2 s): pay that once, before forking workers.
    for a, b in _WARM_UP:
        grade_answer(a, b)
    _Supervisor(grade_answer, memory_limit, out_fd).serve()


if __name__ == "__main__":
    _serve(int(sys.argv[-1]))  # runpy has replaced argv[0]; the limit is last
