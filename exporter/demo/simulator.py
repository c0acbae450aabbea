"""A loopback fake of the vendor APIs with fault modes, for the demo, tests and benchmarks.

Routes (each carries a tenant key; the tenant's mode decides the answer):

    ANY  /http/{tenant}                                     plain HTTP target
    POST /xledger/{tenant}/graphql                          Xledger GraphQL   (Authorization: token <secret>)
    POST /login/{tenant}/oauth2/v2.0/token                  Microsoft identity platform, client credentials
    GET  /dynamics/{tenant}/api/data/v9.2/WhoAmI            Dynamics 365 Web API (Bearer <issued token>)
    GET  /graph/{tenant}/v1.0/applications(appId='{app}')   Microsoft Graph: the app's passwordCredentials
                                                            (?$select=passwordCredentials; Bearer <issued token>)
    PUT  /tripletex/{tenant}/v2/token/session/:create       Tripletex session (consumerToken, employeeToken)
    GET  /tripletex/{tenant}/v2/token/session/>whoAmI       Tripletex (Basic 0:<session token>)
    GET  /fiken/{tenant}/api/v2/user                        Fiken (Bearer <secret>)

Modes: healthy, slow (ms), hang, rate_limited (429 + Retry-After; Tripletex: X-Rate-Limit-Reset),
unauthorized (401; Xledger: an error without a code), forbidden (403; Dataverse: 0x80040220),
server_error (500), reset, invalid_body, redirect_loop, oversized, and the vendors' own answers:
graphql_throttle, graphql_concurrency, graphql_quota (with extensions.resetAt) for Xledger;
secret_expired (AADSTS7000222) and unknown_app (AADSTS700016) at the Microsoft token endpoint;
no_app_user (403 0x80072560) at Dataverse. A mode a vendor has no answer for leaves it healthy.
Graph answers with the end date in `app_secret_ends[tenant]` (the current secret's, with its hint, beside an
older secret's that ends sooner), or 403 Authorization_RequestDenied for a tenant in `graph_forbidden`.

Each fault has the shape the vendor documents: a wrong Entra secret is 401 invalid_client with
`error_codes: [7000215]`; a Tripletex session's expirationDate must be later than today in Norway and
the session ends at midnight of that date; Fiken refuses a second concurrent request per token (429).
A tenant with a secret set only accepts that secret, so tests can prove the right credential reached
the right vendor.
Change a tenant while running: `PUT /_sim/tenants/{tenant}` `{"mode": "hang", "ms": 0, "secret": …}` (Graph:
`"app_secret_end": "2027-05-01T00:00:00Z"`, `"graph_forbidden": true`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

log = logging.getLogger(__name__)
MODES = ("healthy", "slow", "hang", "rate_limited", "graphql_throttle", "graphql_concurrency", "graphql_quota",
         "unauthorized", "forbidden", "secret_expired", "unknown_app", "no_app_user", "server_error", "reset",
         "invalid_body", "redirect_loop", "oversized")
GRAPHQL_CODES = {"graphql_throttle": "BAD_REQUEST.BURST_RATE_LIMIT_REACHED",
                 "graphql_concurrency": "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED",
                 "graphql_quota": "BAD_REQUEST.INSUFFICIENT_CREDITS"}
NORWAY = ZoneInfo("Europe/Oslo")


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
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # the vendors' "now" (Tripletex's today)
    session_ends: dict[str, datetime] = field(default_factory=dict)  # Tripletex session token → when it ends
    in_flight: dict[str, float] = field(default_factory=dict)  # Fiken token → when its request started
    app_secret_ends: dict[str, datetime] = field(default_factory=dict)  # tenant → its client secret's endDateTime
    graph_forbidden: set[str] = field(default_factory=set)  # tenants whose app may not read its registration
    graph_requests: dict[str, int] = field(default_factory=dict)  # tenant → Graph requests served

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


Answer = Callable[[web.Request, Mode], web.StreamResponse]


async def apply_mode(request: web.Request, tenant: str, *,
                     answers: Mapping[str, Answer] | None = None) -> web.StreamResponse | None:
    """Answer with the tenant's fault (a vendor's own answer for it first), or None to answer normally."""
    state = request.app[STATE]
    mode = state.mode(tenant)
    delay = (mode.ms + state.latency_ms) / 1000
    if delay:
        await asyncio.sleep(delay)
    if answers and mode.name in answers:
        return answers[mode.name](request, mode)
    match mode.name:
        case "hang":
            await asyncio.sleep(3600)
        case "rate_limited":
            return web.json_response({"error": "too many requests"}, status=429,
                                     headers={"Retry-After": str(mode.retry_after)})
        case "unauthorized":
            return unauthorized()
        case "forbidden":
            return web.json_response({"error": "forbidden"}, status=403)
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


def graphql_error(request: web.Request, mode: Mode) -> web.Response:
    """Xledger's throttling and credit errors: HTTP 200, `errors[].code`; credits say when they reset."""
    code = GRAPHQL_CODES[mode.name]
    error: dict[str, Any] = {"message": code.split(".")[1].replace("_", " ").lower(), "code": code}
    if mode.name == "graphql_quota":
        reset = request.app[STATE].clock() + timedelta(seconds=mode.retry_after)
        error["extensions"] = {"resetAt": reset.isoformat().replace("+00:00", "Z")}
    return web.json_response({"errors": [error]})


