"""No import cycle among the modules of safepath/ and deployments/, lazy imports inside functions included.

A cycle closed by an import inside a function works until someone moves that import to the top (or imports the
modules in another order); it also says that what two modules share lives in the wrong place. The graph is read
from the source with `ast`: an edge for every import of a module of ours, wherever it stands, except under
`if TYPE_CHECKING:` (never run). `from package import name` counts as importing `package.name` when that is a
module, else `package`. A submodule's implicit import of its own parent package is not an edge: the package is
already being imported when its submodules run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("safepath", "deployments")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every module under the packages."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _type_checking_only(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    base = node.module or ""
    if node.level:  # relative: from the module's package, up level - 1 packages
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    found = set()
    for alias in node.names:
        name = f"{base}.{alias.name}"
        found.add(name if name in known else base)
    return found & known


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports anywhere in its source (see the module docstring)."""
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_only(tree)
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skipped:
                edges |= _imported(node, name, path.name == "__init__.py", known)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_safepath_and_deployments_have_no_import_cycle():
    modules = module_files(ROOT, PACKAGES)
    assert "safepath.pipeline" in modules and "deployments.ingress" in modules
    cycle = find_cycle(import_graph(modules))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# The checker itself, on small packages written for the purpose: each case says whether it holds a cycle.
@pytest.mark.parametrize(
    "files,cycle",
    [
        # a circle closed by an import inside a function is still a circle
        ({"a.py": "from pkg.b import f\n", "b.py": "def f():\n    from pkg.a import g\n"}, ["pkg.a", "pkg.b", "pkg.a"]),
        # through a package's __init__, relative imports included
        ({"__init__.py": "from .a import x\n", "a.py": "from . import b\n", "b.py": "import pkg\n"},
         ["pkg", "pkg.a", "pkg.b", "pkg"]),
        # imports only a type checker runs are no cycle
        ({"a.py": "from pkg.b import f\n", "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
          "    from pkg.a import g\n"}, None),
        # a submodule importing a sibling from its package is no edge to the package
        ({"__init__.py": "from pkg.a import x\n", "a.py": "from pkg import b\n", "b.py": ""}, None),
    ],
)
def test_the_cycle_check_finds_cycles_and_only_cycles(tmp_path: Path, files: dict[str, str], cycle):
    for name, text in files.items():
        (tmp_path / "pkg").mkdir(exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    (tmp_path / "pkg" / "__init__.py").touch()
    assert find_cycle(import_graph(module_files(tmp_path, ("pkg",)))) == cycle


def test_no_module_of_safepath_or_deployments_runs_past_400_lines():
    # past ~400 lines a module holds more than one concern (the style guide: split by concern, as decide.py and
    # decoding.py were split out of the pipeline and normalize)
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines())
               for name, path in module_files(ROOT, PACKAGES).items()}
    assert {name: n for name, n in lengths.items() if n > 400} == {}
