"""requirements.txt, setup.py and the installed distribution agree."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _setup_py_literals() -> dict:
    """INSTALL_REQUIRES and EXTRAS_REQUIRE as written in setup.py (read, not executed)."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("INSTALL_REQUIRES", "EXTRAS_REQUIRE"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    assert set(found) == {"INSTALL_REQUIRES", "EXTRAS_REQUIRE"}, "setup.py no longer defines both literals"
    return found


def _key(req: Requirement | str) -> tuple:
    req = Requirement(str(req))
    return (
        canonicalize_name(req.name),
        tuple(sorted(canonicalize_name(e) for e in req.extras)),
        tuple(sorted(str(s) for s in req.specifier)),
        str(req.marker) if req.marker else "",
        req.url or "",
    )


def _requirements_txt() -> list[str]:
    lines = []
    for raw in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"requirements.txt: options are not expected here: {raw!r}"
        lines.append(line)
    return lines


def test_requirements_txt_is_install_requires_plus_cpu_and_test_extras():
    literals = _setup_py_literals()
    expected = [*literals["INSTALL_REQUIRES"], *literals["EXTRAS_REQUIRE"]["cpu"], *literals["EXTRAS_REQUIRE"]["test"]]
    listed = _requirements_txt()
    assert len(listed) == len({_key(r) for r in listed}), "requirements.txt lists a requirement twice"
    assert {_key(r) for r in listed} == {_key(r) for r in expected}


def test_requirements_are_pinned_where_setup_py_pins_them():
    # The stack the CPU runs were validated on: verl, transformers and torch at exact versions.
    pins = {canonicalize_name(Requirement(r).name): str(Requirement(r).specifier) for r in _requirements_txt()}
    assert pins["verl"] == "==0.9.1"
    assert pins["transformers"].startswith("==")
    assert pins["torch"].startswith("==")


@pytest.fixture(scope="module")
def distribution():
    return importlib.metadata.distribution("verl-ext")


def test_installed_distribution_declares_the_verl_plugin_entry_point(distribution):
    eps = [ep for ep in distribution.entry_points if ep.group == "verl.plugins"]
    assert [(ep.name, ep.value) for ep in eps] == [("verl_ext", "verl_ext.plugin")]
    import verl_ext.plugin

    assert eps[0].load() is verl_ext.plugin


def test_installed_metadata_matches_setup_py(distribution):
    """Fails when setup.py changed since the editable install: re-run ``pip install -e .[cpu,test]``."""
    literals = _setup_py_literals()
    expected = {_key(r) for r in literals["INSTALL_REQUIRES"]}
    for extra, reqs in literals["EXTRAS_REQUIRE"].items():
        expected |= {_key(f"{r}; extra == {extra!r}".replace("'", '"')) for r in reqs}
    assert {_key(r) for r in distribution.requires} == expected
