"""Rule grading of answers in many forms, verdict parsing and the LLM judges (HTTP and local)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from verl_ext.eval.benchmarks import Sample
from verl_ext.eval.grading import (
    ApiJudge,
    GeneratorJudge,
    extract_prediction,
    format_judge_prompt,
    grade_batch,
    grade_response,
    load_judge_prompt,
    parse_verdict,
)

CHOICES = {"A": "40°", "B": "60°", "C": "120°", "D": "140°"}


def free(answer: str, answer_type: str = "text", precision=None) -> Sample:
    return Sample("mathvision", "q", "What is x?", answer, answer_type=answer_type, precision=precision)


def choice(answer: str = "B", letter: str = "B", choices=CHOICES) -> Sample:
    # MathVerse/We-Math/MathVision store the letter, MathVista the option text: both are covered.
    return Sample("mathverse", "q", "Angle?", answer, choices=choices, answer_letter=letter, answer_type="choice")


def boxed(text: str) -> str:
    return f"Let me think step by step. ... Therefore the answer is \\boxed{{{text}}}."


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        (boxed("\\frac{1}{2}"), "0.5"),
        (boxed("0.5"), "\\frac{1}{2}"),
        (boxed("\\dfrac{3}{4}"), "3/4"),
        (boxed("1/2"), "\\frac{1}{2}"),
        (boxed("2.50"), "2.5"),
        (boxed("1,000"), "1000"),
        (boxed("5 \\text{ cm}"), "5"),
        (boxed("5 cm"), "5"),
        (boxed("60^\\circ"), "60"),
        (boxed("60°"), "60^{\\circ}"),
        (boxed("x = 7"), "7"),
        (boxed("2\\sqrt{3}"), "\\sqrt{12}"),
        (boxed("\\frac{\\sqrt{3}}{2}"), "\\frac{\\sqrt3}{2}"),
        (boxed("40\\%"), "40"),
        ("<think>...</think><answer>12</answer>", "12"),
        (boxed("\\text{yes}"), "Yes"),
    ],
)
def test_free_form_equivalent_forms(response, gold):
    grade = grade_response(response, free(gold))
    assert grade.correct, grade


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        (boxed("0.51"), "0.5"),
        (boxed("6"), "5"),
        (boxed("\\sqrt{3}"), "\\sqrt{2}"),
        ("The answer is 5.", "5"),  # no box, no answer tag: no final answer under the protocol
        (boxed("5") + " Hmm, no: \\boxed{6}", "5"),  # the last box counts
        ("", "5"),
    ],
)
def test_free_form_wrong(response, gold):
    assert not grade_response(response, free(gold)).correct


def test_missing_answer_has_no_extraction():
    grade = grade_response("I am not sure.", free("5"))
    assert grade.extracted is None and not grade.correct and grade.method == "rule"


@pytest.mark.parametrize(
    "response",
    [
        boxed("B"),
        boxed("(B)"),
        boxed("\\text{B}"),
        boxed("\\textbf{(B)}"),
        boxed("B: 60°"),
        boxed("(B) 60°"),
        boxed("60°"),
        boxed("60^\\circ"),
        boxed("60"),
        "Reasoning...\nThe answer is (B).",
        "Reasoning...\nAnswer: B",
        "Reasoning...\n(B)",
        "<answer>B</answer>",
    ],
)
def test_multiple_choice_by_letter_or_option_text(response):
    for sample in (choice(), choice(answer="60°")):
        grade = grade_response(response, sample)
        assert grade.correct and grade.extracted == "B", (response, grade)


@pytest.mark.parametrize(
    "response", [boxed("C"), boxed("(A)"), boxed("120°"), boxed("45°"), "The answer is (D).", boxed("F")]
)
def test_multiple_choice_wrong(response):
    assert not grade_response(response, choice()).correct


def test_multiple_choice_expression_equal_to_an_option():
    sample = choice(answer="C", letter="C", choices={"A": "0.25", "B": "1/3", "C": "0.5", "D": "2"})
    grade = grade_response(boxed("\\frac{1}{2}"), sample)
    assert grade.correct and grade.extracted == "C"


def test_multiple_choice_without_parsed_options_compares_letters():
    # A MathVerse Vision Only question: its options are only in the image.
    sample = Sample("mathverse", "q", "Look at the image.", "C", choices=None, answer_letter="C", answer_type="choice")
    assert grade_response(boxed("C"), sample).correct
    assert grade_response("So the answer is (C).", sample).correct
    assert not grade_response(boxed("D"), sample).correct


def test_mathvista_float_precision():
    sample = free("1.45", answer_type="float", precision=2)
    assert grade_response(boxed("1.449"), sample).correct  # rounds to 1.45
    assert grade_response(boxed("\\$1.45"), sample).correct
    assert grade_response(boxed("1.45 dollars"), sample).correct
    assert not grade_response(boxed("1.4"), sample).correct
    assert grade_response(boxed("0.8"), free("0.8", "float", 1)).correct
    assert not grade_response(boxed("0.9"), free("0.8", "float", 1)).correct


def test_mathvista_integer_and_list():
    assert grade_response(boxed("3.0"), free("3", "integer")).correct
    assert not grade_response(boxed("4"), free("3", "integer")).correct
    assert grade_response(boxed("[2007, 2008]"), free("[2007, 2008]", "list")).correct
    assert grade_response(boxed("2007, 2008"), free("[2007, 2008]", "list")).correct
    assert not grade_response(boxed("[2008, 2009]"), free("[2007, 2008]", "list")).correct


def test_extract_prediction_maps_option_text_to_letter():
    assert extract_prediction(boxed("140°"), choice()) == "D"
    assert extract_prediction(boxed("7"), free("7")) == "7"
    assert extract_prediction(None, free("7")) is None


# ------------------------------------------------------------------------------------------ judge prompt


def test_parse_verdict():
    assert parse_verdict("The answers match.\nJudgement: 1") is True
    assert parse_verdict("Judgement: 1 ... on reflection\nJudgement: 0") is False
    assert parse_verdict("**Judgment:** 1") is True
    assert parse_verdict("judgement：0") is False
    assert parse_verdict("I think it is right") is None
    assert parse_verdict(None) is None


def test_judge_prompt_file_and_filling(tmp_path):
    template = load_judge_prompt()
    sample = choice()
    text = format_judge_prompt(template, sample, "x" * 10 + "\\boxed{B} {odd braces}", max_response_chars=15)
    assert "Angle?" in text and "B (60°)" in text and "{odd braces}" in text
    assert "xxxxxxxxxx" not in text  # only the tail of a long response is sent
    assert "{question}" not in text and "{reference}" not in text
    bad = tmp_path / "bad.txt"
    bad.write_text("Question: {question}")
    with pytest.raises(ValueError, match="reference"):
        load_judge_prompt(bad)


# ------------------------------------------------------------------------------------------ HTTP judge


class _Endpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions that answers from a script."""

    script: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        status, content = type(self).script.pop(0) if type(self).script else (200, "Judgement: 1")
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def endpoint():
    _Endpoint.script, _Endpoint.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Endpoint
    server.shutdown()
    server.server_close()


