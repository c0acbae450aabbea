"""HTTP for adapters: the one shared session (egress policy enforced), fetch with a capped body, TLS expiry."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from exporter.core.egress import Blocked, EgressPolicy, IPAddress, VendorHosts, literal_address

if TYPE_CHECKING:
    from exporter.adapters.base import AdapterContext

MAX_BODY_BYTES = 256 * 1024  # a health answer is small; a bigger body is refused, not buffered
ACCEPT_ENCODING = "gzip, deflate"  # what _read_capped decodes, in bounded steps; other codings are refused


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


class BodyTooLarge(Exception):
    pass


class TooManyRedirects(Exception):
    pass


def basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class EgressConnector(aiohttp.TCPConnector):
    """A TCPConnector that asks the egress policy about every address before connecting to it.

    aiohttp turns each connection's host (a name or an IP literal, on every redirect hop too) into
    addresses in `_resolve_host`, and connects to exactly those, so checking them here leaves no gap
    between the check and the connection (a name that resolves differently next time is checked again).
    """

    def __init__(self, *, policy: EgressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy = policy
        self.permitted = PermittedCache()

    @property
    def policy(self) -> EgressPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: EgressPolicy) -> None:
        """A new policy forgets every remembered permission: what the old one allowed, it may refuse. Set it
        before the session's first use: pooled connections opened under the old one are not re-judged."""
        self._policy, self.permitted = policy, PermittedCache()

    async def _resolve_host(self, host: str, port: int, traces: Sequence[Any] | None = None) -> list[Any]:
        self.permitted.check(("host", host, port), self.policy.check_host, host, port)
        resolved = await super()._resolve_host(host, port, traces=traces)
        addresses = tuple(r["host"] for r in resolved)  # in the key: another answer for the name is judged anew
        self.permitted.check(("addresses", host, port, addresses), self.policy.check_addresses, host, port, addresses)
        return resolved

    def check_request(self, target: URL, vendor: VendorHosts) -> None:
        """The policy's check_request for a vendor type's request, remembered once it permitted the same
        scheme, host, port and vendor (the decision depends on nothing else)."""
        scheme, host, port = target.scheme, target.raw_host or "", target.explicit_port
        self.permitted.check(("request", scheme, host, port, id(vendor)), self.policy.check_request, scheme, host,
                             port, vendor, pin=vendor)


class PermittedCache:
    """The egress decisions that permitted, by their whole input, so a connection or request to the same
    place does not judge it again (per check, that was a fifth of a fresh connection's own work).

    Only what the policy permitted is kept, and the policy is immutable, so a hit is the policy's own answer
    for exactly that input: a refused destination is judged (and refused) every time, and a name that
    resolves to other addresses is judged on them (the addresses are part of the key: DNS rebinding gets no
    pass). Bounded: at `limit` entries it starts again empty."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit, self.permitted = limit, dict[tuple[Any, ...], object]()

    def check(self, key: tuple[Any, ...], judge: Callable[..., None], *args: Any, pin: object = None) -> None:
        """Run `judge(*args)` (which raises Blocked to refuse) unless it permitted this `key` before. `pin`:
        an object the key names by its id, kept alive with the entry so no other object can take that id."""
        if key in self.permitted:
            return
        judge(*args)
        if len(self.permitted) >= self.limit:
            self.permitted.clear()
        self.permitted[key] = pin


class CertRecordingConnector(EgressConnector):
    """A TCPConnector that notes each TLS peer's certificate expiry as it connects.

    aiohttp releases a connection as soon as a small body has arrived, before an adapter could look at
    its transport, so the certificate is read here, once per new connection (reuse costs nothing).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cert_expiry: dict[tuple[str | None, int | None], datetime] = {}

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        proto = await super()._create_connection(req, traces, timeout)
        cert = proto.transport.get_extra_info("peercert") if proto.transport else None
        if cert and "notAfter" in cert:
            expiry = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
            self.cert_expiry[(req.url.host, req.url.port)] = expiry
        return proto


