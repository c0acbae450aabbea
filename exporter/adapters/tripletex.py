"""Tripletex: a session token from consumer + employee token (cached per org, reference and secret), then
GET /token/session/>whoAmI."""

from __future__ import annotations

import json
from datetime import timedelta
from uuid import UUID

from pydantic import HttpUrl

from exporter.adapters.base import AdapterContext, AdapterSpec
from exporter.adapters.classify import bad_response, classify_http, healthy_or_slow
from exporter.adapters.tokens import TokenCache, TokenFailure
from exporter.adapters.transport import basic_auth_header, fetch
from exporter.core.egress import VendorHosts
from exporter.core.model import CredentialError, HealthResult, HealthStatus, IntegrationConfigBase, Reason, make_result

SESSION_DAYS = 1  # sessions are created to expire tomorrow; the cache renews them well before


class TripletexConfig(IntegrationConfigBase):
    """Tripletex v2; the credential is JSON `{"consumer_token": …, "employee_token": …}`."""

    url: HttpUrl = HttpUrl("https://tripletex.no/v2")


class TripletexCheck:
    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        self.tokens = TokenCache(ctx.monotonic)  # built once per process: the cache lives as long as the adapter

    async def check(self, org_id: UUID, config: TripletexConfig) -> HealthResult:
        base = str(config.url).rstrip("/")
        secret = await self.ctx.secret(org_id, config.credential_ref)  # read every check: a rotation counts
        consumer, employee = parse_credential(secret)
        scope = (org_id, config.credential_ref, base)
        try:
            session_token = await self.tokens.get(scope, secret,
                                                  lambda: self._create_session(base, consumer, employee))
        except TokenFailure as failure:
            return failure.result
        resp = await fetch(self.ctx, "GET", f"{base}/token/session/>whoAmI",
                           headers={"Authorization": basic_auth_header("0", session_token),
                                    "Accept": "application/json"})
        now = self.ctx.clock()
        if resp.status in (401, 403):
            self.tokens.drop(scope)
        if failed := classify_http(resp, now):
            return failed
        value = (resp.json_object() or {}).get("value")
        if not isinstance(value, dict) or "employeeId" not in value:
            return bad_response(resp.latency_ms, now, "whoAmI answer without value.employeeId")
        return healthy_or_slow(resp.latency_ms, now, config.degraded_latency_ms)

    async def _create_session(self, base: str, consumer: str, employee: str) -> tuple[str, float]:
        expires = (self.ctx.clock() + timedelta(days=SESSION_DAYS)).date().isoformat()
        resp = await fetch(self.ctx, "PUT", f"{base}/token/session/:create", params={
            "consumerToken": consumer, "employeeToken": employee, "expirationDate": expires})
        now = self.ctx.clock()
        if resp.status in (401, 403, 422):
            raise TokenFailure(make_result(HealthStatus.DEGRADED, resp.latency_ms, now,
                                           f"session token refused: credentials rejected (HTTP {resp.status})",
                                           Reason.AUTH))
        if failed := classify_http(resp, now):
            raise TokenFailure(failed)
        value = (resp.json_object() or {}).get("value")
        token = value.get("token") if isinstance(value, dict) else None
        if not isinstance(token, str):
            raise TokenFailure(bad_response(resp.latency_ms, now, "session answer without value.token"))
        return token, SESSION_DAYS * 86400 / 2


def parse_credential(secret: str) -> tuple[str, str]:
    """The Tripletex credential is JSON with consumer_token and employee_token."""
    try:
        data = json.loads(secret)
        return str(data["consumer_token"]), str(data["employee_token"])
    except (ValueError, KeyError, TypeError):
        raise CredentialError("the tripletex credential must be JSON with consumer_token and employee_token") from None


HOSTS = VendorHosts(("tripletex.no", "api-test.tripletex.tech", "api.tripletex.io"))  # production, test, older test
SPEC = AdapterSpec(TripletexConfig, TripletexCheck, hosts=HOSTS)