def test_api_judge_over_http(endpoint):
    url, handler = endpoint
    handler.script = [(200, "Equivalent.\nJudgement: 1"), (200, "Different.\nJudgement: 0"), (200, "no verdict")]
    judge = ApiJudge("judge-model", url, api_key="secret-token", max_retries=0)
    verdicts = judge.judge_many([(free("5"), boxed("5.0")), (free("5"), boxed("6")), (free("5"), "?")])
    judge.close()
    assert verdicts == [True, False, None]
    request = handler.seen[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret-token"
    assert request["body"]["model"] == "judge-model" and request["body"]["temperature"] == 0.0
    assert "What is x?" in request["body"]["messages"][0]["content"]


def test_api_judge_retries_server_errors_but_not_refusals(endpoint, monkeypatch):
    monkeypatch.setattr("verl_ext.eval.grading.time.sleep", lambda s: None)
    url, handler = endpoint
    handler.script = [(500, ""), (429, ""), (200, "Judgement: 1"), (400, "bad request")]
    judge = ApiJudge("m", url, max_retries=3)
    assert judge.judge_many([(free("5"), boxed("5"))]) == [True]
    assert len(handler.seen) == 3
    assert judge.judge_many([(free("5"), boxed("5"))]) == [None]  # a 400 is not retried
    assert len(handler.seen) == 4 and handler.seen[0]["auth"] is None
    judge.close()


def test_grade_batch_fallback_and_always(endpoint):
    url, handler = endpoint
    items = [(free("5"), boxed("5")), (free("1/2"), boxed("half")), (free("7"), "")]
    judge = ApiJudge("m", url, max_retries=0)
    handler.script = [(200, "Judgement: 1")]
    grades = grade_batch(items, judge, mode="fallback")
    # Only the rule-wrong, non-empty response went to the judge, which rescued it.
    assert len(handler.seen) == 1 and "half" in handler.seen[0]["body"]["messages"][0]["content"]
    assert [g.correct for g in grades] == [True, True, False]
    assert [g.method for g in grades] == ["rule", "judge", "rule"]
    assert grades[1].rule_correct is False and grades[1].judge is True

    handler.seen.clear()
    handler.script = [(200, "Judgement: 0"), (200, "unsure")]
    grades = grade_batch(items, judge, mode="always")
    assert len(handler.seen) == 2
    assert [g.correct for g in grades] == [False, False, False]  # judge overrules; undecided keeps the rule
    judge.close()
    with pytest.raises(ValueError, match="judge mode"):
        grade_batch(items, judge, mode="sometimes")


class _ScriptedGenerator:
    """A generation backend stand-in that replies from a script (counts requests)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []

    def generate(self, requests, settings, *, on_batch=None):
        assert settings.temperature == 0 and settings.n == 1
        self.requests.extend(requests)
        return [[self.replies.pop(0)] for _ in requests]


def test_generator_judge(tmp_path):
    template = tmp_path / "judge.txt"
    template.write_text("Q={question} R={reference} A={response} -> reply 'Judgement: 1|0'")
    generator = _ScriptedGenerator(["Judgement: 0", "Judgement: 1"])
    judge = GeneratorJudge(generator, prompt_template=load_judge_prompt(template))
    assert judge.judge_many([(free("5"), "five"), (choice(), "b")]) == [False, True]
    prompt = generator.requests[1].messages[0]["content"]
    assert prompt.startswith("Q=Angle?") and "R=B (60°)" in prompt and prompt.endswith("-> reply 'Judgement: 1|0'")
    assert generator.requests[1].images == []
    assert judge.judge_many([]) == []


def test_default_judge_prompt_is_the_packaged_file():
    path = Path(__file__).resolve().parents[2] / "verl_ext" / "eval" / "judge_prompt.txt"
    assert load_judge_prompt() == path.read_text(encoding="utf-8")
