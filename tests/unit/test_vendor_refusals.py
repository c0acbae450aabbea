"""Why a vendor refused or throttled a check, from the shapes each vendor really answers: the pure readings
of those shapes, then each adapter against the simulator serving them over loopback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from exporter.adapters import ADAPTERS
from exporter.adapters.base import AdapterContext
from exporter.adapters.dynamics365 import dataverse_code, entra_code
from exporter.adapters.tripletex import session_expiry
from exporter.adapters.xledger import classify_graphql_errors
from exporter.core import policy
from exporter.core.model import AUTH_REASONS, HealthStatus, Integration, Reason
from exporter.demo.simulator import Mode
from tests.support.fakes import StaticCredentials, runner_for
from tests.unit.test_vendor_adapters import ORG, VENDORS, run, vendor_ctx

D, H = HealthStatus.DEGRADED, HealthStatus.HEALTHY
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


# --- the shapes, read without I/O ---------------------------------------------------------------------------

@pytest.mark.parametrize(("errors", "reason", "error"), [
    ([{"message": "burst rate limit reached", "code": "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"}],
     Reason.RATE_LIMITED, "rate limited (burst rate limit reached)"),
    ([{"message": "concurrency limit reached", "code": "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED"}],
     Reason.RATE_LIMITED, "rate limited (another request of this token is running)"),
    ([{"message": "x", "extensions": {"code": "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED"}}],
     Reason.RATE_LIMITED, "rate limited (another request of this token is running)"),
    ([{"message": "Bad format for API Token. Please check your token."}],
     Reason.AUTH, "credentials rejected (an error without a code: the API token is malformed or revoked)"),
    ([{"message": "unsupported", "code": "BAD_REQUEST"}], Reason.BAD_RESPONSE, "GraphQL error BAD_REQUEST"),
    (["not an object"], Reason.BAD_RESPONSE, "unexpected response: GraphQL errors that are not objects"),
])
def test_xledger_errors_are_read_by_their_code_and_a_codeless_one_is_a_refused_token(errors, reason, error) -> None:
    result = classify_graphql_errors(errors, 12, NOW)
    assert (result.status, result.reason, result.error) == (D, reason, error)


@pytest.mark.parametrize(("reset_at", "seconds"), [
    ("2026-11-23T14:00:00Z", 7200.0),
    ("2026-11-23T15:30:00+01:00", 9000.0),
    ("2026-11-23T13:00:00", 0.0),  # no offset: Norwegian time (CET, UTC+1), so 12:00 UTC, now
    ("2026-11-23T11:00:00Z", 0.0),  # already past: due at once, not negative
    ("next month", None),
    (None, None),
])
def test_xledger_insufficient_credits_carries_when_they_reset(reset_at, seconds) -> None:
    error = {"message": "insufficient credits", "code": "BAD_REQUEST.INSUFFICIENT_CREDITS",
             "extensions": {} if reset_at is None else {"resetAt": reset_at}}
    result = classify_graphql_errors([error], 12, NOW)
    assert (result.reason, result.retry_after_s) == (Reason.QUOTA, seconds)


@pytest.mark.parametrize(("body", "code"), [
    ({"error": "invalid_client", "error_codes": [7000222]}, 7000222),
    ({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}, 7000215),
    ({"error": "unauthorized_client", "error_codes": [700016], "error_description": "AADSTS7000215: …"}, 700016),
    ({"error": "invalid_client", "error_codes": [True]}, None),
    ({"error": "invalid_client", "error_codes": "7000222"}, None),
    ({"error": "invalid_client"}, None),
])
def test_entra_code_comes_from_error_codes_or_the_description(body, code) -> None:
    assert entra_code(body) == code


@pytest.mark.parametrize(("body", "code"), [
    ({"error": {"code": "0x80072560", "message": "The user is not a member of the organization."}}, "0x80072560"),
    ({"error": {"code": "0X80040220"}}, "0x80040220"),
    ({"error": "forbidden"}, None),
    ({"error": {"code": 5}}, None),
    (None, None),
])
def test_dataverse_code_is_the_hresult_of_its_error_object(body, code) -> None:
    assert dataverse_code(body) == code


@pytest.mark.parametrize(("now", "expires", "keep_h"), [
    (datetime(2026, 11, 23, 12, 0, tzinfo=UTC), "2026-11-25", 11.0),  # 13:00 in Oslo: kept until its midnight
    (datetime(2026, 11, 23, 23, 30, tzinfo=UTC), "2026-11-26", 23.5),  # already the 24th in Oslo (UTC says 23rd)
    (datetime(2026, 6, 30, 22, 30, tzinfo=UTC), "2026-07-03", 23.5),  # summer time: 00:30 on 1 July in Oslo
    (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), "2026-03-31", 21.5),  # the spring night has 23 hours
])
def test_a_tripletex_session_is_asked_for_in_norwegian_dates_and_renewed_a_day_before_it_ends(
        now, expires, keep_h) -> None:
    assert session_expiry(now) == (expires, keep_h * 3600)


def test_every_auth_reason_is_one_family_that_backs_off_and_nothing_else_is_in_it() -> None:
    assert {r for r in Reason if r.is_auth} == AUTH_REASONS
    assert all(r.value.startswith("auth") for r in AUTH_REASONS)  # what the rules' reason=~"auth.*" matches
    assert not any(r.value.startswith("auth") for r in set(Reason) - AUTH_REASONS)
    assert AUTH_REASONS <= policy.FAILURE_REASONS
    assert Reason.CREDENTIAL_UNAVAILABLE not in AUTH_REASONS  # the vault's trouble, not the organisation's


# --- the adapters against the simulator ---------------------------------------------------------------------

async def test_xledger_out_of_credits_defers_the_next_check_until_they_reset(sim, http_session) -> None:
    state, base = sim
    state.clock = lambda: NOW
    state.secrets["t"], state.modes["t"] = "xl-tok", Mode("graphql_quota", retry_after=5 * 3600)
    ctx = vendor_ctx(http_session, VENDORS["xledger"], clock=lambda: NOW)
    result = await run(ctx, "xledger", VENDORS["xledger"].config(base, "t"))
    assert (result.status, result.reason, result.retry_after_s) == (D, Reason.QUOTA, 5 * 3600)
    after = policy.after_check(None, result, NOW, 3600, rng=lambda: 0.0)
    assert after.next_check_at == NOW + timedelta(hours=5)  # not the first backoff step's hour


async def test_xledger_refuses_an_unknown_token_as_xledger_does_and_it_reads_auth(sim, http_session) -> None:
    state, base = sim
    state.secrets["t"] = "the-real-token"
    result = await run(vendor_ctx(http_session, VENDORS["xledger"]), "xledger", VENDORS["xledger"].config(base, "t"))
    assert (result.status, result.reason) == (D, Reason.AUTH)
    after = policy.after_check(None, result, NOW, 3600, rng=lambda: 0.0)
    assert after.consecutive_failures == 1  # backs off: a billed check would change nothing


async def test_tripletex_throttling_defers_by_x_rate_limit_reset(sim, http_session) -> None:
    state, base = sim
    state.secrets["t"], state.modes["t"] = "ct-1/et-1", Mode("rate_limited", retry_after=1800)
    result = await run(vendor_ctx(http_session, VENDORS["tripletex"]), "tripletex",
                       VENDORS["tripletex"].config(base, "t"))
    assert (result.status, result.reason, result.retry_after_s) == (D, Reason.RATE_LIMITED, 1800)
    after = policy.after_check(None, result, NOW, 900, rng=lambda: 0.0)
    assert after.next_check_at == NOW + timedelta(minutes=30)  # the reset, not the 15-minute first step


async def test_tripletex_session_refused_from_the_cache_is_created_again_once(sim, http_session) -> None:
    state, base = sim
    state.secrets["t"] = "ct-1/et-1"
    ctx = vendor_ctx(http_session, VENDORS["tripletex"])
    config = VENDORS["tripletex"].config(base, "t")
    assert (await run(ctx, "tripletex", config)).status == H
    state.session_ends.clear()  # Tripletex forgets every session (ended early, or a restart on its side)
    assert (await run(ctx, "tripletex", config)).status == H
    assert (state.token_requests["t"], state.requests["t"]) == (2, 2)  # one new session, not an auth alert


async def test_tripletex_whoami_refusing_every_session_is_auth_after_exactly_one_new_session(sim, http_session) -> None:
    state, base = sim
    state.secrets["t"] = "ct-1/et-1"
    ctx = vendor_ctx(http_session, VENDORS["tripletex"])
    config = VENDORS["tripletex"].config(base, "t")
    assert (await run(ctx, "tripletex", config)).status == H
    state.modes["t"] = Mode("unauthorized")
    result = await run(ctx, "tripletex", config)
    assert (result.status, result.reason) == (D, Reason.AUTH)
    assert state.token_requests["t"] == 2  # the cached one, then one new: no loop
    result = await run(ctx, "tripletex", config)  # no session cached now: a fresh one refused is not retried
    assert (result.reason, state.token_requests["t"]) == (Reason.AUTH, 3)


async def test_tripletex_session_created_after_norwegian_midnight_is_accepted_and_renewed_before_it_ends(
        sim, http_session) -> None:
    """23:30 UTC is already tomorrow in Oslo: a date computed in UTC would be Tripletex's today, refused."""
    state, base = sim
    now, mono = [datetime(2026, 11, 23, 23, 30, tzinfo=UTC)], [0.0]
    state.clock = lambda: now[0]
    state.secrets["t"] = "ct-1/et-1"
    ctx = vendor_ctx(http_session, VENDORS["tripletex"], clock=lambda: now[0], monotonic=lambda: mono[0])
    config = VENDORS["tripletex"].config(base, "t")
    assert (await run(ctx, "tripletex", config)).status == H
    [ends] = state.session_ends.values()
    assert ends == datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # midnight of the 26th in Oslo
    now[0], mono[0] = now[0] + timedelta(hours=23), 23 * 3600.0  # 23:30 in Oslo: the session still serves
    assert (await run(ctx, "tripletex", config)).status == H
    assert state.token_requests["t"] == 1
    now[0], mono[0] = now[0] + timedelta(hours=1), 24 * 3600.0  # past Oslo's midnight: renewed, a day early
    assert (await run(ctx, "tripletex", config)).status == H
    assert state.token_requests["t"] == 2
    assert max(state.session_ends.values()) - now[0] == timedelta(hours=47, minutes=30)


