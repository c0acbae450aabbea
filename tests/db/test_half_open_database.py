"""A database that stops answering mid-connection (half-open TCP, a frozen failover) bounds every wait:
the cycle goes on with the integrations it knew instead of stalling until TCP gives up (~15 min)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from exporter.services import build_services
from exporter.storage.store import Store, create_pool
from tests.helpers import add_http, settings_for
from tests.support.fakes import loopback_session

SLOT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class BlackHoleProxy:
    """Forwards TCP to PostgreSQL until `swallow` is set; then it reads and drops, answering nothing."""

    def __init__(self, host: str, port: int) -> None:
        self.target, self.swallow, self.server = (host, port), False, None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if not self.swallow:
                    writer.write(data)
                    await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.swallow:  # a new connection gets nowhere either
            await self._pipe(reader, writer)
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield self.server.sockets[0].getsockname()[1]
        finally:
            self.server.close()


@pytest.mark.parametrize("command_timeout", [1.0])
async def test_a_cycle_checks_the_known_integrations_while_the_database_swallows_queries(
        db_dsn, admin, sim, command_timeout) -> None:
    _, base = sim
    org = uuid4()
    await add_http(admin, org, "ok", base)
    host_port, database = db_dsn.split("@", 1)[1].split("/", 1)
    host, port = host_port.rsplit(":", 1)
    proxy = BlackHoleProxy(host, int(port))
    async with proxy.running() as proxy_port:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy_port}/{database}"
        pool = await create_pool(dsn, role="service_role", max_size=2, command_timeout=command_timeout)
        try:
            async with loopback_session() as session:
                services = build_services(settings_for(dsn, check_interval=900), store=Store(pool),
                                          session=session)  # type: ignore[arg-type]
                services.scheduler.load_timeout_s = services.outbox.submit_timeout_s = 3.0
                first = await services.scheduler.run_cycle(SLOT, SLOT)
                assert [r.org_id for r in first] == [org]
                proxy.swallow = True
                second = asyncio.create_task(services.scheduler.run_cycle(SLOT.replace(minute=15),
                                                                          SLOT.replace(minute=15)))
                done, _ = await asyncio.wait({second}, timeout=60)  # a bound the code enforces (3 s), not a speed
                assert done, "the cycle stalled on the database"
                assert [r.result.status.value for r in second.result()] == ["healthy"]
                assert services.outbox.pending == 1, "the result waits for the database, it is not lost"
        finally:
            pool.terminate()
