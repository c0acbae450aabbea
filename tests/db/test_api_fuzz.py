"""schemathesis against the OpenAPI description, on a live service: valid and invalid input, with the
operator's token, none, a wrong one, an app user's JWT and an expired one. No input may produce a 5xx,
and every error is JSON with a reason."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import requests
import schemathesis
from aiohttp import web
from schemathesis import GenerationMode

from exporter.services import open_services
from exporter.web.app import create_app
from exporter.web.openapi import OPENAPI
from tests.conftest import dsn_for
from tests.helpers import AUTH, JWT_SECRET, app_token, bearer, settings_for

SCHEMA = schemathesis.openapi.from_dict(OPENAPI)
SCHEMA.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=80,
                                deterministic=os.environ.get("CI") == "true")  # as the hypothesis "ci" profile
ORG = uuid.UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
TOKENS = [AUTH, {}, {"Authorization": "Bearer wrong"},
          bearer(app_token({"org_id": str(ORG)})),  # a member of one org: 403 on every other
          bearer(app_token({"org_id": str(ORG), "exp": int(time.time()) - 3600}))]  # expired: 401


@pytest.fixture(scope="module")
def live_api(pg_server: str, template_db: str) -> Iterator[str]:
    """The service on a loopback port, served from its own thread and event loop (schemathesis is sync)."""
    loop = asyncio.new_event_loop()
    dsn = dsn_for(pg_server, f"f_{uuid.uuid4().hex[:12]}")

    async def start() -> web.AppRunner:
        conn = await asyncpg.connect(pg_server)
        await conn.execute(f"CREATE DATABASE {dsn.rsplit('/', 1)[1]} TEMPLATE {template_db}")
        await conn.close()
        settings = settings_for(dsn, run_now_min_interval_seconds=0, jwt_secret=JWT_SECRET)
        services = await stack.enter_async_context(open_services(settings, dsn))
        runner = web.AppRunner(create_app(settings, services), access_log=None)
        stack.push_async_callback(runner.cleanup)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    stack = contextlib.AsyncExitStack()
    runner = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def assert_a_json_reason_and_no_5xx(resp: requests.Response) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    if resp.status_code >= 400:
        assert isinstance(resp.json()["error"], str), resp.text[:500]


@SCHEMA.parametrize()
def test_no_generated_request_gets_a_5xx(case, live_api) -> None:
    for headers in TOKENS:
        assert_a_json_reason_and_no_5xx(case.call(base_url=live_api, headers=headers))


@pytest.mark.parametrize(("data", "headers", "status", "error"), [
    (b"{" * 2_000_000, {"Content-Type": "application/json"}, 413, "Request Entity Too Large"),
    (b'{"org_id": 1}', {"Content-Type": "text/plain"}, 415, "send the run as JSON"),
    (b"org_id=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "send the run as JSON"),
    (b"{not json", {"Content-Type": "application/json"}, 400, "invalid sync run"),
    (b"\xff\xfe\x00", {"Content-Type": "application/json"}, 400, "invalid sync run"),
    (b"[]", {"Content-Type": "application/json"}, 400, "invalid sync run"),
])
def test_bodies_that_are_too_big_or_not_json_get_the_right_4xx(live_api, data, headers, status, error) -> None:
    resp = requests.post(f"{live_api}/api/v1/sync-runs", data=data, headers=AUTH | headers, timeout=30)
    assert (resp.status_code, error in resp.json()["error"]) == (status, True), resp.text[:300]


@pytest.mark.parametrize("token", ["Bearer wrong", "Bearer ", "Basic dGVzdA==", "Bearer " + "x" * 8_000,
                                   "Bearer test-token-12\u00e9"])
def test_a_missing_or_wrong_token_is_401(live_api, token) -> None:
    resp = requests.get(f"{live_api}/api/v1/orgs/{uuid.uuid4()}/health",
                        headers={"Authorization": token.encode("utf-8")}, timeout=30)
    assert (resp.status_code, resp.json()["error"]) == (401, "missing or wrong bearer token")


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", f"/api/v1/orgs/{ORG}/health", 200), ("GET", f"/api/v1/orgs/{ORG}/health/history", 200),
    ("POST", f"/api/v1/orgs/{ORG}/checks", 404),  # its own org, which has no integrations yet
    ("GET", f"/api/v1/orgs/{uuid.uuid4()}/health", 403), ("POST", "/api/v1/sync-runs", 403),
])
def test_an_app_users_token_reaches_its_own_org_and_nothing_else(live_api, method, path, status) -> None:
    resp = requests.request(method, f"{live_api}{path}", headers=TOKENS[3], timeout=30)
    assert resp.status_code == status, resp.text[:300]


def test_a_header_over_8_kb_is_refused_by_the_http_parser_with_a_400(live_api) -> None:
    # aiohttp's parser answers this itself, before any handler, so its body is plain text.
    resp = requests.get(f"{live_api}/api/v1/orgs/{uuid.uuid4()}/health",
                        headers={"Authorization": "Bearer " + "x" * 10_000}, timeout=30)
    assert resp.status_code == 400


@pytest.mark.parametrize(("field", "value", "error"), [
    ("error_message", "boom\x00", "error_message: string should match pattern"),
    ("integration_type", "x\x00", "integration_type: string should match pattern"),
    ("scheduled_for", "0001-01-01T00:00:00+14:00", "scheduled_for"),
    ("scheduled_for", "9999-12-31T23:59:59-14:00", "scheduled_for"),
])
def test_values_postgresql_cannot_store_are_a_400_naming_the_field(live_api, field, value, error) -> None:
    body = {"org_id": str(uuid.uuid4()), "integration_type": "xledger", "scheduled_for": "2026-11-22T01:00:00Z",
            "outcome": "success"} | {field: value}
    resp = requests.post(f"{live_api}/api/v1/sync-runs", json=body, headers=AUTH, timeout=30)
    assert (resp.status_code, error in resp.json()["error"]) == (400, True), resp.text[:300]
