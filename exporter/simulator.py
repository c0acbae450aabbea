"""A loopback fake of the vendor APIs with fault modes, for the demo, tests and benchmarks.

Every route carries a tenant key; the tenant's mode decides the answer. Modes are set at start-up or
changed while running with `PUT /_sim/tenants/{tenant}` `{"mode": "hang"}` (`GET` reads them back).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODES = ("healthy", "slow", "hang", "rate_limited", "unauthorized", "server_error", "reset",
         "invalid_body", "redirect_loop", "oversized")


@dataclass
class Mode:
    name: str = "healthy"
    ms: int = 0  # extra latency for every mode; "slow" uses it alone
    retry_after: int = 30

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise ValueError(f"unknown mode {self.name!r}; choose one of {', '.join(MODES)}")


@dataclass
class SimState:
    modes: dict[str, Mode] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)  # per tenant: what a check costs the vendor
    latency_ms: int = 0  # added to every answer (benchmarks use 50 ms)

    def mode(self, tenant: str) -> Mode:
        self.requests[tenant] = self.requests.get(tenant, 0) + 1
        return self.modes.get(tenant, Mode())


STATE = web.AppKey("state", SimState)


async def apply_mode(request: web.Request, tenant: str) -> web.StreamResponse | None:
    """Answer with the tenant's fault, or return None so the route answers normally."""
    state = request.app[STATE]
    mode = state.mode(tenant)
    delay = (mode.ms + state.latency_ms) / 1000
    if delay:
        await asyncio.sleep(delay)
    match mode.name:
        case "hang":
            await asyncio.sleep(3600)
        case "rate_limited":
            return web.json_response({"error": "too many requests"}, status=429,
                                     headers={"Retry-After": str(mode.retry_after)})
        case "unauthorized":
            return web.json_response({"error": "unauthorized"}, status=401)
        case "server_error":
            return web.Response(status=500, text="internal error")
        case "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        case "invalid_body":
            return web.Response(status=200, text="<html><body>Maintenance</body></html>", content_type="text/html")
        case "redirect_loop":
            raise web.HTTPFound(location=str(request.rel_url))
        case "oversized":
            return web.Response(status=200, body=b"x" * (2 * 1024 * 1024), content_type="application/json")
    return None


async def http_target(request: web.Request) -> web.StreamResponse:
    """A plain HTTP health endpoint: /http/{tenant}."""
    return await apply_mode(request, request.match_info["tenant"]) or web.json_response({"status": "ok"})


async def get_tenants(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({t: vars(m) for t, m in state.modes.items()})


async def put_tenant(request: web.Request) -> web.Response:
    try:
        body: dict[str, Any] = await request.json()
        mode = Mode(name=body.get("mode", "healthy"), ms=int(body.get("ms", 0)),
                    retry_after=int(body.get("retry_after", 30)))
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    request.app[STATE].modes[request.match_info["tenant"]] = mode
    return web.json_response(vars(mode))


def create_app(state: SimState | None = None) -> web.Application:
    app = web.Application()
    app[STATE] = state or SimState()
    app.router.add_route("*", "/http/{tenant}", http_target)
    app.router.add_get("/_sim/tenants", get_tenants)
    app.router.add_put("/_sim/tenants/{tenant}", put_tenant)
    return app
