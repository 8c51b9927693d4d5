"""``python -m verl_ext.toy.standin_synthesis config=... key=value ...``: synthesis with a random-init model.

``python -m verl_ext.data.synthesize`` (same recipes and keys) for the random-init model of CPU mode
(``examples/*.sh``), which never writes the ``<question>`` tags: its completions are put in them. The model
still generates on the rollout replicas; parsing, filters, the answerability vote, shards and merge are real.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Sequence

from verl_ext.data import synthesize
from verl_ext.data.synth_filters import parse_question
from verl_ext.generation.factory import make_generator
from verl_ext.prompts import FORMAT_INSTRUCTION


class QuestionMarkers:
    """A generator whose question completions always parse: a completion without tags becomes a tagged
    question naming its hash (distinct texts stay distinct for the duplicate filter)."""

    def __init__(self, inner):
        self.inner = inner

    def generate(self, requests, settings, *, on_batch=None):
        outputs = self.inner.generate(requests, settings, on_batch=on_batch)
        return [
            texts if request.messages[-1]["content"].endswith(FORMAT_INSTRUCTION)  # the answerability vote's answers
            else [text if parse_question(text) else
                  f"<question>What does the image show (#{zlib.crc32(text.encode()):08x})?</question>"
                  for text in texts]
            for request, texts in zip(requests, outputs)
        ]

    def close(self):
        getattr(self.inner, "close", lambda: None)()


def main(argv: Sequence[str] | None = None) -> int:
    """``verl_ext.data.synthesize.main`` with the replicas' generator wrapped in :class:`QuestionMarkers`."""
    return synthesize.main(argv, generator_factory=lambda *a, **k: QuestionMarkers(make_generator(*a, **k)))


if __name__ == "__main__":
    sys.exit(main())
