"""The file helpers every builder and writer shares: atomic writes, a lock, the manifest, build-once.

- An atomic write goes to a temporary sibling and is renamed into place (``os.replace``, atomic on
  POSIX), so a reader never sees half a file and a killed writer leaves only a ``.NAME.tmp-*`` file.
- A cached build (:func:`build_once`) removes its manifest, writes its files, and writes the manifest
  last; a build killed half-way is therefore seen as missing and redone. Concurrent processes
  serialise on a lock file inside the output directory, so one builds and the others reuse.

No torch, no verl: every layer above may use this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
"""The file :func:`build_once` writes last into a complete build."""


class LockHeld(RuntimeError):
    """A non-blocking :func:`exclusive_lock` found the lock taken by another process."""


def temp_sibling(path: Path) -> Path:
    """A unique hidden name next to ``path`` (same directory, so a rename stays on one file system)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write (a file, or a directory the caller creates);
    on success it replaces ``path`` (a directory already there is moved aside and removed), on
    failure it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        if tmp.is_dir() and path.exists():
            trash = temp_sibling(path)
            os.rename(path, trash)
            os.rename(tmp, path)
            _remove(trash)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_json(path: str | os.PathLike[str], data: Any, **dumps: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path``, atomically (``dumps``: more ``json.dumps`` options)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, **dumps))


def write_parquet(path: str | os.PathLike[str], rows: list[dict[str, Any]], schema: Any) -> None:
    """Write ``rows`` as one parquet file with the pyarrow ``schema``, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``lock_path`` (created if needed) for the block.

    ``blocking=False`` raises :class:`LockHeld` at once when another process holds it.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:  # EAGAIN / EWOULDBLOCK: only with LOCK_NB
            raise LockHeld(f"{lock_path} is held by another process") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def manifest_matches(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> bool:
    """True when ``path`` holds ``payload`` (compared through JSON, so tuples equal lists); False if unreadable."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return found == json.loads(json.dumps(payload))


def build_once(
    out_dir: str | os.PathLike[str],
    payload: Mapping[str, Any],
    build: Callable[[], Any],
    *,
    expect: Iterable[str | os.PathLike[str]] = (),
    force: bool = False,
    manifest_name: str = MANIFEST_NAME,
) -> bool:
    """Run ``build()`` (which writes into ``out_dir``) unless a complete build for ``payload`` is there.

    Complete means: ``out_dir/manifest_name`` holds ``payload`` and every path in ``expect`` exists.
    ``force`` builds anyway. Returns whether it built.
    """
    out_dir = Path(out_dir).absolute()
    manifest = out_dir / manifest_name
    expected = [Path(p) for p in expect]

    def complete() -> bool:
        return manifest_matches(manifest, payload) and all(p.exists() for p in expected)

    if not force and complete():
        return False
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out_dir / ".build.lock"):
        if not force and complete():
            return False  # another process built it while this one waited
        manifest.unlink(missing_ok=True)
        build()
        write_json(manifest, payload)
    return True
