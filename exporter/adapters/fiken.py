"""Fiken: GET /user with the bearer token; a JSON user object means the API and the token work."""

from __future__ import annotations

from uuid import UUID

from pydantic import HttpUrl

from exporter.adapters.base import AdapterContext, AdapterSpec
from exporter.adapters.classify import bad_response, classify_http, healthy_or_slow
from exporter.adapters.transport import fetch
from exporter.core.egress import VendorHosts
from exporter.core.model import HealthResult, IntegrationConfigBase


class FikenConfig(IntegrationConfigBase):
    """Fiken v2; the credential is a personal API token (Bearer), best one made for the monitor alone: Fiken
    allows one request at a time per token, so sharing the sync's token can throttle (429) either of them.
    OAuth access tokens expire within a day and are not refreshed here: they would read `auth` by tomorrow."""

    url: HttpUrl = HttpUrl("https://api.fiken.no/api/v2")


class FikenCheck:
    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx

    async def check(self, org_id: UUID, config: FikenConfig) -> HealthResult:
        token = await self.ctx.secret(org_id, config.credential_ref)
        resp = await fetch(self.ctx, "GET", f"{str(config.url).rstrip('/')}/user",
                           headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        now = self.ctx.clock()
        if failed := classify_http(resp, now):
            return failed
        body = resp.json_object()
        if not body or not ({"email", "name"} & body.keys()):
            return bad_response(resp.latency_ms, now, "no user object in the answer")
        return healthy_or_slow(resp.latency_ms, now, config.degraded_latency_ms)


SPEC = AdapterSpec(FikenConfig, FikenCheck, hosts=VendorHosts(("api.fiken.no",)))
