"""Bad integration_config rows, written straight into PostgreSQL: each fails its own integration with a
message naming the field; every other integration is checked and stored normally."""

from __future__ import annotations

import json
from uuid import UUID, uuid4

from exporter.web.api import SERVICES
from tests.helpers import add_http, settings_for, wait_until

HUGE = "x" * 1_000_000

BAD_ROWS = [  # integration_type, config (JSON text), extra columns, the message the status row must carry
    ("sap", '{"url": "http://sap.example"}', {}, "invalid configuration: no adapter for 'sap'"),
    ("http", "[]", {}, "invalid configuration: config must be a JSON object, got an array"),
    ("http", "null", {}, "invalid configuration: config must be a JSON object, got null"),
    ("http", '"http://example.com"', {}, "invalid configuration: config must be a JSON object, got a string"),
    ("http", "{}", {}, "invalid configuration: config.url: field required"),
    ("http", '{"url": null}', {}, "invalid configuration: config.url: URL input should be a string or URL"),
    ("http", json.dumps({"url": "http://" + HUGE}), {}, "invalid configuration: config.url: "),
    ("http", '{"url": "http://a.example", "degraded_latency_ms": "fast"}', {},
     "invalid configuration: config.degraded_latency_ms: input should be a valid integer, unable to parse string"),
    ("http", '{"url": "http://a.example", "expected_status": [200, "ok", 999]}', {},
     "invalid configuration: config.expected_status.1: input should be a valid integer"),
    ("dynamics365", '{"org_url": "https://x.crm4.dynamics.com", "tenant_id": 7}', {},
     "invalid configuration: config.tenant_id: input should be a valid string; config.client_id: field required"),
    ("http", json.dumps({"url": "http://a.example", HUGE: 1}), {}, "invalid configuration: config.xxxx"),
    ("xledger", '{"url": "http://a.example"}', {"health_mode": "passive", "sync_cron": "0 2 31 2 *"},
     "invalid configuration: sync schedule: cron expression '0 2 31 2 *' never fires"),
    ("fiken", '{"url": "http://a.example"}', {"health_mode": "passive", "sync_cron": "0 2 * * *",
                                               "sync_timezone": "Europe/" + "x" * 5000},
     "invalid configuration: sync schedule: unknown time zone 'Europe/xxx"),
]


async def insert(admin, org: UUID, kind: str, config: str, extra: dict) -> None:
    columns = ", ".join(["org_id", "integration_type", "config", *extra])
    values = ", ".join(["$1", "$2", "$3::jsonb", *(f"${n}" for n in range(4, 4 + len(extra)))])
    await admin.execute(f"INSERT INTO integration_config ({columns}) VALUES ({values})", org, kind, config,
                        *extra.values())


async def test_each_bad_row_fails_alone_with_a_message_naming_the_field(db_dsn, admin, sim, service_client) -> None:
    _, base = sim
    bad = {uuid4(): row for row in BAD_ROWS}
    for org, (kind, config, extra, _) in bad.items():
        await insert(admin, org, kind, config, extra)
    good = [uuid4() for _ in range(3)]
    for org in good:
        await add_http(admin, org, "ok", base)
    switched = uuid4()  # created as http, then its type changed underneath its config
    await add_http(admin, switched, "ok", base)
    await admin.execute("UPDATE integration_config SET integration_type = 'fiken' WHERE org_id = $1", switched)

    client = await service_client(settings_for(db_dsn), db_dsn)
    await wait_until(lambda: client.app[SERVICES].scheduler.last_slot is not None, what="the first cycle")
    await wait_until(lambda: client.app[SERVICES].outbox.pending == 0, what="the results to be stored")

    rows = {(r["org_id"], r["integration_type"]): r for r in await admin.fetch(
        "SELECT org_id, integration_type, status, error_message FROM integration_health_status")}
    for org, (kind, _, _, message) in bad.items():
        row = rows[(org, kind)]
        assert row["status"] == "unreachable", (kind, row)
        assert row["error_message"].startswith(message), (message, row["error_message"])
        assert len(row["error_message"]) <= 300
    assert [rows[(org, "http")]["status"] for org in good] == ["healthy"] * 3
    assert rows[(switched, "fiken")]["error_message"] == (
        "invalid configuration: config.method: extra inputs are not permitted")
    history = await admin.fetchval("SELECT count(*) FROM health_check_history")
    assert history == len(bad) + len(good) + 1  # every integration got its history row, bad or not
