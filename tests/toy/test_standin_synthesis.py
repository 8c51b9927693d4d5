"""CPU mode's synthesis stand-in: a random-init model's completions become parseable questions."""

from verl_ext.data.synth_filters import parse_question
from verl_ext.generation.base import GenerationRequest, SamplingSettings
from verl_ext.prompts import FORMAT_INSTRUCTION
from verl_ext.toy.standin_synthesis import QuestionMarkers


class Echo:
    closed = False

    def __init__(self, outputs):
        self.outputs = outputs

    def generate(self, requests, settings, *, on_batch=None):
        return [list(self.outputs[r.messages[-1]["content"]]) for r in requests]

    def close(self):
        self.closed = True


def test_question_completions_are_tagged_and_answers_left_alone():
    write = GenerationRequest(messages=[{"role": "user", "content": "Write a question."}])
    answer = GenerationRequest(messages=[{"role": "user", "content": "How many?" + FORMAT_INSTRUCTION}])
    inner = Echo(
        {
            write.messages[0]["content"]: ["garbage a", "garbage b", "<question>How many dots?</question>"],
            answer.messages[0]["content"]: ["noise", r"\boxed{3}"],
        }
    )
    markers = QuestionMarkers(inner)
    questions, answers = markers.generate([write, answer], SamplingSettings(n=3))
    parsed = [parse_question(q) for q in questions]
    assert all(parsed) and len(set(parsed)) == 3  # distinct texts stay distinct for the duplicate filter
    assert parsed[2] == "How many dots?"  # a parseable completion is kept as the model wrote it
    assert answers == ["noise", r"\boxed{3}"]
    markers.close()
    assert inner.closed
