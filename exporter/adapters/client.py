"""The one HTTP client a process's checks share: the egress policy judged on every connection, pooled
keep-alive connections, a bound on sockets, TLS with the peer certificate's expiry noted.

Built on http1.Connection rather than aiohttp (see http1.py for the CPU figures). What it leaves out is what
a check must not do anyway: no cookies (one tenant's target must not set what another's request carries), no
proxy from the environment (the policy judges the real destination), no redirects (the http adapter follows
them itself, keeping credentials on their origin), no request body streaming.
"""

from __future__ import annotations

import asyncio
import base64
import json as jsonlib
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohappyeyeballs
from multidict import CIMultiDict
from yarl import URL

from exporter.adapters.http1 import (
    FRAMING,
    Answer,
    Connection,
    InvalidRequest,
    ProtocolError,
    ServerDisconnected,
    request_bytes,
)
from exporter.core.egress import EgressPolicy, VendorHosts, literal_address

USER_AGENT = "integration-health/0.1 (+health check)"
KEEPALIVE_S = 15.0  # an idle pooled connection older than this is closed, not reused (aiohttp's default too)
DNS_TTL_S = 300.0  # a name's addresses are asked again after this (aiohttp's ttl_dns_cache was the same)
HAPPY_EYEBALLS_DELAY_S = 0.25  # RFC 8305's: the next address is tried this long after the last, not after a timeout
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

Resolve = Callable[[str, int], Awaitable[tuple[str, ...]]]


class InvalidURL(ValueError):
    """A URL this client cannot send to (no host, another scheme); the configuration is at fault."""


class DNSError(OSError):
    def __init__(self, host: str) -> None:
        super().__init__(f"DNS lookup failed for {host}")
        self.host = host


class CertificateError(ssl.SSLError):
    def __init__(self, host: str) -> None:
        super().__init__(f"TLS certificate rejected for {host}")
        self.host = host


class ConnectError(OSError):
    """No address of the destination accepted a connection; `why` is the last address's OS error."""

    def __init__(self, host: str, port: int, why: str) -> None:
        super().__init__(f"cannot connect to {host}:{port}: {why}")
        self.host, self.port, self.why = host, port, why


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


