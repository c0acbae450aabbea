"""The generic HTTP(S) probe: HEAD (GET when HEAD is not allowed), expected status, latency threshold.

Redirects are followed here, up to MAX_REDIRECTS, but credentials stay on their origin: a redirect to
another host is not followed when the probe carries credentials (curl's rule without --location-trusted).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field, HttpUrl, field_validator
from yarl import URL

from exporter.adapters.base import AdapterContext, AdapterSpec
from exporter.adapters.classify import bad_response, classify_http, healthy_or_slow
from exporter.adapters.http1 import FRAMING
from exporter.adapters.transport import Response, TooManyRedirects, basic_auth_header, fetch
from exporter.core.model import HealthResult, IntegrationConfigBase

MAX_REDIRECTS = 10
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class RedirectNotFollowed(Exception):
    """A redirect to another origin while the probe carries credentials; the time spent until then."""

    def __init__(self, message: str, latency_ms: float) -> None:
        super().__init__(message)
        self.latency_ms = latency_ms


class HttpConfig(IntegrationConfigBase):
    """A plain HTTP(S) endpoint: HEAD (GET when the server answers 405), expected status codes."""

    url: HttpUrl
    method: Literal["HEAD", "GET"] = "HEAD"
    expected_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=list, max_length=50)
    auth: Literal["none", "bearer", "basic", "header"] = "none"
    auth_header: str = Field(default="Authorization", max_length=128, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    body_contains: str | None = Field(default=None, min_length=1, max_length=1024)  # the answer must contain this
    tls_verify: bool = True  # false trusts any certificate (self-signed, expired): an explicit, per-integration choice

    @field_validator("auth_header")
    @classmethod
    def _not_framing(cls, name: str) -> str:
        """Host, Content-Length and the like frame the request on a connection other checks share: never a
        tenant's to set (http1.FRAMING)."""
        if name.lower() in FRAMING:
            raise ValueError("must not be a header the HTTP client sets itself (Host, Content-Length, "
                             "Transfer-Encoding, Connection, Expect, ...)")
        return name


class HttpCheck:
    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx

    async def check(self, org_id: UUID, config: HttpConfig) -> HealthResult:
        headers = await self._auth_headers(org_id, config)
        url = str(config.url)
        method = "GET" if config.body_contains else config.method
        options: dict[str, Any] = {} if config.tls_verify else {"verify": False}
        try:
            resp = await self._follow(method, url, headers, options)  # a body after a HEAD's answer is dropped
            if method == "HEAD" and resp.status in (405, 501):  # HEAD not implemented: ask again with GET
                resp = await self._follow("GET", url, headers, options)
        except RedirectNotFollowed as exc:
            return bad_response(exc.latency_ms, self.ctx.clock(), str(exc))
        now = self.ctx.clock()
        expected = frozenset(config.expected_status) or None
        result = classify_http(resp, now, expected=expected)
        if result is None and config.body_contains and config.body_contains.encode() not in resp.body:
            result = bad_response(resp.latency_ms, now, "the body lacks the expected text")
        result = result or healthy_or_slow(resp.latency_ms, now, config.degraded_latency_ms)
        return dataclasses.replace(result, tls_expires_at=resp.tls_expires_at) if resp.tls_expires_at else result

    async def _follow(self, method: str, url: str, headers: dict[str, str], options: dict[str, Any]) -> Response:
        """Fetch, following redirects on the same origin; another origin only without credentials."""
        total_ms = 0.0
        for _ in range(MAX_REDIRECTS + 1):
            resp = await fetch(self.ctx, method, url, headers=headers, **options)
            total_ms += resp.latency_ms
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_CODES or not location:  # the whole way's time (one hop: its own)
                return resp if total_ms == resp.latency_ms else dataclasses.replace(resp, latency_ms=total_ms)
            here, there = URL(url), URL(url).join(URL(location))
            if headers and there.origin() != here.origin():
                raise RedirectNotFollowed(f"redirect to another host ({there.host}) not followed with credentials",
                                          total_ms)
            method = "GET" if resp.status == 303 else method
            url = str(there)
        raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects (redirect loop?)")

    async def _auth_headers(self, org_id: UUID, config: HttpConfig) -> dict[str, str]:
        if config.auth == "none":
            return {}
        secret = await self.ctx.secret(org_id, config.credential_ref)
        if config.auth == "bearer":
            return {"Authorization": f"Bearer {secret}"}
        if config.auth == "basic":  # the secret is "user:password"
            user, _, password = secret.partition(":")
            return {"Authorization": basic_auth_header(user, password)}
        return {config.auth_header: secret}


SPEC = AdapterSpec(HttpConfig, HttpCheck)
