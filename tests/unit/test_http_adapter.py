"""The generic http adapter against the loopback simulator and small aiohttp servers."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import ssl
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID

import pytest
import trustme
from aiohttp import web

from exporter.adapters.base import AdapterContext
from exporter.adapters.classify import parse_retry_after
from exporter.adapters.transport import MAX_BODY_BYTES, BodyTooLarge, fetch
from exporter.core.model import HealthResult, HealthStatus, Integration, Reason
from exporter.demo.simulator import Mode
from tests.support.fakes import StaticCredentials, loopback_session, runner_for

ORG = UUID("33333333-3333-4333-8333-333333333333")


async def check(ctx: AdapterContext, config: dict, timeout: float = 2.0):
    [r] = await runner_for(ctx, timeout=timeout).run([Integration(ORG, "http", config)])
    return r.result


@pytest.mark.parametrize(("mode", "status", "reason", "error"), [
    (Mode("healthy"), HealthStatus.HEALTHY, None, None),
    (Mode("rate_limited", retry_after=120), HealthStatus.DEGRADED, Reason.RATE_LIMITED, "rate limited (HTTP 429)"),
    (Mode("unauthorized"), HealthStatus.DEGRADED, Reason.AUTH, "credentials rejected (HTTP 401)"),
    (Mode("server_error"), HealthStatus.UNREACHABLE, Reason.HTTP_5XX, "server error (HTTP 500)"),
    (Mode("reset"), HealthStatus.UNREACHABLE, Reason.CONNECT, "connection closed or reset by the server"),
    (Mode("redirect_loop"), HealthStatus.DEGRADED, Reason.BAD_RESPONSE, "too many redirects (redirect loop?)"),
    (Mode("oversized"), HealthStatus.DEGRADED, Reason.BAD_RESPONSE,
     "unexpected response: response body larger than 256 KiB"),
    (Mode("hang"), HealthStatus.UNREACHABLE, Reason.TIMEOUT, "timed out after 0.5 s"),
])
async def test_each_simulator_mode_maps_to_its_documented_status(sim, ctx, mode, status, reason, error) -> None:
    state, base = sim
    state.modes["t"] = mode
    result = await check(ctx, {"url": f"{base}/http/t", "method": "GET"}, timeout=0.5)
    assert (result.status, result.reason, result.error) == (status, reason, error)


async def test_retry_after_is_carried_into_the_result(sim, ctx) -> None:
    state, base = sim
    state.modes["t"] = Mode("rate_limited", retry_after=120)
    result = await check(ctx, {"url": f"{base}/http/t"})
    assert result.retry_after_s == 120


async def test_slower_than_threshold_is_degraded_with_latency_recorded(sim, ctx) -> None:
    state, base = sim
    state.modes["t"] = Mode("slow", ms=60)
    result = await check(ctx, {"url": f"{base}/http/t", "degraded_latency_ms": 50})
    assert result.status == HealthStatus.DEGRADED
    assert result.reason == Reason.SLOW
    assert result.latency_ms >= 60


async def test_head_not_allowed_falls_back_to_get(aiohttp_server, ctx) -> None:
    seen: list[str] = []

    async def only_get(request: web.Request) -> web.Response:
        seen.append(request.method)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/h", only_get, allow_head=False)
    server = await aiohttp_server(app)
    result = await check(ctx, {"url": str(server.make_url("/h"))})
    assert result.status == HealthStatus.HEALTHY
    assert seen == ["GET"]  # the HEAD got aiohttp's 405 before reaching the handler


async def test_expected_status_overrides_the_2xx_rule(aiohttp_server, ctx) -> None:
    app = web.Application()
    async def teapot(request: web.Request) -> web.Response:
        return web.Response(status=418)

    app.router.add_get("/teapot", teapot)
    server = await aiohttp_server(app)
    url = str(server.make_url("/teapot"))
    assert (await check(ctx, {"url": url, "method": "GET", "expected_status": [418]})).status == HealthStatus.HEALTHY
    result = await check(ctx, {"url": url, "method": "GET"})
    assert (result.status, result.reason) == (HealthStatus.DEGRADED, Reason.HTTP_4XX)


@pytest.mark.parametrize(("auth", "header", "value"), [
    ("bearer", "Authorization", "Bearer tok-9"),
    ("basic", "Authorization", "Basic dTpwdw=="),
    ("header", "X-Api-Key", "tok-9"),
])
async def test_auth_header_is_built_from_the_credential(aiohttp_server, http_session, auth, header, value) -> None:
    got: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        got[header] = request.headers.get(header, "")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/a", handler)
    server = await aiohttp_server(app)
    ctx = AdapterContext(session=http_session,
                         credentials=StaticCredentials({"ref": "u:pw" if auth == "basic" else "tok-9"}))
    config = {"url": str(server.make_url("/a")), "method": "GET", "auth": auth, "auth_header": header}
    [r] = await runner_for(ctx).run([Integration(ORG, "http", config, credential_ref="ref")])
    assert r.result.status == HealthStatus.HEALTHY
    assert got[header] == value


# --- redirects: credentials stay on their origin (scheme, host and port) ----------------------------------

SECRET = "PLANTED-redirect-5d1f"
NOT_FOLLOWED = "unexpected response: redirect to another host (127.0.0.1) not followed with credentials"


class Landing:
    """Where a redirect points: records the headers of every request that reaches it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def handler(self, request: web.Request) -> web.Response:
        self.seen.append({"scheme": request.scheme, **request.headers})
        return web.Response(text="ok")


