"""Webhooks end to end on real PostgreSQL and loopback receivers: the outbox is written with the status
change it announces, deliveries are signed, retried, dead-lettered, shared by replicas, survive a restart,
never reach a forbidden destination and never wait on the cycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from exporter.adapters.client import HttpClient
from exporter.adapters.transport import make_session
from exporter.core.egress import EgressPolicy
from exporter.core.events import EventType, VendorIncident, make_event
from exporter.core.model import HealthStatus, IntegrationResult, make_result
from exporter.core.sealing import Keyring
from exporter.core.webhooks import RetrySchedule, new_secret
from exporter.demo.simulator import Mode
from exporter.engine.instruments import Instruments
from exporter.engine.notifier import Notifier
from exporter.storage.store import Store, create_pool
from exporter.storage.webhooks import Webhooks, enqueue
from exporter.web.api import SERVICES
from tests.helpers import AUTH, WEBHOOK_KEYS, add_http, gauges, settings_for, wait_until, wait_until_async
from tests.support.fakes import loopback_session
from tests.support.listener import Listener, install_guard
from tests.support.receiver import Receiver, verify

ORG = UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
H, D, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNREACHABLE
FAST = RetrySchedule(max_attempts=4, min_s=0.01, max_s=0.05)
KEYRING = Keyring.parse(WEBHOOK_KEYS)


def result(status: HealthStatus, n: int, kind: str = "http") -> IntegrationResult:
    error = None if status == H else "HTTP 503"
    return IntegrationResult(ORG, kind, make_result(status, 40 + n, T + timedelta(minutes=15 * n), error))


async def persist(store: Store, *statuses: HealthStatus, start: int = 0) -> None:
    """One result per slot, as consecutive cycles write them."""
    for n, status in enumerate(statuses, start):
        await store.persist([result(status, n)], T + timedelta(minutes=15 * n))


async def subscribe(webhooks: Webhooks, url: str, org: UUID = ORG) -> str:
    secret = new_secret()
    assert await webhooks.subscribe(org, url, [t.value for t in EventType], secret, 10) is not None
    return secret


@pytest.fixture
async def webhooks(store: Store) -> Webhooks:
    return Webhooks(store.pool, KEYRING)


def notifier_for(webhooks: Webhooks, session: HttpClient, **options) -> Notifier:
    options = {"schedule": FAST, "timeout_s": 5.0} | options
    return Notifier(webhooks, session, Instruments(CollectorRegistry(), "test"), **options)


def outcomes(n: Notifier) -> dict[str, float]:
    return {s.labels["outcome"]: s.value for m in n.instruments.webhook_deliveries.collect() for s in m.samples}


async def deliveries(admin: asyncpg.Connection) -> list[asyncpg.Record]:
    return await admin.fetch("SELECT event_id, event_type, payload::text AS payload, status, attempts, last_error "
                             "FROM webhook_delivery ORDER BY created_at, event_id")


async def drain(n: Notifier, admin: asyncpg.Connection) -> None:
    """Run delivery rounds until nothing is pending."""
    async def idle() -> bool:
        await n.run_once()
        return not await admin.fetchval("SELECT count(*) FROM webhook_delivery WHERE status = 'pending'")
    await wait_until_async(idle, what="the outbox to drain")


async def test_a_status_change_confirmed_twice_is_written_to_the_outbox_once(store, webhooks, admin) -> None:
    await subscribe(webhooks, "https://hooks.example.com/in")
    await persist(store, H, H, U)
    assert await deliveries(admin) == []  # one failure is no news
    await persist(store, U, U, start=3)
    [row] = await deliveries(admin)
    body = json.loads(row["payload"])
    assert (row["event_type"], row["status"], row["attempts"]) == ("integration.status_changed", "pending", 0)
    assert body == {"id": str(row["event_id"]), "type": "integration.status_changed", "org_id": str(ORG),
                    "occurred_at": "2026-11-23T12:45:00Z",
                    "data": {"integration_type": "http", "status": "unreachable", "previous_status": "healthy",
                             "reason": None, "error": "HTTP 503", "latency_ms": 43,
                             "checked_at": "2026-11-23T12:45:00Z"}}
    await persist(store, H, H, start=5)
    assert [json.loads(r["payload"])["data"]["status"] for r in await deliveries(admin)] == ["unreachable", "healthy"]


async def test_a_retried_batch_and_a_blip_add_no_event(store, webhooks, admin) -> None:
    await subscribe(webhooks, "https://hooks.example.com/in")
    await persist(store, U, U)
    await persist(store, U, start=1)  # the same batch written again (the outbox retries halves)
    await persist(store, H, U, U, start=2)  # a blip between two failures
    assert len(await deliveries(admin)) == 1


async def test_failures_inside_a_maintenance_window_notify_nobody(store, webhooks, admin) -> None:
    """As the alerts: a result in a window neither confirms a change nor counts as the one before it, so the
    organisation hears only of a change two results outside the window confirm."""
    await subscribe(webhooks, "https://hooks.example.com/in")
    await persist(store, H, H)
    for n in (2, 3):  # two failures, both inside a window
        await store.persist([replace(result(U, n), maintenance=True)], T + timedelta(minutes=15 * n))
    assert await deliveries(admin) == []
    await persist(store, U, start=4)  # the first failure outside: one, not yet two in a row
    assert await deliveries(admin) == []
    await persist(store, U, start=5)
    assert [json.loads(r["payload"])["data"]["status"] for r in await deliveries(admin)] == ["unreachable"]


async def test_each_subscription_of_the_org_gets_the_event_and_other_orgs_none(store, webhooks, admin) -> None:
    await subscribe(webhooks, "https://a.example.com/1")
    await subscribe(webhooks, "https://a.example.com/2")
    await subscribe(webhooks, "https://b.example.com/1", org=uuid4())
    await admin.execute("INSERT INTO webhook_subscription (org_id, url, events, enabled) "
                        "VALUES ($1, 'https://a.example.com/off', '{integration.status_changed}', false)", ORG)
    await persist(store, D, D)
    rows = await admin.fetch("SELECT w.url FROM webhook_delivery d JOIN webhook_subscription w ON w.id = "
                             "d.subscription_id ORDER BY w.url")
    assert [r["url"] for r in rows] == ["https://a.example.com/1", "https://a.example.com/2"]
    assert len({r["event_id"] for r in await deliveries(admin)}) == 1  # one event, one id, two deliveries


async def test_an_event_the_outbox_refuses_never_costs_the_status_and_is_announced_once_it_accepts(
        store, webhooks, admin, caplog) -> None:
    """The event goes in the status' transaction behind a savepoint: refused (here by a trigger) for another
    reason than an outage, the status and history are stored without it and the error logged; the change stays
    unconfirmed, so the next result announces it once the outbox accepts again."""
    await subscribe(webhooks, "https://hooks.example.com/in")
    await persist(store, U)
    await admin.execute("""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'outbox full'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON webhook_delivery FOR EACH ROW EXECUTE FUNCTION refuse()""")
    await persist(store, U, start=1)  # the second failure in a row: news, but the outbox refuses it
    assert await admin.fetchval("SELECT checked_at FROM integration_health_status") == T + timedelta(minutes=15)
    assert await admin.fetchval("SELECT count(*) FROM health_check_history") == 2
    assert await deliveries(admin) == [] and "webhook events of 1 results could not be written" in caplog.text
    await admin.execute("DROP TRIGGER refuse ON webhook_delivery")
    await persist(store, U, start=2)
    assert len(await deliveries(admin)) == 1


async def test_other_event_kinds_enter_the_same_outbox_in_the_callers_transaction(store, webhooks, admin) -> None:
    await subscribe(webhooks, "https://hooks.example.com/in")
    data = VendorIncident(integration_type="fiken", since=T)
    event = make_event(EventType.VENDOR_INCIDENT, ORG, T, data, "fiken", T.isoformat())
    async with store.pool.acquire() as conn, conn.transaction():
        await enqueue(conn, [event, event])
    [row] = await deliveries(admin)
    assert (row["event_id"], json.loads(row["payload"])["data"]["integration_type"]) == (event.id, "fiken")


async def test_a_delivery_is_signed_and_carries_its_idempotency_key(store, webhooks, admin, receiver, session) -> None:
    r, url = receiver
    r.secret = await subscribe(webhooks, url)
    await persist(store, U, U)
    n = notifier_for(webhooks, session)
    assert await n.run_once() == 1
    [request] = r.requests
    [row] = await deliveries(admin)
    headers = request["headers"]
    assert headers["Webhook-Id"] == str(row["event_id"])
    assert headers["Content-Type"] == "application/json"
    assert verify(r.secret, headers["X-Integration-Health-Signature"], request["body"])
    assert headers["X-Integration-Health-Signature"].startswith(f"t={headers['Webhook-Timestamp']},v1=")
    assert json.loads(request["body"])["data"]["status"] == "unreachable"
    assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 1, None)
    assert outcomes(n) == {"delivered": 1, "failed": 0, "dead": 0, "blocked": 0, "held": 0}
    assert r.secret not in json.dumps([dict(x) for x in await admin.fetch("SELECT * FROM webhook_delivery")],
                                      default=str)


async def test_500s_are_retried_and_the_receiver_accepts_the_event_once(store, webhooks, admin, receiver,
                                                                        session) -> None:
    r, url = receiver
    r.secret, r.fail_first = await subscribe(webhooks, url), 2
    await persist(store, U, U)
    n = notifier_for(webhooks, session)
    await drain(n, admin)
    [row] = await deliveries(admin)
    assert (row["status"], row["attempts"]) == ("delivered", 3)
    assert [q["headers"]["Webhook-Id"] for q in r.requests] == [str(row["event_id"])] * 3  # the same key each time
    assert (list(r.accepted), r.duplicates) == ([str(row["event_id"])], 0)
    assert outcomes(n) == {"delivered": 1, "failed": 2, "dead": 0, "blocked": 0, "held": 0}
    # at-least-once: a delivery whose outcome was lost (the exporter died before recording it) is sent again,
    # and the receiver's dedupe by Webhook-Id keeps it one event
    await admin.execute("UPDATE webhook_delivery SET status = 'pending', next_attempt_at = now()")
    await drain(n, admin)
    assert (len(r.accepted), r.duplicates) == (1, 1)


async def test_a_receiver_that_keeps_failing_is_dead_lettered_after_the_last_attempt(store, webhooks, admin, receiver,
                                                                                     session) -> None:
    r, url = receiver
    r.secret, r.fail_first = await subscribe(webhooks, url), 1000
    await persist(store, U, U)
    n = notifier_for(webhooks, session)
    await drain(n, admin)
    [row] = await deliveries(admin)
    assert (row["status"], row["attempts"], row["last_error"]) == ("dead", FAST.max_attempts, "HTTP 500")
    assert len(r.requests) == FAST.max_attempts
    await n.run_once()
    assert len(r.requests) == FAST.max_attempts  # a dead letter is not tried again
    assert outcomes(n) == {"delivered": 0, "failed": FAST.max_attempts - 1, "dead": 1, "blocked": 0, "held": 0}
    assert n.instruments.webhook_pending._value.get() == 0


async def test_a_receiver_that_hangs_is_cut_at_its_timeout_and_retried(store, webhooks, admin, receiver,
                                                                       session) -> None:
    r, url = receiver
    r.secret, r.hang = await subscribe(webhooks, url), True
    await persist(store, U, U)
    n = notifier_for(webhooks, session, timeout_s=0.2)
    await n.run_once()
    [row] = await deliveries(admin)
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "timed out after 0.2 s")
    r.hang = False
    r.released.set()
    await drain(n, admin)
    assert len(r.accepted) == 1


async def test_replicas_share_the_outbox_and_send_each_delivery_once(store, webhooks, admin, receiver, db_dsn,
                                                                     session) -> None:
    r, url = receiver
    r.secret = await subscribe(webhooks, url)
    events = [make_event(EventType.VENDOR_INCIDENT, ORG, T, VendorIncident(integration_type=f"t{i}", since=T), i)
              for i in range(60)]
    async with store.pool.acquire() as conn, conn.transaction():
        await enqueue(conn, events)
    other_pool = await create_pool(db_dsn, role="service_role", max_size=4)
    try:
        replicas = [notifier_for(webhooks, session, batch=7),
                    notifier_for(Webhooks(other_pool, KEYRING), session, batch=7)]

        async def idle() -> bool:
            claimed = await asyncio.gather(*(n.run_once() for n in replicas))
            return sum(claimed) == 0
        await wait_until_async(idle, what="both replicas to run out of work")
    finally:
        await other_pool.close()
    assert (len(r.requests), len(r.accepted), r.duplicates) == (60, 60, 0)
    assert all(sum(outcomes(n).values()) > 0 for n in replicas)  # both took a share


async def test_nothing_is_lost_when_the_exporter_dies_mid_delivery(store, webhooks, admin, receiver, db_dsn) -> None:
    """The first process claims the delivery and dies while the receiver hangs; the next one, started on a
    new pool, delivers it once the claim's lease has passed."""
    r, url = receiver
    r.secret, r.hang = await subscribe(webhooks, url), True
    await persist(store, U, U)
    pool = await create_pool(db_dsn, role="service_role", max_size=2)
    async with loopback_session() as s1:
        first = notifier_for(Webhooks(pool, KEYRING), s1, timeout_s=60, lease_margin_s=0.0)
        first.lease_s = 0.5  # the lease a dead process leaves behind
        task = asyncio.create_task(first.run_once())
        await r.arrived.wait()
        task.cancel()  # killed mid-request
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await pool.close()
    [row] = await deliveries(admin)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    r.hang = False
    r.released.set()
    pool = await create_pool(db_dsn, role="service_role", max_size=2)
    try:
        async with loopback_session() as s2:
            await drain(notifier_for(Webhooks(pool, KEYRING), s2), admin)
    finally:
        await pool.close()
    [row] = await deliveries(admin)
    assert (row["status"], row["attempts"], list(r.accepted)) == ("delivered", 2, [str(row["event_id"])])


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/hook", "https://127.0.0.1:{port}/hook",
                                 "http://localhost:{port}/hook", "https://[::1]:{port}/hook",
                                 "https://user:pw@127.0.0.1:{port}/hook"])
