"""The app's read models as PostgREST runs them: SET LOCAL ROLE + request.jwt.claims, row-level security
deciding through the view (security_invoker) and the timeline function (SECURITY INVOKER)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import asyncpg
import pytest

from tests.db.test_rls import as_role

ORG_A, ORG_B = uuid4(), uuid4()
OVERVIEW = "SELECT * FROM public.integration_health_overview ORDER BY org_id, integration_type"


async def add_history(conn: asyncpg.Connection, org, kind: str, statuses: list[str], start: datetime) -> None:
    """One history row per slot from `start` on, with the given statuses (oldest first)."""
    for n, status in enumerate(statuses):
        slot = start + timedelta(minutes=15 * n)
        error = None if status == "healthy" else f"{status} at slot {n}"
        reason = None if status == "healthy" else "timeout"
        await conn.execute("INSERT INTO health_check_history (org_id, integration_type, slot, status, latency_ms, "
                           "checked_at, error_message, reason) VALUES ($1, $2, $3, $4, 12, $3, $5, $6)",
                           org, kind, slot, status, error, reason)


@pytest.fixture
async def seeded(admin: asyncpg.Connection) -> asyncpg.Connection:
    t = await admin.fetchval("SELECT now()")  # the read models' windows are on the database's clock
    for org in (ORG_A, ORG_B):
        for kind in ("http", "xledger"):
            await admin.execute("INSERT INTO integration_config (org_id, integration_type, config) "
                                "VALUES ($1, $2, '{}')", org, kind)
        await admin.execute(
            "INSERT INTO integration_health_status (org_id, integration_type, status, latency_ms, checked_at, "
            "error_message, reason, consecutive_failures, next_check_at) "
            "VALUES ($1, 'http', 'unreachable', 30, $2, 'HTTP 503', 'http_5xx', 2, $3)",
            org, t, t + timedelta(minutes=15))
    # A: 3 of 4 recent slots not unreachable (a degraded one counts as available), and an old outage
    # the 24-hour window leaves out.
    await add_history(admin, ORG_A, "http", ["unreachable"], t - timedelta(hours=30))
    await add_history(admin, ORG_A, "http", ["healthy", "degraded", "healthy", "unreachable"],
                      t - timedelta(minutes=50))  # 10 minutes inside the shortest (1 h) window
    await add_history(admin, ORG_B, "http", ["unreachable"] * 2, t - timedelta(minutes=15))
    return admin


def claims_for(org) -> dict:
    return {"role": "authenticated", "sub": "u1", "app_metadata": {"org_id": str(org)}}


async def test_an_org_admin_sees_only_their_own_integrations(seeded) -> None:
    rows = await as_role(seeded, "authenticated", claims_for(ORG_A), OVERVIEW)
    assert [(r["org_id"], r["integration_type"]) for r in rows] == [(ORG_A, "http"), (ORG_A, "xledger")]


async def test_the_overview_row_carries_what_the_admin_screen_shows(seeded) -> None:
    [http, xledger] = await as_role(seeded, "authenticated", claims_for(ORG_A), OVERVIEW)
    assert (http["status"], http["reason"], http["error_message"], http["latency_ms"]) == (
        "unreachable", "http_5xx", "HTTP 503", 30)
    assert http["failures_in_a_row"] == 2
    assert http["next_check_at"] - http["last_check_at"] == timedelta(minutes=15)
    assert (http["checks_24h"], http["availability_24h"]) == (4, 0.75)  # the 30-hour-old outage is outside
    assert (http["last_failure_status"], http["last_failure_reason"], http["last_failure_message"]) == (
        "unreachable", "timeout", "unreachable at slot 3")
    # never checked yet: no status, no availability (not 0 % and not 100 %)
    assert (xledger["status"], xledger["checks_24h"], xledger["availability_24h"], xledger["failures_in_a_row"]) == (
        None, 0, None, 0)


async def test_maintenance_slots_are_left_out_of_availability_and_the_flags_are_shown(seeded) -> None:
    """A failure inside a maintenance window costs no availability (the API's and the dashboard's rule); the
    flags an admin reads next to a failure, and the credential's known expiry, come with the row."""
    await seeded.execute("UPDATE health_check_history SET maintenance = true WHERE org_id = $1 AND status = "
                         "'unreachable'", ORG_A)
    expires, since = datetime(2027, 1, 31, tzinfo=UTC), datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
    await seeded.execute("UPDATE integration_health_status SET maintenance = true, vendor_incident_since = $2, "
                         "credential_expires_at = $3 WHERE org_id = $1", ORG_A, since, expires)
    [http, xledger] = await as_role(seeded, "authenticated", claims_for(ORG_A), OVERVIEW)
    assert (http["checks_24h"], http["maintenance_slots_24h"], http["availability_24h"]) == (3, 1, 1.0)
    assert (http["maintenance"], http["vendor_incident_since"], http["credential_expires_at"]) == (
        True, since, expires)
    assert (xledger["maintenance"], xledger["vendor_incident_since"]) == (False, None)
    rows = await as_role(seeded, "authenticated", claims_for(ORG_A), "SELECT * FROM public.integration_health_timeline()")
    assert [(r["status"], r["maintenance"]) for r in rows] == [
        ("healthy", False), ("degraded", False), ("healthy", False), ("unreachable", True)]


