"""The generic HTTP(S) probe: HEAD (GET when HEAD is not allowed), expected status, latency threshold."""

from __future__ import annotations

from uuid import UUID

from exporter.adapters.base import (
    AdapterContext,
    bad_response,
    basic_auth_header,
    classify_http,
    fetch,
    healthy_or_slow,
)
from exporter.model import HealthResult, HttpConfig


class HttpCheck:
    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx

    async def check(self, org_id: UUID, config: HttpConfig) -> HealthResult:
        headers = await self._auth_headers(config)
        url = str(config.url)
        method = "GET" if config.body_contains else config.method
        resp = await fetch(self.ctx, method, url, headers=headers)
        if method == "HEAD" and resp.status in (405, 501):  # HEAD not implemented: ask again with GET
            resp = await fetch(self.ctx, "GET", url, headers=headers)
        now = self.ctx.clock()
        expected = frozenset(config.expected_status) or None
        result = classify_http(resp, now, expected=expected)
        if result is None and config.body_contains and config.body_contains.encode() not in resp.body:
            result = bad_response(resp.latency_ms, now, "the body lacks the expected text")
        result = result or healthy_or_slow(resp.latency_ms, now, config.degraded_latency_ms)
        return result.model_copy(update={"tls_expires_at": resp.tls_expires_at}) if resp.tls_expires_at else result

    async def _auth_headers(self, config: HttpConfig) -> dict[str, str]:
        if config.auth == "none":
            return {}
        secret = await self.ctx.secret(config.credential_ref)
        if config.auth == "bearer":
            return {"Authorization": f"Bearer {secret}"}
        if config.auth == "basic":  # the secret is "user:password"
            user, _, password = secret.partition(":")
            return {"Authorization": basic_auth_header(user, password)}
        return {config.auth_header: secret}