def xledger_token_refused(request: web.Request | None = None, mode: Mode | None = None) -> web.Response:
    """Xledger's answer to a token it cannot use: an error with a message and no code."""
    return web.json_response({"errors": [{"message": "Bad format for API Token. Please check your token."}]})


XLEDGER_ANSWERS: dict[str, Answer] = dict.fromkeys(GRAPHQL_CODES, graphql_error) | {
    "unauthorized": xledger_token_refused}


async def xledger_graphql(request: web.Request) -> web.StreamResponse:
    tenant = request.match_info["tenant"]
    if not request.app[STATE].accepts(tenant, bearer(request, "token")):
        return xledger_token_refused()
    if answer := await apply_mode(request, tenant, answers=XLEDGER_ANSWERS):
        return answer
    body = await request.json()
    if "__typename" not in str(body.get("query", "")):
        return web.json_response({"errors": [{"message": "unsupported query", "code": "BAD_REQUEST"}]})
    return web.json_response({"data": {"__typename": "Query"}})


# The Microsoft identity platform's refusals: (status, OAuth error, AADSTS code, description).
ENTRA_ERRORS = {
    "secret_expired": (401, "invalid_client", 7000222, "The provided client secret keys for app '{app}' are "
                       "expired. Visit the Azure portal to create new keys for your app."),
    "secret_invalid": (401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being "
                       "sent in the request is the client secret value, not the client secret ID, for a secret "
                       "added to app '{app}'."),
    "unknown_app": (400, "unauthorized_client", 700016, "Application with identifier '{app}' was not found in "
                    "the directory '{tenant}'."),
}
# Dataverse's refusals of a token Entra ID issued, by mode: (HRESULT, message).
DATAVERSE_ERRORS = {
    "no_app_user": ("0x80072560", "The user is not a member of the organization."),
    "forbidden": ("0x80040220", "Principal user (Id={app}, type=8, roleCount=0) is missing prvReadOrganization "
                  "privilege."),
}


def entra_error(mode: str, tenant: str, app: str) -> web.Response:
    status, error, code, description = ENTRA_ERRORS[mode]
    return web.json_response({
        "error": error, "error_description": f"AADSTS{code}: " + description.format(app=app, tenant=tenant),
        "error_codes": [code], "timestamp": "2026-11-23 12:00:00Z", "trace_id": secrets.token_hex(16),
        "correlation_id": secrets.token_hex(16), "error_uri": f"https://login.microsoftonline.com/error?code={code}"},
        status=status)


