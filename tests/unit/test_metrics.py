"""/metrics exposition: a golden file, and promtool's linter."""

from __future__ import annotations

import gzip
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from prometheus_client import CollectorRegistry

from exporter.core.maintenance import Window
from exporter.core.model import CheckState, HealthStatus, IntegrationResult, Reason, make_result
from exporter.engine.instruments import Instruments
from exporter.engine.snapshot import Snapshot
from exporter.web.metrics import Exposition, render_fleet
from tests.conftest import require_tool

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "metrics.txt"
A, B = UUID("aaaaaaaa-0000-4000-8000-000000000001"), UUID("bbbbbbbb-0000-4000-8000-000000000002")
T = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
XLEDGER_UPGRADE = Window(UUID(int=1), A, "xledger", T - timedelta(hours=1), T + timedelta(hours=1), "upgrade")


def sample_metrics() -> tuple[Exposition, Snapshot]:
    snapshot = Snapshot()
    results = [
        IntegrationResult(A, "xledger", make_result(HealthStatus.HEALTHY, 182, T),
                          CheckState(0, datetime(2026, 11, 22, 13, 0, tzinfo=UTC))),
        IntegrationResult(A, "http", make_result(HealthStatus.HEALTHY, 40, T,
                                                 tls_expires_at=datetime(2027, 1, 1, tzinfo=UTC)), CheckState(0, T)),
        IntegrationResult(B, "fiken", make_result(HealthStatus.DEGRADED, 12, T, "rate limited (HTTP 429)",
                                                  Reason.RATE_LIMITED, 120),
                          CheckState(2, datetime(2026, 11, 22, 12, 30, tzinfo=UTC))),
    ]
    earlier = IntegrationResult(B, "fiken", make_result(HealthStatus.HEALTHY, 9, T - timedelta(minutes=15)))
    snapshot.update([*results[:2], earlier])
    snapshot.update(results)  # fiken: healthy → degraded, one status change
    snapshot.set_windows([XLEDGER_UPGRADE])
    instruments = Instruments(CollectorRegistry(), "0.1.0", known_types={"xledger", "http", "fiken"})
    instruments.observe(results + [IntegrationResult(B, "sftp", make_result(HealthStatus.UNREACHABLE, 0, T))])
    return Exposition(instruments, snapshot, clock=lambda: T), snapshot


def test_metrics_exposition_matches_the_golden_file() -> None:
    metrics, _ = sample_metrics()
    text = metrics.render().decode()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_a_removed_integration_simply_disappears() -> None:
    metrics, snapshot = sample_metrics()
    metrics.render()
    snapshot.retain({(A, "xledger"), (A, "http")})
    text = metrics.render().decode()
    assert 'org_id="bbbbbbbb' not in text.split("# HELP integration_health_checks_total")[0]


def test_unknown_types_share_one_label_value_to_bound_cardinality() -> None:
    text = sample_metrics()[0].render().decode()
    assert 'integration_health_checks_total{integration_type="other",status="unreachable"} 1.0' in text
    assert "sftp" not in text


def test_gzip_body_is_the_same_text_and_the_cache_follows_the_snapshot() -> None:
    metrics, snapshot = sample_metrics()
    assert gzip.decompress(metrics.render(compressed=True)) == metrics.render()
    snapshot.update([IntegrationResult(A, "fiken", make_result(HealthStatus.UNREACHABLE, 5, T))])
    assert 'integration_type="fiken",org_id="aaaaaaaa' in gzip.decompress(metrics.render(compressed=True)).decode()


def test_promtool_check_metrics_is_clean() -> None:
    promtool = require_tool("promtool", "prometheus")
    text = sample_metrics()[0].render()
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert proc.stdout.decode() + proc.stderr.decode() == ""
    assert proc.returncode == 0


async def test_off_loop_render_reads_a_copy_so_changes_during_it_wait_for_the_next_scrape(monkeypatch) -> None:
    metrics, snapshot = sample_metrics()
    expected = sample_metrics()[0].render()

    def change_mid_render(frozen, at):  # what the loop may do while the thread renders
        snapshot.retain(set())
        return render_fleet(frozen, at)

    monkeypatch.setattr("exporter.web.metrics.render_fleet", change_mid_render)
    first = await metrics.render_off_loop()
    assert first == expected  # rendered from the copy taken before the change
    assert b'org_id="aaaaaaaa' not in await metrics.render_off_loop()  # the next scrape sees the change


def maintenance_gauge(text: str) -> dict[tuple[str, str], str]:
    lines = [line for line in text.splitlines() if line.startswith("integration_health_maintenance{")]
    out = {}
    for line in lines:
        labels, value = line.rsplit(" ", 1)
        kind = labels.split('integration_type="')[1].split('"')[0]
        org = labels.split('org_id="')[1].split('"')[0]
        out[(org[:8], kind)] = value
    return out


def test_the_maintenance_gauge_is_1_for_every_covered_integration_and_0_for_the_rest() -> None:
    metrics, snapshot = sample_metrics()
    assert maintenance_gauge(metrics.render().decode()) == {
        ("aaaaaaaa", "xledger"): "1.0", ("aaaaaaaa", "http"): "0.0", ("bbbbbbbb", "fiken"): "0.0"}
    snapshot.set_windows([Window(UUID(int=2), None, None, T, T + timedelta(minutes=5), "everything")])
    assert set(maintenance_gauge(metrics.render().decode()).values()) == {"1.0"}


def test_a_window_ends_at_its_time_between_cycles_though_the_snapshot_did_not_change() -> None:
    """The fleet part is cached per snapshot version; a window's edge must still show at the next scrape."""
    now = [T]
    metrics, snapshot = sample_metrics()
    metrics.clock = lambda: now[0]
    assert maintenance_gauge(metrics.render().decode())[("aaaaaaaa", "xledger")] == "1.0"
    version = snapshot.version
    now[0] = XLEDGER_UPGRADE.ends_at  # the end is exclusive
    assert maintenance_gauge(metrics.render().decode())[("aaaaaaaa", "xledger")] == "0.0"
    assert snapshot.version == version