async def test_a_forbidden_destination_written_past_the_api_is_never_contacted(store, webhooks, admin, url,
                                                                               monkeypatch) -> None:
    """A subscription row that names a forbidden destination (written by hand, or allowed by a policy the
    operator has since narrowed) is dead-lettered as blocked, and the listener receives nothing."""
    listener = await Listener().start()
    guard = install_guard(monkeypatch)
    try:
        await subscribe(webhooks, url.format(port=listener.port))
        await persist(store, U, U)
        async with make_session(policy=EgressPolicy()) as public_only:
            n = notifier_for(webhooks, public_only)
            await n.run_once()
        [row] = await deliveries(admin)
        assert (row["status"], row["last_error"][:8]) == ("dead", "blocked:")
        assert (listener.connections, bytes(listener.received), guard.attempts) == (0, b"", [])
        assert outcomes(n)["blocked"] == 1
    finally:
        await listener.close()


@pytest.fixture
async def hooks_service(db_dsn, admin, sim, service_client, aiohttp_server):
    """The whole service, with one integration whose vendor is down, and a receiver on loopback."""
    state, base = sim
    state.modes["down"] = Mode("server_error")
    await add_http(admin, ORG, "down", base)
    receiver = Receiver()
    server = await aiohttp_server(receiver.app(), access_log=None)
    settings = settings_for(db_dsn, webhook_timeout_seconds=120, webhook_poll_seconds=0.05,
                            webhook_retry_min_seconds=0.01, webhook_retry_max_seconds=0.05)
    client = await service_client(settings, db_dsn)
    await wait_until(lambda: client.app[SERVICES].scheduler.last_slot is not None, what="the first cycle")
    return client, receiver, str(server.make_url("/hook"))


