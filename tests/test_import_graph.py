"""The package's import graph has no cycle except the documented expr façade.

Every ``import lossforge…`` / ``from lossforge… import …`` statement counts, wherever it stands
(module level, inside a function, under ``TYPE_CHECKING``): a lazy import still ties two modules
together. The one allowed back-edge is the expression façade (``Expr.to_*`` and ``Expr.parse`` import
their implementations lazily: DESIGN.md §3), so a strongly connected component is allowed only when
all its modules are in :data:`FACADE`. The other is the one edge in :data:`FACADE_EDGES`: the
default ``Task.fit`` is lossforge's training loop, imported lazily by ``lossforge.tasks.base``;
that edge alone is left out of the graph (every other path back into ``tasks`` still counts).
"""
from __future__ import annotations

import ast
from pathlib import Path

import lossforge

SRC = Path(lossforge.__file__).resolve().parent
#: The expression façade: ``lossforge.expr.expr`` and the modules its methods import lazily.
FACADE = {"lossforge.expr", "lossforge.expr.expr", "lossforge.expr.export",
          "lossforge.expr.interpret", "lossforge.expr.parse", "lossforge.expr.simplify",
          "lossforge.expr.exact"}
#: The ``Task.fit`` façade: the default ``fit`` runs ``lossforge.training.train``.
FACADE_EDGES = {("lossforge.tasks.base", "lossforge.training")}


def module_names(src: Path = SRC) -> dict[str, Path]:
    """Dotted name -> file for every module of the package."""
    out = {}
    for path in src.rglob("*.py"):
        parts = list(path.relative_to(src.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` (at ``path``) imports explicitly."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    found.add(sub)
                elif base in modules:
                    found.add(base)
    found.discard(name)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.add(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    for a, b in FACADE_EDGES:
        graph[a].discard(b)
    return graph


def test_the_detector_finds_a_cycle_and_its_members():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [{"a", "b", "c"}]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_imports_are_resolved_to_modules(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "a.py", "sub/__init__.py", "sub/b.py"):
        (pkg / f).write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\nfrom pkg import sub\ndef f():\n    import pkg.a\n")
    (pkg / "sub" / "b.py").write_text("from ..a import x\nfrom . import b\n")
    modules = module_names(pkg)
    assert imports_of("pkg.a", pkg / "a.py", modules) == {"pkg.sub.b", "pkg.sub"}
    assert imports_of("pkg.sub.b", pkg / "sub" / "b.py", modules) == {"pkg.a"}


def test_no_import_cycle_except_the_expr_facade():
    cycles = [sorted(c) for c in strongly_connected(import_graph()) if not c <= FACADE]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)
