"""The architecture holds by itself: the packages' layers and the stages' independence
(import-linter's contracts in pyproject.toml), no import cycle, no private name used across
modules, and every package saying what lives there and what it may import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = ("core", "model", "stages", "serving", "monitoring", "release", "commands")


def test_the_import_contracts_are_kept(repo):
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def module_imports(repo: Path) -> dict[str, set[str]]:
    """Every reprokit module and the reprokit modules it imports anywhere (in functions too)."""
    import grimp

    graph = grimp.build_graph("reprokit", cache_dir=None)
    return {m: graph.find_modules_directly_imported_by(m) - {m} for m in graph.modules}  # a module may name itself


def test_no_import_cycle(repo):
    graph = module_imports(repo)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
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
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))


def modules(repo: Path):
    for path in sorted((repo / "src" / "reprokit").rglob("*.py")):
        name = ".".join(path.relative_to(repo / "src").with_suffix("").parts).removesuffix(".__init__")
        yield name, ast.parse(path.read_text())


def test_no_private_name_is_used_across_modules(repo):
    """`from reprokit.x import _y` and `x._y` on an imported reprokit module: a private name is
    its module's own (a module may name its own, e.g. to hand a function to Dask by reference)."""
    found = []
    for name, tree in modules(repo):
        imported: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reprokit"):
                for alias in node.names:
                    if alias.name.startswith("_") and node.module != name:
                        found.append(f"{name}: from {node.module} import {alias.name}")
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("reprokit"):
                        imported[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{name}: {node.value.id}.{node.attr}")
    assert found == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_what_lives_there_and_what_it_may_import(repo, package):
    doc = ast.get_docstring(ast.parse((repo / "src" / "reprokit" / package / "__init__.py").read_text()))
    assert doc and "import" in doc.lower(), package
