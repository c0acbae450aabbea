"""/api/v1/orgs/{org_id}/webhooks on the live service: an org admin's JWT manages its own subscriptions
only, the operator's any; the secret is shown once; forbidden destinations are refused when subscribed."""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import pytest

from exporter.core.sealing import Keyring, Sealed
from exporter.core.webhooks import new_secret
from exporter.storage.store import create_pool
from exporter.storage.webhooks import Webhooks
from exporter.web.api import SERVICES
from tests.helpers import AUTH, JWT_SECRET, WEBHOOK_KEYS, app_token, bearer, settings_for, wait_until
from tests.support.listener import Listener

ORG_A = UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
ORG_B = UUID("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb")
ADMIN_A = bearer(app_token({"app_metadata": {"org_id": str(ORG_A)}}))
HOOK = "https://hooks.example.com/in/T0/abc"


async def start(service_client, db_dsn: str, **overrides):
    settings = settings_for(db_dsn, jwt_secret=JWT_SECRET, **({"egress_allow": ""} | overrides))
    client = await service_client(settings, db_dsn)
    await wait_until(lambda: client.app[SERVICES].scheduler.last_slot is not None, what="the first cycle")
    return client


async def create(client, org: UUID, headers, url: str = HOOK, **body):
    """POST a subscription for `org` with these headers."""
    return await client.post(f"/api/v1/orgs/{org}/webhooks", json={"url": url, **body}, headers=headers)


@pytest.fixture
def no_dns(monkeypatch):
    """Subscriptions to public names resolve to a public address, without asking a resolver."""
    async def public(policy, host, port):
        policy.check_addresses(host, port, ["93.184.215.14"])
    monkeypatch.setattr("exporter.web.subscriptions.check_destination", public)


async def test_an_org_admin_subscribes_sees_and_deletes_its_own_webhooks(db_dsn, admin, service_client, no_dns,
                                                                        caplog) -> None:
    caplog.set_level(logging.DEBUG)
    client = await start(service_client, db_dsn)
    resp = await create(client, ORG_A, ADMIN_A, events=["integration.status_changed"])
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["secret"].startswith("whsec_") and len(created["secret"]) >= 40
    assert (created["org_id"], created["url"], created["events"], created["enabled"]) == (
        str(ORG_A), HOOK, ["integration.status_changed"], True)
    row, keys = await admin.fetchrow("SELECT secret, key_id, sealed FROM webhook_secret"), Keyring.parse(WEBHOOK_KEYS)
    assert row["secret"] is None and row["key_id"] == keys.current  # sealed, not stored
    assert keys.open(UUID(created["id"]), Sealed(row["key_id"], row["sealed"])) == created["secret"]
    listed = await (await client.get(f"/api/v1/orgs/{ORG_A}/webhooks", headers=ADMIN_A)).json()
    assert listed["webhooks"] == [{k: v for k, v in created.items() if k != "secret"}]  # never the secret again
    resp = await client.delete(f"/api/v1/orgs/{ORG_A}/webhooks/{created['id']}", headers=ADMIN_A)
    assert resp.status == 204
    assert (await (await client.get(f"/api/v1/orgs/{ORG_A}/webhooks", headers=ADMIN_A)).json())["webhooks"] == []
    assert await admin.fetchval("SELECT count(*) FROM webhook_secret") == 0
    assert created["secret"] not in caplog.text and "T0/abc" not in caplog.text


async def test_an_org_admin_cannot_touch_another_orgs_webhooks(db_dsn, admin, service_client, no_dns) -> None:
    client = await start(service_client, db_dsn)
    theirs = await (await create(client, ORG_B, AUTH)).json()  # the operator may subscribe for any org
    for method, path in (("POST", f"/api/v1/orgs/{ORG_B}/webhooks"), ("GET", f"/api/v1/orgs/{ORG_B}/webhooks"),
                         ("DELETE", f"/api/v1/orgs/{ORG_B}/webhooks/{theirs['id']}")):
        resp = await client.request(method, path, json={"url": HOOK}, headers=ADMIN_A)
        assert resp.status == 403, (method, path)
    # through its own organisation's path, B's subscription is not found, and stays
    resp = await client.delete(f"/api/v1/orgs/{ORG_A}/webhooks/{theirs['id']}", headers=ADMIN_A)
    assert resp.status == 404
    assert (await (await client.get(f"/api/v1/orgs/{ORG_A}/webhooks", headers=ADMIN_A)).json())["webhooks"] == []
    assert await admin.fetchval("SELECT array_agg(org_id) FROM webhook_subscription") == [ORG_B]


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:{port}/hook", "must be https://"),
    ("https://127.0.0.1:{port}/hook", "loopback"),
    ("https://0x7f.1:{port}/hook", "loopback"),
    ("https://localhost:{port}/hook", "loopback"),
    ("https://[::ffff:127.0.0.1]:{port}/hook", "loopback"),
    ("https://10.1.2.3:{port}/hook", "private"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://user:pw@127.0.0.1:{port}/hook", "user-info"),
    ("ftp://127.0.0.1:{port}/", "absolute https:// URL"),
])
async def test_a_forbidden_destination_is_refused_when_subscribed_and_never_contacted(
        db_dsn, admin, service_client, url: str, why: str) -> None:
    listener = await Listener().start()
    try:
        client = await start(service_client, db_dsn)
        resp = await create(client, ORG_A, ADMIN_A, url=url.format(port=listener.port))
        assert resp.status == 400
        assert why in (await resp.json())["error"]
        assert await admin.fetchval("SELECT count(*) FROM webhook_subscription") == 0
        assert (listener.connections, bytes(listener.received)) == (0, b"")
    finally:
        await listener.close()


