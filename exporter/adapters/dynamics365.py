"""Dynamics 365: OAuth2 client credentials (token cached per org, reference and secret), then GET WhoAmI;
optionally, once a day, the client secret's expiry from Microsoft Graph."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import Field, HttpUrl

from exporter.adapters.base import AdapterContext, AdapterSpec
from exporter.adapters.classify import bad_response, classify_http, healthy_or_slow, refused
from exporter.adapters.graph import GRAPH_URL, LookupFailed, SecretExpiryCache, app_url, read_secret_expiry
from exporter.adapters.tokens import TokenCache, TokenFailure, with_token
from exporter.adapters.transport import Response, fetch
from exporter.core.egress import VendorHosts
from exporter.core.model import HealthResult, IntegrationConfigBase, Reason

WHOAMI_PATH = "/api/data/v9.2/WhoAmI"
# Why Entra ID refused the client credentials, by its AADSTS code (`error_codes`, also quoted in the
# description): expired and wrong secrets both come as 401 invalid_client, an unknown app as 400
# unauthorized_client; only the code tells them apart.
ENTRA_CODES: dict[int, tuple[Reason, str]] = {
    7000222: (Reason.AUTH_EXPIRED, "the client secret has expired"),
    7000215: (Reason.AUTH_INVALID, "the client secret is wrong"),
    700016: (Reason.AUTH_UNKNOWN_APP, "no application with this client_id in the tenant"),
}
# Why Dataverse refused a token Entra ID issued (`error.code` of a 401/403 from the Web API).
DATAVERSE_CODES: dict[str, tuple[Reason, str]] = {
    "0x80072560": (Reason.AUTH_NO_USER, "the application user is missing in this Dataverse environment"),
    "0x80040220": (Reason.AUTH_FORBIDDEN, "the application user lacks a privilege (its security role)"),
}
_AADSTS = re.compile(r"\bAADSTS(\d{4,8})\b")


def entra_code(body: dict[str, Any]) -> int | None:
    """The AADSTS code of a token endpoint error: `error_codes[0]`, else the one its description quotes."""
    codes = body.get("error_codes")
    if isinstance(codes, list) and codes and isinstance(codes[0], int) and not isinstance(codes[0], bool):
        return codes[0]
    match = _AADSTS.search(str(body.get("error_description") or "")[:2048])
    return int(match.group(1)) if match else None


def dataverse_code(body: dict[str, Any] | None) -> str | None:
    """`error.code` of a Dataverse Web API error (an HRESULT such as 0x80072560), when it has one."""
    error = (body or {}).get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code.lower() if isinstance(code, str) else None


class Dynamics365Config(IntegrationConfigBase):
    """Dynamics 365 Web API via OAuth2 client credentials; the credential is the client secret."""

    org_url: HttpUrl  # https://<org>.crm<N>.dynamics.com
    tenant_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9.-]+$")
    client_id: str = Field(min_length=1, max_length=128)  # a GUID: bounded, as it keys the token cache
    token_url: HttpUrl | None = None  # default: https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token
    # Read the client secret's expiry from Microsoft Graph once a day (the app needs Application.Read.All,
    # or to own its registration; without it Graph answers 403 and the expiry stays unknown).
    read_secret_expiry: bool = False
    graph_url: HttpUrl | None = None  # default https://graph.microsoft.com (sovereign clouds: their Graph)

    @property
    def effective_token_url(self) -> str:
        if self.token_url:
            return str(self.token_url)
        return f"https://login.microsoftonline.com/{self.tenant_id}/oauth2/v2.0/token"


class Dynamics365Check:
    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        self.tokens = TokenCache(ctx.monotonic)  # built once per process: the cache lives as long as the adapter
        self.secret_expiries = SecretExpiryCache(ctx.monotonic)

    async def check(self, org_id: UUID, config: Dynamics365Config) -> HealthResult:
        secret = await self.ctx.secret(org_id, config.credential_ref)  # read every check: a rotation counts
        result = await self._check(org_id, config, secret)
        if not config.read_secret_expiry:
            return result
        graph = str(config.graph_url or GRAPH_URL).rstrip("/")
        scope = (org_id, config.credential_ref, config.effective_token_url, config.client_id, graph)
        end = await self.secret_expiries.get(scope, secret, lambda: self._graph_lookup(config, secret, graph))
        return replace(result, credential_expires_at=end) if end else result

    async def _graph_lookup(self, config: Dynamics365Config, secret: str, graph: str) -> datetime | None:
        """A Graph token (its own scope, fetched only for this daily lookup), then the app's password credentials."""
        try:
            token, _ = await self._fetch_token(config, secret, scope=graph + "/.default")
        except TokenFailure as failure:
            raise LookupFailed(failure.result.reason or "token") from None
        return await read_secret_expiry(self.ctx, app_url(graph, config.client_id), token, secret)

    async def _check(self, org_id: UUID, config: Dynamics365Config, secret: str) -> HealthResult:
        scope = (org_id, config.credential_ref, config.effective_token_url, config.client_id, str(config.org_url))
        url = str(config.org_url).rstrip("/") + WHOAMI_PATH
        try:  # a cached token refused (revoked, expired early) is replaced once: a stale token is not an alert
            resp = await with_token(self.tokens, scope, secret, lambda: self._fetch_token(config, secret),
                                    lambda token: self._who_am_i(url, token))
        except TokenFailure as failure:
            return failure.result
        now = self.ctx.clock()
        if resp.status in (401, 403):
            code = dataverse_code(resp.json_object())
            if code in DATAVERSE_CODES:
                reason, why = DATAVERSE_CODES[code]
                return refused(resp.latency_ms, now, f"by Dataverse: {why} ({code})", reason)
        if failed := classify_http(resp, now):
            return failed
        body = resp.json_object()
        if not body or not {"UserId", "OrganizationId"} <= body.keys():
            return bad_response(resp.latency_ms, now, "WhoAmI answer without UserId/OrganizationId")
        return healthy_or_slow(resp.latency_ms, now, config.degraded_latency_ms)

    async def _who_am_i(self, url: str, token: str) -> Response:
        return await fetch(self.ctx, "GET", url, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/json", "OData-Version": "4.0"})

    async def _fetch_token(self, config: Dynamics365Config, secret: str, scope: str | None = None) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "client_id": config.client_id, "client_secret": secret,
                "scope": scope or str(config.org_url).rstrip("/") + "/.default"}
        resp = await fetch(self.ctx, "POST", config.effective_token_url, data=form)
        body = resp.json_object() or {}
        if resp.status in (400, 401) and isinstance(body.get("error"), str):
            raise TokenFailure(self._rejected(resp, body))
        if failed := classify_http(resp, self.ctx.clock()):
            raise TokenFailure(failed)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(lifetime, int | float | str):
            raise TokenFailure(bad_response(resp.latency_ms, self.ctx.clock(), "token endpoint answer without a token"))
        return token, float(lifetime)

    def _rejected(self, resp: Response, body: dict[str, Any]) -> HealthResult:
        """Name the cause when Entra ID's AADSTS code is one we know; quote only codes, never a description."""
        code = entra_code(body)
        if code in ENTRA_CODES:
            reason, why = ENTRA_CODES[code]
            return refused(resp.latency_ms, self.ctx.clock(), f"by the token endpoint: {why} (AADSTS{code})", reason)
        error = str(body["error"])
        error = error if error.replace("_", "").isalnum() and len(error) <= 64 else "error"
        return refused(resp.latency_ms, self.ctx.clock(), f"by the token endpoint ({error})")


# org_url under dynamics.com, token_url on Microsoft's login, Microsoft Graph (the secret's expiry); the
# sovereign clouds only when an operator names them in EXPORTER_SOVEREIGN_CLOUDS.
HOSTS = VendorHosts(("*.dynamics.com", "login.microsoftonline.com", "graph.microsoft.com"), clouds={
    "us-gov": ("*.crm.microsoftdynamics.us", "login.microsoftonline.us", "graph.microsoft.us"),
    "china": ("*.dynamics.cn", "login.chinacloudapi.cn", "microsoftgraph.chinacloudapi.cn"),
})
SPEC = AdapterSpec(Dynamics365Config, Dynamics365Check, hosts=HOSTS)
