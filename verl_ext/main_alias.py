"""Makes ``python -m verl.trainer.main`` (EasyR1's command) run ``verl_ext.main``.

verl 0.9.1 has no ``verl.trainer.main`` module. ``python -m`` imports ``verl.trainer`` (and with it
``verl``, which loads this plugin) before it looks the module up, so a finder appended to
``sys.meta_path`` here can answer for that one name, without writing into verl's folder. Being
last on the path, it never shadows a ``verl.trainer.main`` that verl itself may ship one day.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

ALIAS = "verl.trainer.main"
TARGET = Path(__file__).with_name("main.py")


class MainAliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``verl.trainer.main`` as the source of ``verl_ext/main.py``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != ALIAS:
            return None
        return importlib.util.spec_from_file_location(fullname, TARGET)


def install() -> bool:
    """Append the finder to ``sys.meta_path`` once; returns False if it was there already."""
    if any(isinstance(f, MainAliasFinder) for f in sys.meta_path):
        return False
    sys.meta_path.append(MainAliasFinder())
    return True
