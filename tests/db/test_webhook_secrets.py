"""Webhook signing secrets at rest, on real PostgreSQL: no row and no table file holds one; a secret opens only
for its own subscription and under a configured key; a wrong key holds deliveries instead of dead-lettering
them; keys rotate; the plaintext rows of migration 0014 are sealed when the service starts."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from exporter.adapters.client import HttpClient
from exporter.core.events import EventType, VendorIncident, make_event
from exporter.core.sealing import Keyring
from exporter.core.webhooks import RetrySchedule, new_secret
from exporter.engine.instruments import Instruments
from exporter.engine.notifier import Notifier
from exporter.storage.store import Store
from exporter.storage.webhooks import Resealed, Webhooks, enqueue
from exporter.web.api import SERVICES
from tests.helpers import AUTH, WEBHOOK_KEYS, settings_for, wait_until, wait_until_async

ORG = UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OLD = Keyring.parse(WEBHOOK_KEYS)  # "test-1"
NEW_KEY = "test-2:" + base64.b64encode(bytes(range(64, 96))).decode()
ROTATED = Keyring.parse(f"{NEW_KEY},{WEBHOOK_KEYS}")  # test-2 seals, both open
NEW_ONLY = Keyring.parse(NEW_KEY)
IMPOSTOR = Keyring.parse("test-1:" + base64.b64encode(bytes(range(200, 232))).decode())  # same id, another key
FEW = RetrySchedule(max_attempts=2, min_s=0.01, max_s=0.05)


def notifier(pool: asyncpg.Pool, keys: Keyring | None, session: HttpClient) -> Notifier:
    return Notifier(Webhooks(pool, keys), session, Instruments(CollectorRegistry(), "test"), schedule=FEW,
                    timeout_s=5.0)


async def announce(store: Store, n: int = 0) -> None:
    """One event to every subscription of ORG, written as the cycle writes events."""
    event = make_event(EventType.VENDOR_INCIDENT, ORG, T, VendorIncident(integration_type=f"t{n}", since=T), n)
    async with store.pool.acquire() as conn, conn.transaction():
        await enqueue(conn, [event])


async def delivery(admin: asyncpg.Connection) -> asyncpg.Record:
    [row] = await admin.fetch("SELECT status, attempts, last_error FROM webhook_delivery")
    return row


def outcome(n: Notifier, name: str) -> float:
    return n.instruments.webhook_deliveries.labels(name)._value.get()


async def table_files(admin: asyncpg.Connection) -> bytes:
    """The bytes on disk of every relation in `public` (heap, TOAST, indexes), after a checkpoint."""
    await admin.execute("CHECKPOINT")
    data_dir = Path(await admin.fetchval("SHOW data_directory"))
    paths = await admin.fetch("""
        SELECT pg_relation_filepath(c.oid) AS path FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i', 'm')
        UNION ALL
        SELECT pg_relation_filepath(c.reltoastrelid) FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.reltoastrelid <> 0""")
    return b"".join((data_dir / r["path"]).read_bytes() for r in paths if r["path"]
                    if (data_dir / r["path"]).exists())


async def every_row(admin: asyncpg.Connection) -> str:
    tables = await admin.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return "\n".join([json.dumps([dict(r) for r in await admin.fetch(f'SELECT * FROM public."{t["tablename"]}"')],
                                 default=lambda v: v.hex() if isinstance(v, bytes) else str(v)) for t in tables])


async def test_a_subscribed_secret_is_in_no_row_and_no_table_file(db_dsn, admin, service_client, monkeypatch) -> None:
    """The admin gets the secret in the 201; the database holds it only sealed: neither any row of any table
    nor the table files on disk contain it (while they do contain the subscription's URL: the search works)."""
    async def public(policy, host, port):
        policy.check_addresses(host, port, ["93.184.215.14"])
    monkeypatch.setattr("exporter.web.subscriptions.check_destination", public)
    client = await service_client(settings_for(db_dsn, egress_allow=""), db_dsn)
    url = "https://hooks.example.com/in/planted-url-marker"
    resp = await client.post(f"/api/v1/orgs/{ORG}/webhooks", json={"url": url}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    secret = (await resp.json())["secret"]
    files, rows = await table_files(admin), await every_row(admin)
    assert b"planted-url-marker" in files and "planted-url-marker" in rows
    assert secret.encode() not in files and secret not in rows
    assert secret.removeprefix("whsec_").encode() not in files
    assert secret.encode().hex() not in rows


async def test_a_wrong_key_holds_deliveries_uncounted_and_they_go_out_once_the_key_is_back(
        store, admin, receiver, session, caplog) -> None:
    """Deliveries whose secret the configured keys cannot open are held, not dead-lettered: no attempt is
    counted however often they are looked at, the log says which key id is missing (never a key or a
    secret), the row the organisation reads only that the operator must act, and with the key back they
    are delivered and verify. Another key under the same id is another stored name, so it is missing too."""
    r, url = receiver
    r.secret = new_secret()
    await Webhooks(store.pool, OLD).subscribe(ORG, url, [EventType.VENDOR_INCIDENT.value], r.secret, 10)
    await announce(store)
    for keys in (NEW_ONLY, IMPOSTOR):
        caplog.clear()
        wrong = notifier(store.pool, keys, session)
        for _ in range(FEW.max_attempts + 2):  # more rounds than the attempts a dead letter takes
            assert await wrong.run_once() == 1
            await admin.execute("UPDATE webhook_delivery SET next_attempt_at = now()")
        row = await delivery(admin)
        assert (row["status"], row["attempts"]) == ("pending", 0)
        assert row["last_error"] == ("held: the operator must restore the key that signs this subscription; "
                                     "deliveries resume then, nothing is lost")
        assert re.search(r"sealed with key 'test-1\.[0-9a-f]{8}' \(id 'test-1' and that fingerprint\), which is "
                         "not in EXPORTER_WEBHOOK_SECRET_KEYS", caplog.text), caplog.text
        assert outcome(wrong, "held") == FEW.max_attempts + 2 and outcome(wrong, "dead") == 0
    assert r.requests == []  # nothing unsigned or wrongly signed was sent
    assert r.secret not in json.dumps([dict(x) for x in await admin.fetch("SELECT * FROM webhook_delivery")],
                                      default=str)
    right = notifier(store.pool, ROTATED, session)
    assert await right.run_once() == 1
    row = await delivery(admin)
    assert (row["status"], row["attempts"], len(r.accepted)) == ("delivered", 1, 1)


async def test_a_held_delivery_waits_before_it_is_looked_at_again(store, admin, receiver, session) -> None:
    r, url = receiver
    await Webhooks(store.pool, OLD).subscribe(ORG, url, [EventType.VENDOR_INCIDENT.value], new_secret(), 10)
    await announce(store)
    wrong = notifier(store.pool, NEW_ONLY, session)
    assert (await wrong.run_once(), await wrong.run_once()) == (1, 0)
    assert await admin.fetchval("SELECT next_attempt_at - now() > interval '30 seconds' FROM webhook_delivery")


async def test_a_sealed_secret_copied_onto_another_subscription_does_not_sign(store, admin, receiver,
                                                                            session, caplog) -> None:
    """Someone who can write rows (not read keys) copies a subscription's sealed secret onto their own: the
    associated data is the subscription id, so it does not open there, and nothing is signed with it."""
    r, url = receiver
    webhooks = Webhooks(store.pool, OLD)
    victim = await webhooks.subscribe(uuid4(), "https://victim.example.com/in", ["vendor.incident"],
                                      new_secret(), 10)
    mine = await webhooks.subscribe(ORG, url, [EventType.VENDOR_INCIDENT.value], new_secret(), 10)
    await admin.execute("UPDATE webhook_secret SET sealed = (SELECT sealed FROM webhook_secret "
                        "WHERE subscription_id = $1) WHERE subscription_id = $2", victim.id, mine.id)
    await announce(store)
    n = notifier(store.pool, OLD, session)
    await n.run_once()
    row = await delivery(admin)
    assert (row["status"], row["attempts"], r.requests) == ("pending", 0, [])
    assert row["last_error"].startswith("held: ") and f"does not open with key '{OLD.current}'" in caplog.text


async def test_keys_rotate_the_new_key_seals_old_secrets_move_to_it_and_the_old_key_can_go(
        store, admin, receiver, session) -> None:
    r, url = receiver
    r.secret = new_secret()
    await Webhooks(store.pool, OLD).subscribe(ORG, url, [EventType.VENDOR_INCIDENT.value], r.secret, 10)
    # step 2 of the README: the new key first, the old one still listed: old secrets open, new ones seal anew
    rotated = Webhooks(store.pool, ROTATED)
    await rotated.subscribe(uuid4(), "https://hooks.example.com/second", ["vendor.incident"], new_secret(), 10)
    assert sorted(await admin.fetchval("SELECT array_agg(key_id) FROM webhook_secret")) == sorted(ROTATED.ids)
    assert await rotated.reseal() == Resealed(sealed=0, rekeyed=1, left={})
    assert await admin.fetchval("SELECT array_agg(DISTINCT key_id) FROM webhook_secret") == [NEW_ONLY.current]
    assert await rotated.reseal() == Resealed(0, 0, {})  # nothing left to do
    # step 3: the old key removed; the secret the admin was given still signs
    await announce(store)
    n = notifier(store.pool, NEW_ONLY, session)
    assert await n.run_once() == 1
    row = await delivery(admin)
    assert (row["status"], len(r.accepted), outcome(n, "held")) == ("delivered", 1, 0)


async def test_reseal_reports_secrets_left_under_a_key_that_is_not_configured(store) -> None:
    await Webhooks(store.pool, OLD).subscribe(ORG, "https://hooks.example.com/a", ["vendor.incident"],
                                              new_secret(), 10)
    assert await Webhooks(store.pool, NEW_ONLY).reseal() == Resealed(0, 0, {OLD.current: 1})
    # the same id under other bytes is another key: its rows are reported left, not taken for its own
    assert await Webhooks(store.pool, IMPOSTOR).reseal() == Resealed(0, 0, {OLD.current: 1})


async def plant_plaintext(admin: asyncpg.Connection, url: str, org: UUID = ORG) -> tuple[UUID, str]:
    """A subscription as migration 0014 stored it: the secret in the clear."""
    secret = new_secret()
    sub = await admin.fetchval("INSERT INTO webhook_subscription (org_id, url, events) VALUES ($1, $2, "
                               "'{vendor.incident}') RETURNING id", org, url)
    await admin.execute("INSERT INTO webhook_secret (subscription_id, secret) VALUES ($1, $2)", sub, secret)
    return sub, secret


async def test_the_plaintext_rows_of_0014_are_sealed_when_the_service_starts_and_still_sign(
        db_dsn, admin, service_client, receiver) -> None:
    r, url = receiver
    sub, r.secret = await plant_plaintext(admin, url)
    client = await service_client(settings_for(db_dsn, webhook_poll_seconds=0.05), db_dsn)
    await wait_until_async(lambda: admin.fetchval("SELECT secret IS NULL FROM webhook_secret"),
                           what="the service to seal the plaintext secret")
    row = await admin.fetchrow("SELECT key_id, sealed FROM webhook_secret")
    assert row["key_id"] == OLD.current and r.secret not in await every_row(admin)
    await announce(client.app[SERVICES].store)
    await wait_until(lambda: len(r.accepted) == 1, what="the delivery signed with the original secret")


async def test_replicas_sealing_at_once_seal_every_plaintext_row_once(store, admin) -> None:
    await admin.execute("""
        WITH sub AS (INSERT INTO webhook_subscription (org_id, url, events)
                     SELECT gen_random_uuid(), 'https://hooks.example.com/' || n, '{vendor.incident}'
                     FROM generate_series(1, 1200) n RETURNING id)
        INSERT INTO webhook_secret (subscription_id, secret) SELECT id, 'whsec_' || md5(id::text) FROM sub""")
    done = await asyncio.gather(*(Webhooks(store.pool, OLD).reseal(batch=100) for _ in range(3)))
    assert sum(d.sealed for d in done) == 1200
    assert await admin.fetchval("SELECT count(*) FROM webhook_secret WHERE secret IS NULL AND key_id = $1",
                                OLD.current) == 1200


async def test_a_row_cannot_be_both_sealed_and_plaintext(admin) -> None:
    sub, _ = await plant_plaintext(admin, "https://hooks.example.com/x")
    with pytest.raises(asyncpg.CheckViolationError):
        await admin.execute("UPDATE webhook_secret SET key_id = 'k1.0123abcd', sealed = $2 WHERE subscription_id = $1",
                            sub, bytes(80))
    with pytest.raises(asyncpg.CheckViolationError):
        await admin.execute("UPDATE webhook_secret SET secret = NULL WHERE subscription_id = $1", sub)
