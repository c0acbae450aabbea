"""Helpers for the service-level tests: settings, rows, waiting, parsing /metrics."""

from __future__ import annotations

import asyncio
import json
from uuid import UUID

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from exporter.settings import Settings

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings_for(dsn: str, **overrides) -> Settings:
    base = {"database_url": dsn, "check_interval": 86400, "api_token": TOKEN, "credential_provider": "none",
            "check_timeout_seconds": 2, "type_intervals": {}}
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


def gauges(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


