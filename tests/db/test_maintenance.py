"""Maintenance windows on a real PostgreSQL: stored in UTC whatever offset they came with, listed by state and
organisation, and left out of availability (the API's figure and the history dashboard's SQL)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg

from exporter.core.maintenance import Window
from exporter.core.model import HealthStatus, IntegrationResult, Reason, make_result
from exporter.storage.store import Store
from tests.helpers import AUTH, settings_for

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SLOT = timedelta(minutes=15)


def window(org: UUID | None, kind: str | None, start: datetime, hours: float = 1, reason: str = "upgrade") -> Window:
    return Window(UUID(int=0), org, kind, start, start + timedelta(hours=hours), reason)


async def test_a_window_posted_at_plus_two_hours_is_stored_and_answered_in_utc(db_dsn, admin, service_client) -> None:
    client = await service_client(settings_for(db_dsn), db_dsn)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    local = start.astimezone(UTC).replace(tzinfo=None) + timedelta(hours=2)  # the same instant, read in +02:00
    body = {"integration_type": "xledger", "starts_at": local.isoformat() + "+02:00",
            "ends_at": (local + timedelta(hours=1)).isoformat() + "+02:00", "reason": "Xledger upgrade"}
    resp = await client.post("/api/v1/maintenance", json=body, headers=AUTH)
    assert resp.status == 201, await resp.text()
    answered = (await resp.json())["window"]
    assert answered["starts_at"] == start.isoformat() == start.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    row = await admin.fetchrow("SELECT starts_at AT TIME ZONE 'UTC' AS utc, org_id, integration_type, created_by "
                               "FROM maintenance_window")
    assert (row["utc"], row["org_id"], row["integration_type"], row["created_by"]) == (
        start.replace(tzinfo=None), None, "xledger", "operator")
    listed = await (await client.get("/api/v1/maintenance?state=upcoming", headers=AUTH)).json()
    assert [w["id"] for w in listed["windows"]] == [answered["id"]]
    deleted = await client.delete(f"/api/v1/maintenance/{answered['id']}", headers=AUTH)
    assert deleted.status == 200 and await admin.fetchval("SELECT count(*) FROM maintenance_window") == 0


async def test_windows_are_listed_by_state_and_by_the_organisation_they_apply_to(store: Store) -> None:
    a, b = uuid4(), uuid4()
    ended = await store.add_maintenance_window(window(a, None, T0 - timedelta(hours=3)))
    active_a = await store.add_maintenance_window(window(a, "http", T0 - timedelta(minutes=30)))
    active_all = await store.add_maintenance_window(window(None, None, T0 - timedelta(minutes=10)))
    upcoming_b = await store.add_maintenance_window(window(b, "fiken", T0 + timedelta(hours=2)))

    async def ids(**filters) -> list[UUID]:
        return [w.id for w in await store.maintenance_windows(T0, **filters)]

    assert await ids() == [active_a.id, active_all.id, upcoming_b.id]  # what the scheduler loads
    assert await ids(state="active") == [active_a.id, active_all.id]
    assert await ids(state="upcoming") == [upcoming_b.id]
    assert await ids(state="ended") == [ended.id]
    assert await ids(org_id=b) == [active_all.id, upcoming_b.id]
    assert active_a.starts_at.tzinfo is not None and active_a.created_at is not None
    assert await store.delete_maintenance_window(active_a.id) == active_a
    assert await store.delete_maintenance_window(active_a.id) is None


def result(org: UUID, status: HealthStatus, at: datetime, maintenance: bool = False) -> IntegrationResult:
    reason = None if status == HealthStatus.HEALTHY else Reason.HTTP_5XX
    return IntegrationResult(org, "http", make_result(status, 10, at, None, reason), maintenance=maintenance)


async def history_with_a_window(store: Store, admin: asyncpg.Connection) -> UUID:
    """Eight slots: healthy, four unreachable inside a window, one unreachable outside it, two healthy: 3 of
    the 4 slots outside the window were usable (counting the window's, it would be 3 of 8)."""
    org = uuid4()
    await admin.execute("INSERT INTO integration_config (org_id, integration_type, config, health_mode) "
                        "VALUES ($1, 'http', '{}', 'passive')", org)  # passive, no syncs: a service adds no slot
    plan = [(HealthStatus.HEALTHY, False)] + [(HealthStatus.UNREACHABLE, True)] * 4 + [
        (HealthStatus.UNREACHABLE, False), (HealthStatus.HEALTHY, False), (HealthStatus.HEALTHY, False)]
    for n, (status, flagged) in enumerate(plan):
        at = T0 + n * SLOT
        await store.persist([result(org, status, at, flagged)], at)
    return org


async def test_slots_in_a_maintenance_window_are_left_out_of_availability(store: Store, admin) -> None:
    org = await history_with_a_window(store, admin)
    [row] = await store.availability(org)
    assert (row["availability"], row["counted_slots"], row["maintenance_slots"]) == (0.75, 4, 4)
    flags = [r["maintenance"] for r in await store.history(org)]
    assert flags == [False, True, True, True, True, False, False, False]
    assert await admin.fetchval("SELECT maintenance FROM integration_health_status WHERE org_id = $1", org) is False


async def test_the_status_row_carries_the_flag_and_a_restart_restores_it(store: Store, admin) -> None:
    org = uuid4()
    await admin.execute("INSERT INTO integration_config (org_id, integration_type, config) VALUES ($1, 'http', '{}')",
                        org)
    await store.persist([result(org, HealthStatus.UNREACHABLE, T0, maintenance=True)], T0)
    assert await admin.fetchval("SELECT maintenance FROM integration_health_status WHERE org_id = $1", org) is True
    assert [r.maintenance for r in await store.last_results(org)] == [True]


async def test_the_history_api_answers_availability_without_maintenance(db_dsn, store, admin, service_client) -> None:
    org = await history_with_a_window(store, admin)
    client = await service_client(settings_for(db_dsn), db_dsn)
    body = await (await client.get(f"/api/v1/orgs/{org}/health/history", headers=AUTH)).json()
    [series] = body["integrations"]
    assert series["availability"] == 0.75
    assert sum(s["maintenance"] for s in series["slots"]) == 4


def grafana_sql(sql: str, org: UUID, start: datetime, end: datetime) -> str:
    """A dashboard's SQL with Grafana's macros and variables filled in as Grafana would for one org, all types."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND "
                                                        f"'{end.isoformat()}'", sql)
    sql = sql.replace("$__timeFrom()", f"'{start.isoformat()}'").replace("$__timeTo()", f"'{end.isoformat()}'")
    return sql.replace("${org_id:sqlstring}", f"'{org}'").replace("${integration_type:sqlstring}", "'http', 'fiken'")


async def as_reader(admin: asyncpg.Connection, sql: str) -> list[asyncpg.Record]:
    async with admin.transaction():
        await admin.execute("SET LOCAL ROLE integration_health_reader")
        return await admin.fetch(sql)


async def test_the_history_dashboard_reads_availability_and_annotations_as_the_reporting_role(store, admin) -> None:
    org = await history_with_a_window(store, admin)
    await store.add_maintenance_window(window(org, None, T0 + SLOT, hours=1, reason="vendor upgrade"))
    await store.add_maintenance_window(window(uuid4(), None, T0 + SLOT, reason="another org's"))
    board = json.loads((ROOT / "dashboards" / "integration-health-history.json").read_text())
    [panel] = [p for p in board["panels"] if p["title"] == "Availability (maintenance excluded)"]
    span = (T0 - timedelta(hours=1), T0 + timedelta(hours=3))
    [row] = await as_reader(admin, grafana_sql(panel["targets"][0]["rawSql"], org, *span))
    assert (row["availability"], row["maintenance_slots"]) == (0.75, 4)
    [annotation] = board["annotations"]["list"]
    rows = await as_reader(admin, grafana_sql(annotation["target"]["rawSql"], org, *span))
    assert [(r["time"], r["timeend"], r["text"]) for r in rows] == [
        (T0 + SLOT, T0 + SLOT + timedelta(hours=1), f"maintenance: vendor upgrade ({org}, every type, by operator)")]