def redirecting_to(location: str):
    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound(location)

    return redirect


async def check_with_or_without_credentials(session, url: str, with_credentials: bool) -> HealthResult:
    ctx = AdapterContext(session=session, credentials=StaticCredentials({"ref": SECRET}))
    config = {"url": url, "method": "GET"} | ({"auth": "bearer"} if with_credentials else {})
    [r] = await runner_for(ctx, timeout=5).run([Integration(ORG, "http", config, credential_ref="ref")])
    return r.result


async def test_credentials_do_not_follow_a_redirect_to_another_port_of_the_same_host(aiohttp_server,
                                                                                    http_session) -> None:
    landing = Landing()
    other = web.Application()
    other.router.add_get("/landing", landing.handler)
    other_server = await aiohttp_server(other)
    start = web.Application()
    start.router.add_get("/start", redirecting_to(str(other_server.make_url("/landing"))))
    start_server = await aiohttp_server(start)
    assert start_server.host == other_server.host and start_server.port != other_server.port
    url = str(start_server.make_url("/start"))

    result = await check_with_or_without_credentials(http_session, url, with_credentials=True)
    assert (result.status, result.reason, result.error) == (HealthStatus.DEGRADED, Reason.BAD_RESPONSE, NOT_FOLLOWED)
    assert landing.seen == [], "the request with credentials followed the redirect to another port"
    # Without credentials the same redirect is followed: the landing server is reachable, the guard held.
    result = await check_with_or_without_credentials(http_session, url, with_credentials=False)
    assert result.status == HealthStatus.HEALTHY
    assert [h.get("Authorization") for h in landing.seen] == [None]


