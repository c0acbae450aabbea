"""Database tests: marked `db` (CI runs them again on the system PostgreSQL), and the webhook fixtures they share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from exporter.adapters.client import HttpClient
from exporter.storage.store import create_pool
from tests.support.fakes import loopback_session
from tests.support.receiver import Receiver


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/db/" in str(item.path):
            item.add_marker(pytest.mark.db)


@pytest.fixture
async def receiver(aiohttp_server) -> tuple[Receiver, str]:
    """A loopback webhook receiver (it verifies signatures and records requests) and its URL."""
    r = Receiver()
    server = await aiohttp_server(r.app(), access_log=None)
    return r, str(server.make_url("/hook"))


@pytest.fixture
async def session() -> AsyncIterator[HttpClient]:
    """An HTTP session that enforces the egress policy and allows the loopback receiver."""
    async with loopback_session() as s:
        yield s


@pytest.fixture
async def vault_pool(db_dsn):
    """A pool as the service's role: what the credential functions are called through."""
    pool = await create_pool(db_dsn, role="service_role")
    yield pool
    await pool.close()
