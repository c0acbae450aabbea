"""Xledger: POST `{ __typename }` to the GraphQL endpoint; throttling arrives as GraphQL error codes."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import HttpUrl

from exporter.adapters.base import AdapterContext, AdapterSpec
from exporter.adapters.classify import bad_response, classify_http, healthy_or_slow, refused
from exporter.adapters.transport import fetch
from exporter.core.egress import VendorHosts
from exporter.core.model import HealthResult, HealthStatus, IntegrationConfigBase, Reason, make_result

QUERY = {"query": "{ __typename }"}  # the cheapest billed request there is
# Throttling: a burst of requests, or the organisation's own integration running at the same time.
RATE_LIMITED = {"BAD_REQUEST.BURST_RATE_LIMIT_REACHED": "burst rate limit reached",
                "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED": "another request of this token is running"}
QUOTA = "BAD_REQUEST.INSUFFICIENT_CREDITS"  # carries extensions.resetAt: when credits are available again
NO_CODE = ""  # a bad, revoked or malformed token: Xledger answers with a message ("Bad format for API Token…")
XLEDGER_TIME = ZoneInfo("Europe/Oslo")  # Xledger's own timestamps are Norwegian time when they carry no offset


def error_codes(errors: list[Any]) -> list[str]:
    """Codes from `errors[].code` or `errors[].extensions.code` (servers use both); NO_CODE when it has none."""
    codes = []
    for err in errors:
        if isinstance(err, dict):
            ext = _extensions(err)
            code = err.get("code") or ext.get("code")
            codes.append(str(code)[:100] if code else NO_CODE)
    return codes


def _extensions(err: dict[str, Any]) -> dict[str, Any]:
    ext = err.get("extensions")
    return ext if isinstance(ext, dict) else {}


def reset_after_s(errors: list[Any], now: datetime) -> float | None:
    """Seconds until `extensions.resetAt` of the insufficient-credits error (ISO 8601), or None."""
    for err in errors:
        if isinstance(err, dict) and (err.get("code") or _extensions(err).get("code")) == QUOTA:
            value = _extensions(err).get("resetAt")
            try:
                when = datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
            except ValueError:
                return None
            if when is None:
                return None
            when = when if when.tzinfo else when.replace(tzinfo=XLEDGER_TIME)
            return max(0.0, (when - now).total_seconds())
    return None


def classify_graphql_errors(errors: list[Any], latency_ms: float, now: datetime) -> HealthResult:
    codes = error_codes(errors)
    if not codes:  # no error object at all: not an answer GraphQL gives
        return bad_response(latency_ms, now, "GraphQL errors that are not objects")
    if throttled := [RATE_LIMITED[c] for c in codes if c in RATE_LIMITED]:
        return make_result(HealthStatus.DEGRADED, latency_ms, now, f"rate limited ({throttled[0]})",
                           Reason.RATE_LIMITED)
    if QUOTA in codes:
        return make_result(HealthStatus.DEGRADED, latency_ms, now, "API quota exhausted (insufficient credits)",
                           Reason.QUOTA, reset_after_s(errors, now))
    if NO_CODE in codes:  # Xledger's answer to a token it cannot use says why only in words
        return refused(latency_ms, now, "(an error without a code: the API token is malformed or revoked)")
    return make_result(HealthStatus.DEGRADED, latency_ms, now, f"GraphQL error {codes[0]}", Reason.BAD_RESPONSE)


class XledgerConfig(IntegrationConfigBase):
    """Xledger GraphQL; the credential is the API token (sent as `Authorization: token …`)."""

    url: HttpUrl = HttpUrl("https://www.xledger.net/graphql")  # demo company: https://demo.xledger.net/graphql


class XledgerCheck:
    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx

    async def check(self, org_id: UUID, config: XledgerConfig) -> HealthResult:
        token = await self.ctx.secret(org_id, config.credential_ref)
        resp = await fetch(self.ctx, "POST", str(config.url), json=QUERY, headers={"Authorization": f"token {token}"})
        now = self.ctx.clock()
        body = resp.json_object()
        if body and isinstance(body.get("errors"), list) and body["errors"]:
            return classify_graphql_errors(body["errors"], resp.latency_ms, now)
        if failed := classify_http(resp, now):
            return failed
        data = body.get("data") if body else None
        if not isinstance(data, dict) or "__typename" not in data:
            return bad_response(resp.latency_ms, now, "no data.__typename in the GraphQL answer")
        return healthy_or_slow(resp.latency_ms, now, config.degraded_latency_ms)


SPEC = AdapterSpec(XledgerConfig, XledgerCheck, interval_s=3600,  # billed per request: hourly by default
                   hosts=VendorHosts(("www.xledger.net", "demo.xledger.net")))
