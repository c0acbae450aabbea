"""The wheel is complete: installed on its own, outside the checkout, it migrates a fresh database."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_MIGRATIONS = sorted(ROOT.glob("migrations/*.sql"))
BUILD_OUTPUTS = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".data")


def build_wheel(out: Path, scratch: Path) -> Path:
    """Build from a copy of the checkout: an in-tree build writes build/ and *.egg-info into the checkout, and a
    stale build/lib left there would be packed into the wheel. Build isolation, because the project venv's
    setuptools is older than pyproject's build requirement."""
    source = shutil.copytree(ROOT, scratch, ignore=BUILD_OUTPUTS)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, source)
    (wheel,) = out.glob("integration_health-*.whl")
    return wheel


def venv_with_wheel(venv: Path, wheel: Path) -> Path:
    """A new venv holding only the wheel; a .pth line borrows the project venv's site-packages for the
    dependencies (a path line, so the editable install's own .pth there is not processed)."""
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    run(sys.executable, "-m", "pip", "--python", venv / "bin/python", "install", "--no-deps", "--no-index",
        "--quiet", wheel)
    site_packages = Path(run(venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"))
    (site_packages / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return site_packages


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout.strip()


async def applied_migrations(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["name"] for r in await conn.fetch("SELECT name FROM integration_health_migrations ORDER BY 1")]
    finally:
        await conn.close()


def test_the_installed_wheel_migrates_a_fresh_database_from_another_directory(empty_db_dsn: str,
                                                                               tmp_path: Path) -> None:
    assert CHECKOUT_MIGRATIONS, "the checkout has no migrations/*.sql"
    wheel = build_wheel(tmp_path / "dist", tmp_path / "source")
    with zipfile.ZipFile(wheel) as archive:
        for sql in CHECKOUT_MIGRATIONS:
            assert archive.read(f"exporter/migrations/{sql.name}") == sql.read_bytes(), sql.name

    site_packages = venv_with_wheel(tmp_path / "venv", wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTER_") and k != "PYTHONPATH"}
    env["DATABASE_URL"] = empty_db_dsn
    loaded_from = run(tmp_path / "venv/bin/python", "-c", "import exporter.storage.migrate as m; print(m.__file__); "
                      "print(*m.migrations_dir().iterdir(), sep='\\n')", cwd=elsewhere, env=env).splitlines()
    assert len(loaded_from) > len(CHECKOUT_MIGRATIONS)
    assert all(Path(p).is_relative_to(site_packages) for p in loaded_from), loaded_from

    run(tmp_path / "venv/bin/integration-health", "migrate", cwd=elsewhere, env=env)
    assert asyncio.run(applied_migrations(empty_db_dsn)) == [sql.name for sql in CHECKOUT_MIGRATIONS]
