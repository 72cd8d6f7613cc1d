"""The package's folders are its layers: no module imports from a layer above its own.

Every `import` and `from ... import` in the package (at module level or inside a function, since
a lazy import is still a dependency) is resolved to the subpackage it names, and compared with
the importing module's subpackage in the order `continual_adapters.LAYERS`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import continual_adapters
from continual_adapters import LAYERS

PACKAGE = Path(continual_adapters.__file__).parent


def imported_layers(source: str, module: str) -> list[tuple[int, str]]:
    """(line, layer) of every import of a cadapt subpackage in `source`, the text of `module`."""
    module_parts = tuple(module.split("."))
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_parts[: len(module_parts) - node.level]
                names = [".".join((*base, node.module or ""))]
            else:
                names = [node.module or ""]
            if names[0] == "continual_adapters":
                names = [f"continual_adapters.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "continual_adapters" and len(parts) > 1 and parts[1] in LAYERS:
                found.append((node.lineno, parts[1]))
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def test_every_module_lives_in_a_layer():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_a_layer(path):
    own = path.relative_to(PACKAGE).parts[0]
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    found = imported_layers(path.read_text(encoding="utf-8"), module)
    upward = [f"line {line}: {own} imports {layer}" for line, layer in found if LAYERS.index(layer) > LAYERS.index(own)]
    assert not upward, upward


def test_the_walk_finds_imports():
    """The checker itself: absolute, relative, package-level and lazy imports are all seen."""
    source = (
        "import continual_adapters.cli\n"
        "from continual_adapters import report\n"
        "def f():\n"
        "    from continual_adapters.stream.runner import Runner\n"
        "    from ..training import loop\n"
        "    from . import inject\n"
    )
    assert imported_layers(source, "continual_adapters.core.example") == [
        (1, "cli"),
        (2, "report"),
        (4, "stream"),
        (5, "training"),
        (6, "core"),
    ]


def private_imports(source: str) -> list[str]:
    """Underscore names taken from another cadapt module by `from continual_adapters... import`."""
    return [
        f"line {node.lineno}: {node.module}.{alias.name}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("continual_adapters")
        for alias in node.names
        if alias.name.startswith("_")
    ]


@pytest.mark.parametrize(
    "path",
    modules() + sorted(PACKAGE.parent.joinpath("tests").rglob("*.py")),
    ids=lambda p: str(p.relative_to(PACKAGE.parent)),
)
def test_no_module_imports_another_modules_private_names(path):
    """What two modules share is public in the one that owns it."""
    assert not private_imports(path.read_text(encoding="utf-8"))


def test_private_imports_are_seen():
    source = "from continual_adapters.core.model import ContinualModel, _numel\nfrom os import _exit\n"
    assert private_imports(source) == ["line 1: continual_adapters.core.model._numel"]


def test_serve_sits_between_report_and_cli():
    """The HTTP server uses the report (its dashboard) and is used by the command line only."""
    assert LAYERS.index("report") + 1 == LAYERS.index("serve") == LAYERS.index("cli") - 1
