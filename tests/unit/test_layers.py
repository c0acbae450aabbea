"""The layout is one layer per folder and the arrows point down: a module imports only from its own layer
or the layers below it, and `core/` imports no I/O library at all."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
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


def package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


def imports_of(path: Path) -> list[str]:
    """Every module a file imports, at the top or inside a function (lazy imports count too): relative
    imports resolved, and the names given to importlib.import_module / __import__ as string literals."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = importlib.util.resolve_name("." * node.level + module, package_of(path)).removesuffix(".")
            found.append(module)
            found += [f"{module}.{a.name}" for a in node.names if module in ("exporter", "exporter." + layer_of(path))
                      or node.level]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            found.append(str(node.args[0].value))
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


@pytest.mark.parametrize("line", [
    "from exporter.engine.runner import Runner", "from ..web import app", "import exporter.web.app as x",
    "importlib.import_module('exporter.engine.scheduler')", "__import__('exporter.storage.store')"])
def test_the_layer_check_would_catch_an_upward_import(line: str) -> None:
    bad = PACKAGE / "core" / "_layer_probe_that_is_never_committed.py"
    bad.write_text(f"{line}\n")
    try:
        assert layers_imported(bad) & {"engine", "web", "storage"}, line
    finally:
        bad.unlink()


def test_importing_core_loads_no_io_library_and_no_upper_layer() -> None:
    """What actually gets imported, not only what the source says: core's modules in a fresh interpreter."""
    probe = ("import pkgutil, sys, exporter.core as c\n"
             "[__import__(m.name) for m in pkgutil.walk_packages(c.__path__, 'exporter.core.')]\n"
             "print('\\n'.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                cwd=PACKAGE.parent).stdout.split())
    assert "exporter.core.model" in loaded
    stdlib_pulled_in_by_dependencies = {"socket", "ssl", "subprocess"}  # croniter, zoneinfo: not our I/O
    assert not {m.split(".")[0] for m in loaded} & (IO_LIBRARIES - stdlib_pulled_in_by_dependencies)
    assert not {m for m in loaded if m.startswith("exporter.") and not m.startswith("exporter.core")}
