"""The three flagged kinds on real PostgreSQL: a vendor incident, a maintenance window and a credential nearing
expiry are written to the outbox by the persist that records them, once per organisation and occurrence
across retried batches and replicas, only to subscribers of that kind, never to another organisation."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest

from exporter.core.events import EVENT_KINDS, EventType
from exporter.core.maintenance import Window
from exporter.core.model import HealthStatus, IntegrationResult, Reason, make_result
from exporter.core.sealing import Keyring
from exporter.core.webhooks import new_secret
from exporter.storage.store import Store, create_pool
from exporter.storage.webhooks import Webhooks
from exporter.web.api import SERVICES
from tests.db.test_rls import as_role
from tests.helpers import AUTH, WEBHOOK_KEYS, add_http, settings_for, wait_until
from tests.support.receiver import Receiver

ORG, OTHER, QUIET = (UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"), UUID("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"),
                     UUID("cccccccc-cccc-4ccc-8ccc-cccccccccccc"))
T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
M = timedelta(minutes=15)
H, U = HealthStatus.HEALTHY, HealthStatus.UNREACHABLE


def result(n: int, org: UUID = ORG, kind: str = "xledger", status: HealthStatus = H, **flags) -> IntegrationResult:
    """The n-th quarter-hour's result of one integration, with the flags the engine would have set."""
    maintenance = flags.pop("maintenance", False)
    error, reason = (None, None) if status == H else ("connect failed", Reason.CONNECT)
    r = replace(make_result(status, 40, T + n * M, error, reason), **flags)
    return IntegrationResult(org, kind, r, maintenance=maintenance)


async def persist(store: Store, *batch: IntegrationResult) -> None:
    await store.persist(list(batch), max(r.result.checked_at for r in batch))


@pytest.fixture
async def subscribed(store: Store) -> dict[UUID, str]:
    """ORG and OTHER subscribe to every kind; QUIET to status changes only. Their signing secrets, by org."""
    hooks, secrets = Webhooks(store.pool, Keyring.parse(WEBHOOK_KEYS)), {}
    for org, kinds in ((ORG, list(EventType)), (OTHER, list(EventType)), (QUIET, [EventType.STATUS_CHANGED])):
        secrets[org] = new_secret()
        assert await hooks.subscribe(org, f"https://hooks.example.com/{org}", [k.value for k in kinds],
                                     secrets[org], 10) is not None
    return secrets


async def outbox(admin: asyncpg.Connection, kind: EventType) -> list[tuple[UUID, dict]]:
    rows = await admin.fetch("SELECT org_id, payload FROM webhook_delivery WHERE event_type = $1 "
                             "ORDER BY created_at, payload->'data'->>'phase' DESC", kind.value)
    return [(r["org_id"], json.loads(r["payload"])) for r in rows]


def valid(body: dict, secrets: dict[UUID, str]) -> dict:
    """The payload validates against its kind's model and carries no signing secret; its data, for comparing."""
    kind = EVENT_KINDS[EventType(body["type"])]
    kind.payload.model_validate(body["data"])
    assert not any(s in json.dumps(body) for s in secrets.values()) and "whsec_" not in json.dumps(body)
    return body["data"]


async def test_a_vendor_incident_is_enqueued_once_per_org_when_it_starts_and_when_it_ends(store, admin, subscribed,
                                                                                          db_dsn) -> None:
    since = T + M
    await persist(store, result(0), result(0, OTHER), result(0, QUIET))
    down = [result(1, org, status=U, vendor_incident_since=since) for org in (ORG, QUIET)]
    await persist(store, *down)
    await persist(store, *down)  # the same batch again: the outbox retries
    replica = Store(await create_pool(db_dsn, role="service_role", max_size=1))
    try:  # a second replica writing the next slot's standing rows of the same incident
        await persist(replica, *[replace(r, result=replace(r.result, checked_at=T + 2 * M))
                                 for r in down])
    finally:
        await replica.pool.close()
    assert [(org, valid(body, subscribed)) for org, body in await outbox(admin, EventType.VENDOR_INCIDENT)] == [
        (ORG, {"integration_type": "xledger", "phase": "started", "since": "2026-11-23T12:15:00Z", "ended_at": None})]
    await persist(store, result(3), result(3, QUIET))
    await persist(store, result(4), result(4, QUIET))
    [started, (org, ended)] = await outbox(admin, EventType.VENDOR_INCIDENT)
    assert (org, valid(ended, subscribed)) == (ORG, {"integration_type": "xledger", "phase": "ended",
                                                     "since": "2026-11-23T12:15:00Z",
                                                     "ended_at": "2026-11-23T12:45:00Z"})
    assert ended["occurred_at"] == "2026-11-23T12:45:00Z" and started[1]["id"] != ended["id"]


