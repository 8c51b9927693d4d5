"""The one scorer of an answer against a label.

The supervised reward, the vote's monitoring metrics, the diagnosis and the benchmark evaluation all
grade through :func:`is_correct`, so a response is right or wrong the same way everywhere.
"""

from __future__ import annotations

import re
from fractions import Fraction
from string import ascii_uppercase
from typing import Optional

from verl_ext.voting.equivalence import is_equivalent
from verl_ext.voting.extract import Choices, extract_answer, option_map, to_letter
from verl_ext.voting.normalize import MAX_NUMBER_LEN, is_number, normalize

LETTERS = frozenset(ascii_uppercase)

# "\$1.45": the normaliser drops "$" (math delimiters) but keeps the escaping backslash, so an
# escaped dollar sign (MathVista's money answers) must go before comparison.
_CURRENCY = re.compile(r"\\\$|\\(?:text|mathrm)\{\s*\\?\$\s*\}")


def read_answer(text: Optional[str], style: str = "boxed", choices: Choices = None) -> Optional[str]:
    """The final answer of ``text`` in ``style``; with options, their letter whenever the answer names one.

    The style alone decides whether there is an answer (a boxed-style response without a box has
    none); on a multiple-choice row an answer that is an option's letter, its text, or an expression
    equal to its text ("1/2" for "0.5") becomes that letter, so that equal answers written
    differently ("B", "(B) 5", "5") vote together and grade alike.
    """
    options = option_map(choices)
    answer = extract_answer(text, style, options)
    if answer is None or options is None or style == "choice":
        return answer
    equal_options = (letter for letter, text in options.items() if text.strip() and is_equivalent(answer, text))
    return to_letter(answer, options) or next(equal_options, answer)


def _value(text: str) -> Optional[float]:
    key = normalize(text)
    if len(key) > MAX_NUMBER_LEN or not is_number(key):  # a longer number is compared as written
        return None
    try:
        return float(Fraction(key))
    except (ZeroDivisionError, OverflowError):  # "1/0" stays as written; so does a value past float's range
        return None


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.strip().strip("[]()").split(",") if item.strip()]


def is_correct(
    answer: Optional[str],
    label: Optional[str],
    *,
    choices: Choices = None,
    answer_type: Optional[str] = None,
    precision: Optional[int] = None,
) -> bool:
    """Whether ``answer`` (from :func:`read_answer`) is ``label``; no answer or no label is never correct.

    - multiple choice (``choices`` given, or ``answer_type="choice"``): a letter is compared with the
      label's letter (the label may be the letter or the option's text); any other answer with the
      gold option's text;
    - ``answer_type="float"`` with ``precision``: both rounded to that many decimals (MathVista);
    - ``answer_type="list"``: item by item;
    - otherwise :func:`~verl_ext.voting.is_equivalent`.
    """
    label = "" if label is None else str(label).strip()
    if answer is None or not label:
        return False
    answer = _CURRENCY.sub("", answer).strip()
    options = option_map(choices)
    if options is not None or answer_type == "choice":
        gold_letter = to_letter(label, options) if options else (label if label in LETTERS else None)
        if answer in (options or LETTERS) and gold_letter is not None:
            return answer == gold_letter
        gold_text = options.get(gold_letter, label) if options and gold_letter else label
        return is_equivalent(answer, gold_text)
    if answer_type == "float" and precision is not None:
        pred, gold = _value(answer), _value(label)
        if pred is not None and gold is not None:
            return round(pred, precision) == round(gold, precision)
    if answer_type == "list":
        pred_items, gold_items = _items(answer), _items(label)
        if len(pred_items) == len(gold_items) and gold_items:
            return all(is_equivalent(p, g) for p, g in zip(pred_items, gold_items))
    return is_equivalent(answer, label)
