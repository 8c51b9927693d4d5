"""The manifest that marks a built data set complete: written last, atomically, and compared on reuse.

Builders remove it before writing, write their files, then call :func:`write_manifest`; a killed
build therefore never leaves a manifest vouching for half-written files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_manifest(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` through a temp file and ``os.replace``."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def manifest_matches(path: Path, payload: dict[str, Any]) -> bool:
    """True when ``path`` holds ``payload`` (compared through JSON, so tuples equal lists); False if unreadable."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return found == json.loads(json.dumps(payload))
