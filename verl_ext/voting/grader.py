"""mathruler's ``grade_answer`` in a child process, under a wall-clock timeout per pair.

sympy can run for minutes (or exhaust memory) on some inputs. A thread cannot be interrupted, and
SIGALRM only reaches the main thread (votes may run in a Ray actor thread), so grading happens in
other processes: a *supervisor*, started lazily as a fresh interpreter (nothing of the trainer is
inherited), imports mathruler once, warms sympy up, then forks a *worker*. The parent sends the
supervisor one pair at a time (or a cancel) over a socket and reads its verdict back; when a
pair exceeds its timeout the supervisor kills the worker and forks a fresh, already warm one in
milliseconds, instead of paying sympy's import again. The parent waits with timeouts, so any thread
can call :meth:`Grader.check`. This file is also the supervisor's entry point: it is run by path
(``runpy``) so that the supervisor does not import ``verl_ext``.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait

logger = logging.getLogger(__name__)

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
# What a connection raises once the other end is gone.
_GONE = (EOFError, OSError)


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


def _receive(conn: Connection, deadline: float) -> object | None:
    """The next message on ``conn``, or ``None`` at ``deadline``; raises one of ``_GONE`` if the other end is."""
    return conn.recv() if conn.poll(max(0.0, deadline - time.monotonic())) else None


class _Child:
    """The parent's handle on one supervisor process."""

    def __init__(self) -> None:
        self.conn, theirs = Pipe()
        args = [os.path.abspath(__file__), str(theirs.fileno()), str(MEMORY_LIMIT_BYTES)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, *args], stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),)
        )
        theirs.close()
        self.owner_pid = os.getpid()
        self.ready = False

    def kill(self) -> None:
        if self.owner_pid != os.getpid():
            return  # inherited through fork: the process belongs to our parent
        self.proc.kill()
        self.proc.wait()
        self.conn.close()


