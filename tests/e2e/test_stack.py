"""End to end with real processes: the exporter watching the simulator, Prometheus scraping it with the
repository's rules, Alertmanager routing with the repository's config, and a webhook receiving alerts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
from aiohttp import web

from exporter.demo.embedded_pg import free_port
from exporter.demo.simulator import Mode, SimState
from exporter.demo.simulator import create_app as create_simulator
from tests.conftest import require_tool
from tests.helpers import WEBHOOK_KEYS

ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = 5
METRICS_TOKEN = "e2e-metrics-token-0123456789"
RULE_FILES = sorted(ROOT.glob("alerts/*.rules.yml"))


def fast_rules(text: str) -> str:
    """The repository's rules with waits shortened for a test that lasts a minute, not hours."""
    text = re.sub(r"^(\s+)for: \S+$", r"\1for: 2s", text, flags=re.M)
    text = re.sub(r"^(\s+)keep_firing_for: \S+$", r"\1keep_firing_for: 15s", text, flags=re.M)
    return re.sub(r"^(\s+)interval: \d+m$", r"\1interval: 2s", text, flags=re.M)


def fast_alertmanager(text: str, webhook: str) -> str:
    text = text.replace("http://simulator:8081/_sim/alerts", webhook)
    text = re.sub(r"group_wait: \S+", "group_wait: 1s", text)
    return re.sub(r"group_interval: \S+", "group_interval: 2s", text)


async def wait_for(check, timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
        except (aiohttp.ClientError, OSError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.5)


class Process:
    def __init__(self, *cmd: str, env: dict[str, str] | None = None, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.log.read_text()[-3000:]


async def webhook_receiver(aiohttp_server) -> tuple[str, list[dict[str, Any]]]:
    """A loopback webhook for Alertmanager: its URL, and the payloads it received."""
    received: list[dict[str, Any]] = []

    async def webhook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", webhook)
    return str((await aiohttp_server(app)).make_url("/hook")), received


@pytest.fixture
async def stack(db_dsn, admin, aiohttp_server, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    state = SimState(modes={"e2e": Mode("healthy")})
    sim = await aiohttp_server(create_simulator(state), access_log=None)
    hook, received = await webhook_receiver(aiohttp_server)
    org, passive_org = uuid4(), uuid4()
    await admin.execute("INSERT INTO integration_config (org_id, integration_type, config) VALUES "
                        "($1, 'http', $2::jsonb)", org, json.dumps({"url": str(sim.make_url("/http/e2e")),
                                                                     "method": "GET"}))
    await admin.execute("INSERT INTO integration_config (org_id, integration_type, config, health_mode, "
                        "sync_period_seconds) VALUES ($1, 'xledger', '{}', 'passive', 3600)", passive_org)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await admin.execute("INSERT INTO integration_sync_runs (org_id, integration_type, scheduled_for, started_at, "
                        "finished_at, outcome) VALUES ($1, 'xledger', $2, $3, $4, 'success')", passive_org, hour,
                        hour + timedelta(minutes=6), hour + timedelta(minutes=7))

    env = {"EXPORTER_CREDENTIAL_PROVIDER": "none"}
    async with running_stack(db_dsn, tmp_path, hook, env) as running:
        yield {**running, "state": state, "received": received, "org": org}


@contextlib.asynccontextmanager
async def running_stack(db_dsn: str, tmp_path: Path, webhook: str, env: dict[str, str]
                        ) -> AsyncIterator[dict[str, Any]]:
    """The exporter (`serve`, a 5 s cycle, `env` on top), Prometheus with the repository's rules and Alertmanager
    with its config posting to `webhook`; stopped on exit, their logs printed when the test failed."""
    exporter_port, prom_port, am_port = free_port(), free_port(), free_port()
    exporter = Process(sys.executable, "-m", "exporter", "serve", log=tmp_path / "exporter.log", env={
        **os.environ, "DATABASE_URL": db_dsn, "EXPORTER_HOST": "127.0.0.1",
        "EXPORTER_PORT": str(exporter_port), "EXPORTER_CHECK_INTERVAL": str(INTERVAL_S),
        "EXPORTER_ALLOW_FAST_INTERVAL": "true",
        "EXPORTER_CHECK_TIMEOUT_SECONDS": "2", "EXPORTER_API_TOKEN": "e2e-token-0123456789",
        "EXPORTER_EGRESS_ALLOW": "127.0.0.1",  # the simulator, on loopback
        "EXPORTER_METRICS_TOKEN": METRICS_TOKEN, "EXPORTER_HTTP_HEADER_TIMEOUT_SECONDS": "2",
        "EXPORTER_WEBHOOK_SECRET_KEYS": WEBHOOK_KEYS, **env})
    (tmp_path / "metrics_token").write_text(METRICS_TOKEN + "\n")  # as a mounted secret: Prometheus trims it
    for rule_file in RULE_FILES:  # all of them, as deploy/prometheus.yml loads alerts/*.rules.yml
        (tmp_path / rule_file.name).write_text(fast_rules(rule_file.read_text()))
    (tmp_path / "alertmanager.yml").write_text(fast_alertmanager(
        (ROOT / "alerts/alertmanager.yml").read_text(), webhook))
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{tmp_path / '*.rules.yml'}]
alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}
scrape_configs:
  - job_name: integration-health
    authorization: {{type: Bearer, credentials_file: {tmp_path / 'metrics_token'}}}
    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]