async def test_a_receiver_that_hangs_does_not_hold_up_the_cycle(hooks_service, admin) -> None:
    """The next cycle runs, checks and stores its results while the receiver still holds the delivery."""
    client, receiver, url = hooks_service
    receiver.hang = True
    resp = await client.post(f"/api/v1/orgs/{ORG}/webhooks", json={"url": url}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    receiver.secret = (await resp.json())["secret"]
    scheduler = client.app[SERVICES].scheduler
    first = scheduler.last_slot
    await scheduler.run_cycle(first + timedelta(days=1), first + timedelta(days=1))  # unreachable twice: news
    await asyncio.wait_for(receiver.arrived.wait(), 30)  # the worker is now stuck on the receiver
    third = first + timedelta(days=2)
    [result] = await scheduler.run_cycle(third, third)
    assert result.result.status == U
    assert await admin.fetchval("SELECT max(slot) FROM health_check_history") == third
    assert not receiver.released.is_set() and receiver.accepted == {}  # the delivery is still held
    receiver.released.set()
    await wait_until(lambda: len(receiver.accepted) == 1, what="the delivery after the receiver recovers")
    metrics = gauges(await (await client.get("/metrics")).text())
    assert metrics["integration_health_webhook_deliveries_total"][(("outcome", "delivered"),)] == 1.0
    assert receiver.secret not in await (await client.get("/metrics")).text()


async def test_a_hanging_receiver_holds_one_slot_while_other_deliveries_go_on(store, webhooks, admin, aiohttp_server,
                                                                              session) -> None:
    """The running worker refills a slot as soon as a delivery ends: a receiver stuck until its timeout
    does not hold up another organisation's deliveries, which keep arriving meanwhile."""
    stuck, healthy = Receiver(hang=True), Receiver()
    stuck_url = str((await aiohttp_server(stuck.app(), access_log=None)).make_url("/hook"))
    healthy_url = str((await aiohttp_server(healthy.app(), access_log=None)).make_url("/hook"))
    other = uuid4()
    stuck.secret, healthy.secret = await subscribe(webhooks, stuck_url), await subscribe(webhooks, healthy_url, other)
    await persist(store, U, U)
    stop = asyncio.Event()
    n = notifier_for(webhooks, session, timeout_s=120, concurrency=2, poll_s=0.02)
    worker = asyncio.create_task(n.run_forever(stop))
    try:
        await asyncio.wait_for(stuck.arrived.wait(), 30)
        for i in range(5):  # the other organisation's events, one after another, while the first receiver hangs
            data = VendorIncident(integration_type=f"t{i}", since=T)
            async with store.pool.acquire() as conn, conn.transaction():
                await enqueue(conn, [make_event(EventType.VENDOR_INCIDENT, other, T, data, i)])
            await wait_until(lambda: len(healthy.accepted) == i + 1, what=f"delivery {i + 1} beside the stuck one")
        assert not stuck.released.is_set() and stuck.accepted == {}
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
    [held] = await admin.fetch("SELECT status, attempts FROM webhook_delivery WHERE org_id = $1", ORG)
    assert (held["status"], held["attempts"]) == ("pending", 1)  # stopped mid-request: retried after its lease
    stuck.released.set()
