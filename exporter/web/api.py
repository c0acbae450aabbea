"""The HTTP API's handlers and middlewares: /api/v1 and /metrics (bearer tokens), /healthz, /readyz."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.core.model import IntegrationResult, describe_validation_error
from exporter.core.syncs import SyncRun
from exporter.services import Services
from exporter.settings import Settings
from exporter.storage.store import TRANSIENT_ERRORS
from exporter.web.auth import Authenticator, Refused, access_refused, bearer_token
from exporter.web.jwks import JwksUnavailable
from exporter.web.metrics import Exposition
from exporter.web.openapi import OPENAPI

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The web process's own state: the scheduler's task, the stop signal, when each org last ran "now"."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    loop_task: asyncio.Task[None] | None = None
    lease_task: asyncio.Task[None] | None = None  # only with shard leases
    warmup_task: asyncio.Task[None] | None = None  # warm-ups before scheduled syncs
    lag_task: asyncio.Task[None] | None = None  # the event-loop lag probe
    notifier_task: asyncio.Task[None] | None = None  # only with a database (webhook deliveries)
    run_now_at: dict[UUID, float] = field(default_factory=dict)  # org → monotonic time of the last run-now


SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
RUNTIME = web.AppKey("runtime", Runtime)
EXPOSITION = web.AppKey("exposition", Exposition)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)


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
    except TRANSIENT_ERRORS as exc:  # infrastructure, not the caller's fault: say so, and when to retry
        log.warning("database unreachable in %s %s: %s", request.method, request.path, type(exc).__name__)
        return error_json(503, "the database is unreachable; try again shortly", **{"Retry-After": "30"})
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_json(500, "internal error")


API_DISABLED = ("the API is disabled (EXPORTER_API_ENABLED=false, or none of EXPORTER_API_TOKEN, "
                "EXPORTER_JWT_SECRET, EXPORTER_JWT_JWKS_URL is set)")


def bearer_matches(request: web.Request, expected: SecretStr) -> bool:
    """`Authorization: Bearer <expected>`, compared in constant time."""
    given = bearer_token(request.headers.get("Authorization")) or ""
    return hmac.compare_digest(given.encode(errors="surrogateescape"), expected.get_secret_value().encode())


def unauthorized() -> web.Response:
    return error_json(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})


@web.middleware
async def bearer_auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """/metrics needs EXPORTER_METRICS_TOKEN when one is set (it names every org and vendor); the /api/v1
    routes (but their OpenAPI description) need a bearer token: the operator's for every route and
    organisation, an app user's JWT for /api/v1/orgs/{org_id}/… of its own organisations; /healthz and
    /readyz stay open for probes."""
    settings = request.app[SETTINGS]
    if request.match_info.handler is get_metrics:  # by route, not path, so no spelling of the URL slips by
        if settings.metrics_token and not bearer_matches(request, settings.metrics_token):
            return unauthorized()
        return await handler(request)
    if not request.path.startswith("/api/v1/") or request.path == "/api/v1/openapi.json":
        return await handler(request)
    authenticator = request.app[AUTHENTICATOR]
    if not settings.api_enabled or not authenticator.configured:
        return error_json(503, API_DISABLED)
    try:
        caller = await authenticator.caller(request.headers.get("Authorization"))
    except Refused as refused:
        return error_json(refused.status, refused.reason,
                          **({"WWW-Authenticate": refused.challenge} if refused.challenge else {}))
    except JwksUnavailable:  # infrastructure, not the caller's fault
        return error_json(503, "the app's signing keys (JWKS) could not be fetched; try again shortly",
                          **{"Retry-After": "30"})
    reason = access_refused(caller, request)
    if reason is not None:
        log.info("refused %s %s to %s: %s", request.method, request.path, caller.subject, reason)
        return error_json(403, reason)
    return await handler(request)


def org_id_of(request: web.Request) -> UUID:
    return uuid_or_400(request.match_info["org_id"], "org_id")


def uuid_or_400(text: str, what: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise web.HTTPBadRequest(reason=f"{what} must be a UUID") from None


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def result_json(r: IntegrationResult) -> dict[str, Any]:
    return {"integration_type": r.integration_type, "status": r.result.status.value,
            "latency_ms": r.result.latency_ms, "checked_at": iso(r.result.checked_at), "error": r.result.error,
            "reason": r.result.reason.value if r.result.reason else None,
            "consecutive_failures": r.state.consecutive_failures, "next_check_at": iso(r.state.next_check_at),
            "tls_expires_at": iso(r.result.tls_expires_at), "maintenance": r.maintenance,
            "credential_expires_at": iso(r.result.credential_expires_at),
            **vendor_incident_json(r.result.vendor_incident_since)}


def vendor_incident_json(since: datetime | None) -> dict[str, Any]:
    """The vendor-wide incident a result belongs to: its start, and a sentence an organisation's admin can read
    next to the error ("vendor-wide incident since 10:15 UTC": the vendor is down for everyone)."""
    return {"vendor_incident_since": iso(since),
            "vendor_incident": f"vendor-wide incident since {since.astimezone(UTC):%H:%M} UTC" if since else None}


async def get_health(request: web.Request) -> web.Response:
    org_id, services = org_id_of(request), request.app[SERVICES]
    results = await services.store.last_results(org_id)  # enabled integrations only; none is an empty list
    return web.json_response({"org_id": str(org_id), "integrations": [result_json(r) for r in results]})


async def get_history(request: web.Request) -> web.Response:
    """The stored slots per integration, and its availability over them with maintenance slots left out."""
    org_id, services = org_id_of(request), request.app[SERVICES]
    rows = await services.store.history(org_id)
    availability = {r["integration_type"]: r["availability"] for r in await services.store.availability(org_id)}
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(r["integration_type"], []).append({
            "slot": iso(r["slot"]), "status": r["status"], "latency_ms": r["latency_ms"],
            "checked_at": iso(r["checked_at"]), "error": r["error_message"], "reason": r["reason"],
            "maintenance": r["maintenance"], **vendor_incident_json(r["vendor_incident_since"])})
    return web.json_response({"org_id": str(org_id), "integrations": [
        {"integration_type": kind, "availability": availability.get(kind), "slots": slots}
        for kind, slots in series.items()]})


async def post_checks(request: web.Request) -> web.Response:
    """Run an org's checks now ("test connection"), at most once per org per run_now_min_interval."""
    org_id, services, runtime = org_id_of(request), request.app[SERVICES], request.app[RUNTIME]
    min_gap = request.app[SETTINGS].run_now_min_interval_seconds
    last = runtime.run_now_at.get(org_id)
    now = time.monotonic()
    if last is not None and now - last < min_gap:
        wait = math.ceil(min_gap - (now - last))
        return error_json(429, f"checks for this organisation ran less than {min_gap:g} s ago; retry in {wait} s",
                          **{"Retry-After": str(wait)})
    runtime.run_now_at[org_id] = now
    try:
        results = await services.scheduler.run_health_checks(org_id)
    except Exception:
        runtime.run_now_at.pop(org_id, None)  # nothing ran: the next press must not wait
        raise
    if not results:
        runtime.run_now_at.pop(org_id, None)
        raise web.HTTPNotFound(reason=f"organisation {org_id} has no enabled active integrations")
    return web.json_response({"org_id": str(org_id), "integrations": [result_json(r) for r in results],
                              "stored": services.scheduler.owns(org_id)})


