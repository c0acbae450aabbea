"""The real service on loopback against real PostgreSQL and the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from exporter.demo.embedded_pg import free_port
from exporter.demo.simulator import Mode
from exporter.web.api import SERVICES
from tests.helpers import AUTH, WEBHOOK_KEYS, add_http, gauges, settings_for, wait_until

# A fixed wall clock for the tests whose slot depends on the time of day (settings_for: one slot a day).
NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DAY_SLOT = datetime(2026, 11, 22, tzinfo=UTC)


async def test_a_cycle_runs_and_database_rows_and_gauges_agree(db_dsn, admin, sim, service_client) -> None:
    state, base = sim
    state.modes.update({"ok": Mode("healthy"), "down": Mode("server_error")})
    for tenant in ("ok", "down"):
        await add_http(admin, uuid4(), tenant, base)
    client = await service_client(settings_for(db_dsn), db_dsn)
    services = client.app[SERVICES]
    await wait_until(lambda: services.scheduler.last_slot is not None, what="the first cycle")
    metrics = gauges(await (await client.get("/metrics")).text())
    rows = await admin.fetch("SELECT org_id, integration_type, status, latency_ms FROM integration_health_status")
    assert len(rows) == 2
    for row in rows:
        key = (("integration_type", row["integration_type"]), ("org_id", str(row["org_id"])))
        for status in ("healthy", "degraded", "unreachable"):
            labels = tuple(sorted((*key, ("status", status))))
            assert metrics["integration_health_status"][labels] == (1.0 if status == row["status"] else 0.0)
        assert metrics["integration_health_latency_seconds"][key] == row["latency_ms"] / 1000
    assert {r["status"] for r in rows} == {"healthy", "unreachable"}
    assert metrics["integration_health_cycles_total"][(("outcome", "success"),)] == 1.0


async def test_restart_restores_gauges_before_the_first_cycle(db_dsn, admin, sim, service_client) -> None:
    state, base = sim
    org = uuid4()
    await add_http(admin, org, "ok", base)
    checked = NOON - timedelta(minutes=5)  # earlier in today's slot
    await admin.execute("INSERT INTO integration_health_status (org_id, integration_type, status, latency_ms, "
                        "checked_at, error_message, reason, consecutive_failures) "
                        "VALUES ($1, 'http', 'unreachable', 10000, $2, 'timed out', 'timeout', 3)", org, checked)
    client = await service_client(settings_for(db_dsn), db_dsn, clock=lambda: NOON)
    metrics = gauges(await (await client.get("/metrics")).text())
    key = (("integration_type", "http"), ("org_id", str(org)))
    assert metrics["integration_health_status"][tuple(sorted((*key, ("status", "unreachable"))))] == 1.0
    assert metrics["integration_health_consecutive_failures"][key] == 3.0
    scheduler = client.app[SERVICES].scheduler
    await wait_until(lambda: scheduler.last_slot is not None, what="the first cycle")
    assert scheduler.last_slot == DAY_SLOT
    assert state.requests == {}, "the slot was already checked: the first cycle should have checked nothing"


@pytest.fixture
async def api(db_dsn, admin, sim, service_client):
    state, base = sim
    org = uuid4()
    await add_http(admin, org, "ok", base)
    client = await service_client(settings_for(db_dsn), db_dsn)
    await wait_until(lambda: client.app[SERVICES].scheduler.last_slot is not None, what="the first cycle")
    return client, org


async def test_api_returns_current_status_and_history(api) -> None:
    client, org = api
    health = await (await client.get(f"/api/v1/orgs/{org}/health", headers=AUTH)).json()
    assert health["org_id"] == str(org)
    assert [(i["integration_type"], i["status"]) for i in health["integrations"]] == [("http", "healthy")]
    history = await (await client.get(f"/api/v1/orgs/{org}/health/history", headers=AUTH)).json()
    assert [len(i["slots"]) for i in history["integrations"]] == [1]


@pytest.mark.parametrize(("method", "path", "headers", "status", "error"), [
    ("GET", "/api/v1/orgs/not-a-uuid/health", AUTH, 400, "org_id must be a UUID"),
    ("GET", "/api/v1/orgs/{org}/health", {}, 401, "missing or wrong bearer token"),
    ("GET", "/api/v1/orgs/{org}/health", {"Authorization": "Bearer wrong"}, 401, "missing or wrong bearer token"),
    ("POST", f"/api/v1/orgs/{uuid4()}/checks", AUTH, 404, "has no enabled active integrations"),
    ("GET", "/api/v1/nope", AUTH, 404, "Not Found"),
])
async def test_api_errors_are_json_with_a_reason(api, method, path, headers, status, error) -> None:
    client, org = api
    resp = await client.request(method, path.format(org=org), headers=headers)
    assert resp.status == status
    body = await resp.json()
    assert error in body["error"]
    assert "Traceback" not in json.dumps(body)


async def test_run_now_runs_persists_and_is_rate_limited_per_org(api, admin) -> None:
    client, org = api
    first = await client.post(f"/api/v1/orgs/{org}/checks", headers=AUTH)
    assert first.status == 200
    assert (await first.json())["integrations"][0]["status"] == "healthy"
    second = await client.post(f"/api/v1/orgs/{org}/checks", headers=AUTH)
    assert second.status == 429
    assert 0 < int(second.headers["Retry-After"]) <= 60
    assert await admin.fetchval("SELECT count(*) FROM integration_health_status WHERE org_id = $1", org) == 1


async def test_without_a_token_configured_the_api_is_disabled_but_metrics_work(db_dsn, service_client) -> None:
    client = await service_client(settings_for(db_dsn, api_token=None), db_dsn)
    resp = await client.get(f"/api/v1/orgs/{uuid4()}/health")
    assert (resp.status, (await resp.json())["error"]) == (503, "the API is disabled (EXPORTER_API_ENABLED=false, "
                                                                "or none of EXPORTER_API_TOKEN, EXPORTER_JWT_SECRET, "
                                                                "EXPORTER_JWT_JWKS_URL is set)")
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/api/v1/openapi.json")).status == 200


async def test_readyz_reports_database_and_scheduler(api) -> None:
    client, _ = api
    resp = await client.get("/readyz")
    assert (resp.status, (await resp.json())["status"]) == (200, "ready")


async def test_sigterm_mid_cycle_loses_no_result_and_exits_0(db_dsn, admin, sim) -> None:
    state, base = sim
    org = uuid4()
    state.modes.update({"slow": Mode("hang"), "ok": Mode("healthy")})
    await add_http(admin, org, "slow", base)
    await add_http(admin, org, "ok", base, kind="fiken")
    env = {**os.environ, "DATABASE_URL": db_dsn, "EXPORTER_PORT": str(free_port()), "EXPORTER_CHECK_INTERVAL": "86400",
           "EXPORTER_CHECK_TIMEOUT_SECONDS": "3", "EXPORTER_CREDENTIAL_PROVIDER": "none",
           "EXPORTER_API_ENABLED": "false", "EXPORTER_EGRESS_ALLOW": "127.0.0.1",
           "EXPORTER_WEBHOOK_SECRET_KEYS": WEBHOOK_KEYS}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "exporter", "serve", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    await wait_until(lambda: state.requests.get("slow"), what="the hanging check to start")
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, out.decode()
    rows = {r["integration_type"]: r["error_message"] for r in await admin.fetch(
        "SELECT integration_type, error_message FROM integration_health_status WHERE org_id = $1", org)}
    assert rows == {"http": "timed out after 3 s",
                    "fiken": "credential unavailable: this integration needs a credential_ref"}



@pytest.mark.parametrize(("settings", "error"), [
    ({}, "the API has no way to authenticate anyone: set EXPORTER_API_TOKEN"),
    ({"EXPORTER_API_TOKEN": "PLANTED-9c1"}, "EXPORTER_API_TOKEN is shorter than 16 characters"),
    ({"EXPORTER_JWT_SECRET": "PLANTED-jwt-9c1"}, "EXPORTER_JWT_SECRET: shorter than 32 characters"),
])
async def test_serve_refuses_to_start_an_open_or_weakly_guarded_api(db_dsn, settings, error) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTER_")} | {
        "DATABASE_URL": db_dsn, "EXPORTER_PORT": str(free_port())} | settings
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "exporter", "serve", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2, out.decode()
    assert error in out.decode()
    assert not any(secret in out.decode() for secret in settings.values()), "a secret is never echoed"


async def test_a_restart_mid_slot_checks_only_what_the_slot_still_owes(db_dsn, admin, sim, service_client) -> None:
    """A crash after part of a slot was written (passive results, a run-now): the rest still gets checked."""
    state, base = sim
    done, owed = uuid4(), uuid4()
    await add_http(admin, done, "done", base)
    await add_http(admin, owed, "owed", base)
    slot = DAY_SLOT  # the fixed clock's day: a run at midnight UTC cannot move the slot under the test
    for org, checked, next_check in ((done, NOON, slot + timedelta(days=1)), (owed, slot - timedelta(hours=1), slot)):
        await admin.execute("INSERT INTO integration_health_status (org_id, integration_type, status, latency_ms, "
                            "checked_at, next_check_at) VALUES ($1, 'http', 'healthy', 5, $2, $3)",
                            org, checked, next_check)
    client = await service_client(settings_for(db_dsn), db_dsn, clock=lambda: NOON + timedelta(minutes=1))
    await wait_until(lambda: client.app[SERVICES].scheduler.last_slot is not None, what="the first cycle")
    assert state.requests == {"owed": 1}
