"""Tests for ``python -m verl_ext.data.synthesize`` and the prompt templates it uses.

The pipeline runs end to end twice over: with a scripted generator implementing the ``Generator`` protocol
(so kept rows, provenance, every filter, the answerability check and deduplication are exercised with known
outputs), and with the real tiny Qwen2.5-VL on the transformers backend (which writes no well-formed
question: the counts must still add up). Resumption is tested by killing a run between shards and during a
shard write.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from verl_ext.config.compose import CLIError
from verl_ext.data import synthesize as synth
from verl_ext.data.schema import FORMAT_INSTRUCTION, arrow_schema, build_row, read_rows, validate_file
from verl_ext.data.synthesize import MANIFEST_NAME, MERGED_NAME, SynthesizeConfig, main, synthesize
from verl_ext.toy.visual_math import VisualMathConfig, write_dataset
from verl_ext.files import exclusive_lock
from verl_ext.generation import BackendConfig, GenerationRequest, Generator, SamplingSettings
from verl_ext.prompts import load_prompt

PROVENANCE = [name for name, _ in synth.extra_info_fields()]

# ------------------------------------------------------------------------------------------------ helpers


class SimulatedKill(BaseException):
    """Stands for the process dying: nothing in the pipeline may catch it."""


Script = Callable[[GenerationRequest, SamplingSettings], list[str]]


def request_text(request: GenerationRequest) -> str:
    return request.messages[-1]["content"]


def is_answer_request(request: GenerationRequest) -> bool:
    return request_text(request).endswith(FORMAT_INSTRUCTION)


class ScriptedGenerator:
    """The Generator protocol with scripted completions; records every call."""

    def __init__(
        self,
        questions: Script,
        answers: Script | None = None,
        fail_on_call: int | None = None,
        failure: type[BaseException] = SimulatedKill,
    ) -> None:
        self.questions, self.answers = questions, answers
        self.fail_on_call, self.failure = fail_on_call, failure
        self.calls: list[tuple[str, list[GenerationRequest], SamplingSettings]] = []

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        *,
        on_batch: Callable[[int, list[list[str]]], None] | None = None,
    ) -> list[list[str]]:
        kinds = {is_answer_request(r) for r in requests}
        assert len(kinds) == 1, "one call mixes question and answer requests"
        kind = "answer" if kinds.pop() else "question"
        self.calls.append((kind, list(requests), settings))
        if self.fail_on_call is not None and len(self.calls) >= self.fail_on_call:
            raise self.failure(f"scripted failure on call {len(self.calls)}")
        script = self.answers if kind == "answer" else self.questions
        assert script is not None, "answers were requested but none are scripted"
        outputs = [script(r, settings) for r in requests]
        assert all(len(texts) == settings.n for texts in outputs)
        for start in range(0, len(outputs), 2):  # report in batches, like the real backends
            if on_batch is not None:
                on_batch(start, outputs[start : start + 2])
        return outputs

    def question_calls(self) -> int:
        return sum(1 for kind, _, _ in self.calls if kind == "question")


def seed_question_in(request: GenerationRequest) -> str:
    match = re.search(r"^Problem: (.*)$", request_text(request), re.MULTILINE)
    assert match, "the in-context prompt shows the seed question"
    return match.group(1)


def one_good_question(request: GenerationRequest, settings: SamplingSettings) -> list[str]:
    return ["<question>How many objects can be seen in this picture?</question>"] * settings.n


def png(color: tuple[int, int, int] | str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_raw(path: Path, rows: list[dict[str, Any]], **kwargs: Any) -> Path:
    """Write rows with the schema's Arrow types but without validation (bad seed rows)."""
    pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema()), path, **kwargs)
    return path


def seed_row(question: str, image: bytes, index: int, answer: str = "7") -> dict[str, Any]:
    return build_row(
        data_source="test/seeds", question=question, images=[image], split="train", index=index, answer=answer,
        source="test/seeds",
    )


