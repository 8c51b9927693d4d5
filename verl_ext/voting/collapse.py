"""A label-free signal of collapse: the group's answers converge faster than the run began.

Every intrinsic reward (the vote, entropy, self-certainty) first helps, then drifts into confident,
uniform answers, right or wrong; without labels the groups themselves show it. The rule (docs/rewards.md,
"Collapse signal"; its defaults come from the toy runs, docs/toy-plain.md "When to stop"):

    fire at the first step s >= baseline_steps + window where
    mean(majority_ratio[s - window + 1 .. s]) - mean(majority_ratio[1 .. baseline_steps]) >= ratio_rise

The monitor lives in the trainer process and is not checkpointed: a resumed run starts a new baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from statistics import fmean
from typing import Optional

from verl_ext.voting.settings import check_one_of

INDICATORS = ("majority_ratio", "answer_entropy", "distinct_answers", "no_answer_rate", "response_length")
GUARDS = ("off", "warn", "stop")


@dataclass(frozen=True)
class CollapseConfig:
    """When the collapse signal fires and what the guard then does."""

    window: int = 4
    """Steps in the trailing mean that is compared with the baseline."""
    baseline_steps: int = 4
    """The run's first steps; their mean majority ratio is the baseline."""
    ratio_rise: float = 0.1
    """Fire when the trailing mean majority ratio exceeds the baseline by at least this much."""
    guard: str = "off"
    """``off``: only the metrics; ``warn``: also a log warning when it fires; ``stop``: end the run
    through verl's last-step path (checkpoint when ``trainer.save_freq`` > 0, final validation)."""

    def __post_init__(self):
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.window, self.baseline_steps))
        if not ints or self.window < 1 or self.baseline_steps < 1:
            raise ValueError(
                "collapse.window and collapse.baseline_steps must be integers >= 1; "
                f"got {self.window}, {self.baseline_steps}"
            )
        if not 0.0 < float(self.ratio_rise) <= 1.0:
            raise ValueError(f"collapse.ratio_rise must be in (0, 1]; got {self.ratio_rise!r}")
        check_one_of("collapse.guard", self.guard, GUARDS)


class CollapseMonitor:
    """Feed it each training step's indicators; it returns trend metrics and remembers when it fired."""

    def __init__(self, config: CollapseConfig = CollapseConfig()):
        self.config = config
        self.history: dict[str, list[float]] = {name: [] for name in INDICATORS}
        self.fired_at: Optional[int] = None

    def update(self, step: int, indicators: Mapping[str, float]) -> dict[str, float]:
        """Record one step; returns ``{name}_trend`` (trailing mean minus baseline) per indicator seen,
        ``fired`` (1.0 from the step the rule fires on) and ``fired_step`` (that step, 0 before)."""
        cfg = self.config
        metrics: dict[str, float] = {}
        for name in INDICATORS:
            if name in indicators:
                series = self.history[name]
                series.append(float(indicators[name]))
                if len(series) >= cfg.baseline_steps + cfg.window:
                    metrics[f"{name}_trend"] = fmean(series[-cfg.window :]) - fmean(series[: cfg.baseline_steps])
        rise = metrics.get("majority_ratio_trend")
        if self.fired_at is None and rise is not None and rise >= cfg.ratio_rise - 1e-12:
            self.fired_at = int(step)
        metrics["fired"] = float(self.fired_at is not None)
        metrics["fired_step"] = float(self.fired_at or 0)
        return metrics

    def replay(self, steps: list[tuple[int, Mapping[str, float]]]) -> Optional[int]:
        """Run the rule over a logged run's ``(step, indicators)``; returns the step it fired on, if any."""
        for step, indicators in steps:
            self.update(step, indicators)
        return self.fired_at