class HttpClient:
    """Requests on pooled connections, each judged by the egress policy before it is opened: the host, then
    every address it resolves to, and the connection goes to exactly those addresses (no gap between the
    check and the connect, and a name that resolves differently next time is judged again)."""

    def __init__(self, *, policy: EgressPolicy, limit: int = 256, connect_timeout: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None, force_close: bool = False,
                 resolve: Resolve | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy, self.permitted = policy, PermittedCache()
        self.limit, self.connect_timeout, self.force_close = limit, connect_timeout, force_close
        self._slots = asyncio.Semaphore(limit)  # connections in use at once: a bound on sockets
        self._contexts: dict[bool, ssl.SSLContext] = {True: ssl_context} if ssl_context else {}
        self._resolve = resolve or self._getaddrinfo
        self._clock = clock
        self._idle: dict[tuple[Any, ...], list[Connection]] = {}
        self._idle_count = 0
        self._dns: dict[tuple[str, int], tuple[float, tuple[str, ...]]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Future[tuple[str, ...]]] = {}
        self._turn = 0  # rotates a name's addresses over its connections, as aiohttp's DNS cache did
        self._swept_at = clock()
        self._generation = 0  # the policy's: a connection opened under an earlier one is never reused
        self.closed = False

    @property
    def policy(self) -> EgressPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: EgressPolicy) -> None:
        """A new policy forgets every remembered permission (what the old one allowed, it may refuse) and
        every connection opened under the old one: the idle ones now, those in use when they come back."""
        self._policy, self.permitted = policy, PermittedCache()
        self._generation += 1
        self._drop_idle()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.closed = True
        self._drop_idle()

    def check_request(self, target: URL, vendor: VendorHosts) -> None:
        """The policy's check_request for a vendor type's request, remembered once it permitted the same
        scheme, host, port and vendor (the decision depends on nothing else)."""
        scheme, host, port = target.scheme, target.raw_host or "", target.explicit_port
        self.permitted.check(("request", scheme, host, port, id(vendor)), self.policy.check_request, scheme, host,
                             port, vendor, pin=vendor)

    async def request(self, method: str, url: str | URL, *, headers: Mapping[str, str] | None = None,
                      data: bytes | str | Mapping[str, str] | None = None, json: Any = None,
                      params: Mapping[str, str] | None = None, verify: bool = True, read_body: bool = True,
                      vendor: VendorHosts | None = None) -> tuple[Answer, datetime | None]:
        """Send one request and return its answer and, over TLS, the certificate's expiry. `verify=False`
        trusts any certificate (an integration's explicit choice); `vendor`: the hosts a vendor type may reach."""
        target = _url(url, params)
        if vendor is not None:
            self.check_request(target, vendor)
        host, port, tls = target.raw_host or "", target.port or 0, target.scheme == "https"
        body, content_type = _body(data, json)
        head = CIMultiDict({"Host": _host_header(target), "User-Agent": USER_AGENT, "Accept": "*/*"})
        if content_type:
            head["Content-Type"] = content_type
        if target.raw_user is not None:  # credentials in the URL: Basic auth, as aiohttp sent them
            pair = f"{target.user or ''}:{target.password or ''}".encode()
            head["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        for name, value in (headers or {}).items():
            if name.lower() in FRAMING:
                raise InvalidRequest(f"header {name} is the client's to set, not a check's")
            head[name] = value
        if body or method in ("POST", "PUT", "PATCH"):
            head["Content-Length"] = str(len(body))
        wire = request_bytes(method, target.raw_path_qs or "/", head, body)
        key = (tls, host, port, verify)
        async with self._slots:
            for attempt in (1, 2):
                conn = self._take(key) if attempt == 1 else None
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(host, port, self._context(verify) if tls else None)
                try:
                    answer = await conn.exchange(wire, head=method == "HEAD", read_body=read_body)
                except (ServerDisconnected, ProtocolError):
                    conn.close()
                    # A pooled connection the server closed while idle, or one a late stray body (after a
                    # HEAD's answer, say) put out of step before this answer's status: once more, anew.
                    if reused and not conn.answering and method in IDEMPOTENT:
                        continue
                    raise
                except BaseException:  # a deadline's cancellation too: a half-read answer is never reused
                    conn.close()
                    raise
                self._release(key, conn)
                return answer, conn.tls_expires_at
        raise AssertionError("unreachable")  # pragma: no cover

    # -- connections -------------------------------------------------------------------------------------------------

    def _context(self, verify: bool) -> ssl.SSLContext:
        """The TLS context that verifies (the system's CAs) or, for an integration that chose so, trusts any
        certificate; made on first use (loading the CAs is ~20 ms, and most fleets never need the second)."""
        context = self._contexts.get(verify)
        if context is None:
            context = self._contexts[verify] = ssl.create_default_context()
            if not verify:
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        return context

    async def _connect(self, host: str, port: int, context: ssl.SSLContext | None) -> Connection:
        # One policy judges the whole connection, and the connection is marked with it: a policy set while the
        # lookup or the handshake is under way must find it of the old generation, never pooled again.
        generation, policy, permitted = self._generation, self._policy, self.permitted
        permitted.check(("host", host, port), policy.check_host, host, port)
        literal = literal_address(host)  # connect to the address judged, never to a spelling resolved again
        addresses = (str(literal),) if literal is not None else await self._addresses(host, port)
        permitted.check(("addresses", host, port, tuple(sorted(addresses))), policy.check_addresses,
                        host, port, addresses)  # sorted: the rotation must not make new entries
        if len(addresses) > 1:
            self._turn += 1
            turn = self._turn % len(addresses)
            addresses = addresses[turn:] + addresses[:turn]
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, conn = await open_connection(addresses, port, context, host if context else None)
        except ssl.SSLCertVerificationError:
            raise CertificateError(host) from None
        except ssl.SSLError:
            raise
        except TimeoutError:
            raise TimeoutError(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else exc.strerror or type(exc).__name__
            raise ConnectError(host, port, why) from None
        if context is not None:
            conn.tls, conn.tls_expires_at = True, _cert_expiry(transport)
        conn.generation = generation
        return conn

    async def _addresses(self, host: str, port: int) -> tuple[str, ...]:
        """The name's addresses, from the cache while they are fresh; concurrent first lookups of one name
        share one lookup (thousands of one vendor's checks start together)."""
        now, cached = self._clock(), self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._resolving.get((host, port))
        if pending is None:
            pending = self._resolving[(host, port)] = asyncio.ensure_future(self._resolve(host, port))
            pending.add_done_callback(lambda done: (self._resolving.pop((host, port), None),
                                                    done.cancelled() or done.exception()))  # retrieved: no warning
        addresses = await asyncio.shield(pending)  # one caller's deadline must not cancel the others' lookup
        if len(self._dns) >= 4096:
            self._dns.clear()
        self._dns[(host, port)] = (now + DNS_TTL_S, addresses)
        return addresses

    @staticmethod
    async def _getaddrinfo(host: str, port: int) -> tuple[str, ...]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):  # gaierror, the resolver's own failure, a label IDNA refuses
            raise DNSError(host) from None
        return tuple(dict.fromkeys(str(info[4][0]) for info in infos))  # in the resolver's order, once each

    def _take(self, key: tuple[Any, ...]) -> Connection | None:
        conns, now = self._idle.get(key), self._clock()
        while conns:
            conn = conns.pop()
            self._idle_count -= 1
            if not conns:
                del self._idle[key]
            if conn.usable and conn.generation == self._generation and now - conn.idle_since < KEEPALIVE_S:
                return conn
            conn.close()
        return None

    def _release(self, key: tuple[Any, ...], conn: Connection) -> None:
        if self.force_close or self.closed or not conn.usable or conn.generation != self._generation:
            conn.finish()
            return
        if self._idle_count >= self.limit or self._clock() - self._swept_at > KEEPALIVE_S:
            self._sweep()
            if self._idle_count >= self.limit:
                conn.close()
                return
        conn.idle_since = self._clock()
        self._idle.setdefault(key, []).append(conn)
        self._idle_count += 1

    def _sweep(self) -> None:
        """Close the idle connections the server closed or that waited too long."""
        now = self._swept_at = self._clock()
        for key, conns in list(self._idle.items()):
            keep = [c for c in conns if c.usable and now - c.idle_since < KEEPALIVE_S]
            for conn in conns:
                if conn not in keep:
                    conn.close()
            self._idle_count -= len(conns) - len(keep)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def _drop_idle(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle, self._idle_count = {}, 0


async def open_connection(addresses: Sequence[str], port: int, context: ssl.SSLContext | None,
                          server_hostname: str | None) -> tuple[asyncio.BaseTransport, Connection]:
    """The one place a connection is opened, to addresses the policy judged (tests guard it here). Several
    addresses race as RFC 8305 says (aiohappyeyeballs, as aiohttp did): a dead first one costs 0.25 s, not
    the connect timeout."""
    loop = asyncio.get_running_loop()
    if len(addresses) == 1:
        return await loop.create_connection(Connection, addresses[0], port, ssl=context,
                                            server_hostname=server_hostname)
    infos = [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
              (a, port, 0, 0) if ":" in a else (a, port)) for a in addresses]
    sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S, interleave=1)
    try:
        return await loop.create_connection(Connection, sock=sock, ssl=context, server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise


def _url(url: str | URL, params: Mapping[str, str] | None) -> URL:
    try:
        target = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError):
        raise InvalidURL("not a URL") from None  # yarl's text can quote the netloc, credentials and all
    if target.scheme not in ("http", "https") or not target.raw_host:
        raise InvalidURL("only http and https URLs with a host can be checked")
    return target.extend_query(params) if params else target


def _host_header(target: URL) -> str:
    host = target.raw_host or ""
    host = f"[{host}]" if ":" in host else host
    return host if target.explicit_port is None or target.is_default_port() else f"{host}:{target.port}"


def _body(data: bytes | str | Mapping[str, str] | None, json: Any) -> tuple[bytes, str | None]:
    if json is not None:
        return jsonlib.dumps(json).encode(), "application/json"
    if isinstance(data, Mapping):
        return urlencode(data).encode(), "application/x-www-form-urlencoded"
    if isinstance(data, str):
        return data.encode(), "text/plain; charset=utf-8"
    if data is not None and not isinstance(data, bytes):
        raise InvalidRequest("a request body must be bytes, text, a form or JSON")
    return data or b"", None


def _cert_expiry(transport: asyncio.BaseTransport) -> datetime | None:
    cert = transport.get_extra_info("peercert")
    if cert and "notAfter" in cert:
        return datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
    return None