class Grader:
    """Thread-safe client of the grader processes, which start on first use.

    :meth:`check` returns a :class:`Verdict` per pair. Calls from different threads are serialised.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._ever_ready = False
        self._next_id = 0
        atexit.register(self.close)

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
            self._child.conn.close()  # our copy would keep the supervisor from seeing EOF
        self._child = None

    def check(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        timeout: float,
        deadline: Deadline,
        stop_on_equal: bool = False,
        one_way: bool = False,
    ) -> list[Verdict]:
        """Grade each pair (``grade_answer`` in both directions), at most ``timeout`` s per pair.

        ``deadline`` bounds the whole call, waiting for the lock included; waiting for the
        grader's first start in this process (up to ``STARTUP_TIMEOUT``) pushes ``deadline``
        back by as much. With ``stop_on_equal`` the pairs after the first equal one are
        ``SKIPPED``. With ``one_way`` a pair ``(a, b)`` is ``grade_answer(a, b)`` only: ``a`` the
        given answer, ``b`` the reference.
        """
        verdicts = [Verdict.SKIPPED] * len(pairs)
        if not pairs or not self._lock.acquire(timeout=max(0.0, deadline.remaining())):
            return verdicts
        try:
            child = self._current_child()
            waited_from, first_start = time.monotonic(), not self._ever_ready
            if not self._wait_ready(child, waited_from + STARTUP_TIMEOUT if first_start else deadline.at):
                return verdicts
            if first_start:
                deadline.at += time.monotonic() - waited_from
            self._run(child, pairs, verdicts, timeout, deadline.at, stop_on_equal, one_way)
        finally:
            self._lock.release()
        return verdicts

    def _run(
        self, child: _Child, pairs, verdicts: list[Verdict], timeout: float, deadline: float, stop: bool, one_way: bool
    ) -> None:
        for index, pair in enumerate(pairs):
            if time.monotonic() >= deadline:
                return  # out of budget: the rest stays SKIPPED
            self._next_id += 1
            wait_until = min(time.monotonic() + timeout + _GRACE, deadline)
            try:
                child.conn.send({"id": self._next_id, "pair": pair, "timeout": timeout, "one_way": one_way})
                reply = _receive(child.conn, wait_until)
                while reply is not None and reply["id"] != self._next_id:  # left over from a cancel
                    reply = _receive(child.conn, wait_until)
            except _GONE:
                self._replace_child("its connection closed")
                return
            if reply is None:
                if wait_until < deadline:
                    self._replace_child("it stopped answering")
                else:
                    with contextlib.suppress(OSError):
                        child.conn.send({"cancel": self._next_id})
                return
            verdicts[index] = Verdict(reply["verdict"])
            if verdicts[index] is Verdict.EQUAL and stop:
                return

    def _current_child(self) -> _Child:
        if self._child is None or self._child.owner_pid != os.getpid():
            self._child = _Child()
        return self._child

    def _replace_child(self, reason: str) -> None:
        # Only reached if the supervisor itself fails; a slow pair just costs the worker.
        logger.warning("restarting the grader supervisor process: %s", reason)
        self._child.kill()  # the child check() is using: never None there
        self._child = _Child()

    def _wait_ready(self, child: _Child, deadline: float) -> bool:
        if child.ready:
            return True
        try:
            message = _receive(child.conn, deadline)
        except _GONE:
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


class _Supervisor:
    """Serves the parent's requests through a forked worker, enforcing the per-pair timeout."""

    def __init__(self, grade, memory_limit: int, parent: Connection) -> None:
        self.grade = grade
        self.memory_limit = memory_limit
        self.parent = parent
        self.parent_pid = os.getppid()
        self._fork_worker()

    def _fork_worker(self) -> None:
        mine, theirs = Pipe()
        supervisor_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                mine.close()
                self.parent.close()
                _die_with_parent(supervisor_pid)
                _work(self.grade, theirs, self.memory_limit)
            finally:
                os._exit(0)
        theirs.close()
        self.worker_pid, self.worker = pid, mine

    def _stop_worker(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.worker_pid, signal.SIGKILL)
        os.waitpid(self.worker_pid, 0)
        self.worker.close()

    def serve(self) -> None:
        self.parent.send({"ready": True})
        try:
            while True:
                request = _receive(self.parent, time.monotonic() + 1.0)
                if request is None:
                    if os.getppid() != self.parent_pid:
                        return  # orphaned without EOF (someone else holds a copy of our socket)
                elif "pair" in request:
                    verdict = self._grade(request)
                    if verdict is not None:
                        self.parent.send({"id": request["id"], "verdict": verdict})
        except _GONE:
            return  # the parent is gone
        finally:
            self._stop_worker()

    def _grade(self, request: dict) -> str | None:
        """The worker's verdict on the request's pair, or ``None`` if the parent cancels the request; a
        worker that times out, dies or is cancelled is replaced by a fresh fork."""
        deadline = time.monotonic() + request["timeout"]
        with contextlib.suppress(OSError):  # a dead worker is seen below
            self.worker.send((*request["pair"], request["one_way"]))
        verdict = Verdict.TIMED_OUT.value
        while ready := wait([self.parent, self.worker], max(0.0, deadline - time.monotonic())):
            if self.parent not in ready:
                with contextlib.suppress(*_GONE):
                    return self.worker.recv()
                break  # the worker died
            if self.parent.recv().get("cancel") == request["id"]:  # the parent gone: serve() ends
                verdict = None
                break
        self._stop_worker()
        self._fork_worker()
        return verdict


def _work(grade, conn: Connection, memory_limit: int) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_limit if hard == resource.RLIM_INFINITY else min(memory_limit, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    while True:
        try:
            a, b, one_way = conn.recv()
        except _GONE:
            return
        try:
            equal = bool(grade(a, b) or (not one_way and grade(b, a)))
        except Exception:  # noqa: BLE001 - whatever sympy raises, the pair was not shown equal
            equal = False
        conn.send(Verdict.EQUAL.value if equal else Verdict.UNEQUAL.value)


def _die_with_parent(parent_pid: int) -> None:
    # A worker stuck in sympy never reads its socket, so it would not notice the supervisor's death.
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, Linux only
    if os.getppid() != parent_pid:
        os._exit(0)  # the supervisor died before the signal was armed


def _serve(fd: int, memory_limit: int) -> None:
    os.dup2(2, 1)  # anything a library prints goes to stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; it stops us at exit
    # pylatexenc warns on stderr for every malformed answer; the parent reports what matters.
    logging.disable(logging.WARNING)
    from mathruler.grader import grade_answer

    # sympy and pylatexenc set up lazily (~0.2 s): pay that once, before forking workers.
    for a, b in _WARM_UP:
        grade_answer(a, b)
    _Supervisor(grade_answer, memory_limit, Connection(fd)).serve()


if __name__ == "__main__":
    _serve(int(sys.argv[-2]), int(sys.argv[-1]))  # runpy has replaced argv[0]; the socket and the limit are last
