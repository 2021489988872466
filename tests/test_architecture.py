"""The layout is the architecture: stage packages import each other one way only, and modules within a package
form no import cycle.

Imports are read with ``ast`` from every module of the package (lazy imports inside functions included), so a
cycle hidden behind a function-level import is found too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import amos_autoseg

ROOT = Path(amos_autoseg.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the ``amos_autoseg`` modules it imports (type-checking-only imports excluded)."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for child in node.body for n in ast.walk(child))
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("amos_autoseg"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("amos_autoseg"))
        graph[_module_name(path)] = found
    modules = set(graph)
    return {m: {i for i in deps if i in modules and i != m} for m, deps in graph.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_stage_packages_import_each_other_one_way_only() -> None:
    graph = _imports()
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        src = _package(module)
        if not src:
            continue
        packages.setdefault(src, set()).update(p for p in map(_package, deps) if p and p != src)
    assert "runtime" in packages["inference"] and "training" not in packages["inference"]
    cycle = _cycle(packages)
    assert cycle is None, f"stage packages import each other in a cycle: {' -> '.join(cycle or [])}"


def test_no_import_cycle_inside_a_package() -> None:
    graph = _imports()
    for package in {_package(m) for m in graph if _package(m)}:
        inner = {m: {d for d in deps if _package(d) == package and d != f"amos_autoseg.{package}"}
                 for m, deps in graph.items() if _package(m) == package and m != f"amos_autoseg.{package}"}
        cycle = _cycle(inner)
        assert cycle is None, f"modules of {package} import each other: {' -> '.join(cycle or [])}"
