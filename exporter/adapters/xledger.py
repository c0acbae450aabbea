"""Xledger: POST `{ __typename }` to the GraphQL endpoint; throttling arrives as GraphQL error codes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import HttpUrl

from exporter.adapters.base import AdapterContext, AdapterSpec
from exporter.adapters.classify import bad_response, classify_http, healthy_or_slow
from exporter.adapters.transport import fetch
from exporter.core.egress import VendorHosts
from exporter.core.model import HealthResult, HealthStatus, IntegrationConfigBase, Reason, make_result

QUERY = {"query": "{ __typename }"}  # the cheapest billed request there is
RATE_LIMITED = {"BAD_REQUEST.BURST_RATE_LIMIT_REACHED"}
QUOTA = {"BAD_REQUEST.INSUFFICIENT_CREDITS"}


def error_codes(errors: list[Any]) -> list[str]:
    """Codes from `errors[].code` or `errors[].extensions.code` (servers use both)."""
    codes = []
    for err in errors:
        if isinstance(err, dict):
            ext = err.get("extensions") if isinstance(err.get("extensions"), dict) else {}
            code = err.get("code") or ext.get("code")
            codes.append(str(code) if code else "UNKNOWN")
    return codes or ["UNKNOWN"]


def classify_graphql_errors(errors: list[Any], latency_ms: float, now: Any) -> HealthResult:
    codes = error_codes(errors)
    if RATE_LIMITED & set(codes):
        return make_result(HealthStatus.DEGRADED, latency_ms, now, "rate limited (burst rate limit reached)",
                           Reason.RATE_LIMITED)
    if QUOTA & set(codes):
        return make_result(HealthStatus.DEGRADED, latency_ms, now, "API quota exhausted (insufficient credits)",
                           Reason.QUOTA)
    if any("AUTH" in c or "FORBIDDEN" in c for c in codes):
        return make_result(HealthStatus.DEGRADED, latency_ms, now, f"credentials rejected ({codes[0]})", Reason.AUTH)
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
