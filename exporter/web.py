"""The aiohttp service: /metrics, /healthz, /readyz and the /api/v1 routes, with the scheduler in the background."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter import __version__
from exporter.adapters import ADAPTERS, AdapterContext, AdapterFactory
from exporter.adapters.base import make_session
from exporter.collector import Metrics
from exporter.credentials import (
    CachedCredentials,
    CredentialProvider,
    DirectoryCredentials,
    SupabaseVaultCredentials,
)
from exporter.leases import ShardLeases
from exporter.model import IntegrationResult, describe_validation_error
from exporter.openapi import OPENAPI
from exporter.outbox import Outbox
from exporter.runner import Runner
from exporter.scheduler import Scheduler
from exporter.settings import Settings
from exporter.snapshot import Snapshot
from exporter.store import Store, create_pool
from exporter.syncs import SyncRun

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything the handlers use, built in the app's cleanup context."""

    store: Store
    scheduler: Scheduler
    snapshot: Snapshot
    metrics: Metrics
    outbox: Outbox
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    loop_task: asyncio.Task[None] | None = None
    run_now_at: dict[UUID, float] = field(default_factory=dict)  # org → monotonic time of the last run-now


SETTINGS = web.AppKey("settings", Settings)
DSN = web.AppKey("dsn", str)
ADAPTERS_KEY = web.AppKey("adapters", dict)
SERVICES = web.AppKey("services", Services)
ON_CYCLE = web.AppKey("on_cycle", object)


def credential_provider(settings: Settings, pool: Any) -> CredentialProvider | None:
    if settings.credential_provider == "none":
        return None
    inner: CredentialProvider = (DirectoryCredentials(settings.credentials_dir) if settings.credentials_dir
                                 and settings.credential_provider == "directory" else SupabaseVaultCredentials(pool))
    return CachedCredentials(inner, ttl=settings.credential_cache_seconds)


def build_services(settings: Settings, pool: Any, session: Any, adapters: Mapping[str, AdapterFactory],
                   on_cycle: Callable[..., Any] | None = None, shards: ShardLeases | None = None) -> Services:
    """Wire the store, runner, snapshot, metrics, outbox and scheduler together (no I/O)."""
    store, snapshot = Store(pool), Snapshot()
    ctx = AdapterContext(session=session, credentials=credential_provider(settings, pool))
    runner = Runner(adapters, ctx, timeout=settings.check_timeout_seconds,
                    limiter=asyncio.Semaphore(settings.max_concurrency))
    metrics = Metrics(CollectorRegistry(), snapshot, __version__, known_types=adapters.keys())
    metrics.interval.set(settings.check_interval)
    outbox = Outbox(store, metrics, max_results=settings.persist_queue_max)
    scheduler = Scheduler(store=store, runner=runner, snapshot=snapshot, metrics=metrics, outbox=outbox,
                          interval_s=settings.check_interval, type_intervals=settings.type_intervals,
                          on_cycle=on_cycle, passive_types=settings.passive_types,
                          fallback_after=settings.rate_limit_fallback_after,
                          passive_cooldown_s=settings.passive_cooldown_seconds, shards=shards)
    return Services(store, scheduler, snapshot, metrics, outbox)


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the pool and the HTTP session, restore the last known status, run the scheduler; undo on exit."""
    settings = app[SETTINGS]
    pool = await create_pool(app[DSN], role=settings.db_role or None, max_size=10)
    session = make_session(limit=settings.max_concurrency)
    try:
        shards = ShardLeases(pool, settings.replica_id, settings.lease_ttl_seconds)
        await shards.maintain()
        services = build_services(settings, pool, session, app[ADAPTERS_KEY], app.get(ON_CYCLE),  # type: ignore[arg-type]
                                  shards=shards)
        restored = await services.store.last_results()
        services.scheduler.restore(restored)
        log.info("restored the last known status of %d integrations", len(restored))
        app[SERVICES] = services
        services.loop_task = asyncio.create_task(services.scheduler.run_forever(services.stop))
        retry_task = asyncio.create_task(services.outbox.retry_forever())
        lease_task = asyncio.create_task(renew_forever(shards, services.scheduler))
        yield
        lease_task.cancel()
        await shutdown(services, retry_task, grace_s=settings.check_timeout_seconds + 5)
        await shards.release_all()
    finally:
        await session.close()
        await pool.close()


async def renew_forever(shards: ShardLeases, scheduler: Scheduler) -> None:
    """Renew (and rebalance) the leases every third of their TTL, between cycles too; shards gained
    here are taken over at once, not at the next slot."""
    while True:
        await asyncio.sleep(shards.ttl_s / 3)
        before = shards.owned
        gained = await shards.maintain() - before
        try:
            await scheduler.take_over(gained)
        except Exception:  # the lease loop must outlive any one take-over
            log.exception("taking over %d shards failed; the next cycle checks them", len(gained))


async def shutdown(services: Services, retry_task: asyncio.Task[None], grace_s: float) -> None:
    """Stop scheduling, let an in-flight cycle finish (its checks are cut at their timeout), flush."""
    services.stop.set()
    if services.loop_task:
        services.loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await services.loop_task
    cycle = services.scheduler.cycle_task
    if cycle and not cycle.done():
        log.info("waiting for the running cycle to finish (at most %.0f s)", grace_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(cycle), grace_s)
    retry_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await retry_task
    if not await services.outbox.flush():
        log.error("exiting with %d results not written: the database is unreachable", services.outbox.pending)


def error_json(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def errors_as_json(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
    """Every error is a JSON body with a reason; never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_json(exc.status, exc.reason)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_json(500, "internal error")


