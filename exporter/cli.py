"""integration-health: serve | migrate | check | demo | simulate | seed-demo (argparse and the commands)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
from aiohttp import web
from pydantic import SecretStr, ValidationError

from exporter import logs
from exporter.core import concurrency
from exporter.core.model import HealthStatus, IntegrationResult
from exporter.services import POOL_SIZE, WEBHOOK_POOL_SIZE, Services, open_services
from exporter.settings import MIN_TOKEN_CHARS, Settings, describe_settings_error
from exporter.storage.migrate import MigrationError, migrate
from exporter.storage.store import TRANSIENT_ERRORS, PersistError
from exporter.web.app import create_app
from exporter.web.connections import GuardedSite, HttpLimits

if TYPE_CHECKING:
    from exporter.demo.simulator import SimState

log = logging.getLogger("exporter")
EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2
DEMO_INTERVAL_S = 30
SIMULATOR_LIMITS = HttpLimits(max_connections=4096)
DEMO_GRACE_S = 0.25  # Ctrl-C in the demo stops at once: a hanging simulated tenant must not hold it up


class UsageError(Exception):
    """A problem the user fixes by changing a setting or the command line; printed as one line."""


class EmbeddedDatabaseError(UsageError):
    """The embedded PostgreSQL could not start; the message says why and what to do."""


@contextlib.contextmanager
def database_dsn(settings: Settings) -> Iterator[str]:
    """DATABASE_URL when set; otherwise the embedded PostgreSQL in the data directory, stopped on exit
    (its data kept for the next run) unless it was already running."""
    if settings.database_url:
        yield settings.database_url
        return
    from exporter.demo.embedded_pg import LocalPostgres, LocalPostgresError, embedded_bin_dir

    try:
        server = LocalPostgres(settings.data_dir / "pg", embedded_bin_dir())
        already_running = server.running_port() is not None
        log.info("starting the embedded PostgreSQL in %s", server.data_dir)
        dsn = server.start()
    except LocalPostgresError as exc:
        raise EmbeddedDatabaseError(str(exc)) from None
    try:
        yield dsn
    finally:
        if not already_running:
            server.stop()


def format_table(results: Sequence[IntegrationResult], names: Mapping[UUID, str] | None = None) -> str:
    """One line per integration, columns aligned, sorted by org and type; orgs by name when given."""
    names = names or {}
    columns = ("org", "integration", "status", "latency", "reason", "error")
    rows = [columns] + [
        (names.get(r.org_id, str(r.org_id)), r.integration_type, r.result.status.value, f"{r.result.latency_ms} ms",
         r.result.reason.value if r.result.reason else "-", r.result.error or "-")
        for r in sorted(results, key=lambda r: (names.get(r.org_id, str(r.org_id)), r.integration_type))
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
    )


def exit_code(results: Sequence[IntegrationResult]) -> int:
    return EXIT_OK if all(r.result.status == HealthStatus.HEALTHY for r in results) else EXIT_UNHEALTHY


async def apply_migrations(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def require_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('public.integration_health_status') IS NOT NULL"):
            raise UsageError("the database has no integration-health schema yet: run `integration-health migrate`")
    finally:
        await conn.close()


async def cmd_migrate(dsn: str, settings: Settings) -> int:
    applied = await apply_migrations(dsn)
    print(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "database is up to date")
    return EXIT_OK


async def cmd_seed_demo(dsn: str, simulator_url: str) -> int:
    from exporter.demo import seed as demo

    conn = await asyncpg.connect(dsn)
    try:
        await demo.seed(conn, simulator_url.rstrip("/"))
    finally:
        await conn.close()
    print(f"seeded {len(demo.DEMO)} demo integrations in {len(demo.DEMO_ORGS)} organisations → {simulator_url}")
    return EXIT_OK


async def cmd_check(dsn: str, settings: Settings, org_id: UUID) -> int:
    """Check one org now, through the same scheduler the service uses, so backoff state stays right."""
    async with open_services(settings, dsn, shared=False) as services:
        services.scheduler.restore(await services.store.last_results(org_id))
        results = await services.scheduler.run_health_checks(org_id)
        if not await services.outbox.flush():
            raise PersistError(f"{services.outbox.pending} results could not be written")
    if not results:
        print(f"org {org_id} has no enabled integrations", file=sys.stderr)
        return EXIT_USAGE
    print(format_table(results))
    return exit_code(results)


async def start_site(app: web.Application, host: str, port: int, limits: HttpLimits = HttpLimits(),
                     shutdown_timeout: float = 60.0) -> web.AppRunner:
    """Serve `app` with bounded connections (count, request-head time, keep-alive idle time); on cleanup,
    requests still open get `shutdown_timeout` seconds to finish."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout,
                           keepalive_timeout=limits.keepalive_s)
    await runner.setup()
    try:
        await GuardedSite(runner, host, port, limits).start()
    except OSError as exc:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}): set EXPORTER_PORT to a free port") from None
    return runner


