"""Credentials known to expire: the directory's `<ref>.expires_at`, the store's metadata on every result, and
Dynamics 365's client secret read from Microsoft Graph (the simulator serves it) once a day, 403 = unknown."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import aiohttp
import pytest

from exporter.adapters.base import AdapterContext
from exporter.adapters.graph import app_url, secret_expiry
from exporter.core import policy
from exporter.core.model import HealthStatus, Integration, Reason, make_result, parse_expiry
from exporter.demo.simulator import FAKES, Mode
from exporter.storage.credentials import CachedCredentials, DirectoryCredentials
from tests.support.fakes import StaticCredentials, runner_for

ORG = UUID("44444444-4444-4444-8444-444444444444")
END = datetime(2027, 5, 1, tzinfo=UTC)
T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("text", "expected"), [
    ("2027-05-01T00:00:00Z", END), ("2027-05-01", END), ("2027-05-01T02:00:00+02:00", END),
    ("2027-05-01T00:00:00", END), (" 2027-05-01T00:00:00Z\n", END)])
def test_an_expiry_is_iso_8601_with_a_zone_or_a_date_read_as_utc(text, expected) -> None:
    assert parse_expiry(text) == expected


@pytest.mark.parametrize("text", ["", "next may", "2027-13-01", "1" * 65, "2027-05-01T00:00:00Zjunk"])
def test_a_malformed_expiry_is_refused(text) -> None:
    with pytest.raises(ValueError):
        parse_expiry(text)


async def test_the_directory_convention_is_a_sibling_expires_at_file(tmp_path: Path, caplog) -> None:
    org = tmp_path / str(ORG)
    org.mkdir()
    (org / "d365").write_text("SECRET-VALUE-1\n")
    (org / "d365.expires_at").write_text("2027-05-01T00:00:00Z\n")
    (org / "xl").write_text("SECRET-VALUE-2\n")
    (org / "xl.expires_at").write_text("SECRET-VALUE-2 is not a date\n")
    provider = DirectoryCredentials(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert await provider.expiry(ORG, "d365") == END
        assert await provider.expiry(ORG, "xl") is None  # malformed: ignored, with a warning
        assert await provider.expiry(ORG, "fiken") is None  # no file: unknown
        assert await provider.expiry(ORG, "../x") is None
    assert [r.getMessage() for r in caplog.records] == [
        "credential 'xl': its expiry is not an ISO 8601 date or time; ignored"]
    assert "SECRET-VALUE" not in caplog.text


async def test_the_cache_keeps_an_expiry_while_the_store_is_down() -> None:
    from exporter.core.model import CredentialUnavailable

    class Flaky(StaticCredentials):
        down = False

        async def expiry(self, org_id, ref):
            if self.down:
                raise CredentialUnavailable("down")
            return await super().expiry(org_id, ref)

    inner, ticks = Flaky({"r": "s"}), Ticks()
    inner.expiries["r"] = END
    cached = CachedCredentials(inner, ttl=300, monotonic=ticks)
    assert await cached.expiry(ORG, "r") == END
    inner.down, ticks.now = True, ticks.now + 301
    assert await cached.expiry(ORG, "r") == END


async def test_every_result_carries_the_stores_expiry_healthy_or_not(sim, http_session) -> None:
    state, base = sim
    credentials = StaticCredentials({"t": "t-secret"})
    credentials.expiries["t"] = END
    runner = runner_for(AdapterContext(session=http_session, credentials=credentials))
    state.modes["t"] = Mode("healthy")
    [ok] = await runner.run([Integration(ORG, "fiken", FAKES["fiken"].config(base, "t"), "t")])
    state.modes["t"] = Mode("unauthorized")
    [refused] = await runner.run([Integration(ORG, "fiken", FAKES["fiken"].config(base, "t"), "t")])
    assert (ok.result.status, ok.result.credential_expires_at) == (HealthStatus.HEALTHY, END)
    assert (refused.result.reason, refused.result.credential_expires_at) == (Reason.AUTH, END)


def test_a_check_cut_short_keeps_the_last_known_expiry_and_a_healthy_one_without_it_clears_it() -> None:
    known = replace(make_result(HealthStatus.HEALTHY, 10, T), credential_expires_at=END)
    timeout = make_result(HealthStatus.UNREACHABLE, 10_000, T, "timed out", Reason.TIMEOUT)
    assert policy.keep_credential_expiry(known, timeout, looked_up=True).credential_expires_at == END
    healthy = make_result(HealthStatus.HEALTHY, 10, T)
    assert policy.keep_credential_expiry(known, healthy, looked_up=True).credential_expires_at is None
    assert policy.keep_credential_expiry(known, healthy, looked_up=False).credential_expires_at == END
    assert policy.keep_credential_expiry(None, timeout, looked_up=True).credential_expires_at is None


def test_graphs_answer_is_read_by_the_hint_of_the_secret_in_use() -> None:
    body = {"passwordCredentials": [
        {"hint": "abc", "endDateTime": "2027-05-01T00:00:00Z", "keyId": "1"},
        {"hint": "old", "endDateTime": "2026-12-01T00:00:00Z", "keyId": "2"},
        {"hint": "abc", "endDateTime": "not a date", "keyId": "3"}]}
    assert secret_expiry(body, "abcdef") == END
    assert secret_expiry(body, "old-secret") == datetime(2026, 12, 1, tzinfo=UTC)
    assert secret_expiry(body, "xyz") is None  # not among the app's secrets: the token endpoint will say so
    assert secret_expiry({"passwordCredentials": [{"endDateTime": "2027-05-01T00:00:00Z"}]}, "abc") == END
    assert secret_expiry({"passwordCredentials": []}, "abc") is None
    assert secret_expiry(None, "abc") is None


def test_the_app_is_named_by_its_client_id_quoted_for_odata_and_the_url() -> None:
    assert app_url("https://graph.microsoft.com/", "1b2c") == \
        "https://graph.microsoft.com/v1.0/applications(appId='1b2c')?$select=passwordCredentials"
    assert "appId='x%27%27%2F..%3F')" in app_url("https://g", "x'/..?")


def dynamics(base: str, **extra) -> Integration:
    return Integration(ORG, "dynamics365", FAKES["dynamics365"].config(base, "t") | extra, "t")


@pytest.fixture
def graph_runner(http_session):
    credentials = StaticCredentials({"t": "t-secret"})
    ticks = Ticks()
    return runner_for(AdapterContext(session=http_session, credentials=credentials, monotonic=ticks)), ticks, \
        credentials


async def test_graph_gives_the_secrets_end_date_once_a_day(sim, graph_runner) -> None:
    state, base = sim
    runner, ticks, _ = graph_runner
    state.app_secret_ends["t"] = END
    for _ in range(3):
        [r] = await runner.run([dynamics(base, read_secret_expiry=True)])
        assert (r.result.status, r.result.credential_expires_at) == (HealthStatus.HEALTHY, END)
    assert state.graph_requests["t"] == 1  # cached: no Graph request per check
    ticks.now += 86401
    state.app_secret_ends["t"] = END + timedelta(days=730)  # renewed meanwhile
    [r] = await runner.run([dynamics(base, read_secret_expiry=True)])
    assert (r.result.credential_expires_at, state.graph_requests["t"]) == (END + timedelta(days=730), 2)


async def test_graph_refusing_to_say_is_unknown_not_a_failure_and_is_not_asked_again(sim, graph_runner) -> None:
    state, base = sim
    runner, _, credentials = graph_runner
    state.graph_forbidden.add("t")
    for _ in range(2):
        [r] = await runner.run([dynamics(base, read_secret_expiry=True)])
        assert (r.result.status, r.result.reason, r.result.credential_expires_at) == (HealthStatus.HEALTHY, None, None)
    assert state.graph_requests["t"] == 1
    credentials.expiries["t"] = END  # the vault's metadata still counts when Graph will not say
    [r] = await runner.run([dynamics(base, read_secret_expiry=True)])
    assert r.result.credential_expires_at == END


async def test_graph_wins_over_the_vaults_metadata_and_is_not_asked_when_off(sim, graph_runner) -> None:
    state, base = sim
    runner, _, credentials = graph_runner
    state.app_secret_ends["t"], credentials.expiries["t"] = END, END - timedelta(days=100)
    [on] = await runner.run([dynamics(base, read_secret_expiry=True)])
    [off] = await runner.run([dynamics(base)])
    assert (on.result.credential_expires_at, off.result.credential_expires_at) == (END, END - timedelta(days=100))
    assert state.graph_requests["t"] == 1


async def test_a_failed_graph_lookup_keeps_what_was_known_and_the_check_stands(sim, graph_runner) -> None:
    state, base = sim
    runner, ticks, _ = graph_runner
    state.app_secret_ends["t"] = END
    [first] = await runner.run([dynamics(base, read_secret_expiry=True)])
    ticks.now += 86401
    state.modes["t"] = Mode("secret_expired")  # the Graph token is refused too
    [r] = await runner.run([dynamics(base, read_secret_expiry=True)])
    assert (r.result.reason, r.result.credential_expires_at) == (Reason.AUTH_EXPIRED, END)
    assert first.result.credential_expires_at == END


def test_graph_is_one_of_the_dynamics_hosts() -> None:
    from exporter.adapters.dynamics365 import HOSTS
    assert HOSTS.permits("graph.microsoft.com") and not HOSTS.permits("graph.microsoft.com.evil.example")
    assert HOSTS.permits("graph.microsoft.us", ["us-gov"]) and not HOSTS.permits("graph.microsoft.us")


async def test_a_running_simulator_takes_graphs_end_date_and_403_mode(sim) -> None:
    state, base = sim
    async with aiohttp.ClientSession() as http_session, http_session.put(f"{base}/_sim/tenants/t", json={"app_secret_end": "2027-05-01T00:00:00Z",
                                                                "graph_forbidden": True}) as resp:
        assert resp.status == 200
    assert (state.app_secret_ends["t"], "t" in state.graph_forbidden) == (END, True)
    async with aiohttp.ClientSession() as http_session, http_session.put(f"{base}/_sim/tenants/t",
                                                                         json={"app_secret_end": "soon"}) as resp:
        assert resp.status == 400
