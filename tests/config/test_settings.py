"""The small commands' settings: ``key=value`` into a config dataclass, with one-line errors."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
from omegaconf import MISSING

from verl_ext.config.compose import CLIError, builder_command, settings_from_argv


@dataclass(frozen=True)
class Inner:
    tasks: tuple[str, ...] = ("count", "sum")
    size: int = 4

    def __post_init__(self):
        if self.size < 1:
            raise ValueError("size must be >= 1")


@dataclass
class Settings:
    out: str = MISSING
    names: tuple[str, ...] = ()
    limit: Optional[int] = None
    inner: Inner = field(default_factory=Inner)


def test_values_nested_keys_and_tuples():
    s = settings_from_argv(Settings, ["out=/x", "names=a.jsonl", "limit=3", "inner.tasks=[sum]", "inner.size=2"], "u")
    assert s.out == "/x" and s.limit == 3
    assert s.names == ("a.jsonl",)  # one plain value for a list setting is a list of one
    assert s.inner == Inner(tasks=("sum",), size=2)  # the frozen inner dataclass is set; tuples stay tuples
    assert settings_from_argv(Settings, ["out=/x", "names=[a,b]"], "u").names == ("a", "b")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["names=a"], "missing setting(s) out"),
        (["out=/x", "bogus=1"], "Key 'bogus' not in 'Settings'"),
        (["out=/x", "limit=many"], "could not be converted to Integer"),
        (["out=/x", "--limit", "3"], "malformed setting '--limit': expected key=value"),
        (["out=/x", "inner.size=0"], "size must be >= 1"),
    ],
)
def test_errors_are_one_line(argv, message):
    with pytest.raises(CLIError) as err:
        settings_from_argv(Settings, argv, "usage: cmd out=DIR")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_builder_command(tmp_path, capsys):
    built = []

    def build(out: Path, config: Inner, force: bool, label: str):
        built.append((out, config, force, label))
        return {"file": out / "f.txt"}

    argv = [f"out={tmp_path}", "size=3", "force=true", "label=x"]
    assert builder_command(argv, "doc", "cmd", Inner, build, defaults=Inner(size=9), extra=[("label", str, "")]) == 0
    assert built == [(tmp_path, Inner(size=3), True, "x")]
    assert capsys.readouterr().out == f"file: {tmp_path / 'f.txt'}\n"
    # Unset keys take ``defaults``'s values and the extras' defaults.
    assert builder_command([f"out={tmp_path}"], "doc", "cmd", Inner, build, defaults=Inner(size=9), extra=[("label", str, "")]) == 0
    assert built[-1] == (tmp_path, Inner(size=9), False, "")
    capsys.readouterr()
    assert builder_command([f"out={tmp_path}", "size=0"], "doc", "cmd", Inner, build, extra=[("label", str, "")]) == 2
    assert builder_command(["size=3"], "doc", "cmd", Inner, build, extra=[("label", str, "")]) == 2
    err = capsys.readouterr().err
    assert "size must be >= 1" in err and "missing setting(s) out" in err
    assert len(built) == 2
