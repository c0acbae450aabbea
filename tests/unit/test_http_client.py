"""The check client's HTTP/1.1 (adapters/client.py, http1.py) against raw loopback servers that send exactly
the bytes a test names: keep-alive and its limits, a server that closed a pooled connection, bodies by length,
by chunks and until the connection closes, interim answers, caps, a header that would split the request, a
cancelled check, and the bound on connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from exporter.adapters.client import KEEPALIVE_S, HttpClient, InvalidURL
from exporter.adapters.http1 import MAX_HEAD_BYTES, InvalidRequest, PayloadError, ProtocolError, ServerDisconnected
from exporter.core.egress import EgressPolicy

LOOPBACK = EgressPolicy.from_allow(["127.0.0.0/8"])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A raw TCP server on loopback: each connection runs `handler`; counts connections, records requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler, self.connections, self.requests = handler, 0, list[bytes]()
        self.writers: list[asyncio.StreamWriter] = []

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        request = head + (await reader.readexactly(length) if length else b"")
        self.requests.append(request)
        return request

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await self.handler(reader, writer, self)
        writer.close()


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[Server, str]]:
    server = Server(handler)
    srv = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    try:
        yield server, f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    finally:
        for writer in server.writers:
            writer.close()
        srv.close()


def answering(*answers: bytes) -> Handler:
    """Answer each request on a connection with the next of `answers` (the last one repeats)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        for i in range(10_000):
            await server.read_request(reader)
            writer.write(answers[min(i, len(answers) - 1)])
            await writer.drain()
    return handler


