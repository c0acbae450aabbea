"""A disabled or deleted integration is no longer current: not in the API, not restored after a restart."""

from __future__ import annotations

from uuid import uuid4

from tests.helpers import AUTH, add_http, settings_for, wait_until_async


async def test_an_org_without_integrations_reads_as_an_empty_list_not_unknown(db_dsn, service_client) -> None:
    client = await service_client(settings_for(db_dsn), db_dsn)
    org = uuid4()
    for path in (f"/api/v1/orgs/{org}/health", f"/api/v1/orgs/{org}/health/history"):
        resp = await client.get(path, headers=AUTH)
        assert (resp.status, await resp.json()) == (200, {"org_id": str(org), "integrations": []})


async def test_disabled_and_deleted_integrations_leave_the_api_and_what_a_restart_restores(
        db_dsn, admin, store, sim, service_client) -> None:
    _, base = sim
    org = uuid4()
    for tenant, kind in (("a", "http"), ("b", "fiken"), ("c", "xledger")):
        await add_http(admin, org, tenant, base, kind=kind)
    client = await service_client(settings_for(db_dsn), db_dsn)

    async def stored() -> bool:  # "loaded" comes before the checks and pending is 0 before they are queued
        return await admin.fetchval("SELECT count(*) FROM integration_health_status WHERE org_id = $1", org) == 3

    await wait_until_async(stored, what="the first cycle's three results to be stored")
    await admin.execute("UPDATE integration_config SET enabled = false WHERE org_id = $1 AND integration_type = 'fiken'",
                        org)
    await admin.execute("DELETE FROM integration_config WHERE org_id = $1 AND integration_type = 'xledger'", org)
    body = await (await client.get(f"/api/v1/orgs/{org}/health", headers=AUTH)).json()
    assert [i["integration_type"] for i in body["integrations"]] == ["http"]
    history = await (await client.get(f"/api/v1/orgs/{org}/health/history", headers=AUTH)).json()
    assert [i["integration_type"] for i in history["integrations"]] == ["http"]
    assert [r.integration_type for r in await store.last_results()] == ["http"], "what a restart restores"
