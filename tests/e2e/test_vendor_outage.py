"""A vendor-wide outage end to end, with the real exporter, Prometheus, Alertmanager and the simulator: twelve
organisations' Xledger fail together → one IntegrationVendorOutage notification, no per-org page, only canaries
checked while it lasts, all healthy within a cycle of the vendor healing; one organisation's rejected
credentials while the vendor is healthy → that organisation's alert only."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from prometheus_client.parser import text_string_to_metric_families

from exporter.demo.simulator import Mode, SimState
from exporter.demo.simulator import create_app as create_simulator
from tests.e2e.test_stack import METRICS_TOKEN, query, running_stack, wait_for, webhook_receiver

API_TOKEN = "e2e-token-0123456789"


def notified(received: list[dict[str, Any]], alertname: str, status: str = "firing") -> list[dict[str, Any]]:
    return [a for payload in received for a in payload["alerts"]
            if a["labels"]["alertname"] == alertname and a["status"] == status]


async def exporter_samples(stack: dict[str, Any]) -> dict[tuple[str, frozenset], float]:
    async with stack["session"].get(f"{stack['exporter']}/metrics",
                                    headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as resp:
        text = await resp.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def cycles(stack: dict[str, Any]) -> float:
    return (await exporter_samples(stack))[("integration_health_cycles_total", frozenset({("outcome", "success")}))]


async def healthy(stack: dict[str, Any], orgs: list[UUID]) -> bool:
    samples = await exporter_samples(stack)
    return all(samples.get(("integration_health_status", frozenset({
        ("org_id", str(o)), ("integration_type", "xledger"), ("status", "healthy")}))) == 1 for o in orgs)


async def test_a_vendor_down_for_twelve_organisations_pages_once_checks_canaries_and_resolves_in_a_cycle(
        db_dsn, admin, aiohttp_server, tmp_path: Path) -> None:
    state = SimState()
    sim = await aiohttp_server(create_simulator(state), access_log=None)
    hook, received = await webhook_receiver(aiohttp_server)
    orgs, loner = [uuid4() for _ in range(12)], uuid4()
    for org in [*orgs, loner]:
        tenant = "loner" if org == loner else "xl"  # the twelve share one fake vendor, so its count is theirs
        (tmp_path / "creds" / str(org)).mkdir(parents=True)
        (tmp_path / "creds" / str(org) / "xledger").write_text(f"{tenant}-secret\n")
        await admin.execute("INSERT INTO integration_config (org_id, integration_type, config, credential_ref) "
                            "VALUES ($1, 'xledger', $2::jsonb, 'xledger')", org,
                            json.dumps({"url": str(sim.make_url(f"/xledger/{tenant}/graphql"))}))
    state.secrets["loner"] = "a-rotated-secret"  # the loner's stored credential is rejected; the vendor is fine
    env = {"EXPORTER_CREDENTIAL_PROVIDER": "directory", "EXPORTER_CREDENTIALS_DIR": str(tmp_path / "creds"),
           "EXPORTER_TYPE_INTERVALS": "{}"}  # xledger every cycle here, not hourly
    async with running_stack(db_dsn, tmp_path, hook, env) as stack:
        # the vendor is healthy, one organisation's credentials are rejected: that organisation's alert only
        rejected = await wait_for(lambda: _async(notified(received, "IntegrationCredentialsRejected")), 120,
                                  "the loner's IntegrationCredentialsRejected")
        assert {a["labels"]["org_id"] for a in rejected} == {str(loner)}
        assert not notified(received, "IntegrationVendorOutage")

        # the vendor goes down for the twelve: one vendor notification
        state.modes["xl"] = Mode("server_error")
        outage = await wait_for(lambda: _async(notified(received, "IntegrationVendorOutage")), 120,
                                "IntegrationVendorOutage to reach the webhook")
        assert outage[0]["labels"]["integration_type"] == "xledger"
        assert outage[0]["labels"]["severity"] == "critical" and "org_id" not in outage[0]["labels"]

        # while it lasts, only canaries are asked: three a cycle, not twelve
        before_requests, before_cycles = state.requests["xl"], await cycles(stack)
        await asyncio.sleep(20)  # a few 5-second cycles
        spent, ran = state.requests["xl"] - before_requests, await cycles(stack) - before_cycles
        assert ran >= 2 and 3 <= spent <= 3 * (ran + 1), (spent, ran)
        # the canaries' own outage alerts fire in Prometheus, and Alertmanager holds them back
        await wait_for(lambda: _firing(stack, "IntegrationUnreachable"), 90, "a canary's IntegrationUnreachable")
        for org in orgs:
            async with stack["session"].get(f"{stack['exporter']}/api/v1/orgs/{org}/health",
                                            headers={"Authorization": f"Bearer {API_TOKEN}"}) as resp:
                (integration,) = (await resp.json())["integrations"]
            assert integration["vendor_incident_since"] is not None, integration
            assert integration["vendor_incident"].startswith("vendor-wide incident since ")

        # the vendor heals: every one of the twelve is checked and healthy within a cycle
        state.modes["xl"] = Mode("healthy")
        healed_at = await cycles(stack)
        await wait_for(lambda: healthy(stack, orgs), 60, "all twelve healthy")
        assert await cycles(stack) - healed_at <= 2, "the cycle under way when it healed, then the next at most"
        await wait_for(lambda: _async(notified(received, "IntegrationVendorOutage", "resolved")), 60,
                       "IntegrationVendorOutage to resolve")
        await asyncio.sleep(3)  # anything Alertmanager would still send goes out within its group_interval (2 s)

    assert len(notified(received, "IntegrationVendorOutage")) == 1, "one vendor, one notification"
    assert notified(received, "IntegrationUnreachable") == [], "no per-organisation page for the vendor's outage"
    pages = {a["labels"].get("org_id") for payload in received for a in payload["alerts"]} - {None}
    assert pages == {str(loner)}, "the only per-organisation alert is the one with its own problem"


async def _async(value: Any) -> Any:
    return value


async def _firing(stack: dict[str, Any], alertname: str) -> list:
    return (await query(stack, f'ALERTS{{alertname="{alertname}",alertstate="firing"}}'))["data"]["result"]
