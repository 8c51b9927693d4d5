"""Parsing and filtering of synthesized questions (``verl_ext.data.synth_filters``), on hand-written outputs."""

from __future__ import annotations

import pytest

from verl_ext.data.schema import FORMAT_INSTRUCTION
from verl_ext.data.synth_filters import (
    DUPLICATE,
    EMPTY,
    SAME_AS_SEED,
    TOO_LONG,
    TOO_SHORT,
    UNPARSEABLE,
    FilterSettings,
    answerability_ratio,
    image_key,
    is_answerable,
    normalize_question,
    parse_question,
    screen,
)

# ------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("<question>How many circles are there?</question>", "How many circles are there?"),
        ("Sure! Here it is:\n<question>  What is the area\tof the square?  </question>\nHope it helps.",
         "What is the area of the square?"),
        ("<Question>Find the angle ABC.</QUESTION>", "Find the angle ABC."),
        ("< question >Find x.< / question >", "Find x."),
        ("<question>Question: What is the perimeter?</question>", "What is the perimeter?"),
        ("<question>**New problem:** What is the perimeter?</question>", "What is the perimeter?"),
        ('<question>"How long is side AB?"</question>', "How long is side AB?"),
        ("<question><image>How many dots?</question>", "How many dots?"),
        ("<question>Which is larger?\r\n(A) 3\r\n(B) 4</question>", "Which is larger?\n(A) 3\n(B) 4"),
        ("<question>Line one\n\n\n\nLine two</question>", "Line one\n\nLine two"),
    ],
)
def test_parse_question(output: str, expected: str) -> None:
    assert parse_question(output) == expected


def test_parse_takes_the_last_pair_and_its_nearest_opening_marker() -> None:
    # The model echoed the instruction (which names the markers) before writing its question.
    echo = "You asked for the question between <question> and </question>. <question>What is 2+3?</question>"
    assert parse_question(echo) == "What is 2+3?"
    assert parse_question("<question>first</question> then <question>second one</question>") == "second one"
    assert parse_question("<question>draft <question>final version</question>") == "final version"


@pytest.mark.parametrize(
    "output",
    [
        None,
        "",
        "How many circles are there?",  # no markers at all
        "<question>How many circles are there?",  # cut off by the token limit before the closing marker
        "How many circles are there?</question>",  # no opening marker
        "</question><question>",  # markers in the wrong order
    ],
)
def test_unparseable_outputs(output: str | None) -> None:
    assert parse_question(output) is None


def test_empty_between_markers() -> None:
    assert parse_question("<question>   \n </question>") == ""
    assert parse_question("<question><image></question>") == ""


# ------------------------------------------------------------------------------------------------ normalisation


def test_normalize_question_ignores_what_does_not_change_the_question() -> None:
    base = normalize_question("How many red squares are there?")
    assert normalize_question("  how MANY red   squares are there ") == base
    assert normalize_question("<image>How many red squares are there?" + FORMAT_INSTRUCTION) == base
    assert normalize_question("How many red squares are there.") == base
    assert normalize_question("What is x + 1 ?") == normalize_question("what is x+1")
    assert normalize_question("ＡＢ = ?") == normalize_question("AB=?")  # full-width forms (NFKC)


def test_normalize_question_keeps_what_does() -> None:
    assert normalize_question("What is x+1?") != normalize_question("What is x-1?")
    assert normalize_question("How many red squares?") != normalize_question("How many blue squares?")
    assert normalize_question("Is 12 > 3?") != normalize_question("Is 1 2 > 3?")


def test_image_key() -> None:
    assert image_key([b"a", b"b"]) == image_key([b"a", b"b"])
    assert image_key([b"a", b"b"]) != image_key([b"b", b"a"])
    assert image_key([b"ab"]) != image_key([b"a", b"b"])  # lengths are part of the key


# ------------------------------------------------------------------------------------------------ screening


