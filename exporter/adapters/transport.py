"""HTTP for adapters: the one shared client (client.py: egress policy enforced), fetch with a capped body and
TLS expiry, and the Response adapters classify."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDictProxy

from exporter.adapters.client import HttpClient
from exporter.adapters.http1 import MAX_BODY_BYTES, BodyTooLarge  # noqa: F401 (classify and tests find them here)
from exporter.core.egress import Blocked, EgressPolicy, IPAddress, literal_address

if TYPE_CHECKING:
    from exporter.adapters.base import AdapterContext

ACCEPT_ENCODING = "gzip, deflate"  # what http1.decoder decodes, in bounded steps; other codings are refused


@dataclass(frozen=True, slots=True)
class Response:
    """The parts of an HTTP answer adapters classify; the body is capped at MAX_BODY_BYTES."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    latency_ms: float
    tls_expires_at: datetime | None = None

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is not one (an HTML error page, say)."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class TooManyRedirects(Exception):
    pass


def basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def make_session(*, policy: EgressPolicy, limit: int = 256, connect_timeout: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None, force_close: bool = False) -> HttpClient:
    """The one HTTP client a process's checks share: egress policy, pooled connections, bounded sockets.

    The runner enforces each check's overall deadline; the connect timeout only stops a single socket from
    waiting forever. `force_close` opens a fresh connection per request (benchmarks compare both). No proxy
    from the environment, no cookies: see client.py.
    """
    return HttpClient(policy=policy, limit=limit, connect_timeout=connect_timeout, ssl_context=ssl_context,
                      force_close=force_close)


async def fetch(ctx: "AdapterContext", method: str, url: str, *, read_body: bool = True, **kwargs: Any) -> Response:
    """Send one request on the shared client, timing it; the body is read (decoded, capped) unless `read_body`
    is false or it is a HEAD.

    Redirects are never followed here: a 307 would re-send its body (an OAuth client secret, say) to
    whatever host it names. Vendor APIs do not redirect, so a 3xx is classified as unexpected; the http
    adapter follows redirects itself, keeping credentials on their origin. A vendor type's requests go only
    to its own hosts, over https (the policy's check_request).
    """
    client = ctx.session
    if not isinstance(client, HttpClient):
        raise Blocked("this HTTP session enforces no egress policy: build it with transport.make_session")
    start = ctx.monotonic()
    headers = {"Accept-Encoding": ACCEPT_ENCODING, **(kwargs.pop("headers", None) or {})}
    answer, expires = await client.request(method, url, headers=headers, read_body=read_body, vendor=ctx.vendor,
                                           **kwargs)
    return Response(answer.status, answer.headers, answer.body, (ctx.monotonic() - start) * 1000, expires)


async def own_addresses(listen_host: str) -> frozenset[IPAddress]:
    """This host's addresses as its resolver knows them (its name, the listening address): the exporter's own."""
    loop, found = asyncio.get_running_loop(), set()
    for name in {listen_host, socket.gethostname()}:
        try:
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError:
            continue
        found.update(ip for info in infos if (ip := literal_address(str(info[4][0]))) is not None)
    return frozenset(found)


async def check_destination(policy: EgressPolicy, host: str, port: int) -> None:
    """Judge a destination now, as the check client (client.py) will when it connects: the name, then every address it
    resolves to; raises Blocked (refused) or OSError (does not resolve). For checks ahead of any request,
    such as a webhook subscription; the client still judges each connection again."""
    policy.check_host(host, port)
    if literal_address(host) is not None:
        return
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    policy.check_addresses(host, port, [str(info[4][0]) for info in infos])
