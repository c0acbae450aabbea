"""A loopback fake of the vendor APIs with fault modes, for the demo, tests and benchmarks.

Routes (each carries a tenant key; the tenant's mode decides the answer):

    ANY  /http/{tenant}                                     plain HTTP target
    POST /xledger/{tenant}/graphql                          Xledger GraphQL   (Authorization: token <secret>)
    POST /login/{tenant}/oauth2/v2.0/token                  Microsoft identity platform, client credentials
    GET  /dynamics/{tenant}/api/data/v9.2/WhoAmI            Dynamics 365 Web API (Bearer <issued token>)
    PUT  /tripletex/{tenant}/v2/token/session/:create       Tripletex session (consumerToken, employeeToken)
    GET  /tripletex/{tenant}/v2/token/session/>whoAmI       Tripletex (Basic 0:<session token>)
    GET  /fiken/{tenant}/api/v2/user                        Fiken (Bearer <secret>)

Modes: healthy, slow (ms), hang, rate_limited (429 + Retry-After), graphql_throttle, graphql_quota,
unauthorized (401), server_error (500), reset, invalid_body, redirect_loop, oversized. A tenant with
a secret set only accepts that secret, so tests can prove the right credential reached the right vendor.
Change a tenant while running: `PUT /_sim/tenants/{tenant}` `{"mode": "hang", "ms": 0, "secret": …}`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)
MODES = ("healthy", "slow", "hang", "rate_limited", "graphql_throttle", "graphql_quota", "unauthorized",
         "server_error", "reset", "invalid_body", "redirect_loop", "oversized")
GRAPHQL_CODES = {"graphql_throttle": "BAD_REQUEST.BURST_RATE_LIMIT_REACHED",
                 "graphql_quota": "BAD_REQUEST.INSUFFICIENT_CREDITS"}


@dataclass
class Mode:
    name: str = "healthy"
    ms: int = 0  # extra latency for every mode; "slow" uses it alone
    retry_after: int = 30

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise ValueError(f"unknown mode {self.name!r}; choose one of {', '.join(MODES)}")


@dataclass
class SimState:
    modes: dict[str, Mode] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # tenant → the only credential it accepts
    requests: dict[str, int] = field(default_factory=dict)  # tenant → requests served (what a check costs)
    token_requests: dict[str, int] = field(default_factory=dict)  # tenant → tokens/sessions issued
    issued: dict[str, str] = field(default_factory=dict)  # access/session token → tenant
    latency_ms: int = 0  # added to every answer (benchmarks use 50 ms)
    alerts: list[dict[str, Any]] = field(default_factory=list)  # Alertmanager webhook posts received
    token_lifetime_s: int = 3599

    def mode(self, tenant: str) -> Mode:
        self.requests[tenant] = self.requests.get(tenant, 0) + 1
        return self.modes.get(tenant, Mode())

    def accepts(self, tenant: str, secret: str | None) -> bool:
        expected = self.secrets.get(tenant)
        return secret is not None and (expected is None or secrets.compare_digest(secret, expected))

    def issue(self, tenant: str) -> str:
        self.token_requests[tenant] = self.token_requests.get(tenant, 0) + 1
        token = secrets.token_urlsafe(24)
        self.issued[token] = tenant
        return token


STATE = web.AppKey("state", SimState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def unauthorized() -> web.Response:
    return web.json_response({"error": "unauthorized"}, status=401)


async def apply_mode(request: web.Request, tenant: str, *, graphql: bool = False) -> web.StreamResponse | None:
    """Answer with the tenant's fault, or return None so the route answers normally."""
    state = request.app[STATE]
    mode = state.mode(tenant)
    delay = (mode.ms + state.latency_ms) / 1000
    if delay:
        await asyncio.sleep(delay)
    match mode.name:
        case "hang":
            await asyncio.sleep(3600)
        case "rate_limited":
            return web.json_response({"error": "too many requests"}, status=429,
                                     headers={"Retry-After": str(mode.retry_after)})
        case "graphql_throttle" | "graphql_quota" if graphql:
            code = GRAPHQL_CODES[mode.name]
            return web.json_response({"errors": [{"message": code.split(".")[1].replace("_", " ").lower(),
                                                  "code": code, "extensions": {"code": code}}]})
        case "unauthorized":
            return unauthorized()
        case "server_error":
            return web.Response(status=500, text="internal error")
        case "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        case "invalid_body":
            return web.Response(status=200, text="<html><body>Maintenance</body></html>", content_type="text/html")
        case "redirect_loop":
            raise web.HTTPTemporaryRedirect(location=str(request.rel_url))  # 307 keeps the method
        case "oversized":
            return web.Response(status=200, body=b"x" * (2 * 1024 * 1024), content_type="application/json")
    return None


