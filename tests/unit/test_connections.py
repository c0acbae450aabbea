"""The server's connection bounds, from raw loopback sockets: a slow request head is cut at the header
timeout, an idle kept-alive connection at the keep-alive timeout, and connections past the cap are closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from exporter.cli import start_site
from exporter.web.connections import ConnectionGuard, GuardedSite, HttpLimits
from tests.helpers import wait_until

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
HANG_GUARD_S = 30  # only so a broken server fails the test instead of hanging it; the bounds tested are far below

Serve = Callable[[HttpLimits], Awaitable[tuple[ConnectionGuard, int]]]
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve a one-route app through cli.start_site with the given limits; return its guard and port."""
    runners: list[web.AppRunner] = []

    async def start(limits: HttpLimits) -> tuple[ConnectionGuard, int]:
        app = web.Application()
        app.router.add_get("/", ok)
        runner = await start_site(app, "127.0.0.1", 0, limits)
        runners.append(runner)
        site = next(iter(runner.sites))
        assert isinstance(site, GuardedSite) and site.guard
        return site.guard, runner.addresses[0][1]

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[int], Awaitable[Conn]]]:
    """Open raw loopback connections; whatever the server left open is closed after the test."""
    writers: list[asyncio.StreamWriter] = []

    async def open_one(port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        return reader, writer

    yield open_one
    for writer in writers:
        writer.close()


async def response(conn: Conn) -> bytes:
    """Send a GET on this connection and return its status line and body."""
    reader, writer = conn
    writer.write(GET)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
                 .split(b":")[1])
    return head.split(b"\r\n", 1)[0] + b" " + await reader.readexactly(length)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (EOF, or a reset if our bytes crossed its FIN)."""
    received = b""
    async with asyncio.timeout(HANG_GUARD_S):
        try:
            while chunk := await reader.read(4096):
                received += chunk
        except ConnectionResetError:
            pass
    return received


async def trickle(writer: asyncio.StreamWriter) -> None:
    """A slowloris: a request line, then header bytes one at a time, never the blank line that ends the head."""
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while True:
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        return


OK = b"HTTP/1.1 200 OK ok"


async def test_slowloris_connections_are_closed_at_the_header_timeout_while_normal_requests_are_served(serve, connect) -> None:
    guard, port = await serve(HttpLimits(max_connections=16, header_timeout_s=0.5, keepalive_s=30))
    slow = [await connect(port) for _ in range(3)]
    trickles = [asyncio.create_task(trickle(writer)) for _, writer in slow]
    normal = await connect(port)
    assert await response(normal) == OK
    for reader, _ in slow:
        assert await until_closed(reader) == b"", "a slow head gets no answer, only a closed socket"
    async with asyncio.timeout(HANG_GUARD_S):
        await asyncio.gather(*trickles)  # each ended because the server closed its socket: it never stops by itself
    assert await response(normal) == OK, "a connection that sent its head in time is not cut"
    normal[1].close()
    await wait_until(lambda: guard.active == 0, what="every connection to be released")


async def test_a_kept_alive_connection_outlives_the_header_timeout_once_its_first_head_arrived(serve, connect) -> None:
    guard, port = await serve(HttpLimits(header_timeout_s=0.2, keepalive_s=30))
    conn = await connect(port)
    for _ in range(3):
        assert await response(conn) == OK
        await asyncio.sleep(0.4)  # twice the header timeout, well inside the keep-alive
    assert guard.active == 1


async def test_an_idle_kept_alive_connection_is_closed_at_the_keepalive_timeout(serve, connect) -> None:
    guard, port = await serve(HttpLimits(header_timeout_s=30, keepalive_s=0.5))
    reader, writer = conn = await connect(port)
    assert await response(conn) == OK
    assert await until_closed(reader) == b""
    await wait_until(lambda: guard.active == 0, what="the idle connection to be released")


async def test_the_connection_past_the_cap_is_closed_and_a_freed_slot_serves_again(serve, connect) -> None:
    guard, port = await serve(HttpLimits(max_connections=3, header_timeout_s=30, keepalive_s=30))
    held = [await connect(port) for _ in range(3)]
    await wait_until(lambda: guard.active == 3, what="three connections to be admitted")
    extra_reader, _ = await connect(port)
    assert await until_closed(extra_reader) == b""
    assert (guard.refused, guard.active) == (1, 3)
    assert await response(held[0]) == OK, "the admitted connections are still served"
    held[1][1].close()
    await wait_until(lambda: guard.active == 2, what="the closed connection's slot to be freed")
    assert await response(await connect(port)) == OK


@pytest.mark.parametrize("bad", [{"max_connections": 0}, {"header_timeout_s": 0}, {"keepalive_s": -1}])
def test_limits_that_would_refuse_or_cut_everything_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        HttpLimits(**bad)
