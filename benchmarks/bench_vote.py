"""Benchmark: ``verl_ext.voting.vote`` against the naive voting of the public MM-UPT code.

Builds 512 prompts x 10 seeded, synthetic model responses ending in ``\\boxed{}`` answers
(identical strings, equivalent forms such as 1/2 vs 0.5 vs \\frac{1}{2}, distinct
answers, sympy-hostile LaTeX, responses without a box), then votes every group with:

* ours: ``extract_answer`` + ``vote`` (default settings), in this process;
* naive: mathruler's ``extract_boxed_content`` on the raw responses, a ``Counter``
  majority over the raw strings (no answer counts as the string "None", ties go to the
  first occurrence), then ``grade_answer(answer, label)`` for every response, with no
  timeout. It runs in a child process with a per-group timeout so that the benchmark
  finishes; timed-out groups are reported and left out of its throughput.

More rows, in the same run: a TTRL-scale one (512 prompts x 64 votes) and three worst cases whose
slowest group shows the per-vote budget holding (ours includes extracting the answers):

* groups of 300 distinct ~280-character LaTeX expressions, each pair under the grader's length cap
  (the numeric probe tells them apart);
* one group of 1,000 distinct ~280-character LaTeX sums of ``\sin`` terms, which the probe cannot
  evaluate, so each pair needs the symbolic grader and the budget runs out;
* one group of 10 responses whose boxed answers are distinct 10^6-digit integers.

Usage: python benchmarks/bench_vote.py [--prompts 512] [--responses 10] [--seed 0] [--ttrl-votes 64]
       [--worst-groups 8] [--worst-answers 300] [--long-groups 1] [--long-answers 1000]
       [--huge-groups 1] [--huge-answers 10] [--huge-digits 1000000]
Worst cases only: --prompts 0 --ttrl-votes 0 (a count of 0 skips its set).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import random
import sys
import time
from collections import Counter
from fractions import Fraction
from importlib import metadata

NAIVE_GROUP_TIMEOUT = 5.0
NO_ANSWER_RATE = 0.05
HOSTILE_GROUP_RATE = 0.04

# Answers that make sympy (through mathruler) slow or hang, or that are just huge.
HOSTILE = [
    r"2^{2^{2^{2^{30}}}}",
    r"\frac{1}{2}^{9^{9^{9^{9}}}}",
    "10**10**10",
    "1000000000!",
    "9999999999**9999999",
    "1+" * 2500 + "1",
    "{" * 300 + "x" + "}" * 300,
    r"\sqrt{2+\sqrt{3+\sqrt{5+\sqrt{7+\sqrt{11+\sqrt{13}}}}}}",
    r"\frac{x^9+3x^8+2}{x^7-7x+6}+\frac{y^9+2}{x^5-y^3}",
]

_OPENINGS = [
    "Let's solve this step by step.",
    "We start by writing down what is given.",
    "First, observe the structure of the problem.",
    "Looking at the figure, we can set up an equation.",
]
_STEPS = [
    r"Substituting, we get $3x + 2 = 2(x + 4)$, so $x = 6$.",
    r"By the Pythagorean theorem, $a^2 + b^2 = c^2$ with $c = \sqrt{a^{2} + b^{2}}$.",
    r"The sum is $\sum_{k=1}^{n} k = \frac{n(n+1)}{2}$.",
    r"Simplifying $\frac{2x^2 - 8}{x - 2} = 2(x + 2)$ for $x \neq 2$.",
    r"The area of the triangle is $\frac{1}{2} \cdot b \cdot h$.",
    r"Using $\sin^2\theta + \cos^2\theta = 1$, we find $\cos\theta = \frac{4}{5}$.",
]


def _fraction_forms(value: Fraction) -> list[str]:
    p, q = value.numerator, value.denominator
    sign = "-" if p < 0 else ""
    forms = [rf"{sign}\frac{{{abs(p)}}}{{{q}}}", rf"{sign}\dfrac{{{abs(p)}}}{{{q}}}", f"{p}/{q}"]
    if 10**6 % q == 0:
        forms.append(str(float(value)))
    return forms


def _problem(rng: random.Random) -> tuple[list[str], list[list[str]]]:
    """One prompt: forms of the consensus answer, and forms of a few wrong answers."""
    kind = rng.choices(
        ["integer", "fraction", "radical", "polynomial", "angle", "interval", "choice"],
        weights=[35, 20, 12, 13, 8, 6, 6],
    )[0]
    if kind == "integer":
        n = rng.randint(-50, 500)
        right = [str(n)] * 8 + [f"{n}.0", f"x = {n}"]
        wrong = [[str(m)] for m in rng.sample([n + 1, n - 1, 2 * n, n + 10, -n, n * n], 3)]
    elif kind == "fraction":
        q = rng.choice([2, 3, 4, 5, 6, 7, 8, 12])
        p = rng.choice([k for k in range(-11, 12) if k and Fraction(k, q).denominator == q])
        right = _fraction_forms(Fraction(p, q))
        wrong = [_fraction_forms(Fraction(q, p)), _fraction_forms(Fraction(p + 1, q)), [f"{float(Fraction(p, q)):.2f}"]]
    elif kind == "radical":
        a, b, c = rng.randint(2, 5), rng.choice([2, 3, 5, 6, 7]), rng.randint(2, 9)
        right = [rf"\frac{{{a}\sqrt{{{b}}}}}{{{c}}}", rf"\frac{{{a}}}{{{c}}}\sqrt{{{b}}}", rf"{a}\sqrt{{{b}}}/{c}"]
        wrong = [[rf"\frac{{\sqrt{{{b}}}}}{{{c}}}"], [rf"{a}\sqrt{{{b}}}"], [rf"\frac{{{a}\sqrt{{{b + 1}}}}}{{{c}}}"]]
    elif kind == "polynomial":
        a = rng.randint(1, 9)
        right = [f"(x+{a})^2", f"x^2+{2 * a}x+{a * a}", f"(x + {a})^{{2}}", rf"\left(x+{a}\right)^2"]
        wrong = [[f"(x-{a})^2", f"x^2-{2 * a}x+{a * a}"], [f"x^2+{a * a}"], [f"(x+{a + 1})^2"]]
    elif kind == "angle":
        d = rng.choice([30, 45, 60, 72, 90, 120, 135, 150])
        right = [rf"{d}^\circ", rf"{d}^{{\circ}}", str(d), rf"{d}\text{{ degrees}}"]
        wrong = [[rf"{180 - d}^\circ"], [str(d // 2)], [rf"{d + 15}^\circ"]]
    elif kind == "interval":
        lo, hi = sorted(rng.sample(range(-9, 10), 2))
        right = [f"({lo}, {hi})", rf"\left({lo},{hi}\right)", f"({lo},{hi})"]
        wrong = [[f"[{lo}, {hi}]"], [f"({lo}, {hi + 1})"], [f"({hi}, {lo})"]]
    else:
        letter, *others = rng.sample("ABCD", 4)
        right = [letter, rf"\text{{{letter}}}", f"({letter})"]
        wrong = [[o] for o in others]
    return right, wrong


def _response(rng: random.Random, answer: str | None) -> str:
    steps = " ".join(rng.sample(_STEPS, rng.randint(1, 3)))
    head = f"{rng.choice(_OPENINGS)} {steps}"
    if answer is None:  # cut off by the length limit before the final answer
        return f"{head} Therefore the value we are looking for is"
    if rng.random() < 0.1:  # a first attempt, then a corrected final answer
        head += r" So we might guess $\boxed{0}$, but let's double-check."
    return f"{head} Therefore, the final answer is $\\boxed{{{answer}}}$."


def build_groups(n_prompts: int, n_responses: int, seed: int) -> list[list[str]]:
    """Seeded synthetic groups of responses, one group per prompt."""
    rng = random.Random(seed)
    groups = []
    for _ in range(n_prompts):
        right, wrong = _problem(rng)
        accuracy = rng.uniform(0.2, 0.95)
        answers: list[str | None] = []
        for _ in range(n_responses):
            if rng.random() < NO_ANSWER_RATE:
                answers.append(None)
            elif rng.random() < accuracy:
                answers.append(rng.choice(right))
            else:
                answers.append(rng.choice(rng.choice(wrong)))
        if rng.random() < HOSTILE_GROUP_RATE:
            answers[rng.randrange(n_responses)] = rng.choice(HOSTILE)
        groups.append([_response(rng, a) for a in answers])
    return groups


def naive_vote(responses: list[str]) -> tuple[str, list[float]]:
    """The public MM-UPT voting: raw-string majority, then grade every answer against it."""
    from mathruler.grader import extract_boxed_content, grade_answer

    answers = [extract_boxed_content(r) for r in responses]
    label = Counter(answers).most_common(1)[0][0]  # stable sort: ties go to the first seen
    return label, [1.0 if grade_answer(a, label) else 0.0 for a in answers]


def _naive_worker(conn) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))
    except (ImportError, ValueError, OSError):
        pass
    import mathruler.grader  # noqa: F401 - import before timing, as in a trainer

    conn.send("ready")
    while (group := conn.recv()) is not None:
        start = time.perf_counter()
        try:
            label, rewards = naive_vote(group)
        except Exception as error:  # noqa: BLE001 - e.g. int() of a huge answer: the group fails
            label, rewards = None, [f"{type(error).__name__}: {str(error)[:60]}"]
        conn.send((label, rewards, time.perf_counter() - start))


class _NaiveRunner:
    """Runs ``naive_vote`` in a child process, killing it when a group exceeds the timeout."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self._conn, child_conn = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_naive_worker, args=(child_conn,), daemon=True)
        self._proc.start()
        child_conn.close()
        assert self._conn.recv() == "ready"

    def run(self, group: list[str], timeout: float) -> tuple[str, list[float], float] | None:
        self._conn.send(group)
        if self._conn.poll(timeout):
            return self._conn.recv()
        self._proc.kill()
        self._proc.join()
        self._start()
        return None

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(timeout=5)


