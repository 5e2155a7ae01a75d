"""No import cycles between project modules (issue 15, item 3).

Every ``.py`` under ``etc_ros/`` and ``etc_training/`` is parsed with ``ast`` (nothing is imported). An edge
A -> B is recorded when module A imports project module B anywhere in its body: at module level, under
``if TYPE_CHECKING:``, or inside a function. A deferred import only postpones a cycle to run time and keeps
the two modules entangled for a reader, so it counts the same as a top-level one.

Resolution rules:
- ``import a.b.c`` depends on ``a.b.c``; ``from a.b import c`` depends on ``a.b.c`` when ``c`` is a
  submodule, otherwise on ``a.b``.
- relative imports are resolved against the importing module's package.
- a package is the module of its ``__init__.py``; ``from a.b import name`` where ``name`` is defined in
  (or re-exported by) ``a/b/__init__.py`` depends on ``a.b``. So a submodule that imports a name from its
  own package while that ``__init__`` re-exports the submodule is reported as the cycle it is.
- the parent packages Python initialises on the way are not edges (``import a.b.c`` is not an edge to
  ``a`` or ``a.b``); they are containers, not dependencies.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("etc_ros", "etc_training")


def _modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(target: str, mods: dict[str, Path]) -> str | None:
    """The longest project module that ``target`` names (or lies inside), or None when not ours."""
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in mods:
            return name
        parts.pop()
    return None


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    mods = _modules(root, packages)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if _is_package(path) else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        targets: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts)
                    full = f"{base}.{node.module}" if node.module else base
                else:
                    full = node.module or ""
                for a in node.names:
                    sub = f"{full}.{a.name}"
                    targets.append(sub if sub in mods else full)
        for t in targets:
            dep = _resolve(t, mods)
            if dep is None or dep == mod:
                continue
            graph[mod].add(dep)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; returns the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def _describe(comp: list[str], graph: dict[str, set[str]]) -> str:
    members = set(comp)
    edges = [f"    {a} -> {b}" for a in comp for b in sorted(graph[a] & members)]
    return "  {" + ", ".join(comp) + "}\n" + "\n".join(edges)


def test_scc_finder_on_a_known_graph():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert strongly_connected(g) == [["a", "b", "c"], ["d", "e"]]


def test_graph_sees_relative_deferred_and_submodule_imports(tmp_path):
    files = {
        "pkg/__init__.py": "from .a import A\n",
        "pkg/a.py": "A = 1\ndef f():\n    from pkg.sub import c  # deferred, submodule by name\n",
        "pkg/b.py": "from . import a\nimport numpy\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..b import x\nfrom pkg import A\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    g = import_graph(tmp_path, ("pkg",))
    assert g == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.c"}, "pkg.b": {"pkg.a"}, "pkg.sub": set(),
                 "pkg.sub.c": {"pkg.b", "pkg"}}
    assert strongly_connected(g) == [["pkg", "pkg.a", "pkg.b", "pkg.sub.c"]]


def test_no_import_cycles_between_project_modules():
    graph = import_graph()
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles between project modules (break each by moving the shared piece):\n" + \
        "\n".join(_describe(c, graph) for c in cycles)
