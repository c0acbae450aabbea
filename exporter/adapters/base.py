"""What every adapter shares: the HealthCheck protocol, its context, and HTTP classification helpers."""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from uuid import UUID

import aiohttp
from multidict import CIMultiDictProxy

from exporter.credentials import CredentialError, CredentialProvider
from exporter.model import HealthResult, HealthStatus, Reason, make_result

MAX_BODY_BYTES = 256 * 1024  # a health answer is small; a bigger body is refused, not buffered


def utcnow() -> datetime:
    return datetime.now(UTC)


class HealthCheck(Protocol):
    async def check(self, org_id: UUID, config: Any) -> HealthResult:
        """Check one integration and return its result; may raise, the runner maps exceptions."""
        ...


@dataclass(frozen=True)
class AdapterContext:
    """What adapters are given: one shared HTTP session, the credential provider, clocks."""

    session: aiohttp.ClientSession
    credentials: CredentialProvider | None = None
    clock: Callable[[], datetime] = utcnow
    monotonic: Callable[[], float] = time.monotonic
    state: dict[str, Any] = field(default_factory=dict)  # per-process caches (e.g. OAuth tokens), by adapter

    async def secret(self, ref: str | None) -> str:
        """Resolve a credential reference; a missing provider or reference is a CredentialError."""
        if not ref:
            raise CredentialError("this integration needs a credential_ref")
        if self.credentials is None:
            raise CredentialError("no credential provider is configured")
        return (await self.credentials.get(ref)).get_secret_value()


AdapterFactory = Callable[[AdapterContext], HealthCheck]


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


class CertRecordingConnector(aiohttp.TCPConnector):
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


def make_session(*, limit: int = 256, connect_timeout: float = 5.0, ssl_context: ssl.SSLContext | None = None,
                 force_close: bool = False) -> aiohttp.ClientSession:
    """The one HTTP session a process shares: pooled connections, bounded sockets, explicit timeouts.

    The runner enforces each check's overall deadline; these timeouts only stop a single socket from
    waiting forever. `force_close` opens a fresh connection per request (benchmarks compare both).
    """
    connector = CertRecordingConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300, ssl=ssl_context or True,
                                     force_close=force_close)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        headers={"User-Agent": "integration-health/0.1 (+health check)"},
        auto_decompress=True,
    )


async def fetch(ctx: AdapterContext, method: str, url: str, *, read_body: bool = True, **kwargs: Any) -> Response:
    """Send one request on the shared session, timing it and capping the body it reads.

    Redirects are never followed here: aiohttp would re-send a 307's body (an OAuth client secret, say)
    to whatever host it names. Vendor APIs do not redirect, so a 3xx is classified as unexpected; the
    http adapter follows redirects itself, keeping credentials on their origin.
    """
    start = ctx.monotonic()
    async with ctx.session.request(method, url, allow_redirects=False, **kwargs) as resp:
        body = await _read_capped(resp) if read_body and method != "HEAD" else b""
        expires = None
        if resp.url.scheme == "https" and isinstance(ctx.session.connector, CertRecordingConnector):
            expires = ctx.session.connector.cert_expiry.get((resp.url.host, resp.url.port))
        return Response(resp.status, resp.headers, body, (ctx.monotonic() - start) * 1000, expires)


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """Read the body, refusing (before buffering it) anything over MAX_BODY_BYTES."""
    if resp.content_length is not None:  # the common case: the size is announced, read it in one go
        if resp.content_length > MAX_BODY_BYTES:
            raise BodyTooLarge(f"response body larger than {MAX_BODY_BYTES // 1024} KiB")
        return await resp.read()
    chunks, size = [], 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge(f"response body larger than {MAX_BODY_BYTES // 1024} KiB")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify_http(resp: Response, now: datetime, *, expected: frozenset[int] | None = None) -> HealthResult | None:
    """Classify by status code; None means the status is acceptable and the caller checks the body."""
    code = resp.status
    if expected and code in expected or not expected and 200 <= code < 300:
        return None
    if code == 429:
        retry = parse_retry_after(resp.headers.get("Retry-After"), now)
        return make_result(HealthStatus.DEGRADED, resp.latency_ms, now, "rate limited (HTTP 429)",
                           Reason.RATE_LIMITED, retry)
    if code in (401, 403):
        return make_result(HealthStatus.DEGRADED, resp.latency_ms, now, f"credentials rejected (HTTP {code})",
                           Reason.AUTH)
    if code >= 500:
        return make_result(HealthStatus.UNREACHABLE, resp.latency_ms, now, f"server error (HTTP {code})",
                           Reason.HTTP_5XX)
    return make_result(HealthStatus.DEGRADED, resp.latency_ms, now, f"unexpected status HTTP {code}",
                       Reason.HTTP_4XX if code >= 400 else Reason.BAD_RESPONSE)


def healthy_or_slow(latency_ms: float, now: datetime, degraded_latency_ms: int) -> HealthResult:
    """Healthy, or degraded when the answer took longer than the integration's threshold."""
    if latency_ms > degraded_latency_ms:
        return make_result(HealthStatus.DEGRADED, latency_ms, now,
                           f"slow: {latency_ms / 1000:.1f} s > {degraded_latency_ms / 1000:.1f} s threshold",
                           Reason.SLOW)
    return make_result(HealthStatus.HEALTHY, latency_ms, now)


def bad_response(latency_ms: float, now: datetime, what: str) -> HealthResult:
    return make_result(HealthStatus.DEGRADED, latency_ms, now, f"unexpected response: {what}", Reason.BAD_RESPONSE)
