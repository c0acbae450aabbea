"""The generic HTTP(S) probe: HEAD (GET when HEAD is not allowed), expected status, latency threshold."""

from __future__ import annotations

import base64
from uuid import UUID

from exporter.adapters.base import AdapterContext, classify_http, fetch, healthy_or_slow
from exporter.model import HealthResult, HttpConfig


class HttpCheck:
    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx

    async def check(self, org_id: UUID, config: HttpConfig) -> HealthResult:
        headers = await self._auth_headers(config)
        url = str(config.url)
        resp = await fetch(self.ctx, config.method, url, headers=headers)
        if config.method == "HEAD" and resp.status in (405, 501):  # HEAD not implemented: ask again with GET
            resp = await fetch(self.ctx, "GET", url, headers=headers)
        now = self.ctx.clock()
        expected = frozenset(config.expected_status) or None
        return (classify_http(resp, now, expected=expected, degraded_latency_ms=config.degraded_latency_ms)
                or healthy_or_slow(resp.latency_ms, now, config.degraded_latency_ms))

    async def _auth_headers(self, config: HttpConfig) -> dict[str, str]:
        if config.auth == "none":
            return {}
        secret = await self.ctx.secret(config.credential_ref)
        if config.auth == "bearer":
            return {"Authorization": f"Bearer {secret}"}
        if config.auth == "basic":  # the secret is "user:password"
            return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
        return {config.auth_header: secret}
