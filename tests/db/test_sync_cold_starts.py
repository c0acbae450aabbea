"""Cold starts of the sync function on real PostgreSQL: reported on sync runs (API, counted, exported), warmed
before a scheduled sync by the running service, and the sync-run source a deployer redefines over their log."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest
from aiohttp import web

from exporter.core.warmups import WARMUP_HEADER
from exporter.web.api import SERVICES
from tests.helpers import AUTH, gauges, settings_for, wait_until

HOUR = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW = HOUR + timedelta(minutes=20)


@pytest.fixture
async def service(db_dsn, service_client):
    async def start(now: datetime = NOW, **overrides):
        client = await service_client(settings_for(db_dsn, **overrides), db_dsn, clock=lambda: now)
        await wait_until(lambda: client.app[SERVICES].scheduler.last_slot is not None, what="the first cycle")
        return client
    return start


def report(org, scheduled=HOUR, **extra):
    return {"org_id": str(org), "integration_type": "xledger", "scheduled_for": scheduled.isoformat(),
            "started_at": scheduled.isoformat(), "finished_at": (scheduled + timedelta(minutes=2)).isoformat(),
            "outcome": "success"} | extra


async def add_scheduled(admin, org, warmup_url: str | None = None, mode: str = "passive") -> None:
    await admin.execute(
        "INSERT INTO integration_config (org_id, integration_type, config, health_mode, sync_period_seconds, "
        "sync_grace_seconds, sync_warmup_url) VALUES ($1, 'xledger', '{}', $2, 3600, 300, $3)", org, mode, warmup_url)


def cold_starts(metrics: dict, source: str) -> float:
    return metrics["integration_health_sync_cold_starts_total"][(("integration_type", "xledger"), ("source", source))]


async def test_a_reported_cold_start_is_stored_counted_once_and_its_latency_exported(service, admin) -> None:
    org = uuid4()
    await add_scheduled(admin, org)
    client = await service()
    body = report(org, cold_start=True, invocation_latency_ms=2400)
    for _ in range(2):  # a retry of the same report: one row, one cold start
        resp = await client.post("/api/v1/sync-runs", json=body, headers=AUTH)
        assert resp.status == 200, await resp.text()
        run = (await resp.json())["run"]
        assert (run["cold_start"], run["invocation_latency_ms"]) == (True, 2400)
    row = await admin.fetchrow("SELECT cold_start, invocation_latency_ms FROM integration_sync_runs WHERE org_id = $1",
                               org)
    assert tuple(row) == (True, 2400)
    scheduler = client.app[SERVICES].scheduler
    for minutes in (25, 30):  # two cycles see the same run: it counts once
        await scheduler.run_cycle(HOUR + timedelta(minutes=minutes), HOUR + timedelta(minutes=minutes))
    metrics = gauges(await (await client.get("/metrics")).text())
    assert cold_starts(metrics, "sync_run") == 1
    key = (("integration_type", "xledger"), ("org_id", str(org)))
    assert metrics["integration_health_sync_invocation_latency_seconds"][key] == 2.4


async def test_cold_starts_already_reported_before_a_start_are_not_counted_again(service, admin) -> None:
    org = uuid4()
    await add_scheduled(admin, org)
    await admin.execute("INSERT INTO integration_sync_runs (org_id, integration_type, scheduled_for, outcome, "
                        "cold_start) VALUES ($1, 'xledger', $2, 'success', true)", org, HOUR)
    client = await service()
    metrics = gauges(await (await client.get("/metrics")).text())
    assert cold_starts(metrics, "sync_run") == 0


async def test_a_running_run_that_finishes_cold_counts_when_the_flag_arrives(service, admin) -> None:
    org = uuid4()
    await add_scheduled(admin, org)
    client = await service()
    running = report(org, outcome="running")
    del running["finished_at"]
    assert (await client.post("/api/v1/sync-runs", json=running, headers=AUTH)).status == 200
    scheduler = client.app[SERVICES].scheduler
    await scheduler.run_cycle(HOUR + timedelta(minutes=25), HOUR + timedelta(minutes=25))
    assert (await client.post("/api/v1/sync-runs", json=report(org, cold_start=True), headers=AUTH)).status == 200
    await scheduler.run_cycle(HOUR + timedelta(minutes=30), HOUR + timedelta(minutes=30))
    assert cold_starts(gauges(await (await client.get("/metrics")).text()), "sync_run") == 1


@pytest.mark.parametrize(("extra", "error"), [
    ({"cold_start": "yes"}, "cold_start: input should be a valid boolean"),
    ({"cold_start": 1}, "cold_start: input should be a valid boolean"),
    ({"invocation_latency_ms": -1}, "invocation_latency_ms: input should be greater than or equal to 0"),
    ({"invocation_latency_ms": 86_400_001}, "invocation_latency_ms: input should be less than or equal to 86400000"),
    ({"invocation_latency_ms": 1.5}, "invocation_latency_ms: input should be a valid integer"),
    ({"invocation_latency_ms": "2400"}, "invocation_latency_ms: input should be a valid integer"),
    ({"invocation_latency_ms": 10**30}, "invocation_latency_ms: input should be less than or equal to 86400000"),
])
async def test_a_bad_cold_start_field_is_a_400_naming_it_and_stores_nothing(service, admin, extra, error) -> None:
    client, org = await service(), uuid4()
    resp = await client.post("/api/v1/sync-runs", json=report(org, **extra), headers=AUTH)
    assert resp.status == 400
    assert resp.content_type == "application/json"
    assert error in (await resp.json())["error"]
    assert await admin.fetchval("SELECT count(*) FROM integration_sync_runs WHERE org_id = $1", org) == 0


async def test_the_running_service_warms_the_sync_function_up_before_its_scheduled_sync(
        service, admin, aiohttp_server) -> None:
    seen: list[str] = []

    async def function(request: web.Request) -> web.Response:
        seen.append(request.headers.get(WARMUP_HEADER, ""))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/functions/v1/xledger-sync", function)
    server = await aiohttp_server(app)
    org = uuid4()
    await add_scheduled(admin, org, f"http://127.0.0.1:{server.port}/functions/v1/xledger-sync")
    client = await service(now=HOUR + timedelta(minutes=59, seconds=45))  # 15 s before the 13:00 sync
    snapshot = client.app[SERVICES].snapshot
    await wait_until(lambda: (org, "xledger") in snapshot.warmups, what="the warm-up")
    assert seen == ["1"]
    warm = snapshot.warmups[(org, "xledger")]
    assert (warm.outcome.value, warm.sync_at) == ("warm", HOUR + timedelta(hours=1))
    metrics = gauges(await (await client.get("/metrics")).text())
    assert metrics["integration_health_sync_warmups_total"][(("outcome", "warm"),)] == 1
    key = (("integration_type", "xledger"), ("org_id", str(org)))
    assert metrics["integration_health_sync_warmup_consecutive_failures"][key] == 0


async def test_an_overlong_warm_up_url_is_refused_by_the_column_too(admin) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await add_scheduled(admin, uuid4(), "https://fn.example.com/" + "a" * 2100)


# A deployer's own export log, shaped as a sync component might keep it (made up: the specification names
# the table, not its columns). The view maps it onto the columns the monitor reads.
AUDIT_LOG = """
CREATE TABLE public.bufdir_export_audit_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization  uuid        NOT NULL,
    target_system text        NOT NULL,
    period_start  timestamptz NOT NULL,
    exported_at   timestamptz,
    completed_at  timestamptz,
    status        text        NOT NULL CHECK (status IN ('pending', 'exported', 'failed')),
    details       jsonb       NOT NULL DEFAULT '{}'
);
ALTER TABLE public.bufdir_export_audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_service_role ON public.bufdir_export_audit_log FOR ALL TO service_role USING (true);
"""


def readme_source_view() -> str:
    """The README's example mapping, as printed there: this test runs what deployers copy."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### The sync-run source", 1)[1]
    return re.search(r"```sql\n(.*?)```", section, re.S).group(1)