def _screen(output: str | None, seen: set | None = None, seed: str = "How many squares?", key: str = "img", **kw):
    return screen(output, seed_question=seed, images_key=key, seen=set() if seen is None else seen, **kw)


def test_screen_keeps_and_remembers_a_good_question() -> None:
    seen: set = set()
    verdict = _screen("<question>What is the total area of the squares?</question>", seen)
    assert verdict.kept and verdict.reason is None
    assert verdict.question == "What is the total area of the squares?"
    assert seen == {("img", normalize_question(verdict.question))}


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("no markers", UNPARSEABLE),
        ("<question> ?? </question>", EMPTY),
        ("<question>Why?</question>", TOO_SHORT),
        ("<question>" + "How many? " * 101 + "</question>", TOO_LONG),
        ("<question>how many squares</question>", SAME_AS_SEED),
    ],
)
def test_screen_drop_reasons(output: str, reason: str) -> None:
    seen: set = set()
    verdict = _screen(output, seen)
    assert verdict.reason == reason and not verdict.kept
    assert not seen  # nothing dropped is remembered


def test_screen_length_bounds_are_inclusive_and_configurable() -> None:
    settings = FilterSettings(min_chars=10, max_chars=20)
    assert _screen("<question>" + "a" * 9 + "</question>", settings=settings).reason == TOO_SHORT
    assert _screen("<question>" + "a" * 10 + "</question>", settings=settings).kept
    assert _screen("<question>" + "b" * 20 + "</question>", settings=settings).kept
    assert _screen("<question>" + "c" * 21 + "</question>", settings=settings).reason == TOO_LONG
    with pytest.raises(ValueError):
        FilterSettings(min_chars=0)
    with pytest.raises(ValueError):
        FilterSettings(min_chars=10, max_chars=9)


def test_screen_duplicates_are_per_image() -> None:
    seen: set = set()
    assert _screen("<question>What is the perimeter?</question>", seen, key="image-1").kept
    again = _screen("<question>  what is the PERIMETER </question>", seen, key="image-1")
    assert again.reason == DUPLICATE
    # The same words about another image are another problem.
    assert _screen("<question>What is the perimeter?</question>", seen, key="image-2").kept
    assert len(seen) == 2


def test_screen_first_failing_filter_wins() -> None:
    seen: set = set()
    assert _screen("<question>Find y.</question>", seen, seed="").kept  # 7 characters, no seed question
    # Too short is reported even though it is also a duplicate.
    assert _screen("<question>Find y.</question>", seen, settings=FilterSettings(min_chars=8)).reason == TOO_SHORT
    # Same as the seed beats duplicate.
    seen.add(("img", normalize_question("How many squares?")))
    assert _screen("<question>How many squares?</question>", seen).reason == SAME_AS_SEED


# ------------------------------------------------------------------------------------------------ answerability


def test_answerability_ratio_votes_over_extracted_answers() -> None:
    answers = ["so \\boxed{4}", "\\boxed{4}", "the answer is \\boxed{4.0}", "\\boxed{5}"]
    assert answerability_ratio(answers) == pytest.approx(0.75)
    # Equivalent forms are one cluster.
    assert answerability_ratio(["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{1/2}"]) == pytest.approx(1.0)
    # Responses without an answer still count in the denominator.
    assert answerability_ratio(["\\boxed{7}", "no idea", None, "I cannot tell"]) == pytest.approx(0.25)
    assert answerability_ratio(["no idea", "none"]) == 0.0
    assert answerability_ratio(["<answer>B</answer>", "<answer>B</answer>"], style="answer_tag") == 1.0
    with pytest.raises(ValueError):
        answerability_ratio([])


def test_is_answerable_threshold() -> None:
    assert is_answerable(7 / 10, 0.7)
    assert not is_answerable(6 / 10, 0.7)
    assert is_answerable(0.0, 0.0)
    assert is_answerable(1.0, 1.0)
