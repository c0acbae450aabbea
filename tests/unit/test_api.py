"""The web layer over services built on an in-memory store: no PostgreSQL needed for what is not SQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

import pytest
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from exporter.core.model import Integration
from exporter.services import build_services
from exporter.settings import Settings, describe_settings_error
from exporter.web.api import RUNTIME, SERVICES
from exporter.web.app import create_app
from tests.helpers import AUTH, settings_for, wait_until
from tests.support.fakes import loopback_session
from tests.support.memory_store import MemoryStore

ORG = UUID("33333333-3333-4333-8333-333333333333")


@pytest.fixture
async def serve(aiohttp_client, sim):
    """Start the service, with these settings, over a MemoryStore holding one org's http integration."""
    _, base = sim
    async with loopback_session() as session:
        async def start(**overrides) -> tuple[TestClient, MemoryStore]:
            store = MemoryStore([Integration(ORG, "http", {"url": f"{base}/http/ok", "method": "GET"})])
            settings = settings_for("postgresql://unused", **({"run_now_min_interval_seconds": 60} | overrides))
            services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
            client = await aiohttp_client(create_app(settings, services))
            await wait_until(lambda: services.scheduler.last_slot is not None, what="the first cycle")
            return client, store

        yield start


@pytest.fixture
async def served(serve):
    return await serve()


async def test_the_first_cycle_is_served_from_memory_and_stored(served) -> None:
    client, store = served
    body = await (await client.get(f"/api/v1/orgs/{ORG}/health", headers=AUTH)).json()
    assert [(i["integration_type"], i["status"]) for i in body["integrations"]] == [("http", "healthy")]
    assert list(store.status) == [(ORG, "http")]
    metrics = await (await client.get("/metrics")).text()
    assert f'integration_health_status{{integration_type="http",org_id="{ORG}",status="healthy"}} 1.0' in metrics


async def test_readyz_says_the_database_is_unreachable_while_metrics_keep_serving(served) -> None:
    client, store = served
    store.down = True
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["problems"] == ["database unreachable: OSError"]
    assert (await client.get("/metrics")).status == 200  # the snapshot needs no database


async def test_readyz_says_so_when_the_scheduler_stopped(served) -> None:
    client, _ = served
    task = client.app[RUNTIME].loop_task
    task.cancel()
    await wait_until(task.done, what="the scheduler task to end")
    assert (await (await client.get("/readyz")).json())["problems"] == ["scheduler is not running"]


async def test_a_database_outage_is_a_503_with_a_reason_and_retry_after_not_a_traceback(served) -> None:
    client, store = served
    store.down = True
    resp = await client.post(f"/api/v1/orgs/{ORG}/checks", headers=AUTH)
    assert (resp.status, resp.headers["Retry-After"]) == (503, "30")
    assert await resp.json() == {"error": "the database is unreachable; try again shortly"}
    assert client.app[SERVICES].outbox.pending == 0
    store.down = False
    again = await client.post(f"/api/v1/orgs/{ORG}/checks", headers=AUTH)
    assert again.status == 200, "a run-now that never ran must not count against the per-org limit"


class OneReplica:
    """Shard leases of a replica alone: it owns everything (the real ones are tested on PostgreSQL)."""

    ttl_s, total, owned = 30.0, 1, frozenset({0})

    def owns(self, org_id: UUID) -> bool:
        return True

    async def maintain(self) -> frozenset[int]:
        return self.owned


async def test_readyz_says_so_when_the_lease_renewal_stopped(aiohttp_client) -> None:
    settings = settings_for("postgresql://unused")
    async with loopback_session() as session:
        services = build_services(settings, store=MemoryStore(), session=session,  # type: ignore[arg-type]
                                  shards=OneReplica())  # type: ignore[arg-type]
        client = await aiohttp_client(create_app(settings, services))
        assert (await client.get("/readyz")).status == 200
        client.app[RUNTIME].lease_task.cancel()
        await wait_until(client.app[RUNTIME].lease_task.done, what="the lease task to end")
        assert (await (await client.get("/readyz")).json())["problems"] == ["shard lease renewal is not running"]


class NoShards(OneReplica):
    """Another replica holds every shard."""

    owned = frozenset()

    def owns(self, org_id: UUID) -> bool:
        return False