async def test_keep_alive_reuses_one_connection_and_connection_close_does_not() -> None:
    async with serving(answering(OK)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        for _ in range(3):
            answer, _ = await client.request("GET", f"{base}/a")
            assert (answer.status, answer.body) == (200, b"ok")
        assert server.connections == 1
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    async with serving(answering(closing)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        for _ in range(2):
            assert (await client.request("GET", f"{base}/a"))[0].body == b"ok"
        assert server.connections == 2


async def test_an_idle_connection_past_the_keepalive_is_not_reused() -> None:
    now = [0.0]
    async with serving(answering(OK)) as (server, base), HttpClient(policy=LOOPBACK, clock=lambda: now[0]) as client:
        await client.request("GET", base)
        now[0] += KEEPALIVE_S + 1
        await client.request("GET", base)
        assert server.connections == 2


async def test_a_pooled_connection_the_server_closed_is_retried_once_for_get_but_not_for_post() -> None:
    async def one_then_close(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(OK)
        await writer.drain()
        await reader.read(1)  # the next request's first byte: close without answering, as a server's idle timer

    async with serving(one_then_close) as (server, base), HttpClient(policy=LOOPBACK) as client:
        await client.request("GET", base)
        assert (await client.request("GET", base))[0].status == 200  # closed under it, asked again on a new one
        assert server.connections == 2
        with pytest.raises(ServerDisconnected):  # the same on the pooled second connection: a POST is not resent
            await client.request("POST", base, data=b"x")
        assert (await client.request("POST", base, data=b"y"))[0].status == 200  # a fresh connection: answered
        assert server.connections == 3
    assert [r.split(b" ", 1)[0] for r in server.requests] == [b"GET", b"GET", b"POST"]
    assert server.requests[-1].endswith(b"y")


async def test_bodies_by_chunks_and_until_the_connection_closes_are_read_whole() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    async with serving(answering(chunked)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        for _ in range(2):
            assert (await client.request("GET", base))[0].body == b"abcde"
        assert server.connections == 1

    async def until_close(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        await writer.drain()

    async with serving(until_close) as (_, base), HttpClient(policy=LOOPBACK) as client:
        answer, _ = await client.request("GET", base)
        assert (answer.status, answer.body, answer.keep_alive) == (200, b"all of it", False)


async def test_an_interim_answer_is_skipped_for_the_final_one() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    async with serving(answering(interim)) as (_, base), HttpClient(policy=LOOPBACK) as client:
        answer, _ = await client.request("GET", base)
        assert (answer.status, answer.body) == (200, b"ok")


async def test_a_body_cut_short_is_a_payload_error_and_not_http_is_a_protocol_error() -> None:
    async with serving(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")) as (server, base):
        async with HttpClient(policy=LOOPBACK) as client:
            task = asyncio.ensure_future(client.request("GET", base))
            await asyncio.sleep(0.05)
            server.writers[0].close()
            with pytest.raises(PayloadError):
                await task
    async with serving(answering(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")) as (_, base), HttpClient(policy=LOOPBACK) as client:
        with pytest.raises(ProtocolError, match="not a valid HTTP response"):
            await client.request("GET", base)


async def test_a_head_that_never_ends_is_refused_at_the_cap() -> None:
    async def flood(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(2 * MAX_HEAD_BYTES // 1024 + 2):
            writer.write(b"X-Flood: " + b"a" * 1000 + b"\r\n")
            await writer.drain()
        await asyncio.sleep(5)

    async with serving(flood) as (_, base), HttpClient(policy=LOOPBACK) as client:
        with pytest.raises(ProtocolError, match="larger than 64 KiB|more than 128 headers"):
            await client.request("GET", base)


async def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async with serving(answering(OK)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        for value in ("token\r\nX-Injected: 1", "token\nHost: evil.example", "a\x00b"):
            with pytest.raises(InvalidRequest) as refused:
                await client.request("GET", base, headers={"Authorization": value})
            assert "token" not in str(refused.value) and "Authorization" in str(refused.value)
        with pytest.raises(InvalidRequest):
            await client.request("GET", base, headers={"Bad Name": "x"})
        assert (server.connections, server.requests) == (0, [])


async def test_a_url_without_a_host_or_of_another_scheme_is_invalid() -> None:
    async with HttpClient(policy=LOOPBACK) as client:
        for url in ("ftp://127.0.0.1/", "http:///path", "file:///etc/passwd"):
            with pytest.raises(InvalidURL):
                await client.request("GET", url)


async def test_a_cancelled_check_leaves_no_connection_in_the_pool() -> None:
    async def slow_then_ok(reader, writer, server) -> None:
        await server.read_request(reader)
        if server.connections == 1:
            await asyncio.sleep(10)  # the first connection's answer never comes in time
        writer.write(OK)
        await writer.drain()
        await server.read_request(reader)

    async with serving(slow_then_ok) as (server, base), HttpClient(policy=LOOPBACK) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.request("GET", base)
        assert (await client.request("GET", base))[0].body == b"ok"
        assert server.connections == 2  # the half-answered connection was closed, not handed out again


async def test_at_most_limit_connections_are_in_use_at_once() -> None:
    release = asyncio.Event()

    async def held(reader, writer, server) -> None:
        await server.read_request(reader)
        await release.wait()
        writer.write(OK)
        await writer.drain()

    async with serving(held) as (server, base), HttpClient(policy=LOOPBACK, limit=2) as client:
        tasks = [asyncio.ensure_future(client.request("GET", f"{base}/{i}")) for i in range(5)]
        await asyncio.sleep(0.2)
        assert server.connections == 2
        release.set()
        assert all(a.status == 200 for a, _ in await asyncio.gather(*tasks))


async def test_a_request_carries_its_host_default_headers_and_its_body() -> None:
    async with serving(answering(OK)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        await client.request("PUT", f"{base}/x?a=1", params={"b": "2 3"}, json={"k": "v"},
                             headers={"Accept": "application/json"})
        await client.request("POST", base, data={"grant_type": "client_credentials"})
    put, post = server.requests
    head, _, body = put.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"PUT /x?a=1&b=2+3 HTTP/1.1"
    assert {b"Host: " + base.removeprefix("http://").encode(), b"Accept: application/json",
            b"Content-Type: application/json", b"Content-Length: 10"} <= set(lines)
    assert b"Accept: */*" not in lines and b"Cookie" not in head and body == b'{"k": "v"}'
    assert post.endswith(b"\r\n\r\ngrant_type=client_credentials")
    assert b"Content-Type: application/x-www-form-urlencoded" in post


async def test_read_body_false_answers_at_the_head_and_closes_the_connection() -> None:
    async with serving(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")) as (server, base):
        async with HttpClient(policy=LOOPBACK) as client:
            for _ in range(2):
                answer, _ = await client.request("POST", base, data=b"{}", read_body=False)
                assert (answer.status, answer.body) == (200, b"")
            assert server.connections == 2


async def test_a_second_answer_to_one_request_is_never_read_as_the_next_ones() -> None:
    smuggled = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
    async with serving(answering(smuggled, OK)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        assert (await client.request("GET", base))[0].body == b"ok"
        assert (await client.request("GET", base))[0].body == b"ok"  # not "smuggled": a new connection's answer
        assert server.connections == 2