async def test_fiken_allows_one_request_per_token_so_a_shared_token_throttles(sim, http_session) -> None:
    """Two organisations checking with one Fiken token at once: Fiken throttles one of them, which the README's
    dedicated monitor token avoids."""
    state, base = sim
    state.secrets["t"], state.modes["t"] = "fk-tok", Mode("slow", ms=200)
    runner = runner_for(vendor_ctx(http_session, VENDORS["fiken"]), timeout=2.0)
    orgs = [UUID(int=1), UUID(int=2)]
    results = await asyncio.gather(*(runner.run([Integration(o, "fiken", VENDORS["fiken"].config(base, "t"), "ref")])
                                     for o in orgs))
    assert sorted((r.result.status, r.result.reason) for [r] in results) == [(D, Reason.RATE_LIMITED), (H, None)]


def test_tripletex_may_reach_its_test_environment_beside_production() -> None:
    hosts = ADAPTERS["tripletex"].hosts
    assert hosts is not None
    assert hosts.permits("api-test.tripletex.tech") and hosts.permits("tripletex.no")
    assert not hosts.permits("tripletex.tech") and not hosts.permits("evil-tripletex.tech")


@pytest.mark.parametrize("mode", ["secret_expired", "unknown_app", "no_app_user", "forbidden"])
async def test_a_secret_refused_for_any_named_cause_is_read_again_on_the_next_check(sim, http_session, mode) -> None:
    """The credential cache drops the secret whatever the family member: an expired Entra secret replaced in
    the vault counts at the next check, not after the cache's TTL."""
    state, base = sim
    credentials = StaticCredentials({"ref": "d365-sec"})
    state.secrets["t"], state.modes["t"] = "d365-sec", Mode(mode)
    ctx = AdapterContext(session=http_session, credentials=credentials)
    result = await run(ctx, "dynamics365", VENDORS["dynamics365"].config(base, "t"))
    assert result.reason in AUTH_REASONS - {Reason.AUTH}
    assert credentials.forgotten == [(ORG, "ref")]
    assert "d365-sec" not in repr(result)  # every field
