"""Hostile endpoints: each fault gets its documented status and reason by its deadline, memory stays
bounded, the other org's check is unaffected, and the planted credential appears in no output."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
import trustme
from aiohttp import web

from exporter.adapters.base import AdapterContext
from exporter.adapters.transport import MAX_BODY_BYTES
from exporter.core.model import HealthStatus, Integration, IntegrationResult, Reason
from tests.helpers import wait_until
from tests.support.fakes import StaticCredentials, loopback_session, runner_for
from tests.support.fault_server import FaultServer, compression_bomb

H, D, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNREACHABLE
SECRET = "PLANTED-hostile-7c1e2a9b"
DEADLINE = 1.5
BYSTANDER = UUID("99999999-9999-4999-8999-999999999999")
TOO_LARGE = "unexpected response: response body larger than 256 KiB"
BOMBS = ["/gzip-bomb", "/deflate-bomb", "/gzip-bomb-chunked"]
ROOT = Path(__file__).resolve().parents[2]


def rss_peak_mb() -> float:
    return int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("VmHWM:")).split()[1]) / 1024


def reset_rss_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS


@pytest.fixture
async def faults():
    server = await FaultServer().start()
    server.away_url = f"http://localhost:{server.port}/ok"  # another origin (host differs), same process
    yield server
    await server.close()


@pytest.fixture
async def session():
    async with loopback_session() as s:
        yield s


async def run_beside_a_bystander(session, config: dict, faults: FaultServer, caplog,
                                 timeout: float = DEADLINE) -> IntegrationResult:
    """Check the hostile target and, in the same run, another org's healthy one; return the hostile result."""
    caplog.set_level(logging.DEBUG)
    ctx = AdapterContext(session=session, credentials=StaticCredentials({"ref": SECRET}))
    hostile = Integration(uuid4(), "http", config, credential_ref="ref")
    bystander = Integration(BYSTANDER, "http", {"url": f"{faults.url}/ok", "method": "GET"})
    # A hang guard only, far beyond the deadline: the assertion is on the result, not on the time.
    hostile_result, other = await asyncio.wait_for(runner_for(ctx, timeout=timeout).run([hostile, bystander]),
                                                   timeout * 10)
    assert other.result.status == H, other.result
    outputs = [caplog.text, repr(hostile_result.result)]  # every field
    outputs += [str(headers) for path, headers in faults.requests if path == "/ok"]  # where a redirect led
    assert not [o for o in outputs if SECRET in o], "the planted secret leaked"
    return hostile_result


HOSTILE = [  # path, status, reason, error (exact)
    ("/hang", U, Reason.TIMEOUT, f"timed out after {DEADLINE:g} s"),
    ("/stall-body", U, Reason.TIMEOUT, f"timed out after {DEADLINE:g} s"),
    ("/drip", U, Reason.TIMEOUT, f"timed out after {DEADLINE:g} s"),
    ("/huge", D, Reason.BAD_RESPONSE, TOO_LARGE),
    ("/huge-chunked", D, Reason.BAD_RESPONSE, TOO_LARGE),
    *[(bomb, D, Reason.BAD_RESPONSE, TOO_LARGE) for bomb in BOMBS],
    ("/redirect-loop", D, Reason.BAD_RESPONSE, "too many redirects (redirect loop?)"),
    ("/redirect-away", D, Reason.BAD_RESPONSE,
     "unexpected response: redirect to another host (localhost) not followed with credentials"),
    ("/http10", H, None, None),
    ("/garbage", U, Reason.BAD_RESPONSE, "unexpected response: not a valid HTTP response"),
    ("/reset-mid-body", U, Reason.CONNECT, "the answer was cut off (connection closed mid-body)"),
]


