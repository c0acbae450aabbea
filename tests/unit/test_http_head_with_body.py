"""Servers that answer HEAD with a body (a common bug curl and Go tolerate) are answered by their head, and the
connection the stray body arrived on is never used again; an answer that is not HTTP at all is unreachable,
since nothing could sync over it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from exporter.adapters.base import AdapterContext
from exporter.core.model import HealthStatus, Integration, Reason
from tests.support.fakes import loopback_session, runner_for


async def head_with_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request, HEAD included, with a 5-byte body on a kept-alive connection; records methods."""
    CONNECTIONS.append(1)
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        METHODS.append(head.split(b" ", 1)[0].decode())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()


METHODS: list[str] = []
CONNECTIONS: list[int] = []


@pytest.fixture
async def server() -> AsyncIterator[int]:
    METHODS.clear()
    CONNECTIONS.clear()
    srv = await asyncio.start_server(head_with_body, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


async def test_a_head_answered_with_a_body_reads_healthy_and_its_connection_is_not_reused(server) -> None:
    async with loopback_session() as session:
        runner = runner_for(AdapterContext(session=session), timeout=2)
        for _ in range(2):  # the pooled connection the bad answer left behind must not poison the next check
            [r] = await runner.run([Integration(uuid4(), "http", {"url": f"http://127.0.0.1:{server}/"})])
            assert (r.result.status, r.result.reason) == (HealthStatus.HEALTHY, None), r.result.error
    # each check asked once, on a connection of its own: the stray body must not be read as the next answer
    assert (METHODS, len(CONNECTIONS)) == (["HEAD", "HEAD"], 2)


async def test_bytes_that_are_not_http_are_unreachable_not_degraded() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(garbage, "127.0.0.1", 0)
    try:
        async with loopback_session() as session:
            config = {"url": f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/", "method": "GET"}
            runner = runner_for(AdapterContext(session=session), timeout=2)
            [r] = await runner.run([Integration(uuid4(), "http", config)])
    finally:
        srv.close()
    assert (r.result.status, r.result.reason) == (HealthStatus.UNREACHABLE, Reason.BAD_RESPONSE)