@contextlib.asynccontextmanager
async def serve_https_and_http_on_one_port(app: web.Application, tls: ssl.SSLContext) -> AsyncIterator[int]:
    """Serve `app` on one loopback port, TLS or plain by the client's first byte (0x16: a TLS handshake),
    so an https URL and an http URL can differ in their scheme alone."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    connections: set[asyncio.Task[object]] = set()

    async def serve(sock: socket.socket) -> None:
        readable = loop.create_future()
        loop.add_reader(sock.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(sock.fileno())
        first = sock.recv(1, socket.MSG_PEEK)
        await loop.connect_accepted_socket(runner.server, sock, ssl=tls if first == b"\x16" else None)

    async def accept() -> None:
        while True:
            sock, _ = await loop.sock_accept(listener)
            task = asyncio.create_task(serve(sock))
            connections.add(task)
            task.add_done_callback(connections.discard)

    acceptor = asyncio.create_task(accept())
    try:
        yield listener.getsockname()[1]
    finally:
        acceptor.cancel()
        for task in (acceptor, *connections):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        listener.close()
        await runner.cleanup()


async def test_credentials_do_not_follow_a_redirect_from_https_down_to_http() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    landing = Landing()

    async def start(request: web.Request) -> web.Response:
        assert request.secure
        raise web.HTTPFound(request.url.with_scheme("http").with_path("/landing"))  # same host and port, plain http

    app = web.Application()
    app.router.add_get("/start", start)
    app.router.add_get("/landing", landing.handler)
    async with serve_https_and_http_on_one_port(app, server_tls) as port, loopback_session(ssl_context=client_tls) as s:
        url = f"https://127.0.0.1:{port}/start"
        result = await check_with_or_without_credentials(s, url, with_credentials=True)
        assert (result.status, result.reason, result.error) == (
            HealthStatus.DEGRADED, Reason.BAD_RESPONSE, NOT_FOLLOWED)
        assert landing.seen == [], "the request with credentials followed the redirect down to plain http"
        # Without credentials the same redirect is followed, in plain http: the guard, not the setup, held.
        result = await check_with_or_without_credentials(s, url, with_credentials=False)
        assert result.status == HealthStatus.HEALTHY
        assert [(h["scheme"], h.get("Authorization")) for h in landing.seen] == [("http", None)]


async def test_auth_without_a_credential_ref_is_degraded_auth(ctx) -> None:
    result = await check(ctx, {"url": "http://127.0.0.1:9/", "auth": "bearer"})
    assert (result.status, result.reason) == (HealthStatus.DEGRADED, Reason.AUTH)
    assert result.error == "credential unavailable: this integration needs a credential_ref"


async def test_unresolvable_host_is_a_dns_failure(ctx) -> None:
    result = await check(ctx, {"url": "http://no-such-host.invalid/health"}, timeout=5)
    assert (result.status, result.reason) == (HealthStatus.UNREACHABLE, Reason.DNS)
    assert result.error == "DNS lookup failed for no-such-host.invalid"


async def test_closed_port_is_a_connect_failure(ctx) -> None:
    from exporter.demo.embedded_pg import free_port

    result = await check(ctx, {"url": f"http://127.0.0.1:{free_port()}/"})
    assert (result.status, result.reason) == (HealthStatus.UNREACHABLE, Reason.CONNECT)


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0), ("Sun, 22 Nov 2026 12:01:00 GMT", 60.0), ("garbage", None), (None, None),
    ("Sun, 22 Nov 2026 11:00:00 GMT", 0.0),
])
def test_retry_after_accepts_seconds_and_http_dates(value, seconds) -> None:
    assert parse_retry_after(value, datetime(2026, 11, 22, 12, 0, tzinfo=UTC)) == seconds


# --- compressed answers ----------------------------------------------------------------------------------

VENDOR_JSON = {"status": "up", "items": [{"id": n, "name": f"ledger {n}"} for n in range(200)]}


def raw_deflate(data: bytes) -> bytes:
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return deflater.compress(data) + deflater.flush()


async def serve_encoded(aiohttp_server, encoding: str, body: bytes, seen: list[str]) -> str:
    """A vendor sending `body` as is, labelled with `encoding`; `seen` collects the Accept-Encoding it got."""
    async def vendor(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        return web.Response(body=body, headers={"Content-Encoding": encoding, "Content-Type": "application/json"})

    app = web.Application()
    app.router.add_get("/v", vendor)
    return str((await aiohttp_server(app)).make_url("/v"))


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress),
                                                    ("deflate", raw_deflate)], ids=["gzip", "deflate", "raw-deflate"])
async def test_a_vendors_compressed_json_is_decoded_for_the_check(aiohttp_server, ctx, encoding, compress) -> None:
    seen: list[str] = []
    url = await serve_encoded(aiohttp_server, encoding, compress(json.dumps(VENDOR_JSON).encode()), seen)
    # ctx's session is aiohttp's default (auto_decompress=True): fetch decodes itself, whatever the session says
    assert (await fetch(ctx, "GET", url)).json_object() == VENDOR_JSON
    assert (await check(ctx, {"url": url, "body_contains": '"ledger 199"'})).status == HealthStatus.HEALTHY
    assert seen == ["gzip, deflate"] * 2


async def test_the_cap_counts_decoded_bytes_to_the_byte(aiohttp_server, ctx) -> None:
    at_cap = await serve_encoded(aiohttp_server, "gzip", gzip.compress(b"x" * MAX_BODY_BYTES), [])
    over = await serve_encoded(aiohttp_server, "gzip", gzip.compress(b"x" * (MAX_BODY_BYTES + 1)), [])
    assert len((await fetch(ctx, "GET", at_cap)).body) == MAX_BODY_BYTES
    with pytest.raises(BodyTooLarge):
        await fetch(ctx, "GET", over)


@pytest.mark.parametrize(("encoding", "error"), [
    ("gzip", "unexpected response: the gzip body does not decode"),
    ("br", "unexpected response: content encoding other than gzip or deflate"),  # not asked for: never decoded
    ("zstd", "unexpected response: content encoding other than gzip or deflate"),
])
async def test_a_body_that_cannot_be_decoded_is_a_bad_response(aiohttp_server, ctx, encoding, error) -> None:
    url = await serve_encoded(aiohttp_server, encoding, b"not compressed the way the label says", [])
    result = await check(ctx, {"url": url, "method": "GET"})
    assert (result.status, result.reason, result.error) == (HealthStatus.DEGRADED, Reason.BAD_RESPONSE, error)