def bearer(request: web.Request, scheme: str = "Bearer") -> str | None:
    header = request.headers.get("Authorization", "")
    prefix = f"{scheme} "
    return header[len(prefix):] if header.startswith(prefix) else None


async def http_target(request: web.Request) -> web.StreamResponse:
    return await apply_mode(request, request.match_info["tenant"]) or web.json_response({"status": "ok"})


async def xledger_graphql(request: web.Request) -> web.StreamResponse:
    tenant = request.match_info["tenant"]
    if not request.app[STATE].accepts(tenant, bearer(request, "token")):
        return web.json_response({"errors": [{"message": "not authorized", "code": "AUTH_NOT_AUTHORIZED"}]})
    if answer := await apply_mode(request, tenant, graphql=True):
        return answer
    body = await request.json()
    if "__typename" not in str(body.get("query", "")):
        return web.json_response({"errors": [{"message": "unsupported query", "code": "BAD_REQUEST"}]})
    return web.json_response({"data": {"__typename": "Query"}})


async def microsoft_token(request: web.Request) -> web.Response:
    tenant, state = request.match_info["tenant"], request.app[STATE]
    form = await request.post()
    if form.get("grant_type") != "client_credentials" or not str(form.get("scope", "")).endswith("/.default"):
        return web.json_response({"error": "invalid_request"}, status=400)
    if not state.accepts(tenant, str(form.get("client_secret") or "") or None):
        return web.json_response({"error": "invalid_client", "error_description": "AADSTS7000215"}, status=401)
    return web.json_response({"token_type": "Bearer", "expires_in": state.token_lifetime_s,
                              "access_token": state.issue(tenant)})


async def dynamics_whoami(request: web.Request) -> web.StreamResponse:
    tenant, state = request.match_info["tenant"], request.app[STATE]
    if state.issued.get(bearer(request) or "") != tenant:
        return unauthorized()
    return await apply_mode(request, tenant) or web.json_response({
        "@odata.context": "$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
        "BusinessUnitId": "6f1c0000-0000-4000-8000-000000000001",
        "UserId": "6f1c0000-0000-4000-8000-000000000002",
        "OrganizationId": "6f1c0000-0000-4000-8000-000000000003"})


async def tripletex_session(request: web.Request) -> web.StreamResponse:
    tenant, state = request.match_info["tenant"], request.app[STATE]
    which = request.match_info["action"]
    if which == ":create":
        pair = f"{request.query.get('consumerToken', '')}/{request.query.get('employeeToken', '')}"
        if not state.accepts(tenant, pair):
            return unauthorized()
        return web.json_response({"value": {"token": state.issue(tenant)}})
    if which != ">whoAmI" or request.method != "GET":
        return web.json_response({"status": 404}, status=404)
    basic = bearer(request, "Basic")
    user, _, token = base64.b64decode(basic).decode().partition(":") if basic else ("", "", "")
    if user != "0" or state.issued.get(token) != tenant:
        return unauthorized()
    return await apply_mode(request, tenant) or web.json_response(
        {"value": {"employeeId": 101, "companyId": 202, "actualEmployeeId": 101}})


