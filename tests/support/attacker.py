"""An attacker's host: answers like every vendor and accepts any credential (the simulator with no secrets
set), and records everything it receives, so a test can prove a secret did or did not arrive. (Unlike
a bare listener, it answers well enough that a stolen secret would read healthy.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from aiohttp import web

from exporter.demo.simulator import SimState, create_app


@dataclass
class AttackerHost:
    """What the attacker's host received: one line per request, headers and body included."""

    received: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.received)

    def app(self) -> web.Application:
        app = create_app(SimState())  # no secrets configured: any credential is accepted

        @web.middleware
        async def record(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            body = await request.read()
            headers = " ".join(f"{k}: {v}" for k, v in request.headers.items())
            sent = f"{request.method} {request.path_qs} {headers} {body.decode(errors='replace')}"
            self.received.append(unquote_plus(sent))  # a secret in a query or a form reads as itself
            return await handler(request)

        app.middlewares.append(record)
        return app
