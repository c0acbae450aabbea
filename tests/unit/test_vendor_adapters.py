"""Every adapter against every simulator mode, plus each vendor's own rules (tokens, throttling, auth)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import pytest

from exporter.adapters.base import AdapterContext
from exporter.core.model import CREDENTIAL_REFUSED, HealthResult, HealthStatus, Integration, Reason
from exporter.demo.simulator import Mode, SimState, create_app
from exporter.engine.runner import Runner
from tests.support.fakes import StaticCredentials, loopback_session, runner_for

ORG = UUID("44444444-4444-4444-8444-444444444444")
H, D, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNREACHABLE


@dataclass(frozen=True)
class Vendor:
    config: Callable[[str, str], dict]  # (simulator base url, tenant) → config
    secret: str  # what the credential provider holds
    sim_secret: str  # what the simulator expects (Tripletex: "consumer/employee")


TRIPLETEX_SECRET = json.dumps({"consumer_token": "ct-1", "employee_token": "et-1"})
VENDORS = {
    "xledger": Vendor(lambda b, t: {"url": f"{b}/xledger/{t}/graphql"}, "xl-tok", "xl-tok"),
    "dynamics365": Vendor(lambda b, t: {"org_url": f"{b}/dynamics/{t}", "tenant_id": t, "client_id": "cid",
                                        "token_url": f"{b}/login/{t}/oauth2/v2.0/token"}, "d365-sec", "d365-sec"),
    "tripletex": Vendor(lambda b, t: {"url": f"{b}/tripletex/{t}/v2"}, TRIPLETEX_SECRET, "ct-1/et-1"),
    "fiken": Vendor(lambda b, t: {"url": f"{b}/fiken/{t}/api/v2"}, "fk-tok", "fk-tok"),
    "http": Vendor(lambda b, t: {"url": f"{b}/http/{t}", "method": "GET", "auth": "bearer"}, "h-tok", "h-tok"),
}

# mode → (status, reason) for every vendor, with the exceptions listed per vendor below.
EXPECTED: dict[str, tuple[HealthStatus, Reason | None]] = {
    "healthy": (H, None),
    "slow": (D, Reason.SLOW),
    "hang": (U, Reason.TIMEOUT),
    "rate_limited": (D, Reason.RATE_LIMITED),
    "graphql_throttle": (H, None),
    "graphql_concurrency": (H, None),
    "graphql_quota": (H, None),
    "unauthorized": (D, Reason.AUTH),
    "forbidden": (D, Reason.AUTH),
    "secret_expired": (H, None),
    "unknown_app": (H, None),
    "no_app_user": (H, None),
    "server_error": (U, Reason.HTTP_5XX),
    "reset": (U, Reason.CONNECT),
    "invalid_body": (D, Reason.BAD_RESPONSE),
    "redirect_loop": (D, Reason.BAD_RESPONSE),
    "oversized": (D, Reason.BAD_RESPONSE),
}
EXCEPTIONS = {
    ("xledger", "graphql_throttle"): (D, Reason.RATE_LIMITED),
    ("xledger", "graphql_concurrency"): (D, Reason.RATE_LIMITED),
    ("xledger", "graphql_quota"): (D, Reason.QUOTA),
    ("dynamics365", "secret_expired"): (D, Reason.AUTH_EXPIRED),
    ("dynamics365", "unknown_app"): (D, Reason.AUTH_UNKNOWN_APP),
    ("dynamics365", "no_app_user"): (D, Reason.AUTH_NO_USER),
    ("dynamics365", "forbidden"): (D, Reason.AUTH_FORBIDDEN),
    ("http", "invalid_body"): (H, None),  # a plain target has no body to expect unless body_contains is set
}


def vendor_ctx(session, vendor: Vendor, **kwargs) -> AdapterContext:
    return AdapterContext(session=session, credentials=StaticCredentials({"ref": vendor.secret}), **kwargs)


RUNNERS: dict[tuple[AdapterContext, float], Runner] = {}


async def run(ctx: AdapterContext, kind: str, config: dict, timeout: float = 1.0) -> HealthResult:
    """Check through the adapters built for `ctx`: built once, as in the service, so their caches persist."""
    runner = RUNNERS.setdefault((ctx, timeout), runner_for(ctx, timeout=timeout))
    [r] = await runner.run([Integration(ORG, kind, config, "ref")])
    return r.result


@pytest.mark.parametrize("mode", list(EXPECTED))
@pytest.mark.parametrize("kind", list(VENDORS))
async def test_each_adapter_in_each_mode_gives_the_documented_status(sim, http_session, kind, mode) -> None:
    state, base = sim
    vendor = VENDORS[kind]
    state.secrets["t"] = vendor.sim_secret
    state.modes["t"] = Mode(mode, ms=60 if mode == "slow" else 0)
    config = vendor.config(base, "t") | ({"degraded_latency_ms": 50} if mode == "slow" else {})
    result = await run(vendor_ctx(http_session, vendor), kind, config, timeout=0.5)
    assert (result.status, result.reason) == EXCEPTIONS.get((kind, mode), EXPECTED[mode]), result.error
    # Latency in milliseconds, from this setup: a hang is cut at the 0.5 s deadline and reports it; a slow
    # answer took at least the simulator's 60 ms; nothing answered later than the deadline.
    if mode == "hang":
        assert result.latency_ms == 500
    else:
        assert (60 if mode == "slow" else 0) <= result.latency_ms < 500
    if result.status != H:
        assert result.error, "a failure must say why"


# Only Entra ID says a secret is wrong; the others refuse without saying why.
WRONG_SECRET = {"xledger": Reason.AUTH, "dynamics365": Reason.AUTH_INVALID, "tripletex": Reason.AUTH,
                "fiken": Reason.AUTH}


@pytest.mark.parametrize("kind", list(WRONG_SECRET))
async def test_a_wrong_secret_is_degraded_credentials_rejected(sim, http_session, kind) -> None:
    state, base = sim
    vendor = VENDORS[kind]
    state.secrets["t"] = "something-else/entirely"
    result = await run(vendor_ctx(http_session, vendor), kind, vendor.config(base, "t"))
    assert (result.status, result.reason) == (D, WRONG_SECRET[kind]), result.error
    assert "credentials rejected" in result.error


@pytest.mark.parametrize(("mode", "secret", "error"), [
    ("healthy", "not-this", "credentials rejected by the token endpoint: the client secret is wrong (AADSTS7000215)"),
    ("secret_expired", "d365-sec", "credentials rejected by the token endpoint: the client secret has expired "
                                   "(AADSTS7000222)"),
    ("unknown_app", "d365-sec", "credentials rejected by the token endpoint: no application with this client_id "
                                "in the tenant (AADSTS700016)"),
    ("no_app_user", "d365-sec", "credentials rejected by Dataverse: the application user is missing in this "
                                "Dataverse environment (0x80072560)"),
    ("forbidden", "d365-sec", "credentials rejected by Dataverse: the application user lacks a privilege (its "
                              "security role) (0x80040220)"),
])
async def test_dynamics_refusals_are_named_by_the_vendors_code_without_quoting_its_description(
        sim, http_session, mode, secret, error) -> None:
    state, base = sim
    state.secrets["t"], state.modes["t"] = secret, Mode(mode)
    result = await run(vendor_ctx(http_session, VENDORS["dynamics365"]), "dynamics365",
                       VENDORS["dynamics365"].config(base, "t"))
    assert result.error == error


async def test_dynamics_token_is_fetched_once_across_checks_and_refreshed_after_expiry(sim, http_session) -> None:
    state, base = sim
    now = [1000.0]
    ctx = vendor_ctx(http_session, VENDORS["dynamics365"], monotonic=lambda: now[0])
    config = VENDORS["dynamics365"].config(base, "t")
    for _ in range(3):
        assert (await run(ctx, "dynamics365", config)).status == H
    assert state.token_requests["t"] == 1
    assert state.requests["t"] == 3  # three WhoAmI calls: one request per check, not two
    now[0] += 3599 - 300 + 1  # past the lifetime minus the refresh margin
    assert (await run(ctx, "dynamics365", config)).status == H
    assert state.token_requests["t"] == 2


async def test_dynamics_revoked_token_is_replaced_once_within_the_check(sim, http_session) -> None:
    state, base = sim
    ctx = vendor_ctx(http_session, VENDORS["dynamics365"])
    config = VENDORS["dynamics365"].config(base, "t")
    assert (await run(ctx, "dynamics365", config)).status == H
    state.issued.clear()  # the server forgets every token
    assert (await run(ctx, "dynamics365", config)).status == H  # a stale token is not a credentials alert
    assert (state.token_requests["t"], state.requests["t"]) == (2, 2)  # one new token; both WhoAmIs answered


async def test_dynamics_secret_expiring_under_a_cached_token_reads_expired_at_the_first_check(sim, http_session) -> None:
    state, base = sim
    ctx = vendor_ctx(http_session, VENDORS["dynamics365"])
    config = VENDORS["dynamics365"].config(base, "t")
    assert (await run(ctx, "dynamics365", config)).status == H
    state.issued.clear()
    state.modes["t"] = Mode("secret_expired")
    result = await run(ctx, "dynamics365", config)
    assert (result.status, result.reason) == (D, Reason.AUTH_EXPIRED)
    assert state.token_requests["t"] == 1  # the refused fetch issued nothing; the next check asks once more


async def test_dynamics_429_carries_retry_after_for_the_scheduler(sim, http_session) -> None:
    state, base = sim
    state.modes["t"] = Mode("rate_limited", retry_after=300)
    result = await run(vendor_ctx(http_session, VENDORS["dynamics365"]), "dynamics365",
                       VENDORS["dynamics365"].config(base, "t"))
    assert (result.status, result.reason, result.retry_after_s) == (D, Reason.RATE_LIMITED, 300)


async def test_tripletex_session_is_reused_across_checks(sim, http_session) -> None:
    state, base = sim
    state.secrets["t"] = "ct-1/et-1"
    ctx = vendor_ctx(http_session, VENDORS["tripletex"])
    for _ in range(3):
        assert (await run(ctx, "tripletex", VENDORS["tripletex"].config(base, "t"))).status == H
    assert state.token_requests["t"] == 1


async def test_tripletex_credential_that_is_not_json_is_a_clear_auth_error(sim, http_session) -> None:
    _, base = sim
    ctx = AdapterContext(session=http_session, credentials=StaticCredentials({"ref": "ct-1:et-1"}))
    result = await run(ctx, "tripletex", VENDORS["tripletex"].config(base, "t"))
    assert (result.status, result.reason) == (D, Reason.AUTH)
    assert result.error == ("credential unavailable: the tripletex credential must be JSON with consumer_token "
                            "and employee_token")


@pytest.mark.parametrize("kind", ["xledger", "dynamics365", "tripletex", "fiken"])
async def test_an_unresolvable_credential_reference_is_degraded_auth_not_an_exception(sim, http_session, kind) -> None:
    _, base = sim
    ctx = AdapterContext(session=http_session, credentials=StaticCredentials({}))
    result = await run(ctx, kind, VENDORS[kind].config(base, "t"))
    assert (result.status, result.reason, result.error) == (D, Reason.AUTH,
                                                            f"credential unavailable: {CREDENTIAL_REFUSED}")


async def test_each_check_costs_one_request_per_vendor_after_the_first(sim, http_session) -> None:
    state, base = sim
    for kind, vendor in VENDORS.items():
        state.secrets[kind] = vendor.sim_secret
        ctx = vendor_ctx(http_session, vendor)
        for _ in range(2):
            assert (await run(ctx, kind, vendor.config(base, kind))).status == H
    assert state.requests == {k: 2 for k in VENDORS}
    assert state.token_requests == {"dynamics365": 1, "tripletex": 1}


async def test_http_body_contains_rejects_an_html_error_page(sim, http_session) -> None:
    state, base = sim
    state.modes["t"] = Mode("invalid_body")
    result = await run(AdapterContext(session=http_session), "http",
                       {"url": f"{base}/http/t", "body_contains": '"status": "ok"'})
    assert (result.status, result.reason) == (D, Reason.BAD_RESPONSE)


async def test_https_target_reports_its_certificate_expiry(tmp_path) -> None:
    import ssl

    import trustme
    from aiohttp import web

    ca = trustme.CA()
    not_after = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
    cert = ca.issue_cert("127.0.0.1", not_after=not_after)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    runner = web.AppRunner(create_app(SimState()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    try:
        async with loopback_session(ssl_context=client_ctx) as session:
            result = await run(AdapterContext(session=session), "http",
                               {"url": f"https://127.0.0.1:{runner.addresses[0][1]}/http/t"})
    finally:
        await runner.cleanup()
    assert result.status == H
    assert result.tls_expires_at == not_after


async def test_untrusted_certificate_is_a_tls_failure(http_session) -> None:
    import ssl

    import trustme
    from aiohttp import web

    cert = trustme.CA().issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    runner = web.AppRunner(create_app(SimState()))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx).start()
    try:
        result = await run(AdapterContext(session=http_session), "http",
                           {"url": f"https://127.0.0.1:{runner.addresses[0][1]}/http/t"})
    finally:
        await runner.cleanup()
    assert (result.status, result.reason) == (U, Reason.TLS)
    assert result.error == "TLS certificate rejected for 127.0.0.1"


