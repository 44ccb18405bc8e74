"""The import graph inside ``nlpjax/``: no cycles, and the loop imports no family.

Every module is parsed (``ast``, nothing is imported). Edges count every ``import``
statement, module level and inside functions alike, plus the implicit import of each
parent package (``import nlpjax.tasks.base`` runs ``nlpjax/tasks/__init__.py`` first).
The root package is the one exception to the implicit edge: ``nlpjax/__init__.py`` loads
``nlpjax.api`` only on attribute access (``nlpjax.train``), which every module would
otherwise "import"; ``test_root_package_imports_nothing_eagerly`` keeps that true (it
imports the leaf ``nlpjax.errors`` and nothing else).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "nlpjax"
FAMILY_PREFIXES = ("nlpjax.models", "nlpjax.tasks.")
ALLOWED_FOR_LOOP = {"nlpjax.tasks.base"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _targets(node: ast.AST) -> list[str]:
    """nlpjax modules an import statement names (``from pkg import mod`` -> ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "nlpjax"]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module.split(".")[0] != "nlpjax":
            return []
        subs = [f"{node.module}.{a.name}" for a in node.names]
        return [s for s in subs if s in MODULES] or [node.module]
    return []


def _parents(name: str) -> list[str]:
    """Packages that importing ``name`` runs first (all but the root ``nlpjax``)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def import_graph(top_level_only: bool = False) -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        nodes = tree.body if top_level_only else ast.walk(tree)
        edges = set()
        for node in nodes:
            for target in _targets(node):
                edges.update([target, *_parents(target)])
        edges.update(_parents(name))
        edges.discard(name)
        graph[name] = {e for e in edges if e in MODULES}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_no_import_cycle_inside_nlpjax():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "module", ["nlpjax.training.loop", "nlpjax.training.step", "nlpjax.training.run"]
)
def test_shared_trainer_imports_no_family(module):
    """Neither directly nor through anything it imports (at import time or later)."""
    families = {
        m
        for m in reachable(import_graph(), module)
        if m.startswith(FAMILY_PREFIXES) and m not in ALLOWED_FOR_LOOP
    }
    assert not families, f"{module} imports model families: {sorted(families)}"


def test_layering_leaves():
    graph = import_graph()
    assert graph["nlpjax.errors"] == set()  # the leaf every layer raises from
    assert "nlpjax.tasks.registry" not in reachable(graph, "nlpjax.config")
    assert "nlpjax.training.loop" not in reachable(graph, "nlpjax.training.plan")


def test_root_package_imports_nothing_eagerly():
    assert import_graph(top_level_only=True)["nlpjax"] == {"nlpjax.errors"}
