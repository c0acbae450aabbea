"""Stand-ins for internal services on loopback, and a guard that no connection leaves loopback.

`Listener` records every connection and byte it receives and answers a small 200 whose body holds a
"secret", so a test can prove a refused destination received nothing (and on a policy-less main, did).
`Redirector` is an allow-listed server answering `302 Location: <?to=…>`: a redirect hop to test.
`ConnectionGuard` wraps the one call the check client connects with (client.open_connection), and its
resolver, and refuses (records, never opens) any connection outside loopback and any DNS lookup but
localhost's, so a broken policy in a test cannot send traffic anywhere, not even a DNS query.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter.adapters import client

SECRET_BODY = b"internal-only: s3cr3t"


@dataclass
class Listener:
    """A TCP server on 127.0.0.1 (and ::1 on the same port where it can) recording what it receives."""

    port: int = 0
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)
    _servers: list[asyncio.Server] = field(default_factory=list)

    async def start(self) -> Listener:
        first = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = first.sockets[0].getsockname()[1]
        self._servers.append(first)
        with contextlib.suppress(OSError):  # no IPv6 loopback here: the ::1 spellings are still refused
            self._servers.append(await asyncio.start_server(self._handle, "::1", self.port))
        return self

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.received += await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(SECRET_BODY), SECRET_BODY))
            await writer.drain()
        writer.close()


async def start_redirector() -> web.AppRunner:
    """A loopback server that redirects wherever `?to=` says (the allow-listed host of a redirect test)."""
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    app = web.Application()
    app.router.add_route("*", "/", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@dataclass
class ConnectionGuard:
    """Replaces client.open_connection: records each attempt, opens only loopback ones."""

    real: Any
    real_resolve: Any
    attempts: list[str] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    async def __call__(self, addresses: Any, *args: Any) -> Any:
        self.attempts += addresses
        if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
            raise ConnectionRefusedError(f"the test guard refused a connection outside loopback: {addresses}")
        return await self.real(addresses, *args)


    def resolver(self) -> Any:
        async def resolve(host: str, port: int) -> Any:
            self.lookups.append(host)
            if host.rstrip(".").lower() != "localhost":
                raise OSError(f"the test guard refused a DNS lookup of {host}")
            return await self.real_resolve(host, port)
        return staticmethod(resolve)


def install_guard(monkeypatch: Any) -> ConnectionGuard:
    guard = ConnectionGuard(client.open_connection, client.HttpClient._getaddrinfo)
    monkeypatch.setattr(client, "open_connection", guard)
    monkeypatch.setattr(client.HttpClient, "_getaddrinfo", guard.resolver())
    return guard