async def start_simulator(state: SimState | None = None, port: int = 0,
                          host: str = "127.0.0.1") -> tuple[web.AppRunner, int]:
    """Serve the simulator (port 0: any free one) and return its runner and port."""
    from exporter.demo.simulator import create_app as create_simulator

    # It stands for many vendors' servers at once: their connections are not one server's to cap at 256 (a
    # check client opening its next connection before this server saw the last one close was refused).
    runner = await start_site(create_simulator(state), host, port, SIMULATOR_LIMITS,
                              shutdown_timeout=0.5)  # a hanging tenant waits
    return runner, runner.addresses[0][1]


async def until_signal() -> None:
    """Wait for SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(settings: Settings, dsn: str, on_cycle: Callable[..., Any] | None = None,
                banner: Callable[[Services], None] | None = None, grace_s: float | None = None) -> int:
    """Run the service until SIGTERM/SIGINT; shutdown lets the running cycle finish (up to `grace_s`, by
    default the check timeout + 5 s) and flushes results."""
    raise_descriptor_limit(descriptors_needed(settings))
    async with open_services(settings, dsn, on_cycle=on_cycle) as services:
        app = create_app(settings, services, shutdown_grace_s=grace_s)
        runner = await start_site(app, settings.host, settings.port, http_limits(settings),
                                  shutdown_timeout=grace_s or 60.0)
        log.info("serving on http://%s:%d (/metrics, /healthz, /readyz, /api/v1)", settings.host, settings.port)
        if banner:
            banner(services)
        try:
            await until_signal()
            log.info("stopping: no new cycles; waiting for checks in flight, then writing results")
        finally:
            await runner.cleanup()
    return EXIT_OK


def descriptors_needed(settings: Settings) -> int:
    return concurrency.descriptors_needed(checks=settings.max_concurrency, webhooks=settings.webhook_concurrency,
                                          served=settings.http_max_connections,
                                          database=POOL_SIZE + WEBHOOK_POOL_SIZE)


def raise_descriptor_limit(needed: int, limits: Any = None) -> int:
    """Raise this process's soft limit on open files to `needed` (up to the hard limit, which needs no
    privilege): at the 1,024 many systems start with, the checks' sockets, the connections served and the
    pools can run out of descriptors, and every check then fails as unreachable. Warns when the hard limit
    is lower. `limits`: the `resource` module (tests pass a fake); the soft limit in force is returned."""
    if limits is None:
        try:
            import resource as limits
        except ImportError:  # Windows: no such limit to raise
            return needed
    soft, hard = limits.getrlimit(limits.RLIMIT_NOFILE)
    if soft == limits.RLIM_INFINITY or soft >= needed:
        return soft
    target = needed if hard == limits.RLIM_INFINITY else min(hard, needed)
    if target > soft:
        try:
            limits.setrlimit(limits.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # macOS refuses a soft limit above OPEN_MAX even under an infinite hard one
            target = soft
    if target < needed:
        log.warning("the open-files limit is %d (hard limit %d); EXPORTER_MAX_CONCURRENCY, "
                    "EXPORTER_HTTP_MAX_CONNECTIONS and EXPORTER_WEBHOOK_CONCURRENCY may need %d: raise it "
                    "(ulimit -n, LimitNOFILE=) or lower those", target, hard, needed)
    return target


def http_limits(settings: Settings) -> HttpLimits:
    return HttpLimits(settings.http_max_connections, settings.http_header_timeout_seconds,
                      settings.http_keepalive_seconds)


def require_api_token(settings: Settings) -> None:
    """Refuse to serve an open API: the operator's token (long enough) or a way to verify the app's JWTs
    (EXPORTER_JWT_SECRET, already checked for length, or EXPORTER_JWT_JWKS_URL), or the API switched off."""
    if not settings.api_enabled:
        return
    if settings.api_token is None and not settings.jwt_enabled:
        raise UsageError("the API has no way to authenticate anyone: set EXPORTER_API_TOKEN to a long random "
                         "bearer token (e.g. `openssl rand -hex 24`) and/or EXPORTER_JWT_SECRET or "
                         "EXPORTER_JWT_JWKS_URL for the app's users, or EXPORTER_API_ENABLED=false to serve "
                         "without the API")
    if settings.api_token is not None and len(settings.api_token.get_secret_value()) < MIN_TOKEN_CHARS:
        raise UsageError(f"EXPORTER_API_TOKEN is shorter than {MIN_TOKEN_CHARS} characters: use a long random one")


def require_webhook_keys(settings: Settings) -> None:
    """Refuse to serve without a key to seal webhook signing secrets with: the API could not subscribe anyone,
    and secrets already sealed could not sign, so deliveries would pile up (held) instead of failing here."""
    if settings.webhook_secret_keys is None:
        raise UsageError("EXPORTER_WEBHOOK_SECRET_KEYS is not set: webhook signing secrets are sealed with it. Set "
                         "it to <key id>:<32 random bytes in base64>, e.g. "
                         "EXPORTER_WEBHOOK_SECRET_KEYS=\"k1:$(openssl rand -base64 32)\", keep it outside the "
                         "database, and keep the same value on every replica (README: Webhook secrets at rest)")


async def cmd_serve(dsn: str, settings: Settings, embedded: bool) -> int:
    require_api_token(settings)
    require_webhook_keys(settings)
    if settings.metrics_token is None:
        log.warning("EXPORTER_METRICS_TOKEN is not set: /metrics, which names every organisation's integrations, "
                    "is open to anyone who can reach port %d", settings.port)
    if embedded:
        await apply_migrations(dsn)
    else:
        await require_schema(dsn)
    return await serve(settings, dsn)


def demo_settings(settings: Settings) -> Settings:
    """The demo's overrides: loopback, a fast interval, every type on it, an API token to try, the
    simulator's loopback address allowed as a destination (EXPORTER_EGRESS_ALLOW), and a webhook sealing
    key of its own, kept in the data directory beside the database whose secrets it seals."""
    from exporter.demo.keys import demo_webhook_keys

    return settings.model_copy(update={
        "egress_allow": (*settings.egress_allow, "127.0.0.1/32"),
        "host": "127.0.0.1", "check_interval": DEMO_INTERVAL_S, "allow_fast_interval": True, "type_intervals": {},
        "credential_provider": "supabase-vault", "run_now_min_interval_seconds": 10,
        "api_token": settings.api_token or SecretStr(secrets.token_urlsafe(18)),
        "webhook_secret_keys": settings.webhook_secret_keys or SecretStr(demo_webhook_keys(settings.data_dir))})


async def cmd_demo(dsn: str, settings: Settings) -> int:
    from exporter.demo import seed as demo

    settings = demo_settings(settings)
    await apply_migrations(dsn)
    sim, sim_port = await start_simulator(demo.simulator_state())
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await demo.seed(conn, f"http://127.0.0.1:{sim_port}")
        finally:
            await conn.close()
        running: list[Services] = []

        def show(slot: datetime, results: Sequence[IntegrationResult]) -> None:
            snapshot = running[0].snapshot
            print(f"\n── cycle {slot:%H:%M:%S} UTC: {len(results)} checked "
                  f"(next in {DEMO_INTERVAL_S} s; Ctrl-C to stop) ──")
            print(format_table(list(snapshot.results.values()), demo.DEMO_ORGS), flush=True)

        def banner(services: Services) -> None:
            running.append(services)
            base = f"http://127.0.0.1:{settings.port}"
            token = settings.api_token.get_secret_value() if settings.api_token else ""
            print(f"""