def _machine() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("mathruler", "sympy"))
    return (
        f"machine: {platform.platform()} | {os.cpu_count()} CPUs ({usable} usable) | "
        f"Python {platform.python_version()} ({platform.python_implementation()}) | {versions}\n"
        f"load average at start (1, 5, 15 min): {load}"
    )


def _boxed_sums(n_groups: int, n_answers: int, seed: int, variable: str) -> list[list[str]]:
    """Groups of distinct ~280-character sums of ``a/b * variable^k`` terms in boxes."""
    rng = random.Random(seed)
    groups = []
    for _ in range(n_groups):
        group = []
        for _ in range(n_answers):
            terms: list[str] = []
            while len("+".join(terms)) < 270:
                terms.append(rf"\frac{{{rng.randint(1, 99)}}}{{{rng.randint(1, 99)}}}{variable}^{{{rng.randint(1, 9)}}}")
            group.append(f"The answer is \\boxed{{{'+'.join(terms)}}}.")
        groups.append(group)
    return groups


def worst_case_groups(n_groups: int, n_answers: int, seed: int) -> list[list[str]]:
    """Groups of distinct ~280-character polynomials in boxes: every pair is under the grader's length cap."""
    return _boxed_sums(n_groups, n_answers, seed, "x")


def long_latex_groups(n_groups: int, n_answers: int, seed: int) -> list[list[str]]:
    """Groups of distinct ~280-character sums of ``\\sin`` terms in boxes: outside the numeric probe's
    subset, so every pair goes to the symbolic grader."""
    return _boxed_sums(n_groups, n_answers, seed, r"\sin(x)")


