"""Bounds on the connections the HTTP server holds: how many at once, and how long a request head may take.

aiohttp's server has no deadline for a request head: a client that opens a connection and sends its
headers a byte at a time (slowloris) keeps the socket until the keep-alive timeout (an hour by default;
older aiohttp releases start no timer at all before the first request), so enough such sockets exhaust
the process's file descriptors. `GuardedSite` is a TCP site whose connections pass through a
`ConnectionGuard` first.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)
WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class HttpLimits:
    """How many connections are served at once; how long a first request head and an idle connection may take."""

    max_connections: int = 256
    header_timeout_s: float = 10.0
    keepalive_s: float = 75.0  # above Prometheus's default 1 m scrape interval, so a scraper keeps its connection

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.header_timeout_s <= 0 or self.keepalive_s <= 0:
            raise ValueError(f"HTTP limits must be positive: {self}")


class ConnectionGuard:
    """The protocol factory around a web.Server: a connection past `max_connections` is closed on accept, and
    one whose first request head is incomplete after `header_timeout_s` is closed. Later heads on a kept-alive
    connection are bounded by aiohttp's keepalive_timeout, which closes a connection still waiting for one."""

    def __init__(self, server: web.Server, limits: HttpLimits) -> None:
        self.server, self.limits = server, limits
        self.active = 0
        self.refused = 0
        self._head_deadlines: dict[web.RequestHandler, asyncio.TimerHandle] = {}
        self._quiet_until = 0.0
        handle = server.request_handler

        async def head_arrived(request: web.BaseRequest) -> web.StreamResponse:
            """A request reaches the app only once its head is complete: its connection's deadline is met."""
            deadline = self._head_deadlines.pop(request.protocol, None)
            if deadline:
                deadline.cancel()
            return await handle(request)

        server.request_handler = head_arrived  # read by each RequestHandler when it is created

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)

    def admit(self, transport: asyncio.BaseTransport) -> web.RequestHandler | None:
        """A handler for a new connection, with its head deadline running; None (and closed) when full."""
        loop = asyncio.get_running_loop()
        if self.active >= self.limits.max_connections:
            self.refused += 1
            if loop.time() >= self._quiet_until:
                self._quiet_until = loop.time() + WARN_EVERY_S
                log.warning("serving %d connections, EXPORTER_HTTP_MAX_CONNECTIONS: closing new ones "
                            "(%d so far)", self.active, self.refused)
            transport.close()
            return None
        self.active += 1
        handler = self.server()
        self._head_deadlines[handler] = loop.call_later(self.limits.header_timeout_s, self._head_late, transport)
        return handler

    def release(self, handler: web.RequestHandler) -> None:
        self.active -= 1
        deadline = self._head_deadlines.pop(handler, None)
        if deadline:
            deadline.cancel()

    def _head_late(self, transport: asyncio.BaseTransport) -> None:
        log.debug("closing %s: no complete request head within %g s", transport.get_extra_info("peername"),
                  self.limits.header_timeout_s)
        transport.close()


class _Connection(asyncio.Protocol):
    """One accepted connection: passes every event to aiohttp's handler once the guard admitted it."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.handler: web.RequestHandler | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler = self.guard.admit(transport)
        if self.handler:
            self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.handler:
            self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler else None

    def pause_writing(self) -> None:
        if self.handler:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handler:
            self.guard.release(self.handler)
            self.handler.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """web.TCPSite with a ConnectionGuard in front of the runner's server."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: HttpLimits) -> None:
        super().__init__(runner)
        self.host, self.port, self.limits = host, port, limits
        self.guard: ConnectionGuard | None = None

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:
            raise RuntimeError("call runner.setup() before starting a site")
        self.guard = ConnectionGuard(server, self.limits)
        self._server = await asyncio.get_running_loop().create_server(self.guard, self.host, self.port,
                                                                      backlog=self._backlog)
