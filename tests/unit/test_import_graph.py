"""The import graph of ``platform/``, ``runtimes/`` and ``operators/`` has no cycle.

Every ``import``/``from ... import`` that can run counts, wherever it stands: at module level or inside a
function, a method, a ``try``. Imports under ``if TYPE_CHECKING:`` never run (they name a type for the type
checker, typically the caller's) and are not edges. An edge goes to the module a statement names (``from a.b
import c`` names ``a.b.c``
when that is a module, else ``a.b``); a package's ``__init__`` running before its submodules is not an
edge of the submodule. A cycle means two modules can only be changed (and imported) together.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "ferryman": REPO / "platform" / "ferryman",
    "ferryman_runtimes": REPO / "runtimes" / "ferryman_runtimes",
    "ferryman_operator": REPO / "operators" / "ferryman_operator",
}


def modules(packages: Mapping[str, Path]) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file under each package directory."""
    found: dict[str, Path] = {}
    for name, root in packages.items():
        for path in sorted(root.rglob("*.py")):
            parts = [name, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph(packages: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its source)."""
    known = modules(packages)

    def owner(dotted: str) -> str | None:  # the longest known module prefix of a dotted name
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        edges: set[str] = set()
        for node in _runnable(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" for alias in node.names]
            else:
                continue
            edges.update(t for t in map(owner, targets) if t is not None)
        edges.discard(module)
        graph[module] = edges
    return graph


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runnable(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (their ``else`` runs)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def describe(graph: Mapping[str, set[str]], component: list[str]) -> str:
    members = set(component)
    return "\n".join(f"  {m} -> {', '.join(sorted(graph[m] & members))}" for m in component)


def test_the_project_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGES)
    assert len(graph) > 100 and "ferryman.metrics" in graph  # the walk saw the packages
    assert "ferryman.metrics_flush" in graph["ferryman.metrics"]
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n\n".join(describe(graph, c) for c in found)


def _package(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.mark.parametrize(
    "b_source",
    [
        pytest.param("def f():\n    from pkg.a import X\n", id="inside-a-function"),
        pytest.param(
            "import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n    from pkg import a\n",
            id="else-branch",
        ),
        pytest.param("try:\n    import pkg.a\nexcept ImportError:\n    pass\n", id="in-a-try"),
        pytest.param("class K:\n    def m(self):\n        import pkg.a as a\n", id="in-a-method"),
        pytest.param("from .a import X\n", id="relative"),
        pytest.param("import pkg.sub.c\n", id="through-a-third-module"),
    ],
)
def test_a_deliberate_cycle_is_found(tmp_path: Path, b_source: str) -> None:
    files = {
        "__init__.py": "",
        "a.py": "from pkg.b import Y\nX = 1\n",
        "b.py": b_source + "Y = 2\n",
        "sub/__init__.py": "",
        "sub/c.py": "from pkg.a import X\n",
    }
    graph = import_graph({"pkg": _package(tmp_path / "pkg", files)})
    found = cycles(graph)
    assert len(found) == 1 and {"pkg.a", "pkg.b"} <= set(found[0])


def test_type_checking_imports_are_not_edges(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "a.py": "from pkg.b import Y\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import X\nY = 2\n",
    }
    graph = import_graph({"pkg": _package(tmp_path / "pkg", files)})
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == set()
    assert cycles(graph) == []


def test_a_package_importing_its_submodules_is_not_a_cycle(tmp_path: Path) -> None:
    files = {
        "__init__.py": "from pkg.a import X\nfrom pkg.b import Y\n",
        "a.py": "X = 1\n",
        "b.py": "from pkg.a import X\nY = X\n",
    }
    assert cycles(import_graph({"pkg": _package(tmp_path / "pkg", files)})) == []
