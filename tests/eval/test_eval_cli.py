"""``python -m verl_ext.eval`` end to end with the tiny model on fixture data: outputs, resume, kills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from verl_ext.eval.__main__ import main
from verl_ext.toy.fixtures import write_benchmark_files
from verl_ext.generation import BackendConfig
from verl_ext.generation import make_generator

REPO = Path(__file__).resolve().parents[2]
BENCHMARK_NAMES = ("mathvista", "wemath", "mathverse", "mathvision")
RECORD_FIELDS = {
    "benchmark",
    "split",
    "prompt_id",
    "response_index",
    "response",
    "extracted",
    "correct",
    "answer",
    "category",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_benchmark_files(tmp_path_factory.mktemp("eval_data"))


@pytest.fixture(scope="module")
def shared_generator(tiny_model_dir):
    config = BackendConfig(batch_size=2, min_pixels=3136, max_pixels=12544, show_progress=False)
    generator = make_generator("hf", str(tiny_model_dir), config)
    yield generator
    generator.close()


class Counting:
    """A factory handing out the shared tiny-model generator and counting what it is asked."""

    def __init__(self, generator):
        self.generator = generator
        self.loads = 0
        self.requests = 0

    def __call__(self, backend, model_path, config):
        self.loads += 1
        return self

    def generate(self, requests, settings, *, on_batch=None):
        self.requests += len(requests)
        return self.generator.generate(requests, settings, on_batch=on_batch)

    def close(self):
        pass  # the model is shared between tests


RECIPE = REPO / "recipes" / "eval" / "paper.yaml"
ON_CPU = ["actor_rollout_ref.rollout.name=hf", "trainer.n_gpus_per_node=1"]
"""The overrides that turn the GPU-cluster recipe into one hf replica on this machine."""


def cli_args(model, data_dir, out, tmp_path, *extra):
    return [
        f"config={RECIPE}",
        f"actor_rollout_ref.model.path={model}",
        f"eval.benchmarks=[{','.join(BENCHMARK_NAMES)}]",
        f"eval.data_dir={data_dir}",
        f"eval.cache_dir={tmp_path / 'hf_cache'}",
        f"eval.output_dir={out}",
        "eval.max_new_tokens=8",
        "eval.min_pixels=3136",
        "eval.max_pixels=12544",
        "eval.show_progress=false",
        *ON_CPU,
        *extra,
    ]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_cli_module_end_to_end(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    args = cli_args(
        tiny_model_dir, data_dir, out, tmp_path, "eval.max_samples=2", "eval.batch_size=3", "eval.label=tiny"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "verl_ext.eval", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == 8  # 2 questions x 4 benchmarks x 1 response
    assert all(RECORD_FIELDS <= set(r) for r in records)
    assert sorted({r["benchmark"] for r in records}) == sorted(BENCHMARK_NAMES)
    assert {(r["benchmark"], r["prompt_id"]) for r in records} >= {
        ("wemath", "1@2steps_1"),
        ("mathverse", "9"),
        ("mathvista", "2"),
    }
    assert all(isinstance(r["correct"], bool) and isinstance(r["response"], str) for r in records)

    results = json.loads((out / "results.json").read_text())
    assert results["label"] == "tiny" and set(results["benchmarks"]) == set(BENCHMARK_NAMES)
    for result in results["benchmarks"].values():
        assert result["n_prompts"] == 2 and 0.0 <= result["accuracy"] <= 100.0
    assert list(results["benchmarks"]["mathverse"]["categories"]) == ["Text Dominant", "Vision Only"]

    report = (out / "report.md").read_text()
    assert "| Model | MathVision | MathVerse | MathVista | We-Math | Avg |" in report
    assert "| **tiny (ours)** |" in report and "Δ ours − Qwen2.5-VL-7B (paper)" in report
    assert json.loads((out / "run.json").read_text())["fingerprint"]["protocol"]["temperature"] == 0.2

    has_matplotlib = (
        subprocess.run([sys.executable, "-c", "import matplotlib"], env=env, capture_output=True).returncode == 0
    )
    if has_matplotlib:
        assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert not (out / "accuracy.png").exists() and "pip install matplotlib" in proc.stderr

    # Everything is answered: a rerun loads no model and generates nothing.
    counting = Counting(None)
    summary = main(args, generator_factory=counting)
    assert (summary["generated"], summary["skipped"], counting.loads) == (0, 8, 0)
    assert len(read_jsonl(out / "samples.jsonl")) == 8
    assert summary["summary"] == results["benchmarks"]


def test_resume_generates_only_what_is_missing(shared_generator, tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    counting = Counting(shared_generator)
    first = main(cli_args(tiny_model_dir, data_dir, out, tmp_path, "eval.max_samples=1"), generator_factory=counting)
    assert (first["generated"], first["skipped"], counting.requests) == (4, 0, 4)
    assert {r["prompt_id"] for r in read_jsonl(out / "samples.jsonl")} == {
        "1",
        "9",
        "1@2steps_1",
    }  # ids repeat across benchmarks

    second = main(cli_args(tiny_model_dir, data_dir, out, tmp_path, "eval.max_samples=3"), generator_factory=counting)
    assert (second["generated"], second["skipped"]) == (8, 4)
    assert counting.requests == 4 + 8
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == 12 and len({(r["benchmark"], r["prompt_id"]) for r in records}) == 12

    # A smaller selection reports over that selection only, from the same file.
    third = main(cli_args(tiny_model_dir, data_dir, out, tmp_path, "eval.max_samples=1"), generator_factory=counting)
    assert third["generated"] == 0 and counting.requests == 12
    assert all(r["n_prompts"] == 1 for r in third["summary"].values())


def test_a_resumed_run_samples_each_question_as_an_uninterrupted_run(shared_generator, tiny_model_dir, data_dir, tmp_path):
    """Seeds follow the question (its benchmark and id), not its place among the questions left to answer."""
    sampled = ["eval.benchmarks=[mathvista,wemath]", "eval.n=2", "eval.temperature=1.0"]

    def responses(out):
        return {(r["benchmark"], r["prompt_id"], r["response_index"]): r["response"] for r in read_jsonl(out / "samples.jsonl")}

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    main(cli_args(tiny_model_dir, data_dir, whole, tmp_path, *sampled, "eval.max_samples=2"), generator_factory=Counting(shared_generator))
    main(cli_args(tiny_model_dir, data_dir, resumed, tmp_path, *sampled, "eval.max_samples=1"), generator_factory=Counting(shared_generator))
    main(cli_args(tiny_model_dir, data_dir, resumed, tmp_path, *sampled, "eval.max_samples=2"), generator_factory=Counting(shared_generator))
    assert len(responses(whole)) == 8 and responses(resumed) == responses(whole)
    assert len(set(responses(whole).values())) > 1  # sampled, not one text repeated


def test_killed_run_loses_at_most_the_unfinished_batch(
    shared_generator, tiny_model_dir, data_dir, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    args = cli_args(tiny_model_dir, data_dir, out, tmp_path, "eval.max_samples=2", "eval.benchmarks=wemath,mathvista")
    original = shared_generator._generate_batch

    def dies_in_second_batch(requests, settings, batch_index):
        if batch_index == 1:
            raise KeyboardInterrupt("killed")
        return original(requests, settings, batch_index)

    monkeypatch.setattr(shared_generator, "_generate_batch", dies_in_second_batch)
    with pytest.raises(KeyboardInterrupt):
        main(args, generator_factory=Counting(shared_generator))
    saved = read_jsonl(out / "samples.jsonl")
    assert [(r["benchmark"], r["prompt_id"]) for r in saved] == [("wemath", "1@2steps_1"), ("wemath", "1@2steps_2")]

    # A kill in the middle of writing leaves half a line behind.
    with open(out / "samples.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"benchmark": "mathvista", "prompt_id": "1", "respo')
    monkeypatch.setattr(shared_generator, "_generate_batch", original)
    counting = Counting(shared_generator)
    resumed = main(args, generator_factory=counting)
    assert (resumed["generated"], resumed["skipped"], counting.requests) == (2, 2, 2)
    records = read_jsonl(out / "samples.jsonl")  # every line parses again
    assert [(r["benchmark"], r["prompt_id"]) for r in records] == [
        ("wemath", "1@2steps_1"),
        ("wemath", "1@2steps_2"),
        ("mathvista", "1"),
        ("mathvista", "2"),
    ]


def test_several_responses_per_question(shared_generator, tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    args = cli_args(
        tiny_model_dir,
        data_dir,
        out,
        tmp_path,
        "eval.max_samples=2",
        "eval.benchmarks=mathvision",
        "eval.n=3",
        "eval.temperature=1.0",
    )
    counting = Counting(shared_generator)
    summary = main(args, generator_factory=counting)
    records = read_jsonl(out / "samples.jsonl")
    assert sorted((r["prompt_id"], r["response_index"]) for r in records) == [
        (p, k) for p in ("1", "4") for k in range(3)
    ]
    assert summary["summary"]["mathvision"]["n_responses"] == 6
    assert main(args, generator_factory=counting)["generated"] == 0


def test_changed_settings_are_not_mixed_into_a_run(shared_generator, tiny_model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    counting = Counting(shared_generator)
    main(
        cli_args(tiny_model_dir, data_dir, out, tmp_path, "eval.max_samples=1", "eval.benchmarks=mathvista"),
        generator_factory=counting,
    )
    with pytest.raises(SystemExit) as info:
        main(
            cli_args(
                tiny_model_dir,
                data_dir,
                out,
                tmp_path,
                "eval.max_samples=1",
                "eval.benchmarks=mathvista",
                "eval.temperature=0.7",
            ),
            generator_factory=counting,
        )
    assert info.value.code == 2
    assert "other settings" in capsys.readouterr().err


def _usage_error(args, capsys, factory=None) -> str:
    counting = factory or Counting(None)
    with pytest.raises(SystemExit) as info:
        main(args, generator_factory=counting)
    assert info.value.code == 2
    # Progress bars of work done before the check (datasets reading a split) are not messages.
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "examples/s]" not in line and "%|" not in line]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_arguments_fail_before_any_work(tmp_path, data_dir, tiny_model_dir, capsys):
    out = tmp_path / "out"
    base = cli_args(tiny_model_dir, data_dir, out, tmp_path, "eval.benchmarks=[mathvista]")
    assert "eval.judge=api needs eval.judge_model" in _usage_error([*base, "eval.judge=api"], capsys)
    assert "unknown benchmark" in _usage_error([*base, "eval.benchmarks=[mmmu]"], capsys)
    assert "not a hub id" in _usage_error([*base, f"actor_rollout_ref.model.path={tmp_path / 'missing'}"], capsys)
    assert "actor_rollout_ref.model.path is required" in _usage_error([f"config={RECIPE}"], capsys)
    assert "eval.n must be >= 1" in _usage_error([*base, "eval.n=0"], capsys)
    assert "eval.temperature must be >= 0" in _usage_error([*base, "eval.temperature=-1"], capsys)
    assert "eval.temperature must be a number" in _usage_error([*base, "eval.temperature=hot"], capsys)
    assert "did you mean 'eval.temperature'" in _usage_error([*base, "eval.temprature=0"], capsys)
    assert "unknown key eval.temprature" in _usage_error([*base, "+eval.temprature=0"], capsys)
    assert "no such directory" in _usage_error([*base, f"eval.data_dir={tmp_path / 'nope'}"], capsys)
    assert "no recipe given" in _usage_error(base[1:], capsys)
    (tmp_path / "a_file").write_text("x")
    assert "is a file" in _usage_error([*base, f"eval.output_dir={tmp_path / 'a_file'}"], capsys)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root can write anywhere: the check has nothing to refuse
        assert "not writable" in _usage_error([*base, f"eval.output_dir={locked / 'out'}"], capsys)
    assert "split 'nosuch'" in _usage_error([*base, "eval.splits={mathvista: nosuch}"], capsys)
    assert not (out / "run.json").exists()  # nothing recorded by the failed tries


def test_a_model_that_does_not_load_leaves_no_run_file(tmp_path, data_dir, capsys):
    """With the recipe's own replicas (no stand-in factory): one line, exit status 2, no run file."""
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    out = tmp_path / "out"
    args = cli_args(broken, data_dir, out, tmp_path, "eval.benchmarks=[mathvista]", "eval.max_samples=1")
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "does not load" in errors[0], errors
    assert not (out / "run.json").exists()