async def test_the_last_failure_can_be_a_degraded_slot_older_than_the_latest(seeded) -> None:
    await seeded.execute("DELETE FROM health_check_history WHERE org_id = $1 AND status = 'unreachable'", ORG_A)
    [http, _] = await as_role(seeded, "authenticated", claims_for(ORG_A), OVERVIEW)
    assert (http["last_failure_status"], http["last_failure_message"], http["availability_24h"]) == (
        "degraded", "degraded at slot 1", 1.0)


@pytest.mark.parametrize("claims", [None, {}, {"org_id": "garbage"}, {"user_metadata": {"org_id": str(ORG_A)}}])
async def test_a_user_without_a_valid_org_claim_sees_nothing(seeded, claims) -> None:
    assert await as_role(seeded, "authenticated", claims, OVERVIEW) == []
    assert await as_role(seeded, "authenticated", claims, "SELECT * FROM public.integration_health_timeline()") == []


async def test_anon_can_read_neither_the_view_nor_the_timeline(seeded) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(seeded, "anon", claims_for(ORG_A), OVERVIEW)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(seeded, "anon", claims_for(ORG_A), "SELECT * FROM public.integration_health_timeline()")


async def test_the_timeline_is_the_callers_last_24_hours_oldest_first(seeded) -> None:
    rows = await as_role(seeded, "authenticated", claims_for(ORG_A),
                         "SELECT * FROM public.integration_health_timeline()")
    assert [r["status"] for r in rows] == ["healthy", "degraded", "healthy", "unreachable"]
    assert {r["org_id"] for r in rows} == {ORG_A}
    assert [r["slot"] for r in rows] == sorted(r["slot"] for r in rows)


async def test_the_timeline_filters_by_type_and_clamps_its_window(seeded) -> None:
    sql = "SELECT * FROM public.integration_health_timeline($1, $2)"
    assert await as_role(seeded, "authenticated", claims_for(ORG_A), sql, "xledger", 24) == []
    last_hour = await as_role(seeded, "authenticated", claims_for(ORG_A), sql, "http", 1)
    assert [r["status"] for r in last_hour] == ["healthy", "degraded", "healthy", "unreachable"]
    # 0 or a negative window means the shortest (1 h), a huge one the history's 24 h: never the 30-hour-old row
    for hours in (-5, 0, 10_000):
        rows = await as_role(seeded, "authenticated", claims_for(ORG_A), sql, "http", hours)
        assert len(rows) == 4, hours


async def test_a_member_of_two_orgs_reads_both_and_filters_like_postgrest(seeded) -> None:
    claims = {"org_id": str(ORG_A), "app_metadata": {"org_ids": [str(ORG_B)]}}
    rows = await as_role(seeded, "authenticated", claims, OVERVIEW)
    assert {r["org_id"] for r in rows} == {ORG_A, ORG_B}
    # ?org_id=eq.B on /rpc/integration_health_timeline is a WHERE on the function's rows
    rows = await as_role(seeded, "authenticated", claims,
                         "SELECT * FROM public.integration_health_timeline() WHERE org_id = $1", ORG_B)
    assert [r["status"] for r in rows] == ["unreachable", "unreachable"]


async def test_every_view_runs_as_its_caller(admin) -> None:
    """A view without security_invoker runs as its owner and would bypass row-level security: a new one
    added that way fails here."""
    rows = await admin.fetch("SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n "
                             "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')")
    assert "integration_health_overview" in {r["relname"] for r in rows}
    for r in rows:
        assert "security_invoker=true" in (r["reloptions"] or []), r["relname"]