async def microsoft_token(request: web.Request) -> web.Response:
    tenant, state = request.match_info["tenant"], request.app[STATE]
    form = await request.post()
    if form.get("grant_type") != "client_credentials" or not str(form.get("scope", "")).endswith("/.default"):
        return web.json_response({"error": "invalid_request"}, status=400)
    app, mode = str(form.get("client_id", "")), state.modes.get(tenant, Mode()).name  # not a WhoAmI: not counted
    if mode == "unknown_app":
        return entra_error(mode, tenant, app)
    if not state.accepts(tenant, str(form.get("client_secret") or "") or None):
        return entra_error("secret_invalid", tenant, app)
    if mode == "secret_expired":
        return entra_error(mode, tenant, app)
    return web.json_response({"token_type": "Bearer", "expires_in": state.token_lifetime_s,
                              "access_token": state.issue(tenant)})


def dataverse_error(request: web.Request, mode: Mode) -> web.Response:
    code, message = DATAVERSE_ERRORS[mode.name]
    return web.json_response({"error": {"code": code, "message": message.format(app=secrets.token_hex(4))}},
                             status=403)


async def dynamics_whoami(request: web.Request) -> web.StreamResponse:
    tenant, state = request.match_info["tenant"], request.app[STATE]
    if state.issued.get(bearer(request) or "") != tenant:
        return unauthorized()
    return await apply_mode(request, tenant, answers=dict.fromkeys(DATAVERSE_ERRORS, dataverse_error)) or \
        web.json_response({
            "@odata.context": "$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
            "BusinessUnitId": "6f1c0000-0000-4000-8000-000000000001",
            "UserId": "6f1c0000-0000-4000-8000-000000000002",
            "OrganizationId": "6f1c0000-0000-4000-8000-000000000003"})


def graph_time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def graph_application(request: web.Request) -> web.Response:
    """GET /v1.0/applications(appId='…')?$select=passwordCredentials, as Graph answers it."""
    tenant, state = request.match_info["tenant"], request.app[STATE]
    state.graph_requests[tenant] = state.graph_requests.get(tenant, 0) + 1
    if state.issued.get(bearer(request) or "") != tenant:
        return web.json_response({"error": {"code": "InvalidAuthenticationToken",
                                            "message": "Access token validation failure."}}, status=401)
    if tenant in state.graph_forbidden:
        return web.json_response({"error": {"code": "Authorization_RequestDenied",
                                            "message": "Insufficient privileges to complete the operation.",
                                            "innerError": {"request-id": secrets.token_hex(16)}}}, status=403)
    resource, select = request.match_info["resource"], request.query.get("$select")
    if not resource.startswith("applications(appId='") or select != "passwordCredentials":
        return web.json_response({"error": {"code": "BadRequest", "message": "Unsupported query."}}, status=400)
    credentials = []
    if tenant in state.app_secret_ends:
        end = state.app_secret_ends[tenant]
        current = state.secrets.get(tenant, f"{tenant}-secret")
        credentials = [
            {"customKeyIdentifier": None, "displayName": "monitor", "endDateTime": graph_time(end),
             "hint": current[:3], "keyId": "6f1c0000-0000-4000-8000-0000000000a1", "secretText": None,
             "startDateTime": graph_time(end - timedelta(days=730))},
            {"customKeyIdentifier": None, "displayName": "old", "endDateTime": graph_time(end - timedelta(days=300)),
             "hint": "zz~", "keyId": "6f1c0000-0000-4000-8000-0000000000a2", "secretText": None,
             "startDateTime": graph_time(end - timedelta(days=1030))}]
    return web.json_response({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#applications"
                              "(passwordCredentials)/$entity", "passwordCredentials": credentials})


