"""A webhook receiver on loopback, as an organisation would run one: verifies signatures, dedupes by
Webhook-Id, and can be told to fail (500) a number of times or to hang until released."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def verify(secret: str, header: str, body: bytes, *, tolerance_s: float = 300, now: float | None = None) -> bool:
    """The receiver's side of X-Integration-Health-Signature (the README shows the same steps)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass
class Receiver:
    """Records every request; answers 500 `fail_first` times, then 200. While `hang` is set it never answers."""

    secret: str = ""
    fail_first: int = 0
    hang: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    accepted: dict[str, bytes] = field(default_factory=dict)  # Webhook-Id → body, first delivery only
    duplicates: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    arrival_times: dict[str, float] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"headers": dict(request.headers), "body": body, "path": request.path})
        self.arrived.set()
        if self.hang:
            await self.released.wait()
        if len(self.requests) <= self.fail_first:
            return web.Response(status=500, text="receiver down")
        event_id = request.headers.get("Webhook-Id", "")
        signed = verify(self.secret, request.headers.get("X-Integration-Health-Signature", ""), body)
        if not signed:
            return web.Response(status=401, text="bad signature")
        if event_id in self.accepted:
            self.duplicates += 1
        else:
            self.accepted[event_id] = body
            self.arrival_times[event_id] = time.monotonic()
        return web.Response(status=204)