async def test_a_view_redefined_over_the_deployers_export_log_drives_passive_health(service, admin) -> None:
    org = uuid4()
    await add_scheduled(admin, org)
    await admin.execute(AUDIT_LOG)
    await admin.execute(readme_source_view())
    assert await admin.fetchval("SELECT reloptions FROM pg_class WHERE relname = "
                                "'integration_health_sync_runs_source'") == ["security_invoker=true"]
    await admin.execute(
        "INSERT INTO bufdir_export_audit_log (organization, target_system, period_start, exported_at, completed_at, "
        "status, details) VALUES ($1, 'xledger', $2, $2, $3, 'failed', $4::jsonb)", org, HOUR,
        HOUR + timedelta(minutes=1), json.dumps({"error": "Bufdir rejected the export: 422", "cold_start": True}))
    client = await service()
    row = await admin.fetchrow("SELECT status, reason, error_message FROM integration_health_status WHERE org_id = $1",
                               org)
    assert tuple(row) == ("unreachable", "sync_failed", "last sync failed: Bufdir rejected the export: 422")
    assert await admin.fetchval("SELECT count(*) FROM integration_sync_runs") == 0  # the log alone drove it
    metrics = gauges(await (await client.get("/metrics")).text())
    key = (("integration_type", "xledger"), ("org_id", str(org)), ("state", "failed"))
    assert metrics["integration_health_sync_state"][key] == 1.0


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_client_roles_cannot_read_the_sync_run_source(admin, role: str) -> None:
    """Apps read integration_sync_runs under its policies; the view is the exporter's (and a redefinition
    over a deployer's log must not open that log to every signed-in user)."""
    await admin.execute("INSERT INTO integration_sync_runs (org_id, integration_type, scheduled_for, outcome) "
                        "VALUES ($1, 'xledger', $2, 'success')", uuid4(), HOUR)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with admin.transaction():
            await admin.execute(f"SET LOCAL ROLE {role}")
            await admin.fetch("SELECT * FROM public.integration_health_sync_runs_source")
    async with admin.transaction():
        await admin.execute("SET LOCAL ROLE service_role")
        assert await admin.fetchval("SELECT count(*) FROM public.integration_health_sync_runs_source") == 1