def test_an_unreadable_run_file_beside_samples_is_refused(shared_generator, tiny_model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = cli_args(tiny_model_dir, data_dir, out, tmp_path, "eval.max_samples=1", "eval.benchmarks=mathvista")
    main(args, generator_factory=Counting(shared_generator))
    (out / "run.json").write_text("{broken")
    assert "settings of" in _usage_error(args, capsys, factory=Counting(shared_generator))


def test_resume_skips_damaged_lines_and_regenerates_only_them(shared_generator, tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    args = cli_args(tiny_model_dir, data_dir, out, tmp_path, "eval.max_samples=3", "eval.benchmarks=mathvista")
    main(args, generator_factory=Counting(shared_generator))
    lines = (out / "samples.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    record = json.loads(lines[2])
    record["correct"] = "yes"  # a foreign line: wrong type
    damaged = lines[0][:10] + b"\xff\xfe" + lines[0][10:]  # invalid UTF-8
    (out / "samples.jsonl").write_bytes(damaged + lines[1] + json.dumps(record).encode() + b"\n")
    counting = Counting(shared_generator)
    result = main(args, generator_factory=counting)
    assert counting.requests == 2 and result["generated"] == 2 and result["skipped"] == 1
    assert result["summary"]["mathvista"]["n_prompts"] == 3


class _AlwaysRight(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        payload = json.dumps({"choices": [{"message": {"content": "Judgement: 1"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_api_judge_in_the_cli(shared_generator, tiny_model_dir, data_dir, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysRight)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        out = tmp_path / "run"
        args = cli_args(
            tiny_model_dir, data_dir, out, tmp_path, "eval.max_samples=2", "eval.benchmarks=mathverse,wemath",
            "eval.judge=api", "eval.judge_model=grader", f"eval.judge_url={url}", "eval.judge_mode=always",
        )  # fmt: skip
        summary = main(args, generator_factory=Counting(shared_generator))
    finally:
        server.shutdown()
        server.server_close()
    records = read_jsonl(out / "samples.jsonl")
    judged = [r for r in records if r["response"]]  # an empty response is wrong without asking
    assert len(records) == 4 and judged and _AlwaysRight.calls == len(judged)
    assert all(r["correct"] and r["judge"] is True and r["graded_by"] == "judge" for r in judged)
    if len(judged) == len(records):
        assert all(result["accuracy"] == 100.0 for result in summary["summary"].values())
    assert "api grader (always)" in (out / "report.md").read_text()


def test_local_judge_in_the_cli(shared_generator, tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    base = cli_args(tiny_model_dir, data_dir, out, tmp_path, "eval.max_samples=1", "eval.benchmarks=mathvista,wemath")
    counting = Counting(shared_generator)
    # Another path than the evaluated model's: the judge gets its own generator from the factory.
    judge = ["eval.judge=local", "eval.judge_max_new_tokens=4"]
    main([*base, *judge, f"eval.judge_model={tiny_model_dir}/"], generator_factory=counting)
    records = read_jsonl(out / "samples.jsonl")
    judged = [r for r in records if r["response"] and not r["rule_correct"]]
    assert counting.loads == 2 and counting.requests == len(records) + len(judged)
    # The random model never answers "Judgement: 1|0": the rule verdicts stand.
    assert all(r["judge"] is None and r["graded_by"] == "rule" for r in records)

    # The evaluated model itself as judge: no second model is loaded.
    counting = Counting(shared_generator)
    again = cli_args(tiny_model_dir, data_dir, tmp_path / "run2", tmp_path, "eval.max_samples=1", "eval.benchmarks=mathvista")
    main([*again, *judge, f"eval.judge_model={tiny_model_dir}"], generator_factory=counting)
    assert counting.loads == 1


# ------------------------------------------------------------------------------------------ protocol and prompts


def test_protocol_defaults_are_the_papers():
    from verl_ext.config.compose import compose
    from verl_ext.eval.__main__ import config_from
    from verl_ext.eval.prompts import EvalProtocol

    protocol = EvalProtocol()
    assert protocol.system_prompt == "You are a helpful assistant."
    assert protocol.format_instruction == " Please reason step by step, and put your final answer within \\boxed{}."
    assert (protocol.temperature, protocol.max_new_tokens) == (0.2, 16384)
    assert (protocol.min_pixels, protocol.max_pixels) == (262144, 1204224)
    settings = protocol.sampling()
    assert (settings.n, settings.temperature, settings.max_new_tokens, settings.top_k) == (1, 0.2, 16384, -1)
    # The recipe starts from the same protocol (its YAML states each default again), and every field can be set.
    config = config_from(compose(RECIPE, ["actor_rollout_ref.model.path=Org/model"], []))
    assert config.protocol == protocol and config.benchmarks == ["mathvision", "mathverse", "mathvista", "wemath"]
    assert config.backend == "vllm" and config.backend_config.batch_size == 512
    overrides = [
        "actor_rollout_ref.model.path=Org/model",
        "eval.system_prompt=''",
        "eval.temperature=0",
        "eval.max_new_tokens=64",
        "eval.max_pixels=null",
        "eval.splits={mathvision: testmini}",
    ]
    config = config_from(compose(RECIPE, overrides, []))
    assert (config.protocol.system_prompt, config.protocol.temperature, config.protocol.max_new_tokens) == ("", 0.0, 64)
    assert config.protocol.max_pixels is None and config.split_of("mathvision") == "testmini"
    assert config.split_of("mathvista") == "testmini" and config.output_dir == Path("outputs/eval/model")


INSTRUCTION = " Please reason step by step, and put your final answer within \\boxed{}."


def test_prompt_layout():
    from verl_ext.eval.benchmarks import Sample
    from verl_ext.eval.prompts import EvalProtocol, build_request
    from verl_ext.generation.base import structured_messages

    image = {"bytes": b"png bytes", "path": None}
    free = Sample("mathvista", "2", "How many bars are there?", "3", images=[image], answer_type="integer")
    request = build_request(free, EvalProtocol())
    assert request.messages == [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": "<image>How many bars are there?" + INSTRUCTION,
        },
    ]
    assert request.images == [image]

    mc = Sample(
        "wemath",
        "1@2steps_1",
        "Radius?\nChoices:\n(A) 2\n(B) 3",
        "B",
        images=[image],
        choices={"A": "2", "B": "3"},
        answer_letter="B",
        answer_type="choice",
    )
    request = build_request(mc, EvalProtocol(system_prompt=""))
    assert request.messages == [
        {
            "role": "user",
            "content": "<image>Radius?\nChoices:\n(A) 2\n(B) 3\n" + INSTRUCTION.lstrip(),
        }
    ]

    # No image (MathVerse Text Only), and a literal "<image>" in the text is not taken for a marker.
    text_only = Sample("mathverse", "5", "What does <image> show?", "1")
    request = build_request(text_only, EvalProtocol(format_instruction=""))
    assert request.messages[-1]["content"] == "What does  show?" and request.images == []
    assert [p["type"] for p in structured_messages(request)[-1]["content"]] == ["text"]
