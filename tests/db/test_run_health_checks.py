"""run_health_checks end to end: real PostgreSQL, real adapters, the loopback simulator."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from exporter.cli import cmd_check
from exporter.demo.simulator import Mode
from exporter.services import build_services
from exporter.settings import Settings
from tests.helpers import settings_for

SLOT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


async def add(admin, org, kind, config, enabled=True) -> None:
    await admin.execute("INSERT INTO integration_config (org_id, integration_type, config, enabled) "
                        "VALUES ($1, $2, $3::jsonb, $4)", org, kind, json.dumps(config), enabled)


@pytest.fixture
def vendor(sim) -> str:
    """The simulator with three http tenants, ok (healthy), down (HTTP 500) and hang; its base URL."""
    state, base = sim
    state.modes.update({"ok": Mode("healthy"), "down": Mode("server_error"), "hang": Mode("hang")})
    return base


async def test_an_orgs_checks_are_run_and_persisted_together(store, admin, http_session, vendor) -> None:
    """The specification's run_health_checks(org_id), as the service runs it (the scheduler's)."""
    org, other = uuid4(), uuid4()
    await add(admin, org, "http", {"url": f"{vendor}/http/ok"})
    await add(admin, org, "sftp", {"host": "files.example"})
    await add(admin, org, "xledger", {"url": f"{vendor}/http/hang"}, enabled=False)
    await add(admin, other, "http", {"url": f"{vendor}/http/down"})
    services = build_services(settings_for("postgresql://unused", check_timeout_seconds=1, check_interval=900),
                              store=store, session=http_session, clock=lambda: SLOT + timedelta(minutes=7))
    results = await services.scheduler.run_health_checks(org)
    assert sorted((r.integration_type, r.result.status.value) for r in results) == [
        ("http", "healthy"), ("sftp", "unreachable")]
    rows = await admin.fetch("SELECT integration_type, status, error_message FROM integration_health_status "
                             "ORDER BY 1")
    assert [tuple(r) for r in rows] == [
        ("http", "healthy", None),
        ("sftp", "unreachable", "invalid configuration: no adapter for 'sftp'")]
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE slot = $1", SLOT) == 2


async def test_check_command_prints_a_table_and_exits_1_when_any_is_unhealthy(db_dsn, admin, vendor,
                                                                              capsys) -> None:
    org = uuid4()
    await add(admin, org, "http", {"url": f"{vendor}/http/down"})
    assert await cmd_check(db_dsn, Settings(database_url=db_dsn, egress_allow="127.0.0.1"), org) == 1
    out = capsys.readouterr().out
    assert "unreachable" in out and "server error (HTTP 500)" in out


async def test_check_command_exits_0_when_all_are_healthy(db_dsn, admin, vendor, capsys) -> None:
    org = uuid4()
    await add(admin, org, "http", {"url": f"{vendor}/http/ok"})
    assert await cmd_check(db_dsn, Settings(database_url=db_dsn, egress_allow="127.0.0.1"), org) == 0
    assert "healthy" in capsys.readouterr().out


async def test_check_command_exits_2_for_an_org_without_integrations(db_dsn, capsys) -> None:
    assert await cmd_check(db_dsn, Settings(database_url=db_dsn), uuid4()) == 2
    assert "has no enabled integrations" in capsys.readouterr().err


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120, stdin=subprocess.DEVNULL)


def test_demo_serves_all_three_statuses_prints_where_to_look_and_stops_on_ctrl_c(db_dsn) -> None:
    from exporter.demo.embedded_pg import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "DATABASE_URL": db_dsn, "EXPORTER_PORT": str(port)})
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("Initech (failing Xledger)") and "xledger" in line:
                break  # the last row of the first table
        text = "".join(seen)
        assert f"http://127.0.0.1:{port}/metrics" in text
        assert "Authorization: Bearer " in text
        for status in ("healthy", "degraded", "unreachable"):
            assert status in text
        simulator = re.search(r"break one +curl -X PUT -d '(.*)' (\S+)", text)
        assert simulator, text
        urllib.request.urlopen(urllib.request.Request(simulator[2], data=simulator[1].encode(), method="PUT"))
        run_now = re.search(r"run now +curl -X POST -H '([^:]+): ([^']+)' (\S+)", text)
        assert run_now, text
        pressed = urllib.request.Request(run_now[3], headers={run_now[1]: run_now[2]}, method="POST")

        def press() -> None:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(pressed, timeout=30)

        tenants, tenant = simulator[2].rsplit("/", 1)  # GET /_sim/tenants counts each tenant's requests

        def requests_to_the_hanging_tenant() -> int:
            with urllib.request.urlopen(tenants, timeout=5) as resp:
                return json.load(resp)["requests"].get(tenant, 0)

        # A hang guard: the run-now's hanging check is in flight when Ctrl-C comes. A cycle's own request may
        # have reached the tenant just before `before` was read and hang there: Fiken then refuses the run-now's
        # request with 429 (one request per token at a time, simulator.FIKEN_BUSY_S) before counting it. So the
        # button is pressed again, past the demo's 10 s run-now interval, until a request of ours is counted.
        before = requests_to_the_hanging_tenant()
        start = time.monotonic()
        presses = 0
        while requests_to_the_hanging_tenant() == before:
            assert time.monotonic() - start < 45, "the run-now never reached the hanging tenant"
            if time.monotonic() - start >= 11 * presses:
                threading.Thread(target=press, daemon=True).start()
                presses += 1
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)  # a tenant now hangs, as the banner invites: Ctrl-C must not wait on it
        out, _ = proc.communicate(timeout=15)  # ~2 s measured; 60 s when the hanging request was awaited
    assert proc.returncode == 0, "".join(seen) + out
    assert "stopping" in out


def test_bad_setting_names_the_variable_and_exits_2(db_dsn) -> None:
    proc = run_cli("migrate", env={"DATABASE_URL": db_dsn, "EXPORTER_CHECK_TIMEOUT_SECONDS": "-3"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("configuration error: EXPORTER_CHECK_TIMEOUT_SECONDS: "
                                   "Input should be greater than 0")


def test_unreachable_database_is_a_clear_error(tmp_path) -> None:
    from exporter.demo.embedded_pg import free_port

    proc = run_cli("migrate", env={"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: database: ")
    assert "Traceback" not in proc.stderr
