"""The layout is one layer per folder and the arrows point down: a module imports only from its own layer
or the layers below it, and `core/` imports no I/O library at all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exporter"

# Each layer and the layers it may import from (besides itself). `settings` and `logs` are shared plumbing.
ALLOWED = {
    "core": set(),
    "adapters": {"core"},
    "storage": {"core"},
    "demo": {"core"},
    "engine": {"core", "adapters", "storage"},
    "settings": {"core"},
    "services": {"core", "adapters", "storage", "engine", "settings"},
    "web": {"core", "adapters", "storage", "engine", "settings", "services"},
    "cli": {"core", "adapters", "storage", "engine", "settings", "services", "web", "demo", "logs"},
    "logs": set(),
    "__main__": {"cli"},
    "__init__": set(),
}
IO_LIBRARIES = {"aiohttp", "asyncpg", "yarl", "multidict", "socket", "ssl", "prometheus_client", "subprocess"}


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imports_of(path: Path) -> list[str]:
    """Every module a file imports, at the top or inside a function (lazy imports count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names if node.module == "exporter"]
    return found


def layers_imported(path: Path) -> set[str]:
    targets = set()
    for name in imports_of(path):
        parts = name.split(".")
        if parts[0] == "exporter" and len(parts) > 1 and parts[1] != "__version__":
            targets.add(parts[1])
    return targets


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_each_module_imports_only_its_own_layer_or_the_ones_below(path: Path) -> None:
    layer = layer_of(path)
    assert layer in ALLOWED, f"{path.name}: a new top-level module or folder needs its place in ALLOWED"
    upward = layers_imported(path) - ALLOWED[layer] - {layer}
    assert not upward, f"{path.relative_to(PACKAGE)} ({layer}) imports from {sorted(upward)}: an arrow pointing up"


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").rglob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_io_library(path: Path) -> None:
    roots = {name.split(".")[0] for name in imports_of(path)}
    assert not roots & IO_LIBRARIES, f"core/{path.name} imports {sorted(roots & IO_LIBRARIES)}: decide, don't do I/O"


def test_the_layer_check_would_catch_an_upward_import(tmp_path: Path) -> None:
    sample = PACKAGE / "core" / "model.py"
    bad = tmp_path / "model.py"
    bad.write_text(sample.read_text() + "\nfrom exporter.engine.runner import Runner\nimport aiohttp\n")
    assert "engine" in layers_imported(bad)
    assert "aiohttp" in {name.split(".")[0] for name in imports_of(bad)}
