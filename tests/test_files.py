"""The shared file helpers: atomic writes, the lock, the manifest and the cached build."""

import json
import multiprocessing
import time

import pytest

from verl_ext.files import (
    LockHeld,
    atomic_path,
    build_once,
    exclusive_lock,
    manifest_matches,
    write_json,
)


def test_written_manifest_matches_its_payload_through_json(tmp_path):
    path = tmp_path / ".manifest.json"
    assert not manifest_matches(path, {"a": 1})  # missing
    write_json(path, {"tasks": ("count", "sum"), "n": 3})
    assert manifest_matches(path, {"n": 3, "tasks": ("count", "sum")})  # tuples compare as lists
    assert not manifest_matches(path, {"n": 4, "tasks": ("count", "sum")})
    assert not list(tmp_path.glob(".*.tmp-*")), "the temp file is renamed, never left behind"
    path.write_text("{not json")
    assert not manifest_matches(path, {"n": 3})


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json(path, {"v": object()})  # not serialisable: fails half-way
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_path_replaces_a_directory_whole(tmp_path):
    target = tmp_path / "model"
    for version in ("old", "new"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(version)
    assert [p.name for p in target.iterdir()] == ["weights"] and (target / "weights").read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _hold(lock_path, ready, release):
    with exclusive_lock(lock_path):
        ready.set()
        release.wait(30)


def test_a_non_blocking_lock_held_elsewhere_raises(tmp_path):
    lock = tmp_path / "sub" / ".lock"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(lock, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(LockHeld):
            with exclusive_lock(lock, blocking=False):
                pass
    finally:
        release.set()
        holder.join(30)
    with exclusive_lock(lock, blocking=False):  # free again
        pass


def test_build_once_builds_once_redoes_an_interrupted_build_and_forces(tmp_path):
    out = tmp_path / "data"
    builds = []

    def build():
        builds.append(time.time())
        (out / "file.txt").write_text(str(len(builds)))

    assert build_once(out, {"v": 1}, build, expect=[out / "file.txt"])
    assert not build_once(out, {"v": 1}, build, expect=[out / "file.txt"])
    assert len(builds) == 1
    assert build_once(out, {"v": 2}, build)  # other settings: rebuilt
    (out / "file.txt").unlink()  # an expected output is missing: rebuilt
    assert build_once(out, {"v": 2}, build, expect=[out / "file.txt"])
    assert build_once(out, {"v": 2}, build, force=True)
    assert len(builds) == 4

    def killed():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(out, {"v": 3}, killed)
    assert not (out / "manifest.json").exists(), "a build killed half-way must not look complete"
