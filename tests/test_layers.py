"""The package's layers (DESIGN §7): imports point one way, and the SDK stands alone.

Every import counts, wherever it is: at module level, under ``TYPE_CHECKING`` or inside a
function. A module may import from its own layer or from a layer below it, and the graph
of all these imports has no cycle. The SDK may import the vocabulary and itself; only its
embedded mode (``orchestra.sdk._embedded``, and imports inside a function or under
``TYPE_CHECKING``) reaches the service. Importing ``orchestra.sdk`` in a fresh interpreter
loads no server module.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import attrs
import pytest

import orchestra

PACKAGE = Path(orchestra.__file__).parent

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "vocabulary",
        (
            "orchestra",
            "orchestra.errors",
            "orchestra.task",
            "orchestra.events",
            "orchestra.messages",
            "orchestra.pool",
            "orchestra.views",
        ),
    ),
    ("sdk", ("orchestra.sdk",)),
    ("base", ("orchestra.config", "orchestra.tokens", "orchestra.obs")),
    ("scheduling", ("orchestra.scheduling",)),
    ("engine", ("orchestra.engine",)),
    ("storage", ("orchestra.catalog", "orchestra.artifacts")),
    ("tools", ("orchestra.tools",)),
    ("actors", ("orchestra.actors",)),
    ("http", ("orchestra.http",)),
    ("service", ("orchestra.service",)),
    ("cli", ("orchestra.cli", "orchestra.__main__")),
)
"""Lowest first. A prefix names a module and everything under it."""
EMBEDDED = "orchestra.sdk._embedded"
TESTING = "orchestra.testing"
"""The fake engine: a program of its own that imports nothing of orchestra."""


@attrs.frozen
class Import:
    importer: str
    imported: str
    line: int
    eager: bool
    """At module level, outside ``if TYPE_CHECKING``: it runs when the importer is imported."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def known(name: str) -> str | None:
    """The module ``name`` is, or is inside (``orchestra.x.Y`` → ``orchestra.x``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> list[Import]:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, eager: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) or (
                isinstance(child, ast.If) and _is_type_checking(child)
            ):
                visit(child, False)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if target := known(alias.name):
                        found.append(Import(name, target, child.lineno, eager))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    target = known(f"{base}.{alias.name}") or known(base)
                    if target is not None and target != name:
                        found.append(Import(name, target, child.lineno, eager))
            else:
                visit(child, eager)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


ALL_IMPORTS = [imp for name in MODULES for imp in imports_of(name)]


def layer_of(name: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, rank)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = name == prefix or name.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return best[1]


def test_every_module_is_in_a_layer() -> None:
    for name in MODULES:
        if not name.startswith(TESTING):
            layer_of(name)


def test_imports_point_down() -> None:
    upward = []
    for imp in ALL_IMPORTS:
        if imp.importer.startswith(TESTING):
            continue
        if imp.importer == EMBEDDED or (imp.importer.startswith("orchestra.sdk") and not imp.eager):
            continue  # embedded mode: the SDK runs the service in-process
        if layer_of(imp.imported) > layer_of(imp.importer):
            upward.append(
                f"{imp.importer}:{imp.line} ({LAYERS[layer_of(imp.importer)][0]}) imports "
                f"{imp.imported} ({LAYERS[layer_of(imp.imported)][0]})"
            )
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in ALL_IMPORTS:
        # A package's __init__ may re-export its own modules (``orchestra.cli``).
        if not imp.imported.startswith(imp.importer + "."):
            graph[imp.importer].add(imp.imported)
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def inside_testing(name: str) -> bool:
    return name == TESTING or name.startswith(TESTING + ".")


def test_the_fake_engine_imports_nothing_of_orchestra() -> None:
    """Its modules import one another, and nothing else of orchestra."""
    outside = [
        imp
        for imp in ALL_IMPORTS
        if inside_testing(imp.importer) and not inside_testing(imp.imported)
    ]
    assert outside == []


def test_the_sdk_loads_no_server_module() -> None:
    code = (
        "import json, sys; import orchestra.sdk; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('orchestra'))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                       capture_output=True, text=True).stdout)  # fmt: skip
    allowed = set(LAYERS[0][1])
    server = [m for m in loaded if m not in allowed and not m.startswith("orchestra.sdk")]
    assert server == [], f"import orchestra.sdk loads server modules: {server}"
    assert EMBEDDED not in loaded
    assert "orchestra.sdk._async" in loaded  # the check saw the SDK itself


def test_the_checks_see_every_kind_of_import() -> None:
    """The walker finds module-level, TYPE_CHECKING and function-level imports."""
    kinds = {(imp.importer, imp.imported, imp.eager) for imp in ALL_IMPORTS}
    assert ("orchestra.service", "orchestra.actors.queue", True) in kinds
    assert ("orchestra.sdk._async", EMBEDDED, False) in kinds  # inside a function
    assert ("orchestra.sdk._async", "orchestra.config", False) in kinds  # TYPE_CHECKING
