"""Online synthesis: every K steps the policy being trained writes new questions, and later steps train on them.

Beyond the paper (docs/data.md, "Online synthesis"). A round after step K runs :mod:`verl_ext.data.synthesize`
unchanged on a window of the seed rows, writing ``<out_dir>/round-<K>/``, but its requests go to the trainer's
own rollout servers through the trainer's LLM client, so the questions come from the weights just trained. The
kept questions go into a pool; from step K+1 on, a share of each batch's prompts is taken from it. A resumed run
reloads the rounds before its step and reruns an unfinished one (the synthesis manifest resumes it).

Hooked into verl's v1 trainer by :class:`SynthesizingMajorityVoteReplayBuffer` (``trainer.v1.sampler``), which
wraps its trainer's ``_next_train_batch`` (patch 5 in :mod:`verl_ext.patches`); ``+mmupt=online_synthesis``.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from verl_ext.config.compose import CLIError, first_line
from verl_ext.data.synth_filters import FilterSettings
from verl_ext.data.synthesize import SynthesisSettings, SynthesizeConfig, synthesize
from verl_ext.generation.base import BackendConfig
from verl_ext.generation.replicas import ServerGenerator
from verl_ext.patches import run_around_next_batch
from verl_ext.trainer.vote_buffer import MajorityVoteReplayBuffer
from verl_ext.voting.settings import from_mapping

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

PREFIX = "mmupt/synth/"
ROUND_DIR = re.compile(r"^round-(\d+)$")


@dataclass(frozen=True)
class OnlineSynthesisConfig(SynthesisSettings):
    """Settings of ``online_synthesis``; ``+mmupt=online_synthesis`` sets them all, with ``every: 4`` (absent: off).
    The question-writing ones are :class:`SynthesisSettings`, with shorter completions by default."""

    every: int = 0
    """Run a round after every K-th training step (0: off)."""
    seeds: list[str] = field(default_factory=list)
    """Seed parquet files (row layout) whose images the questions are about; empty: ``data.train_files``."""
    seeds_per_round: int = 8
    """Seed rows per round; round r starts at row ``r * seeds_per_round`` modulo the seed rows (the last
    window of a pass over the seeds may be shorter)."""
    max_new_tokens: int = 128
    """Longest question completion in tokens."""
    answer_temperature: float = 1.0
    """Sampling temperature of the answerability answers."""
    answer_max_new_tokens: int = 256
    """Longest answerability answer in tokens."""
    min_chars: int = FilterSettings.min_chars
    """Shortest question kept, in characters."""
    max_chars: int = FilterSettings.max_chars
    """Longest question kept, in characters."""
    share: float = 0.5
    """Share of each later batch's prompts taken from the pool (when the pool has questions)."""
    out_dir: Optional[str] = None
    """Where the rounds are written (None: ``<trainer.default_local_dir>/online_synthesis``)."""
    seed: int = 0
    """Sampling seed of round K is ``seed + K``."""

    def __post_init__(self) -> None:
        for name, low in (("every", 0), ("seeds_per_round", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {self.share}")
        try:  # the settings a round passes on are checked where they are used
            self.synthesize_config([Path("seeds.parquet")], Path("out"), 0, 0)
        except CLIError as exc:
            raise ValueError(str(exc).removeprefix("synth.")) from None

    @classmethod
    def from_config(cls, config: Any) -> "OnlineSynthesisConfig":
        """The settings of a full verl config (the ``online_synthesis`` section; absent: off)."""
        section = OmegaConf.select(config, "online_synthesis", default=None)
        values = OmegaConf.to_container(section, resolve=True) if section is not None else {}
        return from_mapping(cls, values, "online_synthesis")

    def synthesize_config(self, seeds: list[Path], out: Path, step: int, first_seed: int) -> SynthesizeConfig:
        """The offline pipeline's settings for the round after ``step`` (the settings of the same name, and these)."""
        return SynthesizeConfig(
            **{f.name: getattr(self, f.name) for f in fields(SynthesisSettings)},
            seeds=tuple(seeds),
            out=out,
            model=f"policy@step{step}",
            shard_size=self.seeds_per_round,
            max_seeds=self.seeds_per_round,
            first_seed=first_seed,
            round_step=step,
            seed=self.seed + step,
            filters=FilterSettings(min_chars=self.min_chars, max_chars=self.max_chars),
            merge=True,
        )


class TrainerServerGenerator(ServerGenerator):
    """Requests through the trainer's LLM client: the servers (and weights) the rollouts use."""

    def __init__(self, trainer: Any, config: BackendConfig):
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig

        model = omega_conf_to_dataclass(trainer.config.actor_rollout_ref.model, dataclass_type=HFModelConfig)
        super().__init__(model, config)
        self.client = trainer.get_llm_client()

    async def _send(self, index: int, request: dict[str, Any]) -> Any:
        request_id = request.pop("request_id")
        return await self.client.generate(request_id, **request)


class OnlineSynthesis:
    """The rounds, the pool and the batch mixing of one training run."""

    def __init__(self, trainer: Any, settings: OnlineSynthesisConfig):
        self.trainer = trainer
        self.settings = settings
        files = settings.seeds or trainer.config.data.train_files
        if OmegaConf.is_config(files):
            files = OmegaConf.to_container(files, resolve=True)
        self.seeds = [Path(f) for f in ([files] if isinstance(files, str) else files)]
        default_dir = Path(str(trainer.config.trainer.default_local_dir)) / "online_synthesis"
        self.out_dir = Path(settings.out_dir) if settings.out_dir else default_dir
        self.pool: list[dict[str, Any]] = []
        self.cursor = 0
        self.rounds_done: set[int] = set()
        self.loaded = False
        self.pending: dict[str, float] = {}
        self.generator: Optional[TrainerServerGenerator] = None

    # ---------------------------------------------------------------- rounds

    def _load_rows(self, path: Path) -> list[dict[str, Any]]:
        """The rows of a round file as the train dataset serves them (same processing as every prompt)."""
        from verl.trainer.ppo.utils import create_rl_dataset

        t = self.trainer
        dataset = create_rl_dataset([str(path)], t.config.data, t.tokenizer, t.processor, is_train=True)
        return [dataset[i] for i in range(len(dataset))]

    def resume(self, step: int) -> None:
        """Put the finished rounds before ``step`` into the pool (a resumed run trains on them again)."""
        self.loaded = True
        children = self.out_dir.iterdir() if self.out_dir.is_dir() else []
        for round_step, child in sorted((int(m[1]), p) for p in children if (m := ROUND_DIR.match(p.name))):
            if round_step < step and (child / "train.parquet").is_file():  # by step number: round-12 after round-4
                self.pool += self._load_rows(child / "train.parquet")
                self.rounds_done.add(round_step)
        if self.pool:
            logger.info("online synthesis: %d question(s) from %d earlier round(s) in the pool",
                        len(self.pool), len(self.rounds_done))

    def run_round(self, step: int) -> dict[str, float]:
        """Synthesize with the current policy after ``step``; the kept questions join the pool."""
        import pyarrow.parquet as pq

        s = self.settings
        total = sum(pq.ParquetFile(p).metadata.num_rows for p in self.seeds)
        first = ((step // s.every - 1) * s.seeds_per_round) % max(1, total)
        if self.generator is None:
            self.generator = TrainerServerGenerator(self.trainer, BackendConfig(batch_size=64, show_progress=False))
        out = self.out_dir / f"round-{step}"
        result = synthesize(s.synthesize_config(self.seeds, out, step, first), self.generator)
        rows = self._load_rows(out / "train.parquet") if result.complete and result.merged else []
        self.pool += rows
        if result.complete:
            self.rounds_done.add(step)
        ratios = [r["extra_info"]["answerability"] for r in rows if r["extra_info"].get("answerability") is not None]
        metrics = {
            f"{PREFIX}failed": float(not result.complete),
            f"{PREFIX}round_step": float(step),
            f"{PREFIX}seed_rows": float(result.seeds),
            f"{PREFIX}written": float(result.candidates),
            f"{PREFIX}kept": float(len(rows)),
            f"{PREFIX}answerability": sum(ratios) / len(ratios) if ratios else float("nan"),
            **{f"{PREFIX}dropped/{reason}": float(count) for reason, count in result.dropped.items()},
        }
        logger.info("online synthesis after step %d: %d written, %d kept (%s), pool %d", step, result.candidates,
                    len(rows), ", ".join(f"{k}={v}" for k, v in sorted(result.dropped.items())) or "none dropped",
                    len(self.pool))
        return metrics

    # ---------------------------------------------------------------- batches

    def next_train_batch(self, original: Any, num_prompts: Optional[int] = None) -> Any:
        """``trainer._next_train_batch`` with a round first when one is due, and pool questions mixed in."""
        import numpy as np
        from verl.utils import tensordict_utils as tu
        from verl.utils.dataset.rl_dataset import collate_fn

        step = int(self.trainer.global_steps)
        if not self.loaded:
            self.resume(step)
        done = step - 1
        if self.settings.every and done >= 1 and done % self.settings.every == 0 and done not in self.rounds_done:
            try:
                self.pending.update(self.run_round(done))
            except Exception as exc:  # a lost round must not end the training run
                logger.error("online synthesis after step %d failed; training goes on without it", done, exc_info=exc)
                self.pending[f"{PREFIX}failed"] = 1.0
        batch = original(num_prompts)
        take = min(len(self.pool), int(round(self.settings.share * len(batch))))
        if take:
            items = [self.pool[(self.cursor + i) % len(self.pool)] for i in range(take)]
            self.cursor = (self.cursor + take) % len(self.pool)
            extra = collate_fn([dict(item) for item in items])
            extra["uid"] = np.array([str(uuid.uuid4()) for _ in range(take)], dtype=object)
            kept = tu.index_select_tensor_dict(batch, list(range(len(batch) - take)))
            kept.pop("global_steps", None)  # batch-level, not per row: set again on the mixed batch
            # The training files may carry columns synthesized rows lack (or the reverse): same keys as the batch.
            extra = {key: extra.get(key, np.array([None] * take, dtype=object)) for key in kept.keys()}
            batch = tu.concat_tensordict([kept, tu.get_tensordict(extra)]) if len(kept) else tu.get_tensordict(extra)
            tu.assign_non_tensor_data(batch, "global_steps", self.trainer.global_steps)
        self.pending[f"{PREFIX}pool_size"] = float(len(self.pool))
        self.pending[f"{PREFIX}batch_from_pool"] = float(self.pending.get(f"{PREFIX}batch_from_pool", 0.0) + take)
        return batch

    def metrics(self) -> dict[str, float]:
        """The metrics gathered since the last call (a round's, and the pool's)."""
        out, self.pending = self.pending, {}
        return out


def settings_problem(config: Any) -> Optional[str]:
    """Why the ``online_synthesis`` settings of a verl config cannot run (None when they can)."""
    try:
        settings = OnlineSynthesisConfig.from_config(config)
    except (ValueError, TypeError) as err:
        return f"online_synthesis: {first_line(err)}"
    if not settings.every:
        return None
    if OmegaConf.select(config, "reward.reward_manager.name", default=None) != "majority_vote":
        return ("online_synthesis needs the majority vote (+mmupt=online_synthesis includes it): "
                "its questions have no labels")
    mode = OmegaConf.select(config, "trainer.v1.trainer_mode", default="sync")
    if mode != "sync":
        # Rounds run between a weight sync and the next rollouts, which only the sync trainer has.
        return f"online_synthesis supports trainer.v1.trainer_mode=sync only, got {mode!r}"
    for seed in settings.seeds:
        if not Path(seed).is_file():
            return f"online_synthesis.seeds: {seed} is not a parquet file"
    return None


class SynthesizingMajorityVoteReplayBuffer(MajorityVoteReplayBuffer):
    """The vote's replay buffer, plus online synthesis rounds on its trainer (``online_synthesis.every > 0``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.synthesis: Optional[OnlineSynthesis] = None
        if self.trainer is None:
            raise ValueError("online synthesis needs verl's v1 trainer (it builds this sampler)")
        settings = OnlineSynthesisConfig.from_config(self.trainer.config)
        if settings.every:
            self.synthesis = OnlineSynthesis(self.trainer, settings)
            run_around_next_batch(self.trainer, self.synthesis.next_train_batch)

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if self.synthesis is not None and partition_id != "val":
            metrics.update(self.synthesis.metrics())
        return batch, metrics

