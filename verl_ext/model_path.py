"""Whether a setting can name a model (or data set): an existing local directory or a hub id (``Org/Name``).

Checked by the commands before any work starts (training before Ray, synthesis before a shard,
evaluation before generating), so a typo in a path is one line instead of a loader's traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(value: str) -> bool:
    """Whether ``value`` has the form of a hub repository id, ``Org/Name``."""
    return _HUB_ID.match(value) is not None


def model_path_problem(value: str) -> Optional[str]:
    """Why ``value`` names no model (None when it is a local path that exists, a hub id or a URL)."""
    if not value.strip():
        return "empty model path"
    if "://" in value:
        return None
    path = Path(os.path.expanduser(value))
    if path.exists():
        return None if path.is_dir() else f"{value} is a file, not a model directory"
    if path.is_absolute() or value.startswith((".", "~")) or not is_hub_id(value):
        return f"{value}: no such directory, and not a hub id (Org/Name)"
    return None
