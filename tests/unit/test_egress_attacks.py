"""A tenant's config cannot make the exporter a port scanner or a content oracle for internal services.

Each attack runs through the real runner, adapters and make_session against a recording listener on
loopback, under the default policy (nothing allowed) unless a test allows something as an operator
would. A refused destination must read unreachable/blocked and must have received nothing. A guard
(tests/support/listener.py) refuses any connection outside loopback, so no test here sends traffic off
this machine even if the policy were broken: the private and metadata addresses are never connected to.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from uuid import UUID

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from yarl import URL

from exporter.adapters.base import AdapterContext
from exporter.adapters.transport import make_session
from exporter.core.egress import EgressPolicy, host_name
from exporter.core.model import HealthResult, HealthStatus, Integration, Reason
from exporter.services import egress_policy
from exporter.settings import Settings
from tests.support.fakes import StaticCredentials, runner_for
from tests.support.listener import SECRET_BODY, Listener, install_guard, start_redirector

ORG = UUID("66666666-6666-4666-8666-666666666666")
U = HealthStatus.UNREACHABLE
REFUSAL = re.compile(r"^destination \S+ is not allowed \([^)]+\); an operator can allow it with EXPORTER_EGRESS_ALLOW$")
TRIPLETEX_SECRET = '{"consumer_token": "c", "employee_token": "e"}'


@pytest.fixture
def guard(monkeypatch):
    return install_guard(monkeypatch)


@pytest.fixture
async def listener():
    server = await Listener().start()
    yield server
    await server.close()


async def check(kind: str, config: dict, policy: EgressPolicy = EgressPolicy(), credential: str | None = None,
                **options) -> HealthResult:
    """One integration through the runner, on a session made by make_session with `policy`."""
    credential = credential or (TRIPLETEX_SECRET if kind == "tripletex" else "tok")
    async with make_session(policy=policy, **options) as session:
        ctx = AdapterContext(session=session, credentials=StaticCredentials({"ref": credential}))
        [result] = await runner_for(ctx, timeout=5.0).run([Integration(ORG, kind, config, credential_ref="ref")])
    return result.result


def assert_blocked(result: HealthResult, listener: Listener, guard) -> None:
    assert (result.status, result.reason) == (U, Reason.BLOCKED), result.error
    assert REFUSAL.match(result.error or ""), result.error
    assert (listener.connections, bytes(listener.received)) == (0, b""), "the internal service was reached"
    assert guard.attempts == [], "a connection was attempted"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::ffff:127.0.0.1]", "2130706433",
                                  "0x7f.0.0.1", "127.1", "0177.0.0.1", "127.0.0.1.", "[::1]"])
async def test_loopback_by_any_spelling_is_blocked_and_receives_nothing(listener, guard, host) -> None:
    result = await check("http", {"url": f"http://{host}:{listener.port}/admin", "method": "GET"})
    assert_blocked(result, listener, guard)


async def test_the_refusal_names_the_destination_and_the_setting_and_nothing_else(listener, guard) -> None:
    result = await check("http", {"url": f"http://127.0.0.1:{listener.port}/admin?token=x", "method": "GET"})
    assert result.error == ("destination 127.0.0.1 is not allowed (loopback); an operator can allow it with "
                            "EXPORTER_EGRESS_ALLOW")


async def test_an_open_and_a_closed_internal_port_are_indistinguishable(listener, guard) -> None:
    from exporter.demo.embedded_pg import free_port

    open_, closed = [await check("http", {"url": f"http://127.0.0.1:{port}/", "method": "GET"})
                     for port in (listener.port, free_port())]
    assert (open_.status, open_.reason, open_.error) == (closed.status, closed.reason, closed.error)
    assert_blocked(open_, listener, guard)


async def test_body_contains_cannot_read_an_internal_service(listener, guard) -> None:
    results = [await check("http", {"url": f"http://127.0.0.1:{listener.port}/", "body_contains": needle})
               for needle in (SECRET_BODY.decode(), "not in the body")]
    timing = {"checked_at": results[1].checked_at, "latency_ms": results[1].latency_ms}
    assert replace(results[0], **timing) == results[1]  # equal but for when and how long
    assert_blocked(results[0], listener, guard)


@pytest.fixture
async def redirector():
    runner = await start_redirector()
    yield f"http://localhost:{runner.addresses[0][1]}/"
    await runner.cleanup()


REDIRECTOR_ALLOWED = EgressPolicy.from_allow(["localhost"])  # the operator allowed this host by name


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/", "http://[::ffff:127.0.0.1]:{port}/",
                                    "http://0x7f.0.0.1:{port}/", "http://2130706433:{port}/",
                                    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
                                    "http://[fd00::1]/"])
async def test_a_redirect_from_an_allowed_host_to_an_internal_one_is_blocked(redirector, listener, guard,
                                                                             target) -> None:
    to = target.format(port=listener.port)
    result = await check("http", {"url": str(URL(redirector).with_query(to=to)), "method": "GET"},
                         REDIRECTOR_ALLOWED)
    assert (result.status, result.reason) == (U, Reason.BLOCKED), result.error
    assert (listener.connections, bytes(listener.received)) == (0, b"")
    assert all(a == "127.0.0.1" for a in guard.attempts), guard.attempts  # only the redirector was connected to


async def test_the_redirector_itself_is_reachable_when_allowed(redirector, listener, guard) -> None:
    """The control for the test above: an allowed hop to an allowed destination is followed."""
    policy = EgressPolicy.from_allow(["localhost", "127.0.0.1"])
    to = f"http://127.0.0.1:{listener.port}/"
    result = await check("http", {"url": str(URL(redirector).with_query(to=to)), "body_contains": "s3cr3t"}, policy)
    assert result.status == HealthStatus.HEALTHY, result.error
    assert listener.connections == 1


def loopback_spellings() -> st.SearchStrategy[str]:
    """127.0.0.1 as a resolver would read it: integer, hex, octal, 1-4 parts, mapped IPv6, trailing dot, names."""
    def part(value: int, style: str, zeros: int) -> str:
        return {"dec": str(value), "hex": "0x" + "0" * zeros + format(value, "x"),
                "HEX": "0X" + "0" * zeros + format(value, "X"), "oct": "0" + "0" * zeros + format(value, "o")}[style]

    styles, zeros = st.sampled_from(["dec", "hex", "HEX", "oct"]), st.integers(0, 2)
    numbers = st.sampled_from([[2130706433], [127, 1], [127, 0, 1], [127, 0, 0, 1]])
    numeric = st.builds(lambda ns, ss, zs, dot: ".".join(part(n, s, z) for n, s, z in zip(ns, ss, zs)) + dot,
                        numbers, st.lists(styles, min_size=4, max_size=4), st.lists(zeros, min_size=4, max_size=4),
                        st.sampled_from(["", "."]))
    ipv6 = st.sampled_from(["[::ffff:127.0.0.1]", "[::FFFF:7F00:1]", "[0:0:0:0:0:ffff:7f00:1]", "[::1]",
                            "[0000::0001]", "[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::1]"])
    names = st.builds(lambda name, dot: name + dot,
                      st.sampled_from(["localhost", "LOCALHOST", "LocalHost", "api.localhost", "x.LOCALHOST"]),
                      st.sampled_from(["", "."]))
    return st.one_of(numeric, ipv6, names)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=loopback_spellings(), how=st.sampled_from(["config", "redirect"]))
def test_any_spelling_of_loopback_is_refused_directly_or_as_a_redirect_and_receives_nothing(monkeypatch, host,
                                                                                            how) -> None:
    assume(how == "config" or host_name(host) != "localhost")  # the redirector's own name is the allowed one
    async def attempt() -> tuple[HealthResult, Listener, list[str]]:
        guard = install_guard(monkeypatch)
        listener, runner = await Listener().start(), await start_redirector()
        try:
            target = f"http://{host}:{listener.port}/"
            if how == "config":
                result = await check("http", {"url": target, "method": "GET"})
            else:
                url = URL(f"http://localhost:{runner.addresses[0][1]}/").with_query(to=target)
                result = await check("http", {"url": str(url), "method": "GET"}, REDIRECTOR_ALLOWED)
            return result, listener, guard.attempts
        finally:
            await runner.cleanup()
            await listener.close()
            monkeypatch.undo()

    result, listener, attempts = asyncio.run(attempt())
    assert (result.status, result.reason) == (U, Reason.BLOCKED), (host, result.error)
    assert (listener.connections, bytes(listener.received)) == (0, b"")
    assert attempts == ([] if how == "config" else ["127.0.0.1"])


async def test_the_exporters_own_port_is_refused_even_with_loopback_allowed(listener, guard) -> None:
    policy = EgressPolicy.from_allow(["127.0.0.0/8", "::1"], own_port=listener.port)
    for host in ("127.0.0.1", "localhost"):
        result = await check("http", {"url": f"http://{host}:{listener.port}/metrics", "method": "GET"}, policy)
        assert (result.status, result.reason) == (U, Reason.BLOCKED)
        assert result.error == f"destination {host}:{listener.port} is not allowed (this exporter itself)"
    assert (listener.connections, guard.attempts) == (0, [])


async def test_the_service_policy_refuses_its_own_listening_port(listener) -> None:
    policy = await egress_policy(Settings(egress_allow="127.0.0.0/8", port=listener.port, host="127.0.0.1"))
    assert not policy.allowed("127.0.0.1", listener.port)
    assert policy.allowed("127.0.0.1", listener.port + 1 if listener.port < 65535 else 1)


# --- vendor types ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "config", "error"), [
    ("xledger", {"url": "https://evil.example/graphql"},
     "destination evil.example is not allowed (only www.xledger.net, demo.xledger.net)"),
    ("xledger", {"url": "http://www.xledger.net/graphql"},
     "destination http://www.xledger.net is not allowed (https only)"),
    ("fiken", {"url": "https://api.fiken.no.evil.example/api/v2"},
     "destination api.fiken.no.evil.example is not allowed"),
    ("tripletex", {"url": "http://tripletex.no/v2"}, "destination http://tripletex.no is not allowed (https only)"),
    ("dynamics365", {"org_url": "https://contoso.crm4.dynamics.com", "tenant_id": "t", "client_id": "c",
                     "token_url": "https://collector.evil.example/token"},
     "destination collector.evil.example is not allowed"),  # the client secret would be POSTed there
])
async def test_a_vendor_config_off_the_vendors_hosts_is_blocked_before_any_request(guard, kind, config,
                                                                                   error) -> None:
    result = await check(kind, config)
    assert (result.status, result.reason) == (U, Reason.BLOCKED), result.error
    assert (result.error or "").startswith(error)
    assert (guard.attempts, guard.lookups) == ([], [])  # not even a DNS query


@pytest.mark.parametrize("kind", ["xledger", "fiken", "tripletex"])
async def test_a_vendor_config_pointing_at_an_internal_service_is_blocked(listener, guard, kind) -> None:
    result = await check(kind, {"url": f"https://127.0.0.1:{listener.port}/x"})
    assert_blocked(result, listener, guard)


async def test_the_simulator_allowed_with_egress_allow_still_works(sim) -> None:
    state, base = sim
    state.secrets["t"] = "xl-tok"
    config = {"url": f"{base}/xledger/t/graphql"}
    allowed = await egress_policy(Settings(egress_allow="127.0.0.1"))
    result = await check("xledger", config, allowed, credential="xl-tok")
    assert result.status == HealthStatus.HEALTHY, result.error
    refused = await check("xledger", config, await egress_policy(Settings()), credential="xl-tok")
    assert (refused.status, refused.reason) == (U, Reason.BLOCKED)
    assert state.requests["t"] == 1


async def test_a_session_without_the_egress_policy_is_refused_by_fetch(listener, guard) -> None:
    async with aiohttp.ClientSession() as plain:
        [r] = await runner_for(AdapterContext(session=plain)).run(
            [Integration(ORG, "http", {"url": f"http://127.0.0.1:{listener.port}/", "method": "GET"})])
    assert (r.result.status, r.result.reason) == (U, Reason.BLOCKED)
    assert r.result.error == "this HTTP session enforces no egress policy: build it with transport.make_session"
    assert (listener.connections, guard.attempts) == (0, [])


def test_only_transport_touches_the_http_session() -> None:
    """Every request goes through fetch, where the vendor rules are checked: no adapter calls the session."""
    from pathlib import Path

    import exporter.adapters as package

    offenders = [p.name for p in Path(package.__file__).parent.glob("*.py")
                 if p.name != "transport.py" and re.search(r"session\.(request|get|post|put|head|ws_connect)\(",
                                                            p.read_text())]
    assert offenders == []