def make_session(*, policy: EgressPolicy, limit: int = 256, connect_timeout: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None, force_close: bool = False) -> aiohttp.ClientSession:
    """The one HTTP session a process shares: egress policy, pooled connections, bounded sockets, timeouts.

    The runner enforces each check's overall deadline; these timeouts only stop a single socket from
    waiting forever. `force_close` opens a fresh connection per request (benchmarks compare both).
    No proxy from the environment (trust_env=False): the policy judges the real destination. No cookies
    (DummyCookieJar): one tenant's target must not set what another's request to the same host carries,
    and no check needs them (the jar's per-request filtering was a tenth of a pooled request's own CPU).
    """
    connector = CertRecordingConnector(policy=policy, limit=limit, limit_per_host=0, ttl_dns_cache=300,
                                       ssl=ssl_context or True, force_close=force_close)
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        headers={"User-Agent": "integration-health/0.1 (+health check)"},
        auto_decompress=True,
    )


async def fetch(ctx: "AdapterContext", method: str, url: str, *, read_body: bool = True, **kwargs: Any) -> Response:
    """Send one request on the shared session, timing it and capping the body it reads.

    Redirects are never followed here: aiohttp would re-send a 307's body (an OAuth client secret, say)
    to whatever host it names. Vendor APIs do not redirect, so a 3xx is classified as unexpected; the
    http adapter follows redirects itself, keeping credentials on their origin. aiohttp does not decompress
    here, whatever the session says: _read_capped does, so its cap counts decoded bytes.
    """
    connector = ctx.session.connector
    if not isinstance(connector, EgressConnector):
        raise Blocked("this HTTP session enforces no egress policy: build it with transport.make_session")
    target: str | URL = url
    if ctx.vendor is not None:  # a vendor type: its own hosts, https (the generic type skips the URL parse)
        target = URL(url)  # parsed once: aiohttp takes the URL as it is, and it is the one judged
        connector.check_request(target, ctx.vendor)
    start = ctx.monotonic()
    headers = {"Accept-Encoding": ACCEPT_ENCODING, **(kwargs.pop("headers", None) or {})}
    async with ctx.session.request(method, target, allow_redirects=False, auto_decompress=False, headers=headers,
                                   **kwargs) as resp:
        body = await _read_capped(resp) if read_body and method != "HEAD" else b""
        expires = None
        if resp.url.scheme == "https" and isinstance(ctx.session.connector, CertRecordingConnector):
            expires = ctx.session.connector.cert_expiry.get((resp.url.host, resp.url.port))
        return Response(resp.status, resp.headers, body, (ctx.monotonic() - start) * 1000, expires)


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


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """Read and decode the body, stopping once MAX_BODY_BYTES of decoded bytes have arrived.

    Content-Length counts the bytes on the wire: a 250 KiB gzip body can inflate to 256 MiB, and aiohttp
    before 3.13.3 inflates a whole network chunk at once (64 KiB of zeros is 64 MiB). Decoding here with
    `max_length` keeps every step within the cap, whatever aiohttp or optional decoders are installed.
    """
    too_large = BodyTooLarge(f"response body larger than {MAX_BODY_BYTES // 1024} KiB")
    if resp.content_length is not None and resp.content_length > MAX_BODY_BYTES:
        raise too_large
    decode = _decoder(resp.headers.get("Content-Encoding", "identity"))
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        chunk = decode(chunk, MAX_BODY_BYTES + 1 - size)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _decoder(encoding: str) -> Callable[[bytes, int], bytes]:
    """Decode a body piece by piece, each call returning at most `limit` bytes; ValueError for other codings."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return lambda data, limit: data
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ValueError("content encoding other than gzip or deflate")  # not echoed: the server chose it
    inflater: Any = None

    def decode(data: bytes, limit: int) -> bytes:
        nonlocal inflater
        if inflater is None:  # "deflate" should be zlib-wrapped; some servers send it raw, as browsers accept
            raw = encoding == "deflate" and data[0] & 0x0F != zlib.DEFLATED
            inflater = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS | 32)  # 32: gzip or zlib header
        try:
            return inflater.decompress(data, limit)  # the rest waits in unconsumed_tail: over the cap, refused
        except zlib.error:
            raise ValueError(f"the {encoding} body does not decode") from None

    return decode


async def check_destination(policy: EgressPolicy, host: str, port: int) -> None:
    """Judge a destination now, as the connector will when it connects: the name, then every address it
    resolves to; raises Blocked (refused) or OSError (does not resolve). For checks ahead of any request,
    such as a webhook subscription; the connector still judges each connection again."""
    policy.check_host(host, port)
    if literal_address(host) is not None:
        return
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    policy.check_addresses(host, port, [str(info[4][0]) for info in infos])
