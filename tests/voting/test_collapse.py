"""The label-free collapse rule on constructed runs."""

from __future__ import annotations

import pytest

from verl_ext.voting.collapse import CollapseConfig, CollapseMonitor
from verl_ext.voting.config import VoteConfig


def steps(ratios, **other):
    return [(i, {"majority_ratio": r, **{k: v[i - 1] for k, v in other.items()}}) for i, r in enumerate(ratios, 1)]


def test_fires_when_the_trailing_mean_rises_above_the_start():
    # Baseline (steps 1-4) 0.5; trailing means from step 8: 0.55, 0.575, 0.6125 (step 10: +0.1125).
    ratios = [0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.5, 0.6, 0.6, 0.75, 0.9]
    monitor = CollapseMonitor()
    assert monitor.replay(steps(ratios)) == 10
    assert monitor.update(12, {"majority_ratio": 0.2})["fired_step"] == 10  # it stays fired


def test_trend_metrics_of_every_indicator():
    monitor = CollapseMonitor(CollapseConfig(window=2, baseline_steps=1))
    assert monitor.update(1, {"majority_ratio": 0.5, "answer_entropy": 1.0}) == {"fired": 0.0, "fired_step": 0.0}
    monitor.update(2, {"majority_ratio": 0.5, "answer_entropy": 1.0})
    out = monitor.update(3, {"majority_ratio": 0.6, "answer_entropy": 0.4, "distinct_answers": 2.0})
    assert out["majority_ratio_trend"] == pytest.approx(0.05)
    assert out["answer_entropy_trend"] == pytest.approx(-0.3)
    assert "distinct_answers_trend" not in out  # seen once: no baseline and window yet
    assert out["fired"] == 0.0


def test_a_run_that_agrees_from_the_start_is_not_collapsing():
    assert CollapseMonitor().replay(steps([0.95] * 30)) is None


def test_noise_below_the_threshold_does_not_fire():
    assert CollapseMonitor().replay(steps([0.5, 0.6, 0.55, 0.5, 0.62, 0.58, 0.6, 0.63, 0.6] * 3)) is None


@pytest.mark.parametrize(
    "values, match",
    [
        ({"guard": "halt"}, "guard must be one of"),
        ({"window": 0}, "integers >= 1"),
        ({"ratio_rise": 0}, "ratio_rise"),
        ({"windows": 3}, "unknown collapse setting"),
        ({"window": 2.5}, "integers >= 1"),
    ],
)
def test_bad_settings_are_clear_errors(values, match):
    with pytest.raises(ValueError, match=match):
        VoteConfig.from_mapping({"collapse": values})


def test_vote_config_reads_the_nested_collapse_settings():
    cfg = VoteConfig.from_mapping({"collapse": {"guard": "stop", "window": 3}})
    assert cfg.collapse == CollapseConfig(guard="stop", window=3)
    assert VoteConfig().collapse == CollapseConfig()
