"""Dynamics 365: OAuth2 client credentials (token cached per org, reference and secret), then GET WhoAmI."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field, HttpUrl

from exporter.adapters.base import AdapterContext, AdapterSpec
from exporter.adapters.classify import bad_response, classify_http, healthy_or_slow
from exporter.adapters.tokens import TokenCache, TokenFailure
from exporter.adapters.transport import Response, fetch
from exporter.core.egress import VendorHosts
from exporter.core.model import HealthResult, HealthStatus, IntegrationConfigBase, Reason, make_result

WHOAMI_PATH = "/api/data/v9.2/WhoAmI"


class Dynamics365Config(IntegrationConfigBase):
    """Dynamics 365 Web API via OAuth2 client credentials; the credential is the client secret."""

    org_url: HttpUrl  # https://<org>.crm<N>.dynamics.com
    tenant_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9.-]+$")
    client_id: str = Field(min_length=1, max_length=128)  # a GUID: bounded, as it keys the token cache
    token_url: HttpUrl | None = None  # default: https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token

    @property
    def effective_token_url(self) -> str:
        if self.token_url:
            return str(self.token_url)
        return f"https://login.microsoftonline.com/{self.tenant_id}/oauth2/v2.0/token"


class Dynamics365Check:
    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        self.tokens = TokenCache(ctx.monotonic)  # built once per process: the cache lives as long as the adapter

    async def check(self, org_id: UUID, config: Dynamics365Config) -> HealthResult:
        secret = await self.ctx.secret(org_id, config.credential_ref)  # read every check: a rotation counts
        scope = (org_id, config.credential_ref, config.effective_token_url, config.client_id, str(config.org_url))
        try:
            token = await self.tokens.get(scope, secret, lambda: self._fetch_token(config, secret))
        except TokenFailure as failure:
            return failure.result
        url = str(config.org_url).rstrip("/") + WHOAMI_PATH
        resp = await fetch(self.ctx, "GET", url, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/json", "OData-Version": "4.0"})
        now = self.ctx.clock()
        if resp.status in (401, 403):
            self.tokens.drop(scope)  # revoked or expired early: the next check fetches a new one
        if failed := classify_http(resp, now):
            return failed
        body = resp.json_object()
        if not body or not {"UserId", "OrganizationId"} <= body.keys():
            return bad_response(resp.latency_ms, now, "WhoAmI answer without UserId/OrganizationId")
        return healthy_or_slow(resp.latency_ms, now, config.degraded_latency_ms)

    async def _fetch_token(self, config: Dynamics365Config, secret: str) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "client_id": config.client_id, "client_secret": secret,
                "scope": str(config.org_url).rstrip("/") + "/.default"}
        resp = await fetch(self.ctx, "POST", config.effective_token_url, data=form)
        body = resp.json_object() or {}
        if resp.status in (400, 401) and isinstance(body.get("error"), str):
            raise TokenFailure(self._rejected(resp, body["error"]))
        if failed := classify_http(resp, self.ctx.clock()):
            raise TokenFailure(failed)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(lifetime, int | float | str):
            raise TokenFailure(bad_response(resp.latency_ms, self.ctx.clock(), "token endpoint answer without a token"))
        return token, float(lifetime)

    def _rejected(self, resp: Response, error: str) -> HealthResult:
        code = error if error.replace("_", "").isalnum() else "error"  # the OAuth code only, never a description
        return make_result(HealthStatus.DEGRADED, resp.latency_ms, self.ctx.clock(),
                           f"credentials rejected by the token endpoint ({code})", Reason.AUTH)


# org_url under dynamics.com, token_url on Microsoft's login; the sovereign clouds only when an operator
# names them in EXPORTER_SOVEREIGN_CLOUDS.
HOSTS = VendorHosts(("*.dynamics.com", "login.microsoftonline.com"), clouds={
    "us-gov": ("*.crm.microsoftdynamics.us", "login.microsoftonline.us"),
    "china": ("*.dynamics.cn", "login.chinacloudapi.cn"),
})
SPEC = AdapterSpec(Dynamics365Config, Dynamics365Check, hosts=HOSTS)