async def test_a_global_window_is_one_event_per_org_at_its_start_and_one_at_its_end(store, admin, subscribed) -> None:
    window = await store.add_maintenance_window(Window(uuid4(), None, None, T + 2 * M, T + 4 * M, "vendor upgrade"))
    keys = [(org, kind) for org in (ORG, OTHER, QUIET) for kind in ("xledger", "http")]
    for n in range(6):
        batch = [result(n, org, kind, maintenance=window.covers(org, kind, T + n * M)) for org, kind in keys]
        await persist(store, *batch)
        if n == 2:
            await persist(store, *batch)  # a retried batch
    said = await outbox(admin, EventType.MAINTENANCE_WINDOW)
    assert sorted((org, body["data"]["phase"]) for org, body in said) == [
        (ORG, "ended"), (ORG, "started"), (OTHER, "ended"), (OTHER, "started")]  # not per integration, not QUIET
    data = {(org, body["data"]["phase"]): valid(body, subscribed) for org, body in said}
    assert data[(ORG, "started")] == {"window_id": str(window.id), "phase": "started", "integration_type": None,
                                      "starts_at": "2026-11-23T12:30:00Z", "ends_at": "2026-11-23T13:00:00Z",
                                      "description": "vendor upgrade"}
    assert {body["occurred_at"] for _, body in said} == {"2026-11-23T12:30:00Z", "2026-11-23T13:00:00Z"}


async def test_an_orgs_own_window_is_announced_to_that_org_only(store, admin, subscribed) -> None:
    window = await store.add_maintenance_window(Window(uuid4(), ORG, "http", T + M, T + 3 * M, "ERP move"))
    for n in range(5):
        await persist(store, *[result(n, org, "http", maintenance=window.covers(org, "http", T + n * M))
                               for org in (ORG, OTHER)])
    said = await outbox(admin, EventType.MAINTENANCE_WINDOW)
    assert [(org, body["data"]["phase"], body["data"]["integration_type"]) for org, body in said] == [
        (ORG, "started", "http"), (ORG, "ended", "http")]


async def test_a_window_deleted_while_in_force_announces_its_end_to_the_orgs_it_flagged(store, admin,
                                                                                      subscribed) -> None:
    now = await admin.fetchval("SELECT now()")  # deletion ends a window on the database's clock
    window = await store.add_maintenance_window(Window(uuid4(), None, "http", now - M, now + M, "vendor upgrade"))
    upcoming = await store.add_maintenance_window(Window(uuid4(), None, None, now + M, now + 2 * M, "later"))
    flagged = [IntegrationResult(org, "http", make_result(H, 40, now - M / 2), maintenance=True) for org in (ORG, QUIET)]
    await store.persist(flagged + [IntegrationResult(OTHER, "http", make_result(H, 40, now - M / 2))], None)
    assert [body["data"]["phase"] for _, body in await outbox(admin, EventType.MAINTENANCE_WINDOW)] == ["started"]
    assert await store.delete_maintenance_window(upcoming.id) is not None  # nothing was announced: nothing ends
    assert await store.delete_maintenance_window(window.id) is not None
    [_, (org, ended)] = await outbox(admin, EventType.MAINTENANCE_WINDOW)
    data = valid(ended, subscribed)
    assert (org, data["phase"], data["window_id"]) == (ORG, "ended", str(window.id))  # not OTHER: never flagged
    assert datetime.fromisoformat(data["ends_at"]) >= now > datetime.fromisoformat(data["starts_at"])


async def test_a_credential_is_enqueued_once_at_30_days_once_at_7_and_again_when_renewed(store, admin,
                                                                                         subscribed) -> None:
    expires = T + timedelta(days=20)
    for org in (ORG, OTHER, QUIET):  # OTHER's credential is far from expiry
        await persist(store, result(0, org, credential_expires_at=expires if org != OTHER else T + timedelta(days=90)))
    for n in (1, 2):
        await persist(store, *[result(n, org, credential_expires_at=expires) for org in (ORG, QUIET)])
    late = replace(result(0, credential_expires_at=expires).result, checked_at=T + timedelta(days=14))
    await persist(store, IntegrationResult(ORG, "xledger", late))
    renewed = replace(result(0, credential_expires_at=T + timedelta(days=30)).result,
                      checked_at=T + timedelta(days=15))
    await persist(store, IntegrationResult(ORG, "xledger", renewed))
    said = await outbox(admin, EventType.CREDENTIAL_EXPIRING)
    assert [(org, valid(body, subscribed)) for org, body in said] == [
        (ORG, {"integration_type": "xledger", "expires_at": "2026-12-13T12:00:00Z", "threshold_days": 30}),
        (ORG, {"integration_type": "xledger", "expires_at": "2026-12-13T12:00:00Z", "threshold_days": 7}),
        (ORG, {"integration_type": "xledger", "expires_at": "2026-12-23T12:00:00Z", "threshold_days": 30})]


