"""integration-health: migrate | check | demo | simulate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import aiohttp
import asyncpg
from aiohttp import web
from pydantic import ValidationError

from exporter import demo
from exporter.adapters import ADAPTERS, AdapterContext
from exporter.credentials import CachedCredentials, CredentialProvider, DirectoryCredentials
from exporter.database import database_dsn
from exporter.localpg import LocalPostgresError
from exporter.migrate import MigrationError, migrate
from exporter.model import HealthStatus, IntegrationResult
from exporter.report import format_table
from exporter.runner import Runner, run_health_checks
from exporter.settings import Settings, describe_settings_error
from exporter.simulator import SimState, create_app as create_simulator
from exporter.store import PersistError, Store, create_pool

EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2
SLOT_SECONDS = 900


def current_slot(now: datetime, interval: int = SLOT_SECONDS) -> datetime:
    return datetime.fromtimestamp(int(now.timestamp()) // interval * interval, UTC)


def exit_code(results: Sequence[IntegrationResult]) -> int:
    return EXIT_OK if all(r.result.status == HealthStatus.HEALTHY for r in results) else EXIT_UNHEALTHY


def credential_provider(settings: Settings) -> CredentialProvider | None:
    if settings.credentials_dir:
        return CachedCredentials(DirectoryCredentials(settings.credentials_dir))
    return None


async def check_orgs(dsn: str, settings: Settings, org_ids: Sequence[UUID]) -> list[IntegrationResult]:
    """Run each org's checks once, persist them, and return all results."""
    pool = await create_pool(dsn, role=settings.db_role or None)
    try:
        async with aiohttp.ClientSession() as session:
            ctx = AdapterContext(session=session, credentials=credential_provider(settings))
            runner = Runner(ADAPTERS, ctx, timeout=settings.check_timeout_seconds)
            store, slot = Store(pool), current_slot(datetime.now(UTC))
            batches = await asyncio.gather(*(run_health_checks(o, store=store, runner=runner, slot=slot)
                                             for o in org_ids))
            return [r for batch in batches for r in batch]
    finally:
        await pool.close()


async def cmd_migrate(dsn: str, settings: Settings) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "database is up to date")
    return EXIT_OK


async def cmd_check(dsn: str, settings: Settings, org_id: UUID) -> int:
    results = await check_orgs(dsn, settings, [org_id])
    if not results:
        print(f"org {org_id} has no enabled integrations", file=sys.stderr)
        return EXIT_USAGE
    print(format_table(results))
    return exit_code(results)


async def cmd_demo(dsn: str, settings: Settings) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        runner, port = await start_simulator(demo.simulator_state())
        await demo.seed(conn, demo.demo_integrations(f"http://127.0.0.1:{port}"))
    finally:
        await conn.close()
    try:
        print(f"simulator on http://127.0.0.1:{port}; checking {len(demo.DEMO_ORGS)} demo organisations…")
        results = await check_orgs(dsn, settings, list(demo.DEMO_ORGS))
    finally:
        await runner.cleanup()
    print(format_table(results))
    print(f"\nstored in {'the embedded PostgreSQL under ' + str(settings.data_dir) if not settings.database_url else 'DATABASE_URL'}"
          f"; run again any time, or: integration-health check --org {demo.GLOBEX}")
    return EXIT_OK


async def start_simulator(state: SimState | None = None, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve the simulator on 127.0.0.1 (port 0: any free one) and return its runner and port."""
    runner = web.AppRunner(create_simulator(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, runner.addresses[0][1]


async def cmd_simulate(port: int) -> int:
    runner, port = await start_simulator(port=port)
    print(f"simulator listening on http://127.0.0.1:{port} (Ctrl-C to stop)")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
    return EXIT_OK


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="integration-health", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending database migrations")
    check = sub.add_parser("check", help="run one organisation's checks now and print them")
    check.add_argument("--org", required=True, type=UUID, metavar="ORG_ID", help="organisation id (UUID)")
    sub.add_parser("demo", help="embedded PostgreSQL + simulator + demo organisations, one round of checks")
    sim = sub.add_parser("simulate", help="serve the vendor API simulator on loopback")
    sim.add_argument("--port", type=int, default=8081)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"configuration error: {describe_settings_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "simulate":
        return asyncio.run(cmd_simulate(args.port))
    try:
        with database_dsn(settings) as dsn:
            if args.command == "migrate":
                return asyncio.run(cmd_migrate(dsn, settings))
            if args.command == "check":
                return asyncio.run(cmd_check(dsn, settings, args.org))
            return asyncio.run(cmd_demo(dsn, settings))
    except (LocalPostgresError, MigrationError, PersistError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
