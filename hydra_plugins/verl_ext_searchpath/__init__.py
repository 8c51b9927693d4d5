"""Puts verl-ext's config groups on Hydra's search path, so ``+mmupt=majority_vote`` works in any verl run.

Hydra discovers search-path plugins in the ``hydra_plugins`` namespace package.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class VerlExtSearchPathPlugin(SearchPathPlugin):
    """Appends ``pkg://verl_ext.config`` to every Hydra config search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="verl-ext", path="pkg://verl_ext.config")