@web.middleware
async def bearer_auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """The /api/v1 routes (but their OpenAPI description) need EXPORTER_API_TOKEN as a bearer token."""
    if not request.path.startswith("/api/v1/") or request.path == "/api/v1/openapi.json":
        return await handler(request)
    expected = request.app[SETTINGS].api_token
    if expected is None or not request.app[SETTINGS].api_enabled:
        return error_json(503, "the API is disabled (EXPORTER_API_ENABLED=false or no EXPORTER_API_TOKEN)")
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(errors="surrogateescape"), expected.get_secret_value().encode()):
        return error_json(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
    return await handler(request)


def org_id_of(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["org_id"])
    except ValueError:
        raise web.HTTPBadRequest(reason="org_id must be a UUID") from None


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def result_json(r: IntegrationResult) -> dict[str, Any]:
    return {"integration_type": r.integration_type, "status": r.result.status.value,
            "latency_ms": r.result.latency_ms, "checked_at": iso(r.result.checked_at), "error": r.result.error,
            "reason": r.result.reason.value if r.result.reason else None,
            "consecutive_failures": r.state.consecutive_failures, "next_check_at": iso(r.state.next_check_at),
            "tls_expires_at": iso(r.result.tls_expires_at)}


async def get_health(request: web.Request) -> web.Response:
    org_id, services = org_id_of(request), request.app[SERVICES]
    results = await services.store.last_results(org_id)
    if not results and not await services.store.load_integrations(org_id):
        raise web.HTTPNotFound(reason=f"unknown organisation {org_id}")
    return web.json_response({"org_id": str(org_id), "integrations": [result_json(r) for r in results]})


async def get_history(request: web.Request) -> web.Response:
    org_id, services = org_id_of(request), request.app[SERVICES]
    rows = await services.store.history(org_id)
    if not rows and not await services.store.load_integrations(org_id):
        raise web.HTTPNotFound(reason=f"unknown organisation {org_id}")
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(r["integration_type"], []).append({
            "slot": iso(r["slot"]), "status": r["status"], "latency_ms": r["latency_ms"],
            "checked_at": iso(r["checked_at"]), "error": r["error_message"], "reason": r["reason"]})
    return web.json_response({"org_id": str(org_id), "integrations": [
        {"integration_type": kind, "slots": slots} for kind, slots in series.items()]})


async def post_checks(request: web.Request) -> web.Response:
    """Run an org's checks now ("test connection"), at most once per org per run_now_min_interval."""
    org_id, services = org_id_of(request), request.app[SERVICES]
    min_gap = request.app[SETTINGS].run_now_min_interval_seconds
    last = services.run_now_at.get(org_id)
    now = time.monotonic()
    if last is not None and now - last < min_gap:
        wait = math.ceil(min_gap - (now - last))
        return error_json(429, f"checks for this organisation ran less than {min_gap:g} s ago; retry in {wait} s",
                          **{"Retry-After": str(wait)})
    services.run_now_at[org_id] = now
    results = await services.scheduler.run_org_now(org_id)
    if not results:
        services.run_now_at.pop(org_id, None)
        raise web.HTTPNotFound(reason=f"organisation {org_id} has no enabled active integrations")
    return web.json_response({"org_id": str(org_id), "integrations": [result_json(r) for r in results]})


RUN_YEARS = (2000, 2200)


class SyncRunReport(BaseModel):
    """A sync scheduler's report of one run; (org_id, integration_type, scheduled_for) is its period."""

    model_config = ConfigDict(extra="forbid")

    org_id: UUID
    integration_type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    scheduled_for: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    outcome: Literal["success", "failure", "running"]
    error_message: str | None = Field(default=None, max_length=2000, pattern=r"^[^\x00]*$")  # PostgreSQL text has no NUL

    @field_validator("scheduled_for", "started_at", "finished_at")
    @classmethod
    def _plausible(cls, value: datetime | None) -> datetime | None:
        """Years 1 and 9999 parse, but do not survive a time-zone shift into PostgreSQL: refuse, and say so."""
        if value is None:
            return None
        if not RUN_YEARS[0] <= value.year < RUN_YEARS[1]:
            raise ValueError(f"must be between the years {RUN_YEARS[0]} and {RUN_YEARS[1]}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SyncRunReport:
        if self.started_at and self.finished_at and self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        if self.outcome == "running" and self.finished_at:
            raise ValueError("a running run has no finished_at")
        return self


def run_json(run: SyncRun) -> dict[str, Any]:
    return {"scheduled_for": iso(run.scheduled_for), "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at), "outcome": run.outcome, "error_message": run.error_message}


async def post_sync_run(request: web.Request) -> web.Response:
    """Record a sync run idempotently: the same period again updates it; a changed finished outcome is 409."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        return error_json(415, f"send the run as JSON (Content-Type: application/json), not {request.content_type}")
    try:
        report = SyncRunReport.model_validate_json(await request.read())
    except ValidationError as exc:
        return error_json(400, f"invalid sync run: {describe_validation_error(exc, '', root='')}")
    run = SyncRun(report.scheduled_for, report.outcome, report.started_at, report.finished_at, report.error_message)
    accepted, stored = await request.app[SERVICES].store.report_sync_run(report.org_id, report.integration_type, run)
    if not accepted:
        return web.json_response({"error": f"the run for {iso(report.scheduled_for)} already finished with "
                                           f"outcome {stored.outcome!r}", "run": run_json(stored)}, status=409)
    return web.json_response({"run": run_json(stored)})


async def get_metrics(request: web.Request) -> web.Response:
    """Render the snapshot (never the database); gzip when asked, from a cache that lives per snapshot."""
    gz = "gzip" in request.headers.get("Accept-Encoding", "")
    headers = {"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
    if gz:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=await request.app[SERVICES].metrics.render_off_loop(compressed=gz), headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    problems = []
    try:
        async with asyncio.timeout(2):
            async with services.store.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as exc:
        problems.append(f"database unreachable: {type(exc).__name__}")
    if services.loop_task is None or services.loop_task.done():
        problems.append("scheduler is not running")
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready", "queued_results": services.outbox.pending})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(OPENAPI), content_type="application/json")


def create_app(settings: Settings, dsn: str, *, adapters: Mapping[str, AdapterFactory] = ADAPTERS,
               on_cycle: Callable[..., Any] | None = None) -> web.Application:
    """Build the service; the cleanup context opens its resources when the app starts."""
    app = web.Application(middlewares=[errors_as_json, bearer_auth])
    app[SETTINGS], app[DSN], app[ADAPTERS_KEY] = settings, dsn, dict(adapters)
    if on_cycle:
        app[ON_CYCLE] = on_cycle
    app.cleanup_ctx.append(services_ctx)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/orgs/{org_id}/health", get_health)
    app.router.add_get("/api/v1/orgs/{org_id}/health/history", get_history)
    app.router.add_post("/api/v1/orgs/{org_id}/checks", post_checks)
    app.router.add_post("/api/v1/sync-runs", post_sync_run)
    return app