@pytest.mark.parametrize(("path", "status", "reason", "error"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_each_hostile_endpoint_gets_its_documented_status(faults, session, caplog, path, status, reason,
                                                                error) -> None:
    reset_rss_peak()
    before = rss_peak_mb()
    # A custom header, so only keeping the secret out (not redacting a recognisable "Bearer …") passes.
    config = {"url": faults.url + path, "method": "GET", "auth": "header", "auth_header": "X-Api-Key"}
    r = await run_beside_a_bystander(session, config, faults, caplog)
    assert (r.result.status, r.result.reason, r.result.error) == (status, reason, error)
    assert r.result.latency_ms <= DEADLINE * 1000
    assert rss_peak_mb() - before < 32, "memory grew with the hostile answer"


async def test_a_redirect_to_another_host_is_followed_when_no_credentials_ride_along(faults, session,
                                                                                     caplog) -> None:
    r = await run_beside_a_bystander(session, {"url": f"{faults.url}/redirect-away", "method": "GET"}, faults, caplog)
    assert r.result.status == H
    assert [p for p, _ in faults.requests].count("/ok") == 2  # the bystander's and the followed redirect


async def test_credentials_never_reach_the_host_a_redirect_names(faults, session, caplog) -> None:
    for auth in ("bearer", "header"):
        await run_beside_a_bystander(session, {"url": f"{faults.url}/redirect-away", "method": "GET", "auth": auth,
                                               "auth_header": "X-Api-Key"}, faults, caplog)
    followed = [h for path, h in faults.requests if path == "/ok" and "localhost" in h.get("Host", "")]
    assert followed == []


async def test_an_unresolvable_name_is_a_dns_failure(faults, session, caplog) -> None:
    r = await run_beside_a_bystander(session, {"url": "http://no-such-host.invalid/health", "auth": "bearer"},
                                     faults, caplog, timeout=5)
    assert (r.result.status, r.result.reason) == (U, Reason.DNS)


async def check_in_a_fresh_process(url: str) -> dict:
    """One http check in its own Python process: its status, error and the process's peak RSS in MB."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.support.rss_probe", url, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)  # a hang guard only
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


@pytest.mark.parametrize("path", BOMBS)
async def test_a_compression_bomb_is_refused_within_32_mb_of_a_check_on_a_small_answer(faults, path) -> None:
    # Under the cap as sent, so only counting decoded bytes can refuse it (not the announced length).
    assert len(compression_bomb("gzip")) < MAX_BODY_BYTES > len(compression_bomb("deflate"))
    baseline = await check_in_a_fresh_process(f"{faults.url}/ok")
    bomb = await check_in_a_fresh_process(faults.url + path)
    assert (baseline["status"], bomb["status"], bomb["error"]) == ("healthy", "degraded", TOO_LARGE)
    assert bomb["peak_mb"] - baseline["peak_mb"] < 32, (bomb, baseline)


# --- TLS -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_cases(ca: trustme.CA) -> dict[str, trustme.LeafCert]:
    now = datetime.now(UTC)
    return {
        "expired": ca.issue_cert("127.0.0.1", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)),
        "self-signed": trustme.CA().issue_cert("127.0.0.1"),  # issued by a CA nobody trusts
        "wrong-host": ca.issue_cert("other.example"),
    }


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.mark.parametrize("case", ["expired", "self-signed", "wrong-host"])
@pytest.mark.parametrize("tls_verify", [True, False], ids=["verified", "trusted-per-integration"])
async def test_a_bad_certificate_is_a_tls_failure_unless_trusted_per_integration(ca, faults, caplog, case,
                                                                                  tls_verify) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_cases(ca)[case].configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx).start()
    try:
        async with loopback_session(ssl_context=client_ctx) as session:
            url = f"https://127.0.0.1:{runner.addresses[0][1]}/"
            r = await run_beside_a_bystander(session, {"url": url, "method": "GET", "auth": "bearer",
                                                       "tls_verify": tls_verify}, faults, caplog)
    finally:
        await runner.cleanup()
    if tls_verify:
        assert (r.result.status, r.result.reason) == (U, Reason.TLS)
        assert r.result.error == "TLS certificate rejected for 127.0.0.1"
    else:
        assert r.result.status == H


# --- many at once ----------------------------------------------------------------------------------------

async def test_a_thousand_hanging_integrations_time_out_and_the_healthy_ones_behind_them_do_not(faults,
                                                                                               session) -> None:
    hanging = [Integration(uuid4(), "http", {"url": f"{faults.url}/hang", "method": "GET"}) for _ in range(1000)]
    healthy = [Integration(uuid4(), "http", {"url": f"{faults.url}/ok", "method": "GET"}) for _ in range(20)]
    # As the service runs: one bound on concurrent checks, equal to the connection pool's size (256).
    runner = runner_for(AdapterContext(session=session), timeout=1.0, limiter=asyncio.Semaphore(256))
    reset_rss_peak()
    before = rss_peak_mb()
    results = await asyncio.wait_for(runner.run(hanging + healthy), 60)
    by_status = [(r.result.status, r.result.reason) for r in results]
    assert by_status[:1000] == [(U, Reason.TIMEOUT)] * 1000
    assert by_status[1000:] == [(H, None)] * 20
    # the cancelled checks close their sockets: a leak would keep a connection open past this generous wait
    await wait_until(lambda: (len(runner.abandoned), faults.open_connections) == (0, 0), timeout=10,
                     what="the cancelled checks to close their connections")
    assert (len(runner.abandoned), faults.open_connections) == (0, 0)
    assert rss_peak_mb() - before < 64
