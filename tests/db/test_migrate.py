"""Migrations: idempotent, safe when run concurrently, and forward-only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from exporter import cli, logs
from exporter.storage import migrate as migrate_module
from exporter.storage.migrate import Migration, MigrationError, load_migrations, migrate


async def test_migrate_applies_everything_once_and_a_rerun_is_a_no_op(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        first = await migrate(conn)
        assert first == [m.name for m in load_migrations()]
        assert await migrate(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM integration_health_migrations") == len(first)
    finally:
        await conn.close()


async def test_concurrent_migrate_runs_apply_each_migration_exactly_once(empty_db_dsn: str) -> None:
    conns = [await asyncpg.connect(empty_db_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(name for r in results for name in r)
        assert applied == [m.name for m in load_migrations()]
    finally:
        for c in conns:
            await c.close()


async def test_an_applied_migration_that_was_edited_is_refused(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate(conn, [Migration("0001_a.sql", "CREATE TABLE a (x int);")])
        with pytest.raises(MigrationError, match=r"migration 0001_a.sql was changed after it was applied .* "
                                                 r"restore the file and put the change in a new migration"):
            await migrate(conn, [Migration("0001_a.sql", "CREATE TABLE a (x bigint);")])
    finally:
        await conn.close()


async def test_a_failing_migration_is_rolled_back_and_named(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        with pytest.raises(MigrationError, match="migration 0002_bad.sql failed: syntax error"):
            await migrate(conn, [Migration("0001_ok.sql", "CREATE TABLE ok (x int);"),
                                 Migration("0002_bad.sql", "CREATE TABLE half (x int); CREATE TABLEX oops;")])
        assert await conn.fetchval("SELECT to_regclass('public.half')") is None
        assert await conn.fetchval("SELECT array_agg(name) FROM integration_health_migrations") == ["0001_ok.sql"]
        # the lock was released: another migrate can run
        assert await migrate(conn, [Migration("0001_ok.sql", "CREATE TABLE ok (x int);")]) == []
    finally:
        await conn.close()


def test_duplicate_migration_numbers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0001_b.sql").write_text("")
    with pytest.raises(MigrationError, match="two migrations share the number 0001"):
        load_migrations(tmp_path)


def test_migrate_command_without_migrations_exits_2_and_says_the_package_is_incomplete(
        empty_db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A wheel built without its SQL must fail loudly, not report an up-to-date database."""
    monkeypatch.setattr(migrate_module, "migrations_dir", lambda: tmp_path)
    monkeypatch.setattr(logs, "configure", lambda level, fmt: None)  # main() would take over the root logger
    monkeypatch.setenv("DATABASE_URL", empty_db_dsn)
    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no migrations found in {tmp_path}: the package is incomplete"), err
    assert "reinstall integration-health" in err
