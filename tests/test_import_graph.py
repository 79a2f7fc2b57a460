"""The project's import graph: no cycles, and ``harness`` never reaches ``search``.

Every module of ``prunebench`` (its ``__init__``), ``prunebench.harness`` and
``prunebench.search`` is read with ``ast`` (nothing is imported). An edge is each ``import`` or
``from ... import`` statement anywhere in a module, inside functions and under
``if TYPE_CHECKING:`` too; relative imports are resolved; ``from pkg import name`` is an edge to
``pkg.name`` when that is a module of the project, else to ``pkg``. A module that imports by name
(``importlib.import_module``) also has an edge to every project module its string constants name
(``"pkg.mod"`` or ``"pkg.mod:attr"``): the method registry and the command table load that way.
Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` as well; those implicit edges are
not counted (every module would otherwise reach its package's ``__init__``), so a module that
means its parent package must say so, and that edge counts: the registry loader lives in
``harness/pruning/__init__.py`` and the wings import ``base.py`` directly, not their package.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOTS = ("prunebench", "prunebench.harness", "prunebench.search")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, name
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def project_modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module under :data:`ROOTS`."""
    out = {"prunebench": _package_dir("prunebench") / "__init__.py"}
    for root in ROOTS[1:]:
        base = _package_dir(root)
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("").parts
            if any(not p.isidentifier() for p in rel):
                continue
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            out[".".join((root, *parts))] = path
    return out


def _nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree``, ``if TYPE_CHECKING:`` blocks included: a type-only import that
    points back is still two modules that each need the other to be read."""
    return ast.walk(tree)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    package = module if is_package else module.rpartition(".")[0]
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{target}" if target else base


def _imports_by_name(tree: ast.AST) -> bool:
    for node in _nodes(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name == "import_module":
                return True
    return False


def edges_of(module: str) -> set[str]:
    """The project modules ``module`` imports (see the module docstring for the rules)."""
    mods = project_modules()
    path = mods[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in mods else base)
    if _imports_by_name(tree):
        for node in _nodes(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value.partition(":")[0])
    return {m for m in out if m in mods and m != module}


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Module -> the project modules it imports."""
    return {m: frozenset(edges_of(m)) for m in project_modules()}


def strongly_connected(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                comps.append(sorted(comp))
    return comps


def _cycles_in(prefix: str) -> list[list[str]]:
    return [c for c in strongly_connected(import_graph()) if len(c) > 1
            and any(m == prefix or m.startswith(prefix + ".") for m in c)]


def _describe(cycles: list[list[str]]) -> str:
    graph = import_graph()
    lines = []
    for comp in cycles:
        inside = set(comp)
        lines.append(" <-> ".join(comp))
        lines += [f"    {m} -> {', '.join(sorted(graph[m] & inside))}" for m in comp]
    return "import cycles:\n" + "\n".join(lines)


def test_graph_reader_rules() -> None:
    """The reader resolves relative imports and sees function bodies and TYPE_CHECKING blocks."""
    mods = project_modules()
    assert "prunebench.harness.pruning.static.aap" in mods
    assert "prunebench.harness.pruning" in mods and "prunebench.search" in mods
    assert _resolve("a.b.c", False, 1, "d") == "a.b.d"
    assert _resolve("a.b.c", False, 2, None) == "a"
    assert _resolve("a.b", True, 1, "c") == "a.b.c"
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
                     "else:\n    import y\ndef f():\n    import z\n")
    names = {a.name for n in _nodes(tree) if isinstance(n, ast.Import) for a in n.names}
    assert names == {"x", "y", "z"}
    # the method registry loads its wings by name
    assert "prunebench.harness.pruning.static.aap" in import_graph()["prunebench.harness.pruning"]


def test_harness_never_imports_search() -> None:
    graph = import_graph()
    seen: set[str] = set()
    todo = [m for m in graph if m.startswith("prunebench.harness")]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    reached = sorted(m for m in seen if not m.startswith("prunebench.harness"))
    assert not reached, f"harness reaches {reached}; harness must never import search"


def test_harness_has_no_import_cycles() -> None:
    cycles = _cycles_in("prunebench.harness")
    assert not cycles, _describe(cycles)


def test_search_has_no_import_cycles() -> None:
    """search/ too (apart from harness/, as search/ is restructured on its own schedule)."""
    cycles = _cycles_in("prunebench.search")
    assert not cycles, _describe(cycles)


def test_search_uses_the_pruning_front_door_only() -> None:
    """search/ builds and names networks through ``harness.pruning`` (its package names) and
    ``harness.pruning.pipeline``, never a wing's internals (``static/`` or ``dynamic/``)."""
    graph = import_graph()
    inside = ("prunebench.harness.pruning.static", "prunebench.harness.pruning.dynamic")
    reached = sorted(f"{m} -> {t}" for m, targets in graph.items()
                     if m.startswith("prunebench.search") for t in targets if t.startswith(inside))
    assert not reached, f"search imports pruning internals: {reached}"