def huge_integer_groups(n_groups: int, n_answers: int, digits: int, seed: int) -> list[list[str]]:
    """Groups of responses whose boxed answers are distinct integers of ``digits`` digits."""
    rng = random.Random(seed)
    groups = []
    for _ in range(n_groups):
        block = "".join(rng.choices("0123456789", k=10_000))
        body = (block * (digits // len(block) + 1))[: digits - 3]
        groups.append([f"So the answer is \\boxed{{{i + 101}{body}}}." for i in range(n_answers)])
    return groups


def compare(title: str, groups: list[list[str]], runner: "_NaiveRunner") -> None:
    """Vote every group with ours and with the naive method; print one row per method."""
    from verl_ext.voting import extract_answer, is_equivalent, vote

    n_total = sum(len(g) for g in groups)
    print(f"\n## {title}: {len(groups)} groups x {len(groups[0])} responses = {n_total}")
    ours, our_times = [], []
    for group in groups:
        start = time.perf_counter()
        ours.append(vote([extract_answer(r) for r in group]))
        our_times.append(time.perf_counter() - start)

    naive, naive_times, timed_out, failed = [], [], [], []
    for i, group in enumerate(groups):
        outcome = runner.run(group, NAIVE_GROUP_TIMEOUT)
        if outcome is not None and outcome[0] is None:
            failed.append((i, outcome[1][0]))
            outcome = None
        naive.append(outcome)
        if outcome is None:
            timed_out.append(i)
        else:
            naive_times.append(outcome[2])

    n_naive = sum(len(groups[i]) for i, o in enumerate(naive) if o is not None)
    print(f"{'method':<28}{'responses/s':>12}{'time s':>9}{'median group ms':>17}{'slowest group s':>17}")
    rows = [("ours (vote)", n_total, our_times), ("naive (MM-UPT public code)", n_naive, naive_times)]
    for name, count, times in rows:
        if not times:
            print(f"{name:<28}{'n/a':>12}{'n/a':>9}{'n/a':>17}{'n/a':>17}  (every group killed or failed)")
            continue
        median = sorted(times)[len(times) // 2]
        print(f"{name:<28}{count / sum(times):>12.0f}{sum(times):>9.2f}{median * 1e3:>17.2f}{max(times):>17.3f}")
    if naive_times:
        print(f"speed-up: {(n_total / sum(our_times)) / (n_naive / sum(naive_times)):.1f}x (naive without its killed groups)")
    from verl_ext.voting import get_timeouts

    per_vote = get_timeouts()[1]
    print(f"ours, slowest group: {max(our_times):.3f} s (per-vote budget {per_vote:g} s; bound tested: budget + 0.5 s)")
    print(f"naive groups killed after {NAIVE_GROUP_TIMEOUT:g} s: {len(timed_out) - len(failed)}")
    for i, error in failed[:3]:
        print(f"  group {i}: naive failed with {error}")
    for i in timed_out[:5]:
        hostile = [a[:40] for a in map(extract_answer, groups[i]) if a in HOSTILE]
        if hostile:
            print(f"  group {i}: hostile answer(s) {hostile}")

    naive_labels = [n[0] if n is not None and n[0] != "None" else None for n in naive]
    both = [(o.label, n) for o, n in zip(ours, naive_labels) if o.label is not None and n is not None]
    print(
        f"groups with a label: ours {sum(o.label is not None for o in ours)}/{len(groups)} (ties give none), "
        f"naive {sum(n is not None for n in naive_labels)}/{len(groups)} (not 'None', not killed)"
    )
    if both:
        same_string = sum(a == b for a, b in both)
        same_answer = sum(is_equivalent(a, b) for a, b in both)
        print(
            f"label agreement where both give one ({len(both)} groups): {same_answer / len(both):.1%} same answer "
            f"(is_equivalent), {same_string / len(both):.1%} same string"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=512, help="prompts of the mixed-answer row (0: skip)")
    parser.add_argument("--responses", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ttrl-votes", type=int, default=64, help="votes per prompt of the TTRL-scale row (0: skip)")
    parser.add_argument("--worst-groups", type=int, default=8, help="groups of the worst-case row (0: skip)")
    parser.add_argument("--worst-answers", type=int, default=300, help="distinct long answers per worst-case group")
    parser.add_argument("--long-groups", type=int, default=1, help="groups of long LaTeX needing the grader (0: skip)")
    parser.add_argument("--long-answers", type=int, default=1000, help="distinct answers per long-LaTeX group")
    parser.add_argument("--huge-groups", type=int, default=1, help="groups of huge integers (0: skip)")
    parser.add_argument("--huge-answers", type=int, default=10, help="distinct huge integers per group")
    parser.add_argument("--huge-digits", type=int, default=10**6, help="digits of each huge integer")
    args = parser.parse_args()

    from verl_ext.voting import get_timeouts, warm_up

    print(_machine())
    start = time.perf_counter()
    warm_up()
    per_pair, per_vote = get_timeouts()
    print(f"grader start-up (once per process, not timed below): {time.perf_counter() - start:.2f} s")
    print(f"ours: default settings, timeouts {per_pair:g} s per pair, {per_vote:g} s per vote")

    runner = _NaiveRunner()
    if args.prompts:
        compare("mixed answers", build_groups(args.prompts, args.responses, args.seed), runner)
    if args.ttrl_votes:
        compare("TTRL scale", build_groups(args.prompts, args.ttrl_votes, args.seed + 1), runner)
    if args.worst_groups:
        compare(
            f"worst case (distinct ~280-character expressions; budget {per_vote:g} s per vote)",
            worst_case_groups(args.worst_groups, args.worst_answers, args.seed),
            runner,
        )
    if args.long_groups:
        compare(
            f"worst case (distinct ~280-character LaTeX needing the grader; budget {per_vote:g} s per vote)",
            long_latex_groups(args.long_groups, args.long_answers, args.seed),
            runner,
        )
    if args.huge_groups:
        compare(
            f"worst case ({args.huge_digits:,}-digit integers; budget {per_vote:g} s per vote)",
            huge_integer_groups(args.huge_groups, args.huge_answers, args.huge_digits, args.seed),
            runner,
        )
    runner.close()


if __name__ == "__main__":
    sys.exit(main())
