"""The package's layout rules (docs/architecture.md), checked on the source: layers point down, no import cycles, no
private names across modules, no module over 400 lines without a stated reason.

The imports are read with :mod:`ast` from src/glocal, so the check sees every module, also those a test run never
imports. An import is *module-level* when it runs at import time (at the top of a module, not inside a function or
an ``if TYPE_CHECKING:`` block); an import inside a function is *lazy*.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "glocal"
MAX_LINES = 400

# the layers, lowest first; a module may import, at module level, only modules of its own layer or a lower one
LAYERS = {
    "foundation": ("glocal.errors", "glocal.progress", "glocal.serialize", "glocal._version", "glocal._former"),
    "lrp": ("glocal.lrp",),
    "attribution": ("glocal.attribution",),
    "data": ("glocal.data",),
    "index": ("glocal.index",),
    "structure": ("glocal.structure", "glocal.pruning", "glocal.evaluation", "glocal.parts"),
    "viz": ("glocal.viz",),
    "applications": (
        "glocal.__main__",
        "glocal.compat",
        "glocal.presets",
        "glocal.demo",
        "glocal.cli",
        "glocal.report",
        "glocal.web",
    ),
    "api": (),  # glocal/__init__.py only
}
RANK = {layer: rank for rank, layer in enumerate(LAYERS)}
# upward imports that are allowed when lazy: result objects' .figure()/.save() conveniences draw with viz
LAZY_UPWARD = {("structure", "viz"), ("index", "viz")}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a package's __init__ for names it re-exports)
    names: tuple[str, ...]
    lazy: bool
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    if module == "glocal":
        return "api"
    matches = [(len(p), layer) for layer, prefixes in LAYERS.items() for p in prefixes if in_package(module, p)]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add its subpackage to LAYERS and to docs/architecture.md")
    return max(matches)[1]


def in_package(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                continue  # typing only: never runs
            child_lazy = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if in_package(target, "glocal"):
                    names = tuple(alias.name for alias in child.names)
                    submodules = [f"{target}.{name}" for name in names if f"{target}.{name}" in MODULES]
                    for submodule in submodules:  # `from . import hooked`: the submodule itself
                        found.append(Import(module, submodule, (), child_lazy, child.lineno))
                    if len(submodules) < len(names):
                        found.append(Import(module, target, names, child_lazy, child.lineno))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if in_package(alias.name, "glocal"):
                        found.append(Import(module, alias.name, (), child_lazy, child.lineno))
            visit(child, child_lazy)

    visit(ast.parse(path.read_text()), lazy=False)
    return found


ALL_IMPORTS = [imported for module in MODULES for imported in imports_of(module)]


def test_the_layout_check_sees_the_package():
    assert {"glocal.attribution.engine", "glocal.data", "glocal.index.scan", "glocal.viz.images"} <= set(MODULES)
    assert layer_of("glocal.attribution.engine") == "attribution" and layer_of("glocal") == "api"
    assert any(
        i.source == "glocal.structure.layer_graph" and i.target == "glocal.attribution.inputs" for i in ALL_IMPORTS
    )


def test_every_module_is_in_a_declared_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_cycles_even_counting_lazy_imports():
    """Typing-only imports (``if TYPE_CHECKING:``) are left out: they never run."""
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for imported in ALL_IMPORTS:
        if imported.target in MODULES and imported.target != imported.source:
            graph[imported.source].add(imported.target)
    cycles = []
    state: dict[str, int] = {}

    def walk(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                walk(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_layers_only_import_downwards():
    wrong = []
    for imported in ALL_IMPORTS:
        source, target = layer_of(imported.source), layer_of(imported.target)
        if RANK[target] <= RANK[source]:
            continue
        if imported.lazy and (source, target) in LAZY_UPWARD:
            continue
        kind = "lazy" if imported.lazy else "module-level"
        wrong.append(f"{imported.source}:{imported.line} ({source}) imports {imported.target} ({target}), {kind}")
    assert not wrong, "imports that point up the layers (see docs/architecture.md):\n" + "\n".join(wrong)


def test_no_private_names_imported_across_modules():
    wrong = [
        f"{imported.source}:{imported.line} imports {name} from {imported.target}"
        for imported in ALL_IMPORTS
        for name in imported.names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not wrong, "private names used outside their module; give them a public name in their home:\n" + "\n".join(
        wrong
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_over_400_lines_say_why_they_are_kept_whole(module):
    text = MODULES[module].read_text()
    lines = len(text.splitlines())
    if lines <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert "kept whole" in docstring, (
        f"{module} has {lines} lines: split it along its ideas, or say in its docstring why it is one idea kept whole"
    )