async def test_events_that_cannot_be_written_never_cost_the_results(store, admin, subscribed, caplog) -> None:
    """The events go in the results' transaction (a transient failure retries both), but behind a savepoint: an
    event the outbox refuses (a bad value, a bug) is logged and the status and history are stored without it,
    rather than the batch failing, or — an error the outbox cannot split — stalling every later write."""
    await persist(store, result(0))
    await admin.execute("""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'outbox full'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON webhook_delivery FOR EACH ROW EXECUTE FUNCTION refuse()""")
    await persist(store, result(1, status=U, vendor_incident_since=T + M))
    assert await admin.fetchval("SELECT vendor_incident_since FROM integration_health_status WHERE org_id = $1",
                                ORG) == T + M
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE org_id = $1", ORG) == 2
    assert "webhook events of 1 results could not be written" in caplog.text
    assert await outbox(admin, EventType.VENDOR_INCIDENT) == []


async def test_an_organisation_reads_its_own_deliveries_of_these_kinds_and_no_one_elses(store, admin,
                                                                                       subscribed) -> None:
    await persist(store, result(0), result(0, OTHER))
    await persist(store, result(1, status=U, vendor_incident_since=T + M),
                  result(1, OTHER, status=U, vendor_incident_since=T + M))
    sql = "SELECT org_id, payload FROM public.webhook_delivery WHERE event_type = 'vendor.incident'"
    mine = await as_role(admin, "authenticated", {"org_id": str(ORG)}, sql)
    assert [r["org_id"] for r in mine] == [ORG]
    assert json.loads(mine[0]["payload"])["org_id"] == str(ORG)
    assert len({r["payload"]["id"] if isinstance(r["payload"], dict) else json.loads(r["payload"])["id"]
                for r in await admin.fetch(sql)}) == 2  # one event per organisation, each under its own id


async def test_the_running_service_signs_and_delivers_a_windows_start_and_its_end_to_a_loopback_receiver(
        db_dsn, admin, sim, service_client, aiohttp_server) -> None:
    """The whole chain: the operator's window, the scheduler's flagged result, the persist's event, the
    worker's signed delivery; then the window deleted in force, and its end delivered."""
    _, base = sim
    await add_http(admin, ORG, "ok", base)
    receiver = Receiver()
    server = await aiohttp_server(receiver.app(), access_log=None)
    settings = settings_for(db_dsn, webhook_poll_seconds=0.05, webhook_retry_min_seconds=0.01,
                            webhook_retry_max_seconds=0.05)
    client = await service_client(settings, db_dsn)
    scheduler = client.app[SERVICES].scheduler
    await wait_until(lambda: scheduler.last_slot is not None, what="the first cycle")
    resp = await client.post(f"/api/v1/orgs/{ORG}/webhooks", headers=AUTH,
                             json={"url": str(server.make_url("/hook")), "events": ["maintenance.window"]})
    assert resp.status == 201, await resp.text()
    receiver.secret = (await resp.json())["secret"]
    now = scheduler.clock()
    resp = await client.post("/api/v1/maintenance", headers=AUTH, json={
        "starts_at": (now - M).isoformat(), "ends_at": (now + 4 * M).isoformat(), "reason": "vendor upgrade"})
    assert resp.status == 201, await resp.text()
    window_id = (await resp.json())["window"]["id"]
    slot = scheduler.last_slot + timedelta(days=1)
    [checked] = await scheduler.run_cycle(slot, slot)
    assert checked.maintenance
    await wait_until(lambda: len(receiver.accepted) == 1, what="the window's start")
    assert (await client.delete(f"/api/v1/maintenance/{window_id}", headers=AUTH)).status == 200
    await wait_until(lambda: len(receiver.accepted) == 2, what="the window's end")
    bodies = [json.loads(b) for b in receiver.accepted.values()]
    assert [(b["type"], b["org_id"], b["data"]["window_id"], b["data"]["phase"]) for b in bodies] == [
        ("maintenance.window", str(ORG), window_id, "started"), ("maintenance.window", str(ORG), window_id, "ended")]
    assert receiver.duplicates == 0 and all(receiver.secret not in b.decode() for b in receiver.accepted.values())