async def fiken_user(request: web.Request) -> web.StreamResponse:
    tenant = request.match_info["tenant"]
    if not request.app[STATE].accepts(tenant, bearer(request)):
        return unauthorized()
    return await apply_mode(request, tenant) or web.json_response({"name": "Demo User", "email": "demo@example.com"})


async def get_tenants(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"modes": {t: vars(m) for t, m in state.modes.items()}, "requests": state.requests})


async def put_tenant(request: web.Request) -> web.Response:
    state, tenant = request.app[STATE], request.match_info["tenant"]
    try:
        body: dict[str, Any] = await request.json()
        mode = Mode(name=body.get("mode", "healthy"), ms=int(body.get("ms", 0)),
                    retry_after=int(body.get("retry_after", 30)))
    except (ValueError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    state.modes[tenant] = mode
    if isinstance(body.get("secret"), str):
        state.secrets[tenant] = body["secret"]
    return web.json_response(vars(mode))


async def post_alerts(request: web.Request) -> web.Response:
    """A webhook receiver for Alertmanager, so the compose stack's alerts land somewhere visible."""
    payload = await request.json()
    request.app[STATE].alerts.append(payload)
    for alert in payload.get("alerts", []):
        log.warning("alert %s: %s %s", alert.get("status"), alert.get("labels", {}).get("alertname"),
                    alert.get("annotations", {}).get("summary", ""))
    return web.json_response({"received": len(payload.get("alerts", []))})


async def get_alerts(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].alerts)


@dataclass(frozen=True)
class Fake:
    """One vendor's fake: its routes, the config that points an integration at it, and its credential.

    `credential(tenant)` is (what the vault stores, what the fake accepts): Tripletex's vault secret is JSON
    with two tokens, which its session endpoint receives as a pair.
    """

    routes: tuple[tuple[str, str, Handler], ...]
    config: Callable[[str, str], dict[str, Any]]  # (simulator base URL, tenant) → integration_config.config
    credential: Callable[[str], tuple[str, str]] = lambda t: (f"{t}-secret", f"{t}-secret")


def _tripletex_credential(tenant: str) -> tuple[str, str]:
    tokens = {"consumer_token": f"{tenant}-consumer", "employee_token": f"{tenant}-employee"}
    return json.dumps(tokens), f"{tenant}-consumer/{tenant}-employee"


FAKES: dict[str, Fake] = {
    "http": Fake((("*", "/http/{tenant}", http_target),),
                 lambda base, t: {"url": f"{base}/http/{t}", "method": "GET", "auth": "bearer", "body_contains": "ok"}),
    "xledger": Fake((("POST", "/xledger/{tenant}/graphql", xledger_graphql),),
                    lambda base, t: {"url": f"{base}/xledger/{t}/graphql"}),
    "dynamics365": Fake((("POST", "/login/{tenant}/oauth2/v2.0/token", microsoft_token),
                         ("GET", "/dynamics/{tenant}/api/data/v9.2/WhoAmI", dynamics_whoami)),
                        lambda base, t: {"org_url": f"{base}/dynamics/{t}", "tenant_id": t, "client_id": f"{t}-client",
                                         "token_url": f"{base}/login/{t}/oauth2/v2.0/token"}),
    "tripletex": Fake((("*", "/tripletex/{tenant}/v2/token/session/{action}", tripletex_session),),
                      lambda base, t: {"url": f"{base}/tripletex/{t}/v2"}, _tripletex_credential),
    "fiken": Fake((("GET", "/fiken/{tenant}/api/v2/user", fiken_user),),
                  lambda base, t: {"url": f"{base}/fiken/{t}/api/v2"}),
}


def create_app(state: SimState | None = None) -> web.Application:
    app = web.Application()
    app[STATE] = state or SimState()
    for fake in FAKES.values():
        for method, path, handler in fake.routes:
            app.router.add_route(method, path, handler)
    app.router.add_get("/_sim/tenants", get_tenants)
    app.router.add_post("/_sim/alerts", post_alerts)
    app.router.add_get("/_sim/alerts", get_alerts)
    app.router.add_put("/_sim/tenants/{tenant}", put_tenant)
    return app
