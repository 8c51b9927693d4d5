"""The package's layers point one way, read from the code's own imports (function-level ones included).

The order is the README's ("Layout"): a module may import its own layer's modules and those below,
never above; no two modules import each other, directly or around a circle; and nothing outside
``toy/`` imports the laptop scaffolding except the plugin, through the asset resolver.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "verl_ext"

#: Bottom to top; a unit is a sub-package or a top-level module of verl_ext.
LAYERS: list[tuple[str, ...]] = [
    ("", "voting"),  # the package root (no imports) and the pure core: no torch, no verl
    ("files", "prompts", "model_path"),  # shared small helpers
    ("config", "patches", "platform"),  # verl integration: configs, patches, device
    ("rollout", "generation"),  # generation on verl's rollout replicas
    ("rewards",),  # the reward managers
    ("trainer",),  # the vote in verl's trainer
    ("data", "eval"),  # data preparation, synthesis (offline and online), evaluation
    ("toy",),  # laptop scaffolding
    ("main", "plugin"),  # entry points: the training command, the verl plugin
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
#: The one door into the scaffolding from outside it.
TOY_DOOR = ("verl_ext.plugin", "verl_ext.toy.resolver")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The verl_ext modules ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate.startswith("verl_ext"):
                found.add(candidate)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # "from verl_ext.voting import vote" names a function, not a module: keep the longest module prefix.
        targets = set()
        for imported in _imports(path):
            while imported not in modules and "." in imported:
                imported = imported.rpartition(".")[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


GRAPH = _graph()


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in GRAPH}
    assert units <= set(RANK), f"put {sorted(units - set(RANK))} into LAYERS (and the README's layout)"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    if _unit(module) not in RANK:
        pytest.fail(f"{module}: its unit has no layer")
    upward = [t for t in GRAPH[module] if _unit(t) in RANK and RANK[_unit(t)] > RANK[_unit(module)]]
    assert not upward, f"{module} imports from a higher layer: {sorted(upward)}"


def test_no_circle_between_modules():
    done, on_path, path = set(), set(), []

    def visit(module):
        on_path.add(module)
        path.append(module)
        for target in sorted(GRAPH[module]):
            if target in on_path:
                circle = path[path.index(target) :] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in done:
                visit(target)
        on_path.discard(module)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        if module not in done:
            visit(module)


def test_the_scaffolding_is_reached_only_through_the_asset_resolver():
    entries = {
        (m, t) for m, targets in GRAPH.items() if _unit(m) != "toy" for t in targets if _unit(t) == "toy"
    }
    assert entries <= {TOY_DOOR}, f"imports into verl_ext.toy from outside: {sorted(entries - {TOY_DOOR})}"


def test_the_voting_core_needs_neither_torch_nor_verl():
    for path in (PACKAGE / "voting").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            )
            heavy = [n for n in names if n.split(".")[0] in ("torch", "verl", "ray", "transformers")]
            assert not heavy, f"{path.name} imports {heavy}"


def test_the_graph_holds_the_imports_it_is_read_from():
    # The checks above would pass on an empty graph: these known imports, function-level ones too, must be in it.
    assert "verl_ext.rewards.majority_vote" in GRAPH["verl_ext.trainer.vote_buffer"]
    assert "verl_ext.voting.score" in GRAPH["verl_ext.rewards.majority_vote"]
    assert "verl_ext.toy.resolver" in GRAPH["verl_ext.plugin"]