def config(tmp_path: Path, seeds: Sequence[Path], out: str = "out", **kwargs: Any) -> SynthesizeConfig:
    return SynthesizeConfig(seeds=tuple(seeds), out=tmp_path / out, model="scripted", **kwargs)


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / MANIFEST_NAME).read_text())


def temporaries(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if ".tmp" in p.name]


def all_rows(files: Sequence[Path]) -> list[dict[str, Any]]:
    return [row for path in files for row in read_rows(path)]


def assert_counts_add_up(out: Path) -> dict[str, Any]:
    summary = manifest(out)["summary"]
    assert summary["kept"] + sum(summary["dropped"].values()) == summary["candidates"]
    assert summary["kept"] == sum(len(read_rows(f)) for f in summary["train_files"])
    return summary


@pytest.fixture(scope="module")
def visual_math(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six labelled seed rows with distinct images (the toy data set's layout, not prepare's)."""
    return write_dataset(tmp_path_factory.mktemp("visual_math"), VisualMathConfig(n_train=6, n_test=1))["train"]


@pytest.fixture()
def shared_images(tmp_path: Path) -> Path:
    """Four seeds; the third shows the same image as the first."""
    red, blue, green = png("red"), png("blue"), png("green")
    rows = [seed_row("How many red things?", red, 0), seed_row("What colour?", blue, 1),
            seed_row("Is the image red?", red, 2), seed_row("What is shown?", green, 3)]
    return write_raw(tmp_path / "shared.parquet", rows)


# ------------------------------------------------------------------------------------------------ scripted runs


def seven_outputs(request: GenerationRequest, settings: SamplingSettings) -> list[str]:
    """One kept question and one completion for every text filter."""
    assert settings.n == 7
    return [
        "Here is my question: <question>What is the area covered by the shapes?</question>",
        "<question>  what is the AREA covered by the shapes </question>",  # duplicate of the first
        "A question about the shapes, without markers.",  # unparseable
        "<question> </question>",  # empty
        "<question>Why?</question>",  # too short
        "<question>" + "Why is that so? " * 70 + "</question>",  # too long
        f"<question>{seed_question_in(request)}</question>",  # the seed's own question
    ]


def test_in_context_run_keeps_rows_with_provenance(tmp_path: Path, visual_math: Path) -> None:
    generator = ScriptedGenerator(seven_outputs)
    result = synthesize(config(tmp_path, [visual_math], num_per_seed=7, shard_size=4, temperature=0.9), generator)

    out = tmp_path / "out"
    assert result.exit_code == 0 and result.complete and not result.interrupted
    assert result.files == [out / "shard-00000.parquet", out / "shard-00001.parquet"]
    assert (result.seeds, result.candidates, result.kept, result.kept_this_run) == (6, 42, 6, 6)
    reasons = ("duplicate", "unparseable", "empty", "too_short", "too_long", "same_as_seed")
    assert result.dropped == {reason: 6 for reason in reasons}
    assert not result.bad_input and not result.failures

    # What the model was asked: the image, the seed question and answer, n questions per seed.
    seeds = read_rows(visual_math)
    assert [(kind, len(requests)) for kind, requests, _ in generator.calls] == [("question", 4), ("question", 2)]
    _, requests, settings = generator.calls[0]
    assert (settings.n, settings.temperature, settings.max_new_tokens) == (7, 0.9, 512)
    assert generator.calls[1][2].seed != settings.seed  # every shard samples its own stream
    text = request_text(requests[1])
    assert seeds[1]["extra_info"]["question"] in text and f"Answer: {seeds[1]['extra_info']['answer']}" in text
    assert requests[1].images == [seeds[1]["images"][0]["bytes"]]

    rows = all_rows(result.files)
    assert len(rows) == 6
    for position, (row, seed) in enumerate(zip(rows, seeds)):
        assert row["data_source"] == "verl_ext/synthesized/in_context"
        assert row["prompt"] == [
            {"role": "user", "content": "<image>What is the area covered by the shapes?" + FORMAT_INSTRUCTION}
        ]
        assert row["images"] == seed["images"]
        assert row["reward_model"] == {"style": "rule", "ground_truth": ""}
        info = row["extra_info"]
        assert info["question"] == "What is the area covered by the shapes?" and info["answer"] == ""
        assert info["index"] == position * 7  # seed position x questions per seed + sample number
        assert info["seed_file"] == str(visual_math.absolute()) and info["seed_row"] == position
        assert info["seed_index"] == seed["extra_info"]["index"]
        assert info["seed_question"] == seed["extra_info"]["question"]
        assert (info["strategy"], info["prompt_name"], info["answerability"]) == (
            "in_context", "synth_in_context", None)
        assert info["source"] == str(visual_math.absolute())  # the toy seeds carry no source of their own
    for path in result.files:
        report = validate_file(path, extra_info_fields=PROVENANCE)
        assert report.ok, report.problems

    summary = assert_counts_add_up(out)
    assert summary["complete"] and summary["seeds"] == 6 and summary["kept"] == 6
    assert summary["train_files"] == [str(p) for p in result.files]
    assert not temporaries(out)


def test_direct_prompt_sees_only_the_image_and_dedup_is_per_image(tmp_path: Path, shared_images: Path) -> None:
    generator = ScriptedGenerator(one_good_question)
    result = synthesize(config(tmp_path, [shared_images], strategy="direct"), generator)

    (_, requests, _), = generator.calls
    template = load_prompt("synth_direct").text
    for request, seed in zip(requests, read_rows(shared_images)):
        assert request_text(request) == template
        assert seed["extra_info"]["question"] not in request_text(request)
        assert request.images == [seed["images"][0]["bytes"]]
    # The same question is kept once per distinct image: seed 2 shows seed 0's image.
    assert result.kept == 3 and result.dropped == {"duplicate": 1}
    rows = all_rows(result.files)
    assert [row["extra_info"]["seed_row"] for row in rows] == [0, 1, 3]
    assert {row["extra_info"]["strategy"] for row in rows} == {"direct"}
    assert rows[0]["data_source"] == "verl_ext/synthesized/direct"


def test_answerability_filter(tmp_path: Path, visual_math: Path) -> None:
    def questions(request: GenerationRequest, settings: SamplingSettings) -> list[str]:
        return ["<question>A clear question: how many shapes?</question>",
                "<question>A vague question: what might happen next?</question>"]

    def answers(request: GenerationRequest, settings: SamplingSettings) -> list[str]:
        if "clear" in request_text(request):  # 4 of 5 answers agree (ratio 0.8)
            return ["\\boxed{3}", "so \\boxed{3}", "\\boxed{3.0}", "\\boxed{3}", "\\boxed{4}"][: settings.n]
        return ["\\boxed{1}", "\\boxed{2}", "no idea", "\\boxed{1}", "\\boxed{5}"][: settings.n]  # ratio 0.4

    generator = ScriptedGenerator(questions, answers)
    cfg = config(tmp_path, [visual_math], num_per_seed=2, max_seeds=3, answerability_k=5,
                 answerability_threshold=0.6)
    result = synthesize(cfg, generator)

    assert [kind for kind, _, _ in generator.calls] == ["question", "answer"]
    _, answer_requests, settings = generator.calls[1]
    assert (settings.n, settings.temperature, settings.max_new_tokens) == (5, 0.7, 2048)
    assert len(answer_requests) == 6  # both questions of the 3 seeds passed the text filters
    seeds = read_rows(visual_math)
    first = answer_requests[0]
    # The check asks exactly the training prompt, with the seed's image.
    assert request_text(first) == "<image>A clear question: how many shapes?" + FORMAT_INSTRUCTION
    assert first.images == [seeds[0]["images"][0]["bytes"]]

    assert result.kept == 3 and result.dropped == {"unanswerable": 3}
    rows = all_rows(result.files)
    assert all(row["extra_info"]["question"].startswith("A clear") for row in rows)
    assert [row["extra_info"]["answerability"] for row in rows] == pytest.approx([0.8] * 3)
    assert manifest(tmp_path / "out")["settings"]["answerability"]["k"] == 5


@pytest.fixture()
def bad_seeds(tmp_path: Path) -> list[Path]:
    """Seed files with one good row and one row per kind of bad input, plus unusable files."""
    rows = [
        seed_row("How many dots?", png((10, 10, 10)), 0),
        seed_row("How many stripes?", png((20, 20, 20)), 1),
        seed_row("How many lines?", png((30, 30, 30)), 2, answer=""),  # no answer (needed by in-context)
        seed_row("Placeholder", png((40, 40, 40)), 3),
        seed_row("Placeholder", png((50, 50, 50)), 4),
        seed_row("Placeholder", png((60, 60, 60)), 5),
    ]
    rows[1]["images"] = [{"bytes": b"GIF89a but not really an image", "path": None}]  # corrupt image
    rows[3]["images"] = []  # no image at all
    rows[4]["images"] = [{"bytes": None, "path": "images/not_there.png"}]  # an image file that does not exist
    rows[5]["prompt"] = [{"role": "user", "content": "<image>" + FORMAT_INSTRUCTION}]  # no question
    rows[5]["extra_info"]["question"] = ""
    bad = write_raw(tmp_path / "bad.parquet", rows)

    # A file whose second row group is damaged: its first two rows stay usable.
    damaged = tmp_path / "damaged.parquet"
    good = [seed_row(f"How many squares in {i}?", png((100 + i, 0, 0)), i) for i in range(4)]
    write_raw(damaged, good, row_group_size=2, compression="snappy")
    group = pq.ParquetFile(damaged).metadata.row_group(1)
    column = group.column(2)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(damaged.read_bytes())
    data[start + 4 : start + column.total_compressed_size] = b"\xff" * (column.total_compressed_size - 4)
    damaged.write_bytes(bytes(data))

    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("this is not parquet")
    other = tmp_path / "other_columns.parquet"
    pq.write_table(pa.table({"foo": [1, 2]}), other)
    return [bad, damaged, garbage, tmp_path / "missing.parquet", other]


@pytest.mark.parametrize(
    ("strategy", "bad_input", "usable"),
    [
        ("in_context", {"corrupt_image": 1, "missing_image": 2, "missing_question": 1, "missing_answer": 1,
                        "unreadable_row": 2}, 9),
        # Direct synthesis shows no question and no answer, so rows without them are usable seeds.
        ("direct", {"corrupt_image": 1, "missing_image": 2, "unreadable_row": 2}, 11),
    ],
)
def test_bad_input_is_counted_per_reason(
    tmp_path: Path, visual_math: Path, bad_seeds: list[Path], strategy: str, bad_input: dict, usable: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    generator = ScriptedGenerator(one_good_question)
    with caplog.at_level(logging.INFO, logger="verl_ext.data.synthesize"):
        result = synthesize(config(tmp_path, [visual_math, *bad_seeds], strategy=strategy, shard_size=5), generator)

    assert result.failures == {"unreadable_file": 3}
    assert result.seeds == 6 + 6 + 4 and result.bad_input == bad_input
    assert result.seeds - sum(result.bad_input.values()) == usable
    assert sum(len(requests) for _, requests, _ in generator.calls) == usable
    assert result.candidates == result.kept == usable and result.exit_code == 0
    assert result.complete  # bad input is counted, not retried
    summary = assert_counts_add_up(tmp_path / "out")
    assert summary["bad_input"] == bad_input and summary["failures"] == {"unreadable_file": 3}
    assert "missing.parquet" in caplog.text and "corrupt_image" in caplog.text
    assert any("bad input %d" % sum(bad_input.values()) in r.getMessage() for r in caplog.records)


def test_no_readable_seed_exits_1(tmp_path: Path, bad_seeds: list[Path]) -> None:
    generator = ScriptedGenerator(one_good_question)
    result = synthesize(config(tmp_path, bad_seeds[2:4]), generator)
    assert result.exit_code == 1 and result.failures == {"unreadable_file": 2}
    assert not generator.calls and not (tmp_path / "out" / MANIFEST_NAME).exists()


# ------------------------------------------------------------------------------------------------ resume


def test_resume_after_kill_between_shards(tmp_path: Path, visual_math: Path) -> None:
    clean = synthesize(config(tmp_path, [visual_math], out="clean", shard_size=2), ScriptedGenerator(one_good_question))
    assert clean.kept == 6 and len(clean.files) == 3

    out = tmp_path / "out"
    killed = ScriptedGenerator(one_good_question, fail_on_call=2)  # dies while generating shard 1
    with pytest.raises(SimulatedKill):
        synthesize(config(tmp_path, [visual_math], shard_size=2), killed)
    assert sorted(p.name for p in out.glob("*.parquet")) == ["shard-00000.parquet"]
    assert list(manifest(out)["shards"]) == ["0"] and not manifest(out)["summary"]["complete"]
    assert not temporaries(out)

    # What a SIGKILL during a write, or right after a rename, would leave behind.
    (out / ".shard-00001.parquet.tmp-4242-deadbeef").write_bytes(b"PAR1 half a file")
    (out / "shard-00002.parquet").write_bytes((out / "shard-00000.parquet").read_bytes())

    rerun = ScriptedGenerator(one_good_question)
    result = synthesize(config(tmp_path, [visual_math], shard_size=2), rerun)
    assert rerun.question_calls() == 2  # shard 0 was skipped
    assert (result.shards_skipped, result.shards_done, result.kept, result.kept_this_run) == (1, 2, 6, 4)
    assert not temporaries(out)
    assert all_rows(result.files) == all_rows(clean.files)  # as if it had never been interrupted
    assert manifest(out)["summary"] == {**manifest(tmp_path / "clean")["summary"],
                                       "train_files": [str(p) for p in result.files],
                                       "last_run_seconds": manifest(out)["summary"]["last_run_seconds"]}

    # A finished run is not redone, and no model is even loaded.
    def no_model(*args: Any) -> Generator:
        raise AssertionError("a finished run must not load a model")

    again = synthesize(config(tmp_path, [visual_math], shard_size=2), generator_factory=no_model)
    assert again.shards_skipped == 3 and again.kept == 6 and again.kept_this_run == 0 and again.exit_code == 0


def test_resume_remembers_kept_questions_for_dedup(tmp_path: Path, shared_images: Path) -> None:
    with pytest.raises(SimulatedKill):
        synthesize(config(tmp_path, [shared_images], shard_size=2),
                   ScriptedGenerator(one_good_question, fail_on_call=2))
    result = synthesize(config(tmp_path, [shared_images], shard_size=2), ScriptedGenerator(one_good_question))
    # Seed 2 (shard 1) repeats seed 0's image (shard 0, written by the killed run): still a duplicate.
    assert result.kept == 3 and result.dropped == {"duplicate": 1}


def test_kill_while_writing_a_shard_leaves_no_partial_file(
    tmp_path: Path, visual_math: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[Path] = []

    class DyingWriter(synth.RowWriter):
        """Flushes every row to its temporary file, and dies in the middle of shard 1."""

        def __init__(self, path: Any, **kwargs: Any) -> None:
            super().__init__(path, **{**kwargs, "batch_size": 1})

        def add(self, row: Any) -> None:
            super().add(row)
            if self.path.name == "shard-00001.parquet":
                assert self._tmp is not None and self._tmp.exists()  # a half-written file exists now
                written.append(self._tmp)
                raise SimulatedKill("killed mid-write")

    monkeypatch.setattr(synth, "RowWriter", DyingWriter)
    out = tmp_path / "out"
    with pytest.raises(SimulatedKill):
        synthesize(config(tmp_path, [visual_math], shard_size=3), ScriptedGenerator(one_good_question))
    assert written and not written[0].exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".synthesize.lock")) == [
        "shard-00000.parquet", MANIFEST_NAME]
    assert len(read_rows(out / "shard-00000.parquet")) == 3


class FlakyGenerator(ScriptedGenerator):
    """Fails its second call once, the way an out-of-memory error would."""

    def generate(self, requests, settings, *, on_batch=None):  # noqa: ANN001 - the protocol's signature
        if len(self.calls) == 1:
            self.calls.append(("question", list(requests), settings))
            raise RuntimeError("CUDA out of memory (scripted)")
        return super().generate(requests, settings, on_batch=on_batch)


def test_failed_shard_is_counted_and_retried(tmp_path: Path, visual_math: Path) -> None:
    result = synthesize(config(tmp_path, [visual_math], shard_size=2), FlakyGenerator(one_good_question))
    assert result.failures == {"generation_error": 1} and not result.complete and not result.interrupted
    assert result.kept == 4 and result.exit_code == 0  # the shards after the failed one were still done
    assert sorted(manifest(tmp_path / "out")["shards"]) == ["0", "2"]
    assert not manifest(tmp_path / "out")["summary"]["complete"]

    retry = ScriptedGenerator(one_good_question)
    result = synthesize(config(tmp_path, [visual_math], shard_size=2), retry)
    assert retry.question_calls() == 1 and result.complete and result.kept == 6


def test_repeated_failures_stop_the_run(tmp_path: Path, visual_math: Path) -> None:
    broken = ScriptedGenerator(one_good_question, fail_on_call=1, failure=RuntimeError)
    result = synthesize(config(tmp_path, [visual_math], shard_size=1), broken)
    assert len(broken.calls) == 3 and result.interrupted and result.failures == {"generation_error": 3}
    assert result.exit_code == 1 and not list((tmp_path / "out").glob("*.parquet"))


def test_other_settings_are_refused_and_overwrite_starts_over(tmp_path: Path, visual_math: Path) -> None:
    synthesize(config(tmp_path, [visual_math], max_seeds=2), ScriptedGenerator(one_good_question))
    with pytest.raises(CLIError, match="other settings.*num_per_seed"):
        synthesize(config(tmp_path, [visual_math], max_seeds=2, num_per_seed=2), ScriptedGenerator(one_good_question))
    with pytest.raises(CLIError, match="seeds"):
        synthesize(config(tmp_path, [visual_math], max_seeds=3), ScriptedGenerator(one_good_question))

    two = ScriptedGenerator(lambda r, s: ["<question>What is drawn in the picture?</question>"] * s.n)
    result = synthesize(config(tmp_path, [visual_math], max_seeds=2, num_per_seed=2, overwrite=True), two)
    assert two.question_calls() == 1 and result.kept == 2 and result.dropped == {"duplicate": 2}


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path, visual_math: Path) -> None:
    with exclusive_lock(tmp_path / "out" / synth.LOCK_NAME):
        with pytest.raises(CLIError, match="another synthesis run"):
            synthesize(config(tmp_path, [visual_math]), ScriptedGenerator(one_good_question))


def test_merge(tmp_path: Path, visual_math: Path) -> None:
    with pytest.raises(SimulatedKill):
        synthesize(config(tmp_path, [visual_math], shard_size=2, merge=True),
                   ScriptedGenerator(one_good_question, fail_on_call=2))
    assert not (tmp_path / "out" / MERGED_NAME).exists()

    result = synthesize(config(tmp_path, [visual_math], shard_size=2, merge=True), ScriptedGenerator(one_good_question))
    merged = tmp_path / "out" / MERGED_NAME
    assert result.merged == merged and read_rows(merged) == all_rows(result.files)
    assert validate_file(merged, extra_info_fields=PROVENANCE).ok
    assert manifest(tmp_path / "out")["summary"]["merged"] == str(merged)


# ------------------------------------------------------------------------------------------------ CLI


RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "synth"
ON_CPU = ["actor_rollout_ref.rollout.name=hf", "trainer.n_gpus_per_node=1",
          "actor_rollout_ref.rollout.tensor_model_parallel_size=1"]
"""The overrides that turn the GPU-cluster recipe into one hf replica on this machine."""


def cli(strategy: str, seeds: Sequence[Path | str], model: Path | str, out: Path | str, *extra: str) -> list[str]:
    """The command line of one synthesis run on the CPU."""
    return [f"config={RECIPES / f'{strategy}.yaml'}", f"synth.seeds=[{','.join(str(p) for p in seeds)}]",
            f"actor_rollout_ref.model.path={model}", f"synth.out={out}", *ON_CPU, *extra]


def test_cli_usage_errors(tmp_path: Path, visual_math: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    model = tmp_path  # an existing directory: the model check passes, the factory must never be called
    in_context_prompt = tmp_path / "asks_about_question.txt"
    in_context_prompt.write_text("Rewrite {{question}} as <question>...</question>")
    image_only_prompt = tmp_path / "image_only.txt"
    image_only_prompt.write_text("Ask something about the image between <question> and </question>.")
    direct = cli("direct", [visual_math], model, out)
    cases = {
        "unknown prompt": ([*direct, "synth.prompt=nope"], "synth_direct, synth_in_context"),
        "direct sees no question": ([*direct, f"synth.prompt={in_context_prompt}"], "shows only the image"),
        "in-context needs the question": (
            [*cli("in_context", [visual_math], model, out), f"synth.prompt={image_only_prompt}"],
            "shows the seed question",
        ),
        "not parquet": (cli("direct", [in_context_prompt], model, out), ".parquet"),
        "threshold": ([*direct, "synth.answerability_threshold=1.5"], "threshold"),
        "missing model": ([a for a in direct if not a.startswith("actor_rollout_ref.model.path=")],
                          "actor_rollout_ref.model.path is required"),
        "missing seeds": ([a for a in direct if not a.startswith("synth.seeds=")], "synth.seeds is required"),
        "bad strategy": ([*direct, "synth.strategy=sideways"], "synth.strategy must be one of in_context, direct"),
        "bad lengths": ([*direct, "synth.min_chars=50", "synth.max_chars=10"], "max_chars"),
        "misspelt key": ([*direct, "synth.num_per_sed=2"], "did you mean 'synth.num_per_seed'"),
        "added key": ([*direct, "+synth.num_per_sed=2"], "unknown key synth.num_per_sed"),
        "not a number": ([*direct, "synth.num_per_seed=two"], "synth.num_per_seed must be a number"),
        "no recipe": (direct[1:], "no recipe given"),
    }
    for name, (argv, message) in cases.items():
        assert main(argv, generator_factory=lambda *a: pytest.fail("no model for a usage error")) == 2, name
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0], (name, errors)
    assert not out.exists() or not list(out.glob("*.parquet"))


def test_a_model_that_is_missing_or_does_not_load_is_a_usage_error(
    tmp_path: Path, visual_math: Path, capsys: pytest.CaptureFixture
) -> None:
    """With the real replicas: a missing path or a directory that is no model is one line and exit 2, before any shard."""
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    prompt_dir = tmp_path / "prompts"
    prompt_dir.mkdir()
    cases = {
        "missing model": (str(tmp_path / "no_such_model"), None, "no such directory, and not a hub id"),
        "does not load": (str(broken), None, "does not load"),
        "prompt is a directory": (str(broken), str(prompt_dir), "is a directory, not a template file"),
    }
    for name, (model, prompt, message) in cases.items():
        out = tmp_path / name.replace(" ", "_")
        argv = cli("direct", [visual_math], model, out, *([f"synth.prompt={prompt}"] if prompt else []))
        assert main(argv) == 2, name
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0], (name, errors)
        assert not list(out.glob("*.parquet")) and not (out / "synthesize_manifest.json").exists(), name


def test_cli_lists_prompts(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="verl_ext.data.synthesize"):
        assert main(["--list-prompts"]) == 0
    assert "synth_direct, synth_in_context" in caplog.text


# ------------------------------------------------------------------------------------------------ tiny model


@pytest.mark.parametrize("strategy", ["in_context", "direct"])
def test_cli_with_the_tiny_model(
    tmp_path: Path, tiny_model_dir: Path, visual_math: Path, bad_seeds: list[Path], strategy: str
) -> None:
    out = tmp_path / "out"
    argv = cli(strategy, [visual_math, bad_seeds[0]], tiny_model_dir, out, "synth.num_per_seed=2",
               "synth.shard_size=4", "synth.max_new_tokens=8", "synth.batch_size=4", "synth.merge=false")
    code = main(argv)
    summary = assert_counts_add_up(out)
    usable = 6 + (1 if strategy == "in_context" else 3)
    assert summary["complete"] and summary["seeds"] == 12 and summary["candidates"] == 2 * usable
    assert sum(summary["bad_input"].values()) == 12 - usable
    # A random model writes no markers: every question is unparseable, nothing is written, exit status 1.
    assert summary["dropped"] == {"unparseable": 2 * usable} and summary["kept"] == 0
    assert code == 1 and not list(out.glob("*.parquet"))

    # Rerunning the finished command loads no model and reports the same output.
    assert main(argv, generator_factory=lambda *a: pytest.fail("a finished run loads no model")) == code
    assert manifest(out)["summary"]["kept"] == summary["kept"]


class TinyModelQuestions:
    """The real tiny model generates (images, processor, sampling); its random text becomes a question."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner

    def generate(self, requests, settings, *, on_batch=None):  # noqa: ANN001 - the protocol's signature
        outputs = self.inner.generate(requests, settings, on_batch=on_batch)
        return [[f"<question>What is shown here, case {zlib.crc32(t.encode())}?</question>" for t in texts]
                for texts in outputs]


def test_tiny_model_output_loads_in_rlhf_dataset(
    tmp_path: Path, tiny_model_dir: Path, visual_math: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    import datasets
    from omegaconf import OmegaConf
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    from verl_ext.generation import make_generator

    hf = make_generator("hf", str(tiny_model_dir), BackendConfig(batch_size=4, show_progress=False))
    request.addfinalizer(hf.close)
    files: list[str] = []
    for strategy in ("in_context", "direct"):
        result = synthesize(
            config(tmp_path, [visual_math], out=strategy, strategy=strategy, shard_size=4, max_new_tokens=8),
            TinyModelQuestions(hf),
        )
        assert result.kept == 6 and len(result.files) == 2
        files += [str(p) for p in result.files]

    # RLHFDataset loads parquet through `datasets` without a cache_dir: keep its cache out of the home directory.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    # Filter in this process (workers None): a worker forked after torch ran generate here would deadlock in
    # torch's thread pool.
    rl_config = OmegaConf.create({
        "cache_dir": str(tmp_path / "verl_cache"), "prompt_key": "prompt", "image_key": "images",
        "max_prompt_length": 1024, "truncation": "error", "filter_overlong_prompts": True,
        "filter_overlong_prompts_workers": None, "return_raw_chat": True,
    })
    processor = hf_processor(str(tiny_model_dir))
    dataset = RLHFDataset(files, hf_tokenizer(str(tiny_model_dir)), rl_config, processor=processor)
    assert len(dataset) == 12  # every shard of both runs, none filtered as overlong

    item = dataset[0]
    assert item["reward_model"]["ground_truth"] == "" and item["extra_info"]["answer"] == ""
    assert item["extra_info"]["strategy"] == "in_context" and item["extra_info"]["seed_row"] == 0
    (message,) = item["raw_prompt"]
    image_part, text_part = message["content"]
    assert image_part["type"] == "image"
    assert text_part["text"].startswith("What is shown here, case ") and text_part["text"].endswith(FORMAT_INSTRUCTION)
    assert dataset[11]["extra_info"]["strategy"] == "direct"
    batch = collate_fn([dataset[i] for i in range(len(dataset))])
    assert len(batch["raw_prompt"]) == 12