async def test_run_now_on_a_replica_that_does_not_own_the_org_answers_but_leaves_its_state_alone(
        aiohttp_client, sim) -> None:
    state, base = sim
    store = MemoryStore([Integration(ORG, "http", {"url": f"{base}/http/ok", "method": "GET"})])
    settings = settings_for("postgresql://unused")
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session,  # type: ignore[arg-type]
                                  shards=NoShards())  # type: ignore[arg-type]
        client = await aiohttp_client(create_app(settings, services))
        resp = await client.post(f"/api/v1/orgs/{ORG}/checks", headers=AUTH)
        body = await resp.json()
    assert (resp.status, body["stored"], [i["status"] for i in body["integrations"]]) == (200, False, ["healthy"])
    assert state.requests["ok"] == 1
    assert (store.status, services.snapshot.results) == ({}, {}), "the owner's state, gauges and rows are its own"


METRICS_TOKEN = "metrics-token-0123456789"


async def test_with_a_metrics_token_metrics_needs_it_as_a_bearer_token_and_the_probes_stay_open(serve) -> None:
    client, _ = await serve(metrics_token=METRICS_TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH, {"Authorization": METRICS_TOKEN},
                    {"Authorization": f"Basic {METRICS_TOKEN}"}):
        resp = await client.get("/metrics", headers=headers)
        assert (resp.status, resp.headers.get("WWW-Authenticate")) == (401, "Bearer"), headers
        assert await resp.json() == {"error": "missing or wrong bearer token"}
    assert (await client.head("/metrics")).status == 401
    resp = await client.get("/metrics", headers={"Authorization": f"bearer {METRICS_TOKEN}"})
    assert resp.status == 200
    assert f'org_id="{ORG}"' in await resp.text()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    assert (await client.get(f"/api/v1/orgs/{ORG}/health", headers=AUTH)).status == 200, "the API keeps its own token"


@pytest.mark.parametrize("path", ["/metrics/", "//metrics", "/%6Detrics", "/METRICS", "/./metrics", "/metrics;x",
                                  "/api/../metrics", "/metrics?x=1"])
async def test_no_spelling_of_the_metrics_url_gets_the_exposition_without_the_token(serve, path) -> None:
    client, _ = await serve(metrics_token=METRICS_TOKEN)
    reader, writer = await asyncio.open_connection(client.host, client.port)  # raw: no client-side normalising
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    assert answer.split(b" ", 2)[1] in (b"401", b"404"), answer[:200]
    assert b"integration_health" not in answer


def test_a_short_metrics_token_is_refused_naming_the_variable_and_an_empty_one_means_unset() -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(metrics_token="short")
    assert describe_settings_error(exc.value).startswith("EXPORTER_METRICS_TOKEN: shorter than 16 characters")
    assert Settings(metrics_token="").metrics_token is None


async def test_a_result_in_a_vendor_wide_incident_says_so_in_status_and_history(served) -> None:
    client, store = served
    since = datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
    current = store.status[(ORG, "http")]
    flagged = replace(current, result=replace(current.result, vendor_incident_since=since))
    store.status[(ORG, "http")] = flagged
    store.slots[(ORG, "http", since)] = flagged
    (health,) = (await (await client.get(f"/api/v1/orgs/{ORG}/health", headers=AUTH)).json())["integrations"]
    assert health["vendor_incident_since"] == "2026-11-23T10:15:00+00:00"
    assert health["vendor_incident"] == "vendor-wide incident since 10:15 UTC"
    history = (await (await client.get(f"/api/v1/orgs/{ORG}/health/history", headers=AUTH)).json())["integrations"]
    slots = {s["slot"]: s for s in history[0]["slots"]}
    assert slots["2026-11-23T10:15:00+00:00"]["vendor_incident"] == "vendor-wide incident since 10:15 UTC"
    assert [s["vendor_incident_since"] for k, s in slots.items() if k != "2026-11-23T10:15:00+00:00"] == [None]


@pytest.mark.parametrize(("variable", "value"), [("EXPORTER_VENDOR_INCIDENT_MIN_ORGS", "0"),
                                                 ("EXPORTER_VENDOR_INCIDENT_RATIO", "0"),
                                                 ("EXPORTER_VENDOR_INCIDENT_RATIO", "1.5"),
                                                 ("EXPORTER_VENDOR_INCIDENT_CANARIES", "0")])
def test_vendor_incident_settings_out_of_range_are_refused_by_name(monkeypatch, variable, value) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings(database_url="postgresql://unused")
    assert describe_settings_error(caught.value).startswith(f"{variable}: ")
