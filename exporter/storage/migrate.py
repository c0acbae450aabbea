"""Apply migrations/ in order, each in its own transaction, under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATION_NAME = re.compile(r"^[0-9]{4}_[A-Za-z0-9_]+\.sql$")
LOCK_KEY = 0x1A7E_4EA1  # arbitrary, constant: every migrator of this product contends for the same lock

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS public.integration_health_migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SELECT_APPLIED = "SELECT name, checksum FROM public.integration_health_migrations"
RECORD_APPLIED = "INSERT INTO public.integration_health_migrations (name, checksum) VALUES ($1, $2)"


class MigrationError(RuntimeError):
    """A migration cannot be applied safely; the message names the file and the fix."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Traversable:
    """The SQL files: shipped in the wheel as the package `exporter.migrations` (pyproject maps it to the
    top-level migrations/); in a checkout that is not installed, that folder itself."""
    try:
        return resources.files("exporter.migrations")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """Read NNNN_name.sql files in name order; refuse duplicate numbers and an empty set."""
    directory = directory or migrations_dir()
    files = sorted((f for f in directory.iterdir() if MIGRATION_NAME.match(f.name)), key=lambda f: f.name)
    if not files:
        raise MigrationError(f"no migrations found in {directory}: the package is incomplete "
                             "(reinstall integration-health; a wheel must ship exporter/migrations/*.sql)")
    numbers = [f.name[:4] for f in files]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise MigrationError(f"two migrations share the number {', '.join(duplicates)} in {directory}")
    return [Migration(f.name, f.read_text()) for f in files]


def pending(migrations: list[Migration], applied: dict[str, str]) -> list[Migration]:
    """Return the migrations still to apply; refuse an applied one whose file has changed since."""
    for m in migrations:
        if m.name in applied and applied[m.name] != m.checksum:
            raise MigrationError(
                f"migration {m.name} was changed after it was applied (checksum {applied[m.name][:12]} in the "
                f"database, {m.checksum[:12]} on disk). Migrations are forward-only: restore the file and put "
                f"the change in a new migration."
            )
    return [m for m in migrations if m.name not in applied]


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply what is pending and return the names applied; concurrent callers wait on the lock."""
    migrations = load_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(CREATE_LEDGER)
        applied = {r["name"]: r["checksum"] for r in await conn.fetch(SELECT_APPLIED)}
        done = []
        for m in pending(migrations, applied):
            log.info("applying migration %s", m.name)
            async with conn.transaction():
                try:
                    await conn.execute(m.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {m.name} failed: {exc}") from exc
                await conn.execute(RECORD_APPLIED, m.name, m.checksum)
            done.append(m.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
