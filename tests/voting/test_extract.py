import time

import pytest

from verl_ext.voting import extract_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so the answer is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{2}}{\{2\}}}", r"\frac{\sqrt{2}}{\{2\}}"),
        (r"\boxed{ \{1, 2\} }", r"\{1, 2\}"),
        (r"first \boxed{3}, then \fbox{4}, finally \boxed{x^{2}+1}.", "x^{2}+1"),
        (r"\boxed {12}", "12"),
        (r"the answer is \boxed 5.", "5"),
        (r"\boxed\pi", r"\pi"),
        (r"\boxed{3} but wait, \boxed{4", "3"),  # a truncated last box is not an answer
        (r"\boxed{7} and \boxed{ } ", None),
        ("no box here, the answer is 5", None),
        (r"\boxed{}", None),
        (r"\boxed", None),
        ("", None),
        (None, None),
    ],
)
def test_boxed(text, expected):
    assert extract_answer(text) == expected


def test_braced_box_wins_over_a_bare_mention_after_it():
    assert extract_answer(r"\boxed{42}. I used \boxed notation.") == "42"


def test_last_boxed_wins():
    text = r"Try \boxed{1}. Hmm, recheck: \boxed{2}. Final: \boxed{3}"
    assert extract_answer(text) == "3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>hmm</think><answer> 42 </answer>", "42"),
        ("<answer>1</answer> retry <answer>2</answer>", "2"),
        (r"<answer>The result is \boxed{7}</answer>", "7"),
        ("<ANSWER>x</ANSWER>", "x"),
        ("<answer>unfinished", None),
        ("<answer>  </answer>", None),
        ("nothing", None),
    ],
)
def test_answer_tag(text, expected):
    assert extract_answer(text, style="answer_tag") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("(c)", "C"),
        ("Answer: B", "B"),
        ("The answer is (C).", "C"),
        ("Final answer: **D**", "D"),
        (r"\boxed{A}", "A"),
        (r"\boxed{\text{(B)}}", "B"),
        (r"\boxed{B. 5}", "B"),
        ("<answer>(D) 12</answer>", "D"),
        ("Reasoning...\nC", "C"),
        ("The answer is a bit unclear", None),
        ("A man walks into a bar", None),
        ("", None),
    ],
)
def test_choice_letter(text, expected):
    assert extract_answer(text, style="choice") == expected


def test_choice_maps_option_text_to_letter():
    assert extract_answer(r"so \boxed{5}", style="choice", choices=["3", "5", "7"]) == "B"
    assert extract_answer(r"\boxed{0.5}", style="choice", choices={"a": r"\frac{1}{2}", "b": "2"}) == "A"
    assert extract_answer(r"\boxed{\text{Paris}}", style="choice", choices=["London", "Paris"]) == "B"


def test_choice_rejects_letters_and_texts_outside_the_options():
    assert extract_answer(r"\boxed{E}", style="choice", choices=["1", "2", "3"]) is None
    assert extract_answer(r"\boxed{9}", style="choice", choices=["1", "2", "3"]) is None
    assert extract_answer("Answer: D", style="choice", choices=["1", "2", "3"]) is None


def test_choice_box_decides_before_later_phrases():
    # The box is the declared final answer even if an earlier phrase names a letter.
    assert extract_answer(r"Answer: A ... \boxed{C}", style="choice") == "C"


def test_invalid_choices():
    with pytest.raises(ValueError):
        extract_answer("B", style="choice", choices={"AB": "1"})
    with pytest.raises(ValueError):
        extract_answer("B", style="choice", choices="ABC")


def test_unknown_style_names_valid_styles():
    with pytest.raises(ValueError, match="boxed, answer_tag, choice"):
        extract_answer(r"\boxed{1}", style="latex")


def test_pathological_text_is_fast():
    texts = [
        r"\boxed{" * 3000,  # thousands of unterminated boxes
        "{" * 5000 + r"\boxed{1}" + "}" * 5000,
        "<answer>" * 3000 + "x" + "</answer>",
    ]
    start = time.perf_counter()
    results = [extract_answer(t) for t in texts] + [extract_answer(texts[2], style="answer_tag")]
    assert time.perf_counter() - start < 0.5
    assert results == [None, "1", None, "x"]


def test_answer_tag_ends_at_the_first_closing_tag():
    assert extract_answer("<answer>1</answer> and then </answer>", style="answer_tag") == "1"
    assert extract_answer("<answer>1</answer> then <answer>2</answer>", style="answer_tag") == "2"
    assert extract_answer("<answer>1</answer> then <answer>2", style="answer_tag") == "1"  # the last closed one