async def test_the_operator_allow_list_admits_a_loopback_receiver(db_dsn, service_client) -> None:
    client = await start(service_client, db_dsn, egress_allow="127.0.0.1")
    resp = await create(client, ORG_A, ADMIN_A, url="http://127.0.0.1:9/hook")
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(("body", "headers", "status", "error"), [
    ({"url": HOOK, "events": ["nope"]}, {}, 400, "events: unknown event types ['nope']"),
    ({"url": HOOK, "events": []}, {}, 400, "events: list should have at least 1 item"),
    ({"url": HOOK, "secret": "mine"}, {}, 400, "secret: extra inputs are not permitted"),
    ({"events": ["vendor.incident"]}, {}, 400, "url: field required"),
    ("url=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "send the subscription as JSON"),
])
async def test_bad_subscriptions_get_a_clear_4xx(db_dsn, service_client, no_dns, body, headers, status,
                                                 error) -> None:
    client = await start(service_client, db_dsn)
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body}
    resp = await client.post(f"/api/v1/orgs/{ORG_A}/webhooks", headers=ADMIN_A | headers, **kwargs)
    assert resp.status == status
    assert error in (await resp.json())["error"]


async def test_an_organisation_has_a_bounded_number_of_subscriptions(db_dsn, service_client, no_dns) -> None:
    client = await start(service_client, db_dsn, webhooks_per_org=2)
    assert [(await create(client, ORG_A, ADMIN_A)).status for _ in range(3)] == [201, 201, 409]
    assert (await create(client, ORG_B, AUTH)).status == 201  # another organisation's count is its own


async def test_a_bad_subscription_id_is_a_400_and_an_unknown_one_a_404(db_dsn, service_client) -> None:
    client = await start(service_client, db_dsn)
    assert (await client.delete(f"/api/v1/orgs/{ORG_A}/webhooks/nope", headers=ADMIN_A)).status == 400
    resp = await client.delete(f"/api/v1/orgs/{ORG_A}/webhooks/{ORG_B}", headers=ADMIN_A)
    assert resp.status == 404


async def test_concurrent_subscriptions_never_pass_the_organisations_limit(db_dsn, service_client, no_dns) -> None:
    """20 requests at once against a limit of 5: exactly 5 are created, the other 15 get 409."""
    client = await start(service_client, db_dsn, webhooks_per_org=5)
    statuses = await asyncio.gather(*(create(client, ORG_A, ADMIN_A, url=f"{HOOK}/{n}") for n in range(20)))
    assert sorted(r.status for r in statuses) == [201] * 5 + [409] * 15
    listed = await (await client.get(f"/api/v1/orgs/{ORG_A}/webhooks", headers=ADMIN_A)).json()
    assert len(listed["webhooks"]) == 5


async def test_concurrent_subscribes_on_their_own_connections_are_serialised_per_organisation(db_dsn, admin) -> None:
    """The storage call itself, 20 at once per organisation on 40 connections (more than the service's pool
    would give): the count and the insert happen under the organisation's lock, so no two see the same count."""
    pool = await create_pool(db_dsn, role="service_role", min_size=40, max_size=40)
    try:
        webhooks = Webhooks(pool, Keyring.parse(WEBHOOK_KEYS))
        created = await asyncio.gather(*(webhooks.subscribe(org, f"{HOOK}/{n}", ["vendor.incident"], new_secret(), 5)
                                         for n in range(20) for org in (ORG_A, ORG_B)))
    finally:
        await pool.close()
    assert sum(c is not None for c in created) == 10
    counts = await admin.fetch("SELECT org_id, count(*) AS n FROM webhook_subscription GROUP BY 1 ORDER BY 1")
    assert [(r["org_id"], r["n"]) for r in counts] == [(ORG_A, 5), (ORG_B, 5)]
    assert await admin.fetchval("SELECT count(*) FROM webhook_secret") == 10
