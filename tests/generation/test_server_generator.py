"""ServerGenerator without servers: a stand-in ``_send`` shows how seeds, failures and hangs are handled."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from verl_ext.generation.base import BackendConfig, GenerationRequest, SamplingSettings
from verl_ext.generation.replicas import ServerGenerator


class _Tokenizer:
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(str(i) for i in ids)


class _StandInServers(ServerGenerator):
    """Answers each request with its index and seed; ``hang`` indexes never answer, ``fail`` ones raise."""

    def __init__(self, config: BackendConfig, hang: set[int] = frozenset(), fail: set[int] = frozenset()):
        model = SimpleNamespace(tokenizer=_Tokenizer(), processor=None, hf_config=SimpleNamespace())
        super().__init__(model, config)
        self.hang, self.fail = hang, fail
        self.cancelled: list[int] = []

    def encode(self, request: GenerationRequest, pixel_kwargs: dict[str, int]) -> tuple[list[int], list[Any]]:
        return [1], []

    async def _send(self, index: int, request: dict[str, Any]) -> Any:
        try:
            if index in self.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(0.01)
            if index in self.fail:
                raise RuntimeError(f"server error on request {index}")
        except asyncio.CancelledError:
            self.cancelled.append(index)
            raise
        return SimpleNamespace(token_ids=[index, request["sampling_params"].get("seed", -1)])


def _requests(count: int) -> list[GenerationRequest]:
    return [GenerationRequest(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(count)]


def test_completions_follow_request_order_and_seeds_follow_the_run_not_the_batch():
    settings = SamplingSettings(n=2, temperature=1.0, seed=7)
    small = _StandInServers(BackendConfig(batch_size=2, show_progress=False)).generate(_requests(5), settings)
    large = _StandInServers(BackendConfig(batch_size=8, show_progress=False)).generate(_requests(5), settings)
    assert [texts[0].split()[0] for texts in small] == ["0", "1", "2", "3", "4"]
    assert small == large
    seeds = [text.split()[1] for texts in small for text in texts]
    assert len(set(seeds)) == len(seeds)


def test_a_seed_key_makes_a_request_s_seeds_independent_of_its_place():
    settings = SamplingSettings(n=2, temperature=1.0, seed=7)
    keyed = [GenerationRequest(messages=[{"role": "user", "content": f"q{i}"}], seed_key=100 + i) for i in range(4)]
    generator = _StandInServers(BackendConfig(batch_size=2, show_progress=False))
    whole = generator.generate(keyed, settings)
    resumed = generator.generate(keyed[2:], settings)  # the first two were answered by an earlier run
    seeds = [[text.split()[1] for text in texts] for texts in whole]
    assert [[text.split()[1] for text in texts] for texts in resumed] == seeds[2:]
    unkeyed = generator.generate(_requests(4)[2:], settings)  # without keys the seeds follow the places
    assert [[text.split()[1] for text in texts] for texts in unkeyed] != seeds[2:]


def test_a_hung_server_fails_its_batch_after_the_timeout_and_the_other_requests_are_cancelled():
    generator = _StandInServers(BackendConfig(batch_size=4, show_progress=False, batch_timeout_s=0.5), hang={1})
    with pytest.raises(TimeoutError, match=r"4 request\(s\) not completed .* within 0.5 s"):
        generator.generate(_requests(4), SamplingSettings(n=1, temperature=1.0, seed=0))
    assert generator.cancelled == [1]  # the others had answered; the hung one is not left running
    generator.close()


def test_a_failed_request_cancels_the_rest_of_its_batch():
    generator = _StandInServers(BackendConfig(batch_size=3, show_progress=False), hang={2}, fail={0})
    with pytest.raises(RuntimeError, match="server error on request 0"):
        generator.generate(_requests(3), SamplingSettings(n=1, temperature=1.0, seed=0))
    assert generator.cancelled == [2]


def test_the_timeout_must_be_positive():
    with pytest.raises(ValueError, match="batch_timeout_s must be positive"):
        BackendConfig(batch_timeout_s=0)
