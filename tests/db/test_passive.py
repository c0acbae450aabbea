"""Passive health and sync runs against real PostgreSQL: reporting, derivation, fallback, drift metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from exporter.demo.simulator import Mode
from exporter.storage.store import REPORT_SYNC_RUN
from exporter.web.api import SERVICES
from tests.helpers import AUTH, add_http, gauges, settings_for, wait_until

# The service runs on a fixed wall clock, 20 minutes into an hour: whether a sync is late depends on the
# time of day, and a test must not pass or fail by the minute it happens to run in.
HOUR = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW = HOUR + timedelta(minutes=20)


@pytest.fixture
async def service(db_dsn, admin, sim, service_client):
    async def start(now: datetime = NOW, **overrides):
        client = await service_client(settings_for(db_dsn, **overrides), db_dsn, clock=lambda: now)
        await wait_until(lambda: client.app[SERVICES].scheduler.last_slot is not None, what="the first cycle")
        return client
    return start


def report(org, kind="xledger", scheduled=NOW - timedelta(hours=1), outcome="success", **extra):
    body = {"org_id": str(org), "integration_type": kind, "scheduled_for": scheduled.isoformat(), "outcome": outcome,
            "started_at": scheduled.isoformat()}
    if outcome != "running":
        body["finished_at"] = (scheduled + timedelta(minutes=2)).isoformat()
    return body | extra


async def test_reporting_the_same_period_twice_keeps_one_row(service, admin) -> None:
    client, org = await service(), uuid4()
    for _ in range(2):
        resp = await client.post("/api/v1/sync-runs", json=report(org), headers=AUTH)
        assert resp.status == 200, await resp.text()
    assert await admin.fetchval("SELECT count(*) FROM integration_sync_runs WHERE org_id = $1", org) == 1


async def test_a_running_run_can_finish_but_a_finished_one_cannot_change_outcome(service, admin) -> None:
    client, org = await service(), uuid4()
    assert (await client.post("/api/v1/sync-runs", json=report(org, outcome="running"), headers=AUTH)).status == 200
    assert (await client.post("/api/v1/sync-runs", json=report(org, outcome="success"), headers=AUTH)).status == 200
    conflict = await client.post("/api/v1/sync-runs", json=report(org, outcome="failure", error_message="x"),
                                 headers=AUTH)
    assert conflict.status == 409
    body = await conflict.json()
    assert body["run"]["outcome"] == "success" and "already finished" in body["error"]
    assert await admin.fetchval("SELECT outcome FROM integration_sync_runs WHERE org_id = $1", org) == "success"


@pytest.mark.parametrize(("payload", "error"), [
    ({"outcome": "maybe"}, "outcome: input should be 'success', 'failure' or 'running'"),
    ({"scheduled_for": "2026-01-01T02:00:00"}, "scheduled_for: input should have timezone info"),
    ({"bogus": 1}, "bogus: extra inputs are not permitted"),
    ({"outcome": "running", "finished_at": NOW.isoformat()}, "a running run has no finished_at"),
])
async def test_a_bad_sync_run_payload_is_a_400_naming_the_field(service, payload, error) -> None:
    client = await service()
    resp = await client.post("/api/v1/sync-runs", json=report(uuid4()) | payload, headers=AUTH)
    assert resp.status == 400
    assert error in (await resp.json())["error"]


async def test_the_documented_direct_sql_is_idempotent_for_the_service_role(admin) -> None:
    org, at = uuid4(), NOW - timedelta(hours=2)
    async with admin.transaction():
        await admin.execute("SET LOCAL ROLE service_role")
        for _ in range(2):
            row = await admin.fetchrow(REPORT_SYNC_RUN, org, "fiken", at, at, at + timedelta(minutes=1), "success",
                                       None, True, 2400)
            assert row["outcome"] == "success"
        assert await admin.fetchrow(REPORT_SYNC_RUN, org, "fiken", at, at, at, "failure", "late", None, None) is None
    assert await admin.fetchval("SELECT count(*) FROM integration_sync_runs WHERE org_id = $1", org) == 1
    stored = await admin.fetchrow("SELECT cold_start, invocation_latency_ms FROM integration_sync_runs "
                                  "WHERE org_id = $1", org)
    assert tuple(stored) == (True, 2400)


async def add_passive(admin, org, kind: str, cron: str | None = None, period_s: int | None = 3600) -> None:
    await admin.execute(
        "INSERT INTO integration_config (org_id, integration_type, config, health_mode, sync_cron, sync_period_seconds,"
        " sync_grace_seconds) VALUES ($1, $2, '{}', 'passive', $3, $4, 300)", org, kind, cron, period_s)


async def add_run(admin, org, kind, scheduled, outcome="success", drift=timedelta(0), error=None) -> None:
    await admin.execute("INSERT INTO integration_sync_runs (org_id, integration_type, scheduled_for, started_at, "
                        "finished_at, outcome, error_message) VALUES ($1, $2, $3, $4, $5, $6, $7)", org, kind, scheduled,
                        scheduled + drift, scheduled + drift + timedelta(seconds=90), outcome, error)


@pytest.mark.parametrize(("minutes", "late_status", "late_error"), [
    (2, "healthy", None),  # within the 5-minute grace: the previous hour's run still stands
    (20, "degraded", "sync late by 20 min"),
], ids=["within-grace", "past-grace"])
async def test_passive_integrations_are_never_pinged_and_get_status_and_history_from_runs(
        service, admin, sim, minutes, late_status, late_error) -> None:
    state, base = sim
    hour = HOUR
    ok, failed, late = uuid4(), uuid4(), uuid4()
    for org in (ok, failed, late):
        await add_passive(admin, org, "xledger")
    await add_run(admin, ok, "xledger", hour)
    await add_run(admin, failed, "xledger", hour, outcome="failure", error="export rejected: 422")
    await add_run(admin, late, "xledger", hour - timedelta(hours=1))  # this hour's run has not started
    client = await service(now=hour + timedelta(minutes=minutes))
    rows = {r["org_id"]: r for r in await admin.fetch(
        "SELECT org_id, status, error_message, reason, latency_ms, checked_at FROM integration_health_status")}
    assert (rows[ok]["status"], rows[ok]["latency_ms"]) == ("healthy", 90_000)
    assert (rows[failed]["status"], rows[failed]["error_message"]) == ("unreachable",
                                                                      "last sync failed: export rejected: 422")
    # Judged when the cycle ran (its checked_at, the fixed clock's time): grace is 5 min.
    assert {r["checked_at"] for r in rows.values()} == {hour + timedelta(minutes=minutes)}
    assert (rows[late]["status"], rows[late]["error_message"]) == (late_status, late_error)
    assert state.requests == {}, "a passive integration was pinged"
    assert await admin.fetchval("SELECT count(*) FROM health_check_history") == 3
    metrics = gauges(await (await client.get("/metrics")).text())
    key = (("integration_type", "xledger"), ("mode", "passive"), ("org_id", str(ok)))
    assert metrics["integration_health_mode"][key] == 1.0


async def test_passive_types_setting_makes_a_whole_type_passive(service, admin, sim) -> None:
    state, base = sim
    org = uuid4()
    await add_http(admin, org, "ok", base)
    await add_run(admin, org, "http", NOW - timedelta(minutes=30))
    await service(passive_types="http,xledger")
    assert state.requests == {}
    assert await admin.fetchval("SELECT status FROM integration_health_status WHERE org_id = $1", org) == "healthy"


async def test_sync_drift_over_5_minutes_is_visible_in_metrics(service, admin) -> None:
    org = uuid4()
    await add_passive(admin, org, "fiken")
    await add_run(admin, org, "fiken", HOUR, drift=timedelta(minutes=6))
    client = await service()
    metrics = gauges(await (await client.get("/metrics")).text())
    key = (("integration_type", "fiken"), ("org_id", str(org)))
    assert metrics["integration_health_sync_drift_seconds"][key] == 360.0
    finished = HOUR + timedelta(minutes=6, seconds=90)  # add_run: started with the drift, 90 s long
    assert metrics["integration_health_sync_last_success_timestamp_seconds"][key] == finished.timestamp()


async def test_repeated_throttling_switches_to_passive_and_back_after_the_cool_down(service, admin, sim) -> None:
    state, base = sim
    org = uuid4()
    state.modes["busy"] = Mode("rate_limited", retry_after=1)
    await add_http(admin, org, "busy", base)
    await admin.execute("UPDATE integration_config SET sync_period_seconds = 3600 WHERE org_id = $1", org)
    client = await service(rate_limit_fallback_after=3, passive_cooldown_seconds=6 * 3600, check_interval=900)
    scheduler = client.app[SERVICES].scheduler
    start = scheduler.last_slot
    for n in range(1, 3):  # cycles 2 and 3, far enough apart that backoff never skips them
        await scheduler.run_cycle(start + timedelta(hours=4 * n), start + timedelta(hours=4 * n))
    assert state.requests["busy"] == 3
    snapshot = client.app[SERVICES].snapshot
    assert snapshot.results[(org, "http")].state.passive_until == start + timedelta(hours=8 + 6)
    await scheduler.run_cycle(start + timedelta(hours=12), start + timedelta(hours=12))
    assert state.requests["busy"] == 3, "pinged while passive"
    assert snapshot.modes[(org, "http")] == "passive"
    state.modes["busy"] = Mode("healthy")
    await scheduler.run_cycle(start + timedelta(hours=16), start + timedelta(hours=16))
    assert (state.requests["busy"], snapshot.modes[(org, "http")]) == (4, "active")
    assert snapshot.results[(org, "http")].result.status.value == "healthy"
    stored = await admin.fetchval("SELECT passive_until FROM integration_health_status WHERE org_id = $1", org)
    assert stored == start + timedelta(hours=14)


async def test_an_invalid_sync_schedule_fails_that_integration_only(service, admin) -> None:
    org, other = uuid4(), uuid4()
    await add_passive(admin, org, "xledger", cron="99 * * * *", period_s=None)
    await add_passive(admin, other, "xledger")
    await add_run(admin, other, "xledger", HOUR)
    await service()
    rows = {r["org_id"]: (r["status"], r["error_message"]) for r in await admin.fetch(
        "SELECT org_id, status, error_message FROM integration_health_status")}
    assert rows[org] == ("unreachable", "invalid configuration: sync schedule: invalid cron expression '99 * * * *'")
    assert rows[other][0] == "healthy"