def tripletex_throttled(request: web.Request, mode: Mode) -> web.Response:
    """Tripletex throttles with X-Rate-Limit-* headers (Reset: seconds until the window resets), no Retry-After."""
    return web.json_response({"status": 429, "message": "Too Many Requests"}, status=429, headers={
        "X-Rate-Limit-Limit": "100", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(mode.retry_after)})


async def tripletex_session(request: web.Request) -> web.StreamResponse:
    tenant, state = request.match_info["tenant"], request.app[STATE]
    which = request.match_info["action"]
    if which == ":create":
        return tripletex_create(request, tenant)
    if which != ">whoAmI" or request.method != "GET":
        return web.json_response({"status": 404}, status=404)
    basic = bearer(request, "Basic")
    user, _, token = base64.b64decode(basic).decode().partition(":") if basic else ("", "", "")
    ends = state.session_ends.get(token)
    if user != "0" or state.issued.get(token) != tenant or ends is None or state.clock() >= ends:
        return unauthorized()
    return await apply_mode(request, tenant, answers={"rate_limited": tripletex_throttled}) or web.json_response(
        {"value": {"employeeId": 101, "companyId": 202, "actualEmployeeId": 101}})


def tripletex_create(request: web.Request, tenant: str) -> web.Response:
    """A session for the two tokens, ending at midnight (Norwegian time) of an expirationDate after today."""
    state = request.app[STATE]
    pair = f"{request.query.get('consumerToken', '')}/{request.query.get('employeeToken', '')}"
    if not state.accepts(tenant, pair):
        return unauthorized()
    try:
        expires = date.fromisoformat(request.query.get("expirationDate", ""))
    except ValueError:
        expires = None
    if expires is None or expires <= state.clock().astimezone(NORWAY).date():
        return web.json_response({"status": 422, "message": "Validation failed.", "validationMessages": [
            {"field": "expirationDate", "message": "must be later than today"}]}, status=422)
    token = state.issue(tenant)
    state.session_ends[token] = datetime.combine(expires, time(), NORWAY)
    return web.json_response({"value": {"token": token, "expirationDate": expires.isoformat()}})


FIKEN_BUSY_S = 10.0  # a request still unanswered after this long (a "hang" fault) no longer blocks the token


async def fiken_user(request: web.Request) -> web.StreamResponse:
    """Fiken answers one request per token at a time; a second one meanwhile is throttled (429)."""
    tenant, state = request.match_info["tenant"], request.app[STATE]
    token = bearer(request)
    if not state.accepts(tenant, token):
        return unauthorized()
    key, started = token or "", asyncio.get_running_loop().time()
    if started - state.in_flight.get(key, -FIKEN_BUSY_S) < FIKEN_BUSY_S:
        return web.json_response({"error": "too many concurrent requests for this token"}, status=429)
    state.in_flight[key] = started
    try:
        return await apply_mode(request, tenant) or web.json_response({"name": "Demo User",
                                                                      "email": "demo@example.com"})
    finally:
        if state.in_flight.get(key) == started:
            del state.in_flight[key]


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
    try:  # Graph's record of the tenant's client secret: its end date, or "not allowed to read it"
        if isinstance(body.get("app_secret_end"), str):
            state.app_secret_ends[tenant] = datetime.fromisoformat(body["app_secret_end"])
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if isinstance(body.get("graph_forbidden"), bool):
        (state.graph_forbidden.add if body["graph_forbidden"] else state.graph_forbidden.discard)(tenant)
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
                         ("GET", "/dynamics/{tenant}/api/data/v9.2/WhoAmI", dynamics_whoami),
                         ("GET", "/graph/{tenant}/v1.0/{resource}", graph_application)),
                        lambda base, t: {"org_url": f"{base}/dynamics/{t}", "tenant_id": t, "client_id": f"{t}-client",
                                         "token_url": f"{base}/login/{t}/oauth2/v2.0/token",
                                         "graph_url": f"{base}/graph/{t}"}),
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
