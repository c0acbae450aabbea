"""Tripletex: a session token from consumer + employee token (cached per org, reference and secret), then
GET /token/session/>whoAmI."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import HttpUrl

from exporter.adapters.base import AdapterContext, AdapterSpec
from exporter.adapters.classify import (
    bad_response,
    classify_http,
    healthy_or_slow,
    parse_retry_after,
    refused,
    with_retry_after,
)
from exporter.adapters.tokens import TokenCache, TokenFailure, with_token
from exporter.adapters.transport import Response, basic_auth_header, fetch
from exporter.core.egress import VendorHosts
from exporter.core.model import CredentialError, HealthResult, IntegrationConfigBase, Reason

NORWAY = ZoneInfo("Europe/Oslo")  # Tripletex's "today", and the midnight its sessions end at
SESSION_DAYS = 2  # ask for the day after tomorrow: a session kept until the next midnight has a day to spare


def session_expiry(now: datetime) -> tuple[str, float]:
    """The `expirationDate` to ask for and how long to keep the session, both in Norwegian time.

    Tripletex wants a date later than today and ends the session at midnight of that date; a date computed
    in UTC is Norway's today for the hour or two after its midnight, and refused. The session is renewed at
    the next Norwegian midnight, a day before it ends.
    """
    today = now.astimezone(NORWAY).date()
    renew_at = datetime.combine(today + timedelta(days=1), time(), NORWAY)
    return (today + timedelta(days=SESSION_DAYS)).isoformat(), (renew_at - now).total_seconds()


def honour_reset(result: HealthResult, resp: Response) -> HealthResult:
    """Tripletex signals throttling with X-Rate-Limit-Reset (seconds until the window resets), not Retry-After."""
    if result.reason is not Reason.RATE_LIMITED:
        return result
    return with_retry_after(result, parse_retry_after(resp.headers.get("X-Rate-Limit-Reset"), result.checked_at))


class TripletexConfig(IntegrationConfigBase):
    """Tripletex v2; the credential is JSON `{"consumer_token": …, "employee_token": …}`. The test
    environment is `https://api-test.tripletex.tech/v2`."""

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
        try:  # a cached session refused (ended early, forgotten) is created again once before reading auth
            resp = await with_token(self.tokens, scope, secret, lambda: self._create_session(base, consumer, employee),
                                    lambda token: self._who_am_i(base, token))
        except TokenFailure as failure:
            return failure.result
        now = self.ctx.clock()
        if failed := classify_http(resp, now):
            return honour_reset(failed, resp)
        value = (resp.json_object() or {}).get("value")
        if not isinstance(value, dict) or "employeeId" not in value:
            return bad_response(resp.latency_ms, now, "whoAmI answer without value.employeeId")
        return healthy_or_slow(resp.latency_ms, now, config.degraded_latency_ms)

    async def _who_am_i(self, base: str, session_token: str) -> Response:
        return await fetch(self.ctx, "GET", f"{base}/token/session/>whoAmI", headers={
            "Authorization": basic_auth_header("0", session_token), "Accept": "application/json"})

    async def _create_session(self, base: str, consumer: str, employee: str) -> tuple[str, float]:
        expires, keep_s = session_expiry(self.ctx.clock())
        resp = await fetch(self.ctx, "PUT", f"{base}/token/session/:create", params={
            "consumerToken": consumer, "employeeToken": employee, "expirationDate": expires})
        now = self.ctx.clock()
        if resp.status in (401, 403, 422):
            raise TokenFailure(refused(resp.latency_ms, now, f"(session token refused, HTTP {resp.status})"))
        if failed := classify_http(resp, now):
            raise TokenFailure(honour_reset(failed, resp))
        value = (resp.json_object() or {}).get("value")
        token = value.get("token") if isinstance(value, dict) else None
        if not isinstance(token, str):
            raise TokenFailure(bad_response(resp.latency_ms, now, "session answer without value.token"))
        return token, keep_s


def parse_credential(secret: str) -> tuple[str, str]:
    """The Tripletex credential is JSON with consumer_token and employee_token."""
    try:
        data = json.loads(secret)
        return str(data["consumer_token"]), str(data["employee_token"])
    except (ValueError, KeyError, TypeError):
        raise CredentialError("the tripletex credential must be JSON with consumer_token and employee_token") from None


HOSTS = VendorHosts(("tripletex.no", "api-test.tripletex.tech", "api.tripletex.io"))  # production, test, older test
SPEC = AdapterSpec(TripletexConfig, TripletexCheck, hosts=HOSTS)
