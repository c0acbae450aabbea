"""Helpers for the service-level tests: settings, rows, waiting, parsing /metrics."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any
from uuid import UUID

import asyncpg
import jwt
from prometheus_client.parser import text_string_to_metric_families

from exporter.settings import Settings

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JWT_SECRET = "test-jwt-secret-of-the-app-0123456789"  # the app's (Supabase project's) HS256 secret
WEBHOOK_KEYS = "test-1:" + base64.b64encode(bytes(range(32))).decode()  # seals webhook secrets (fixed: tests compare)


def app_token(claims: dict[str, Any] | None = None, *, key: Any = JWT_SECRET, algorithm: str = "HS256",
              headers: dict[str, Any] | None = None) -> str:
    """A signed-in app user's access token as Supabase issues it (role and audience `authenticated`, an hour
    left), with `claims` added; a claim given as None is left out."""
    now = int(time.time())
    payload = {"sub": "user-1", "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3600}
    payload = {k: v for k, v in (payload | (claims or {})).items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def settings_for(dsn: str, **overrides) -> Settings:
    base = {"database_url": dsn, "check_interval": 86400, "api_token": TOKEN, "credential_provider": "none",
            "check_timeout_seconds": 2, "type_intervals": {}, "egress_allow": "127.0.0.1",  # the loopback simulator
            "webhook_secret_keys": WEBHOOK_KEYS}
    return Settings(**(base | overrides))


async def add_http(conn: asyncpg.Connection, org: UUID, tenant: str, base: str, kind: str = "http") -> None:
    config = {"url": f"{base}/http/{tenant}", "method": "GET"} if kind == "http" else {"url": f"{base}/fiken/x"}
    await conn.execute("INSERT INTO integration_config (org_id, integration_type, config) VALUES ($1, $2, $3::jsonb)",
                       org, kind, json.dumps(config))


async def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_until_async(probe, timeout: float = 30.0, what: str = "condition") -> None:
    """wait_until for a probe that has to await (a database query, say)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def gauges(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out




async def database_text(dsn: str) -> str:
    """Every row of every table in the public schema, as text: where a leaked secret would be found."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                  "WHERE n.nspname = 'public' AND c.relkind = 'r'")
        return "\n".join([str(await conn.fetch(f'SELECT t::text FROM public."{t["relname"]}" t')) for t in tables])
    finally:
        await conn.close()


async def service_outputs(client, dsn: str, orgs) -> dict[str, str]:
    """What a running service shows the world: /metrics, the API for each org, and its database rows."""
    outputs = {"/metrics": await (await client.get("/metrics")).text(), "database": await database_text(dsn),
               "/readyz": await (await client.get("/readyz")).text()}
    for org in orgs:
        for path in (f"/api/v1/orgs/{org}/health", f"/api/v1/orgs/{org}/health/history"):
            outputs[path] = await (await client.get(path, headers=AUTH)).text()
    return outputs


def assert_secret_absent(secret: str, outputs: dict[str, str]) -> None:
    leaks = [name for name, text in outputs.items() if secret in text]
    assert not leaks, f"the planted secret leaked into: {leaks}"