RUN_YEARS = (2000, 2200)
MAX_INVOCATION_MS = 86_400_000  # a day, as the column's CHECK


def within_run_years(value: datetime) -> datetime:
    """Years 1 and 9999 parse, but do not survive a time-zone shift into PostgreSQL: refuse, and say so."""
    if not RUN_YEARS[0] <= value.year < RUN_YEARS[1]:
        raise ValueError(f"must be between the years {RUN_YEARS[0]} and {RUN_YEARS[1]}")
    return value


def json_refused(request: web.Request, what: str) -> web.Response | None:
    """415 unless the body is declared JSON (a form post must not be read as one)."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        return error_json(415, f"send {what} as JSON (Content-Type: application/json), not {request.content_type}")
    return None


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
    cold_start: StrictBool | None = None  # the sync function started cold (as its platform or timing tells)
    invocation_latency_ms: StrictInt | None = Field(default=None, ge=0, le=MAX_INVOCATION_MS)

    @field_validator("scheduled_for", "started_at", "finished_at")
    @classmethod
    def _plausible(cls, value: datetime | None) -> datetime | None:
        return None if value is None else within_run_years(value)

    @model_validator(mode="after")
    def _consistent(self) -> SyncRunReport:
        if self.started_at and self.finished_at and self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        if self.outcome == "running" and self.finished_at:
            raise ValueError("a running run has no finished_at")
        return self


def run_json(run: SyncRun) -> dict[str, Any]:
    return {"scheduled_for": iso(run.scheduled_for), "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at), "outcome": run.outcome, "error_message": run.error_message,
            "cold_start": run.cold_start, "invocation_latency_ms": run.invocation_latency_ms}


async def post_sync_run(request: web.Request) -> web.Response:
    """Record a sync run idempotently: the same period again updates it; a changed finished outcome is 409."""
    if (refused := json_refused(request, "the run")) is not None:
        return refused
    try:
        report = SyncRunReport.model_validate_json(await request.read())
    except ValidationError as exc:
        return error_json(400, f"invalid sync run: {describe_validation_error(exc, root='')}")
    run = SyncRun(report.scheduled_for, report.outcome, report.started_at, report.finished_at, report.error_message,
                  report.cold_start, report.invocation_latency_ms)
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
    return web.Response(body=await request.app[EXPOSITION].render_off_loop(compressed=gz), headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services, runtime = request.app[SERVICES], request.app[RUNTIME]
    problems = []
    try:
        async with asyncio.timeout(2):
            await services.store.ping()
    except Exception as exc:
        problems.append(f"database unreachable: {type(exc).__name__}")
    if runtime.loop_task is None or runtime.loop_task.done():
        problems.append("scheduler is not running")
    if services.shards is not None and (runtime.lease_task is None or runtime.lease_task.done()):
        problems.append("shard lease renewal is not running")
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready", "queued_results": services.outbox.pending})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(OPENAPI), content_type="application/json")
