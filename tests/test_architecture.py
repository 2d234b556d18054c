"""The house rules, checked on the source: no import circle, a small package root, a model that imports nothing
from persistence, losses, data, configuration, training or inference, and no task switched on by name outside
``polymax.tasks``."""

from __future__ import annotations

import ast
from pathlib import Path

import polymax

PACKAGE = Path(polymax.__file__).parent
TASK_NAMES = {"panoptic", "semantic", "instance", "depth", "normals"}


def modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("polymax", *path.relative_to(PACKAGE).with_suffix("").parts)
        names[".".join(parts).removesuffix(".__init__")] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """module → the package modules it imports (module level or inside functions)."""
    known = modules()

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                found = owner(target) if target.startswith("polymax.") else None
                if found and found not in (name, "polymax"):
                    graph[name].add(found)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_the_package_root_holds_at_most_six_modules():
    root = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__main__.py")   # __main__: `python -m`
    assert len(root) <= 6, root


def test_the_model_imports_only_model_parts_and_shared_types():
    allowed = ("polymax.model", "polymax.structures", "polymax.geometry", "polymax.errors")
    graph = import_graph()
    wrong = {name: sorted(t for t in targets if not t.startswith(allowed))
             for name, targets in graph.items() if name.startswith("polymax.model")}
    assert not {name: targets for name, targets in wrong.items() if targets}


def _compares_a_task_name(node: ast.AST) -> bool:
    if not isinstance(node, ast.Compare):
        return False
    values = [node.left, *node.comparators]
    for value in values:
        if isinstance(value, ast.Constant) and value.value in TASK_NAMES:
            return True
        if isinstance(value, (ast.Tuple, ast.List, ast.Set)) and any(
                isinstance(e, ast.Constant) and e.value in TASK_NAMES for e in value.elts):
            return True
    return False


def test_no_task_is_switched_on_by_name_outside_the_tasks_package():
    """(The data loaders are exempt: "depth" there names a label field of the files, not a task.)"""
    found = []
    for name, path in modules().items():
        if name.startswith(("polymax.tasks", "polymax.data")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if _compares_a_task_name(node):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found