""")
    am = Process(require_tool("prometheus-alertmanager", "prometheus-alertmanager"),
                 f"--config.file={tmp_path / 'alertmanager.yml'}",
                 f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                 "--cluster.listen-address=", log=tmp_path / "alertmanager.log")
    prom = Process(require_tool("prometheus", "prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                   f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                   log=tmp_path / "prometheus.log")
    try:
        async with aiohttp.ClientSession() as session:
            yield {"session": session, "prom": f"http://127.0.0.1:{prom_port}", "am": f"http://127.0.0.1:{am_port}",
                   "exporter": f"http://127.0.0.1:{exporter_port}", "exporter_port": exporter_port,
                   "procs": (exporter, prom, am)}
    finally:
        logs = {p.log.name: p.stop() for p in (prom, am, exporter)}
        if sys.exc_info()[0]:
            print(json.dumps(logs, indent=1))


async def query(stack: dict[str, Any], expr: str) -> dict[str, Any]:
    async with stack["session"].get(f"{stack['prom']}/api/v1/query", params={"query": expr}) as resp:
        return await resp.json()


def dashboard_exprs() -> list[str]:
    exprs = []
    board = json.loads((ROOT / "dashboards/integration-health.json").read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"].replace("$org_id", ".*").replace("$integration_type", ".*")
                         .replace("$__rate_interval", "1m"))
    return exprs


def rule_exprs() -> list[str]:
    import yaml

    return [r["expr"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


async def test_the_whole_path_from_a_failing_vendor_to_a_resolved_alert(stack) -> None:
    async def target_up():
        data = await query(stack, 'up{job="integration-health"}')
        return data["data"]["result"] and data["data"]["result"][0]["value"][1] == "1"

    async def has(expr: str):
        return (await query(stack, expr))["data"]["result"]

    await wait_for(target_up, 90, "Prometheus to scrape the exporter")
    await wait_for(lambda: has('integration_health_status{integration_type="http",status="healthy"} == 1'), 60,
                   "the first check to be scraped")
    # the scraped body is gzip members concatenated (one per family and block of integrations, then the
    # instruments'): a series from a later member and one of the instruments' prove Prometheus reads them all
    await wait_for(lambda: has("integration_health_sync_drift_seconds > 300"), 30, "the passive sync's drift")
    await wait_for(lambda: has('integration_health_cycles_total{outcome="success"} > 0'), 60, "a finished cycle")

    # /metrics wants the token Prometheus read from its credentials_file; without it, a 401 and no series
    async with stack["session"].get(f"{stack['exporter']}/metrics") as resp:
        assert (resp.status, resp.headers["WWW-Authenticate"]) == (401, "Bearer")
        assert "integration_health" not in await resp.text()

    # the real process closes a connection whose request head is still incomplete after its header timeout (2 s)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack["exporter_port"])
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line that ends the head
    async with asyncio.timeout(60):  # a hang guard only
        assert await reader.read() == b""
    writer.close()

    # promtool check metrics on a live scrape
    promtool = require_tool("promtool", "prometheus")
    async with stack["session"].get(f"{stack['exporter']}/metrics",
                                    headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as resp:
        exposition = await resp.read()
    lint = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True)
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr), lint.stdout + lint.stderr

    # every PromQL expression of every dashboard panel and every rule is valid against the live server
    invalid, with_data = [], 0
    for expr in dashboard_exprs() + rule_exprs():
        data = await query(stack, expr)
        if data["status"] != "success":
            invalid.append((expr, data.get("error")))
        elif data["data"]["result"]:
            with_data += 1
    assert invalid == []
    assert with_data >= len(dashboard_exprs()) // 2, f"only {with_data} expressions returned data"

    # the vendor breaks: IntegrationUnreachable fires and reaches the webhook with the org and integration
    stack["state"].modes["e2e"] = Mode("server_error")

    def notified(status: str):
        async def check():
            return [a for payload in stack["received"] for a in payload["alerts"]
                    if a["labels"]["alertname"] == "IntegrationUnreachable" and a["status"] == status]
        return check

    firing = await wait_for(notified("firing"), 120, "IntegrationUnreachable to reach the webhook")
    assert firing[0]["labels"]["org_id"] == str(stack["org"])
    assert firing[0]["labels"]["integration_type"] == "http"
    assert firing[0]["labels"]["severity"] == "critical"
    assert "unreachable" in firing[0]["annotations"]["summary"]

    # the vendor heals: the alert resolves
    stack["state"].modes["e2e"] = Mode("healthy")
    await wait_for(notified("resolved"), 120, "IntegrationUnreachable to resolve")
