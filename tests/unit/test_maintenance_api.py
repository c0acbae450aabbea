"""/api/v1/maintenance over an in-memory store: every bad window is a 4xx with a JSON reason, good ones are
stored in UTC and change this replica's gauge at once. (UTC storage on PostgreSQL: tests/db/test_maintenance.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiohttp.test_utils import TestClient

from exporter.core.model import Integration
from exporter.services import build_services
from exporter.web.app import create_app
from tests.helpers import AUTH, JWT_SECRET, app_token, bearer, gauges, settings_for, wait_until
from tests.support.fakes import loopback_session
from tests.support.memory_store import MemoryStore

ORG = UUID("99999999-9999-4999-8999-999999999999")
SOON = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)


def body(**overrides: Any) -> dict[str, Any]:
    return {"org_id": str(ORG), "integration_type": "http", "starts_at": SOON.isoformat(),
            "ends_at": (SOON + timedelta(hours=2)).isoformat(), "reason": "vendor upgrade"} | overrides


@pytest.fixture
async def api(aiohttp_client, sim) -> tuple[TestClient, MemoryStore]:
    _, base = sim
    async with loopback_session() as session:
        store = MemoryStore([Integration(ORG, "http", {"url": f"{base}/http/ok", "method": "GET"})])
        settings = settings_for("postgresql://unused", jwt_secret=JWT_SECRET)
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        client = await aiohttp_client(create_app(settings, services))
        await wait_until(lambda: services.scheduler.last_slot is not None, what="the first cycle")
        yield client, store


@pytest.mark.parametrize(("overrides", "error"), [
    ({"ends_at": (SOON - timedelta(minutes=1)).isoformat()}, "ends_at must be after starts_at"),
    ({"ends_at": SOON.isoformat()}, "ends_at must be after starts_at"),
    ({"ends_at": (SOON + timedelta(days=8)).isoformat()}, "at most 7 days"),
    ({"starts_at": "2026-11-22T10:00:00"}, "starts_at: input should have timezone info"),
    ({"ends_at": "2026-11-22 12:00"}, "ends_at: input should have timezone info"),
    ({"starts_at": "0001-01-01T00:00:00+14:00"}, "starts_at"),
    ({"starts_at": "yesterday"}, "starts_at"),
    ({"starts_at": (SOON - timedelta(days=3)).isoformat(), "ends_at": (SOON - timedelta(days=2)).isoformat()},
     "already ended"),
    ({"integration_type": "sftp"}, "integration_type 'sftp' is not a registered type"),
    ({"integration_type": "x\x00"}, "integration_type: string should match pattern"),
    ({"org_id": "not-a-uuid"}, "org_id"),
    ({"org_id": 42}, "org_id"),
    ({"reason": "x" * 10_000}, "reason: string should have at most 500 characters"),
    ({"reason": "   "}, "reason: must not be blank"),
    ({"reason": "a\x00b"}, "reason: string should match pattern"),
    ({"reason": None}, "reason"),
    ({"created_by": "y" * 201}, "created_by"),
    ({"force": "yes please"}, "force"),
    ({"silence": True}, "silence: extra inputs are not permitted"),
])
async def test_a_bad_window_is_a_400_with_a_json_reason(api, overrides, error) -> None:
    client, store = api
    resp = await client.post("/api/v1/maintenance", json=body(**overrides), headers=AUTH)
    answer = await resp.json()
    assert (resp.status, error in answer["error"]) == (400, True), answer
    assert store.windows == []


async def test_a_window_missing_its_times_or_reason_names_them(api) -> None:
    client, _ = api
    resp = await client.post("/api/v1/maintenance", json={}, headers=AUTH)
    error = (await resp.json())["error"]
    assert resp.status == 400 and all(f"{f}: field required" in error for f in ("starts_at", "ends_at", "reason"))


@pytest.mark.parametrize(("method", "path", "headers", "status"), [
    ("POST", "/api/v1/maintenance", {}, 401),
    ("GET", "/api/v1/maintenance", {}, 401),
    ("DELETE", f"/api/v1/maintenance/{uuid4()}", {"Authorization": "Bearer wrong"}, 401),
    ("POST", "/api/v1/maintenance", "member", 403),  # an org's own user may not silence it
    ("GET", "/api/v1/maintenance?state=sometime", AUTH, 400),
    ("GET", "/api/v1/maintenance?org_id=nope", AUTH, 400),
    ("DELETE", "/api/v1/maintenance/not-a-uuid", AUTH, 400),
    ("DELETE", f"/api/v1/maintenance/{uuid4()}", AUTH, 404),
])
async def test_tokens_and_ids_are_checked_with_a_json_reason(api, method, path, headers, status) -> None:
    client, _ = api
    if headers == "member":
        headers = bearer(app_token({"org_id": str(ORG)}))
    resp = await client.request(method, path, json=body(), headers=headers)
    assert resp.status == status
    assert isinstance((await resp.json())["error"], str)


async def test_a_body_that_is_not_json_is_a_415(api) -> None:
    client, _ = api
    resp = await client.post("/api/v1/maintenance", data="reason=upgrade", headers=AUTH)
    assert (resp.status, "send the window as JSON" in (await resp.json())["error"]) == (415, True)


async def test_a_week_and_more_needs_force_and_any_offset_is_kept_in_utc(api) -> None:
    client, store = api
    local = SOON.astimezone(UTC).replace(tzinfo=None) - timedelta(hours=5, minutes=30)
    forced = body(starts_at=local.isoformat() + "-05:30", ends_at=(SOON + timedelta(days=10)).isoformat(), force=True)
    resp = await client.post("/api/v1/maintenance", json=forced, headers=AUTH)
    assert resp.status == 201, await resp.text()
    window = (await resp.json())["window"]
    assert window["starts_at"] == SOON.isoformat() and window["starts_at"].endswith("+00:00")
    assert store.windows[0].starts_at.utcoffset() == timedelta(0)
    assert (window["org_id"], window["integration_type"], window["created_by"], window["active"]) == (
        str(ORG), "http", "operator", False)


async def test_a_second_window_of_the_same_scope_overlapping_the_first_is_a_409_unless_forced(api) -> None:
    client, store = api
    first = await (await client.post("/api/v1/maintenance", json=body(), headers=AUTH)).json()
    clash = await client.post("/api/v1/maintenance", json=body(reason="again"), headers=AUTH)
    answer = await clash.json()
    assert (clash.status, answer["window"]["id"]) == (409, first["window"]["id"])
    assert "already covers" in answer["error"]
    other_scope = await client.post("/api/v1/maintenance", json=body(integration_type=None), headers=AUTH)
    forced = await client.post("/api/v1/maintenance", json=body(force=True), headers=AUTH)
    assert (other_scope.status, forced.status, len(store.windows)) == (201, 201, 3)


async def test_listing_filters_by_state_and_organisation(api) -> None:
    client, _ = api
    now = datetime.now(UTC)
    active = body(starts_at=(now - timedelta(minutes=5)).isoformat(), ends_at=(now + timedelta(hours=1)).isoformat())
    mine = await (await client.post("/api/v1/maintenance", json=active, headers=AUTH)).json()
    others = await (await client.post("/api/v1/maintenance", json=body(org_id=str(uuid4())), headers=AUTH)).json()

    async def listed(query: str) -> list[str]:
        resp = await client.get(f"/api/v1/maintenance{query}", headers=AUTH)
        return [w["id"] for w in (await resp.json())["windows"]]

    assert await listed("") == [mine["window"]["id"], others["window"]["id"]]
    assert await listed("?state=active") == [mine["window"]["id"]]
    assert await listed("?state=upcoming") == [others["window"]["id"]]
    assert await listed(f"?org_id={ORG}") == [mine["window"]["id"]]
    assert await listed("?state=ended") == []


async def test_this_replica_applies_a_new_window_and_a_deletion_at_once(api) -> None:
    client, _ = api
    key = (("integration_type", "http"), ("org_id", str(ORG)))

    async def gauge() -> float:
        return gauges(await (await client.get("/metrics")).text())["integration_health_maintenance"][key]

    assert await gauge() == 0.0
    now = datetime.now(UTC)
    started = body(starts_at=(now - timedelta(minutes=1)).isoformat(), ends_at=(now + timedelta(hours=1)).isoformat())
    created = await (await client.post("/api/v1/maintenance", json=started, headers=AUTH)).json()
    assert created["window"]["active"] is True
    assert await gauge() == 1.0
    health = await (await client.get(f"/api/v1/orgs/{ORG}/health", headers=AUTH)).json()
    assert health["integrations"][0]["maintenance"] is False  # the last check was made before the window
    deleted = await client.delete(f"/api/v1/maintenance/{created['window']['id']}", headers=AUTH)
    assert deleted.status == 200 and await gauge() == 0.0
    checked = await (await client.post(f"/api/v1/orgs/{ORG}/checks", headers=AUTH)).json()
    assert checked["integrations"][0]["maintenance"] is False


async def test_a_run_now_inside_a_window_is_flagged(api) -> None:
    client, _ = api
    now = datetime.now(UTC)
    started = body(starts_at=(now - timedelta(minutes=1)).isoformat(), ends_at=(now + timedelta(hours=1)).isoformat())
    assert (await client.post("/api/v1/maintenance", json=started, headers=AUTH)).status == 201
    checked = await (await client.post(f"/api/v1/orgs/{ORG}/checks", headers=AUTH)).json()
    assert checked["integrations"][0]["maintenance"] is True
    health = await (await client.get(f"/api/v1/orgs/{ORG}/health", headers=AUTH)).json()
    assert health["integrations"][0]["maintenance"] is True