integration-health demo: {len(demo.DEMO)} integrations in {len(demo.DEMO_ORGS)} organisations, checked every \
{DEMO_INTERVAL_S} s against the built-in vendor simulator (http://127.0.0.1:{sim_port}).

  metrics     {base}/metrics
  health      curl -H 'Authorization: Bearer {token}' {base}/api/v1/orgs/{demo.GLOBEX}/health
  history     curl -H 'Authorization: Bearer {token}' {base}/api/v1/orgs/{demo.GLOBEX}/health/history
  run now     curl -X POST -H 'Authorization: Bearer {token}' {base}/api/v1/orgs/{demo.ACME}/checks
  break one   curl -X PUT -d '{{"mode": "hang"}}' http://127.0.0.1:{sim_port}/_sim/tenants/acme-fiken
  prometheus  scrape_configs: [{{job_name: integration-health, scrape_interval: 15s, \
static_configs: [{{targets: ['127.0.0.1:{settings.port}']}}]}}]

Data is kept in {settings.data_dir if not settings.database_url else 'DATABASE_URL'}; run the demo again to \
continue where it stopped.""", flush=True)

        return await serve(settings, dsn, on_cycle=show, banner=banner, grace_s=DEMO_GRACE_S)
    finally:
        await sim.cleanup()


async def cmd_simulate(host: str, port: int, latency_ms: int, with_demo: bool) -> int:
    from exporter.demo import seed as demo
    from exporter.demo.simulator import SimState

    state = demo.simulator_state() if with_demo else SimState()
    state.latency_ms = latency_ms
    # It serves up to SIMULATOR_LIMITS' connections: at Debian's default 1,024 open files, a bench's 496
    # checks and their kept-alive sockets would find accepts failing.
    raise_descriptor_limit(SIMULATOR_LIMITS.max_connections + concurrency.DESCRIPTOR_SLACK)
    runner, port = await start_simulator(state, port=port, host=host)
    print(f"simulator listening on http://{host}:{port} (Ctrl-C to stop)", flush=True)
    try:
        await until_signal()
    finally:
        await runner.cleanup()
    return EXIT_OK


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="integration-health", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the exporter: scheduled checks, /metrics, the HTTP API")
    sub.add_parser("migrate", help="apply pending database migrations")
    check = sub.add_parser("check", help="run one organisation's checks now and print them")
    check.add_argument("--org", required=True, type=UUID, metavar="ORG_ID", help="organisation id (UUID)")
    sub.add_parser("demo", help="embedded PostgreSQL + simulator + demo organisations, served live")
    seed = sub.add_parser("seed-demo", help="insert the demo organisations, pointed at a running simulator")
    seed.add_argument("--simulator-url", required=True, help="e.g. http://simulator:8081")
    sim = sub.add_parser("simulate", help="serve the vendor API simulator on loopback")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8081)
    sim.add_argument("--demo", action="store_true", help="preload the demo tenants' modes and secrets")
    sim.add_argument("--latency-ms", type=int, default=0, help="added to every answer")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "simulate":
        return asyncio.run(cmd_simulate(args.host, args.port, args.latency_ms, args.demo))
    with database_dsn(settings) as dsn:
        match args.command:
            case "migrate":
                return asyncio.run(cmd_migrate(dsn, settings))
            case "check":
                return asyncio.run(cmd_check(dsn, settings, args.org))
            case "seed-demo":
                return asyncio.run(cmd_seed_demo(dsn, args.simulator_url))
            case "serve":
                return run_service(cmd_serve(dsn, settings, embedded=not settings.database_url))
            case _:
                return run_service(cmd_demo(dsn, settings))


def run_service(main: Coroutine[Any, Any, int]) -> int:
    """Run the service on uvloop where it is installed (a dependency except on Windows): bench/cycle.py
    measured 10-30 % less CPU per check than asyncio's own loop, in three runs out of three."""
    try:
        import uvloop
    except ImportError:  # Windows: asyncio's own loop
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"configuration error: {describe_settings_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_level, settings.log_format)
    try:
        return run(args, settings)
    except (UsageError, MigrationError, PersistError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:  # InterfaceError too: not a traceback
        print(f"error: database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK

