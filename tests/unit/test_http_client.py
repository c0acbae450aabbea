"""The check client's HTTP/1.1 (adapters/client.py, http1.py) against raw loopback servers that send exactly
the bytes a test names: keep-alive and its limits, a server that closed a pooled connection, bodies by length,
by chunks and until the connection closes, interim answers, caps, a header that would split the request, a
cancelled check, and the bound on connections."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from yarl import URL

from exporter.adapters.classify import describe_exception
from exporter.adapters.client import (
    KEEPALIVE_S,
    CertificateError,
    ConnectError,
    DNSError,
    HttpClient,
    InvalidURL,
    _host_header,
)
from exporter.adapters.http import HttpConfig
from exporter.adapters.http1 import MAX_HEAD_BYTES, InvalidRequest, PayloadError, ProtocolError, ServerDisconnected
from exporter.core.egress import Blocked, EgressPolicy
from exporter.core.model import HealthStatus, Reason

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


async def test_a_second_answer_in_the_same_read_is_never_read_as_the_next_requests() -> None:
    smuggled = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
    async with serving(answering(smuggled, OK)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        assert (await client.request("GET", base))[0].body == b"ok"
        assert (await client.request("GET", base))[0].body == b"ok"  # not "smuggled": a new connection's answer
        assert server.connections == 2


# -- what real servers send (the newcomer review's cases, each against what aiohttp did) ----------------------------


@pytest.mark.parametrize(("answer", "methods"), [
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", ("HEAD",) * 3),  # a HEAD's: no length, no body
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", ("HEAD", "GET", "POST")),
    (b"HTTP/1.1 204 No Content\r\n\r\n", ("HEAD", "GET", "POST")),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ("HEAD", "GET", "POST")),  # a webhook receiver's
])
async def test_answers_without_a_body_keep_the_connection(answer: bytes, methods: tuple[str, ...]) -> None:
    async with serving(answering(answer)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        for method in methods:
            assert (await client.request(method, base, read_body=method != "POST"))[0].body == b""
        assert server.connections == 1


async def test_http_1_0_and_a_body_by_another_transfer_coding_run_until_the_close() -> None:
    for answer in (b"HTTP/1.0 200 OK\r\n\r\nold", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nold"):
        async def once(reader, writer, server, answer=answer) -> None:
            await server.read_request(reader)
            writer.write(answer)
            await writer.drain()

        async with serving(once) as (server, base), HttpClient(policy=LOOPBACK) as client:
            for _ in range(2):
                assert (await client.request("GET", base))[0].body == b"old"
            assert server.connections == 2


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",  # obs-fold
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",  # bare LF line ends (small embedded servers)
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n",  # a space after a chunk size
])
async def test_answers_aiohttp_accepted_are_still_accepted(answer: bytes) -> None:
    async with serving(answering(answer)) as (_, base), HttpClient(policy=LOOPBACK) as client:
        answer_, _ = await client.request("GET", base)
        assert (answer_.status, answer_.body) == (200, b"ok")


async def test_a_head_split_across_reads_and_a_raw_deflate_body_are_read() -> None:
    data = zlib.compress(b'{"ok": true}')[2:-4]  # deflate without its zlib wrapper, as some servers send it

    async def pieces(reader, writer, server) -> None:
        await server.read_request(reader)
        head = b"HTTP/1.1 200 OK\r\nX-Long-Name: value-here\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
        for piece in (head[:20], head[20:41], (head % len(data))[41:], data):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)

    async with serving(pieces) as (_, base), HttpClient(policy=LOOPBACK) as client:
        answer, _ = await client.request("GET", base)
        assert (answer.headers["x-long-name"], answer.body) == ("value-here", b'{"ok": true}')


async def test_endless_interim_answers_are_refused() -> None:
    async def flood(reader, writer, server) -> None:
        await server.read_request(reader)
        while True:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 400)
            await writer.drain()

    async with serving(flood) as (_, base), HttpClient(policy=LOOPBACK) as client:
        with pytest.raises(ProtocolError, match="interim|larger than"):
            await client.request("GET", base)


async def test_a_pooled_connection_reset_while_idle_or_put_out_of_step_by_a_late_body_is_retried() -> None:
    async def reset_after_one(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(OK)
        await writer.drain()
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST

    async with serving(reset_after_one) as (server, base), HttpClient(policy=LOOPBACK) as client:
        await client.request("GET", base)
        await asyncio.sleep(0.05)
        assert (await client.request("GET", base))[0].status == 200
        assert server.connections == 2

    async def late_head_body(reader, writer, server) -> None:
        while True:
            if (await server.read_request(reader)).startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)  # the next request is on its way meanwhile
                writer.write(b"hello")
            else:
                writer.write(OK)
            await writer.drain()

    async with serving(late_head_body) as (server, base), HttpClient(policy=LOOPBACK) as client:
        await client.request("HEAD", base)
        answer, _ = await client.request("GET", base)
        assert (answer.status, answer.body, server.connections) == (200, b"ok", 2)


async def test_idle_connections_past_the_keepalive_are_swept() -> None:
    now = [0.0]
    async with serving(answering(OK)) as (_, a), serving(answering(OK)) as (_, b), \
            HttpClient(policy=LOOPBACK, clock=lambda: now[0]) as client:
        await client.request("GET", a)
        [idle] = [c for conns in client._idle.values() for c in conns]
        now[0] += KEEPALIVE_S + 1
        await client.request("GET", b)  # its release sweeps
        assert not idle.usable and idle.transport is not None and idle.transport.is_closing()


def test_the_host_header_brackets_an_ipv6_literal_and_names_only_a_port_that_is_not_the_default() -> None:
    assert [_host_header(URL(u)) for u in ("http://[::1]:8080/", "https://example.com:443/", "http://a.example/",
                                            "https://b.example:8443/x")] == ["[::1]:8080", "example.com",
                                                                             "a.example", "b.example:8443"]


async def test_refused_connections_name_the_destination() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with HttpClient(policy=LOOPBACK) as client:
        with pytest.raises(ConnectError) as refused:
            await client.request("GET", f"http://127.0.0.1:{port}/")
    assert describe_exception(refused.value) == (HealthStatus.UNREACHABLE, Reason.CONNECT,
                                                 f"cannot connect to 127.0.0.1:{port}: Connection refused")


# -- names and addresses ---------------------------------------------------------------------------------------------


async def test_a_dead_first_address_does_not_cost_the_connect_timeout() -> None:
    """A blackholed address (a listener with a full backlog drops SYNs) first, a live one second: the second is
    raced after 0.25 s (RFC 8305), as aiohttp did, not after the connect timeout of an hour set here."""
    async with serving(answering(OK)) as (_, base):
        port = int(base.rsplit(":", 1)[1])
        with socket.socket() as hole:
            hole.bind(("127.0.0.2", port))
            hole.listen(0)
            fillers = [socket.socket() for _ in range(3)]
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.2", port))

            async def resolve(host: str, port: int) -> tuple[str, ...]:
                return ("127.0.0.2", "127.0.0.1")

            async with HttpClient(policy=LOOPBACK, resolve=resolve, connect_timeout=3600) as client:
                async with asyncio.timeout(30):  # sequential tries would wait out the hour
                    assert (await client.request("GET", f"http://vendor.test:{port}/"))[0].status == 200
            for filler in fillers:
                filler.close()


async def test_a_names_addresses_take_turns_and_concurrent_first_lookups_are_one() -> None:
    peers: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("sockname")[0])
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()
        writer.close()

    first = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = first.sockets[0].getsockname()[1]
    second = await asyncio.start_server(serve, "127.0.0.2", port)
    asked = [0]

    async def resolve(host: str, port: int) -> tuple[str, ...]:
        asked[0] += 1
        await asyncio.sleep(0.05)
        return ("127.0.0.1", "127.0.0.2")

    try:
        async with HttpClient(policy=LOOPBACK, resolve=resolve, force_close=True) as client:
            await asyncio.gather(*(client.request("GET", f"http://vendor.test:{port}/") for _ in range(4)))
            await client.request("GET", f"http://vendor.test:{port}/")
    finally:
        first.close()
        second.close()
    assert asked[0] == 1 and set(peers) == {"127.0.0.1", "127.0.0.2"}


async def test_tls_sends_the_name_checks_it_and_reports_the_expiry_only_when_verified() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: names.append(name)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(OK)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trust = ssl.create_default_context()
    ca.configure_trust(trust)

    async def resolve(host: str, port: int) -> tuple[str, ...]:
        return ("127.0.0.1",)

    try:
        async with HttpClient(policy=LOOPBACK, ssl_context=trust, resolve=resolve) as client:
            answer, expires = await client.request("GET", f"https://localhost:{port}/")
            assert (answer.status, expires is not None, names) == (200, True, ["localhost"])
            with pytest.raises(CertificateError):  # the certificate names localhost, not 127.0.0.1
                await client.request("GET", f"https://127.0.0.1:{port}/")
            answer, expires = await client.request("GET", f"https://127.0.0.1:{port}/", verify=False)
            assert (answer.status, expires) == (200, None)
    finally:
        server.close()


# -- what a hostile tenant tried (the attacker review's cases) -------------------------------------------------------


async def test_a_check_cannot_set_the_requests_framing_so_the_next_request_on_its_connection_stays_whole() -> None:
    async with serving(answering(OK)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        for name in ("Content-Length", "transfer-encoding", "Host", "Connection", "Expect", "TE", "Upgrade"):
            with pytest.raises(InvalidRequest, match=f"header {name} is the client's"):
                await client.request("GET", base, headers={name: "118"})
        assert (server.connections, server.requests) == (0, [])
    with pytest.raises(ValueError, match="must not be a header the HTTP client sets itself"):
        HttpConfig.model_validate({"url": "https://vendor.example/", "auth": "header", "auth_header": "Content-Length"})


@pytest.mark.parametrize(("start", "forever"), [
    (b"0\r\nX-Trailer: ", b"a" * 4096),  # a trailer field without end, after the body's last chunk
    (b"2\r\nx\x9c\r\n", b"5\r\n\x00\x00\x00\xff\xff\r\n"),  # a zlib header, then empty deflate blocks forever
])
async def test_an_answer_that_never_ends_after_its_head_is_refused_at_the_wire_cap(start: bytes, forever: bytes) -> None:
    async def endless(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: deflate\r\n\r\n" + start)
        while True:
            writer.write(forever * 16)
            await writer.drain()

    async with serving(endless) as (_, base), HttpClient(policy=LOOPBACK) as client:
        with pytest.raises(ProtocolError, match="larger than .* KiB as sent"):
            await client.request("GET", base)


async def test_a_literal_address_is_connected_to_as_judged_not_resolved_again(monkeypatch) -> None:
    from exporter.adapters import client as client_module

    opened: list[object] = []
    real = client_module.open_connection

    async def recording(addresses, *args):
        opened.append(tuple(addresses))
        return await real(addresses, *args)

    monkeypatch.setattr(client_module, "open_connection", recording)
    async with serving(answering(OK)) as (_, base), HttpClient(policy=LOOPBACK) as client:
        port = base.rsplit(":", 1)[1]
        assert (await client.request("GET", f"http://127.0.0.1.:{port}/"))[0].status == 200
    assert opened == [("127.0.0.1",)]


async def test_a_server_that_speaks_first_fails_the_check_at_once() -> None:
    async def speaks_first(reader, writer, server) -> None:
        writer.write(b"220 welcome\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    async with serving(speaks_first) as (_, base), HttpClient(policy=LOOPBACK) as client:
        async with asyncio.timeout(10):  # not the check deadline: the stray bytes end it
            with pytest.raises((ProtocolError, ServerDisconnected)):
                await client.request("GET", base)


async def test_credentials_in_the_url_are_sent_as_basic_auth() -> None:
    async with serving(answering(OK)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        await client.request("GET", base.replace("http://", "http://user:p%40ss@") + "/")
    assert b"Authorization: Basic dXNlcjpwQHNz\r\n" in server.requests[0]  # user:p@ss


async def test_a_tls_connection_closed_after_its_answer_leaves_no_socket_waiting_for_the_server() -> None:
    """A polite TLS close waits up to 30 s for the server's close_notify: a silent server would keep each such
    socket open outside the client's bound. The client's side must be gone at once."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    gone = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        with contextlib.suppress(Exception):
            while await reader.read(1024):  # a close_notify alert is read as nothing here; EOF or a reset ends it
                pass
        gone.set()
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0, ssl=server_context)
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    try:
        async with HttpClient(policy=LOOPBACK, ssl_context=trust) as client:
            assert (await client.request("GET", f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/"))[0].body \
                == b"ok"
            async with asyncio.timeout(10):  # a polite close would hold it for 30 s
                await gone.wait()
    finally:
        server.close()


async def test_a_new_policy_retires_connections_opened_under_the_old_one_even_those_in_use() -> None:
    go = asyncio.Event()

    async def first_waits(reader, writer, server) -> None:
        for n in range(100):
            await server.read_request(reader)
            if n == 0 and server.connections == 1:
                await go.wait()
            writer.write(OK)
            await writer.drain()

    async with serving(first_waits) as (server, base), HttpClient(policy=LOOPBACK) as client:
        in_use = asyncio.ensure_future(client.request("GET", base))
        while not server.requests:
            await asyncio.sleep(0.01)
        client.policy = EgressPolicy.from_allow(["127.0.0.0/8"])  # judged again from here on
        go.set()
        assert (await in_use)[0].status == 200
        assert (await client.request("GET", base))[0].status == 200
        assert server.connections == 2, "the connection opened under the old policy went back, not into the pool"


async def test_a_policy_set_while_a_connection_is_being_opened_retires_that_connection_too(monkeypatch) -> None:
    """The connection is marked with the policy it was judged under when the judging starts, not when the
    connect ends: set meanwhile, the new policy must find it old and never reuse it."""
    from exporter.adapters import client as client_module

    real, opening, go = client_module.open_connection, asyncio.Event(), asyncio.Event()

    async def slow(addresses, *args):
        opening.set()
        await go.wait()
        return await real(addresses, *args)

    monkeypatch.setattr(client_module, "open_connection", slow)
    async with serving(answering(OK)) as (server, base), HttpClient(policy=LOOPBACK) as client:
        first = asyncio.ensure_future(client.request("GET", base))
        await opening.wait()
        client.policy = EgressPolicy()  # loopback refused from here on
        go.set()
        assert (await first)[0].status == 200  # judged and opened under the old policy
        with pytest.raises(Blocked):  # not served from the pool: judged anew, and refused
            await client.request("GET", base)
        assert server.connections == 1


async def test_an_unresolvable_or_invalid_name_is_a_dns_failure_and_a_bad_url_is_not_quoted() -> None:
    async with HttpClient(policy=EgressPolicy.from_allow(["127.0.0.0/8"])) as client:
        with pytest.raises(DNSError):
            await client.request("GET", f"http://{'a' * 64}.invalid/")  # a label IDNA refuses
        with pytest.raises(InvalidURL) as refused:
            await client.request("GET", "http://user:s3cret\uff0f@host/")
    assert str(refused.value) == "not a URL" and "s3cret" not in str(refused.value)
