"""Puts verl-ext's config groups on Hydra's search path, so ``+mmupt=majority_vote`` works in any verl run.

Registered through Hydra's public ``Plugins.instance().register`` from the verl plugin, which verl
loads before its ``@hydra.main`` composes a config. (Hydra's own discovery scans the
``hydra_plugins`` namespace package, which an editable install of this package hides from it:
then ``+mmupt=...`` would silently become a plain config key instead of a config group.)
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

PATH = "pkg://verl_ext.config"


class VerlExtSearchPathPlugin(SearchPathPlugin):
    """Appends ``pkg://verl_ext.config`` to every Hydra config search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="verl-ext", path=PATH)


def register() -> None:
    """Register the plugin with Hydra (idempotent)."""
    Plugins.instance().register(VerlExtSearchPathPlugin)
