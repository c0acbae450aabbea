"""/metrics exposition: a golden file, and promtool's linter."""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import subprocess
import threading
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prometheus_client import CollectorRegistry

from exporter.core.maintenance import Window
from exporter.core.model import CheckState, HealthStatus, IntegrationResult, Reason, make_result
from exporter.core.syncs import SyncAssessment, SyncRun, SyncState
from exporter.core.warmups import WarmupOutcome, WarmupRecord
from exporter.engine.instruments import Instruments
from exporter.engine.snapshot import Snapshot
from exporter.web.families import MODES, SOURCES
from exporter.web.fleet import Fleet
from exporter.web.metrics import Exposition, pause
from tests.conftest import require_tool
from tests.support.reference_exposition import reference_fleet

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "metrics.txt"
A, B = UUID("aaaaaaaa-0000-4000-8000-000000000001"), UUID("bbbbbbbb-0000-4000-8000-000000000002")
T = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
XLEDGER_UPGRADE = Window(UUID(int=1), A, "xledger", T - timedelta(hours=1), T + timedelta(hours=1), "upgrade")


def sample_metrics() -> tuple[Exposition, Snapshot]:
    snapshot = Snapshot()
    results = [
        IntegrationResult(A, "xledger", replace(make_result(HealthStatus.HEALTHY, 182, T),
                                                credential_expires_at=datetime(2027, 5, 1, tzinfo=UTC)),
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
    sync_at = T + timedelta(minutes=30)
    snapshot.syncs[(A, "xledger")] = SyncAssessment(
        SyncState.ON_SCHEDULE, sync_at, 0.0, SyncRun(T, "success", T, T + timedelta(seconds=90),
                                                     cold_start=True, invocation_latency_ms=2400), T)
    snapshot.record_warmup((A, "xledger"), WarmupRecord(sync_at - timedelta(seconds=30), sync_at,
                                                        WarmupOutcome.COLD_START, 2.61, 0))
    instruments.sync_warmups.labels(WarmupOutcome.COLD_START.value).inc()
    instruments.count_cold_starts("xledger", "warmup")
    instruments.count_cold_starts("sftp", "sync_run")  # an unregistered type: `other`
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
    refresh = metrics.fleet.refresh

    def change_mid_render(frozen, changed=None):  # what the loop may do while the thread renders
        snapshot.retain(set())
        return refresh(frozen, changed)

    monkeypatch.setattr(metrics.fleet, "refresh", change_mid_render)
    first = await metrics.render_off_loop()
    assert first == expected  # rendered from the copy taken before the change
    assert b'org_id="aaaaaaaa' not in await metrics.render_off_loop()  # the next scrape sees the change


KINDS = ("xledger", "http", "fiken", 'odd"type\\with\nnewline', "tøff")


def random_result(rng: random.Random, key: tuple[UUID, str], at: datetime) -> IntegrationResult:
    status = rng.choice(list(HealthStatus))
    reason = None if status == HealthStatus.HEALTHY else rng.choice(list(Reason))
    tls = rng.choice([None, at + timedelta(days=rng.randint(-5, 400))])
    state = CheckState(rng.randint(0, 4), rng.choice([None, at + timedelta(minutes=rng.choice([15, 60, 240]))]))
    return IntegrationResult(*key, make_result(status, rng.choice([0, 1, 182, 10_000, rng.randint(0, 99_999)]), at,
                                               "boom" if reason else None, reason, tls_expires_at=tls), state)


def random_assessment(rng: random.Random, at: datetime) -> SyncAssessment:
    run = rng.choice([None, SyncRun(at, "success", at + timedelta(seconds=rng.choice([0, 3, 400]))), SyncRun(at, "running")])
    return SyncAssessment(rng.choice(list(SyncState)), rng.choice([None, at + timedelta(hours=1)]),
                          rng.choice([0.0, 12.5, 3600.0]), run, rng.choice([None, at - timedelta(minutes=3)]))


def mutate(rng: random.Random, snapshot: Snapshot, keys: list[tuple[UUID, str]], step: int) -> None:
    """One random change of the kinds a cycle makes: results (new, newer, older), removals, modes, syncs."""
    at = T + timedelta(minutes=15 * step)
    match rng.choice(["update", "update", "retain", "modes", "syncs", "nothing"]):
        case "update":
            picked = rng.sample(keys, rng.randint(1, len(keys)))
            snapshot.update([random_result(rng, k, at - timedelta(hours=rng.choice([0, 0, 0, 48]))) for k in picked])
        case "retain":
            snapshot.retain(set(rng.sample(keys, rng.randint(0, len(keys)))))
        case "modes":
            snapshot.modes = {k: rng.choice(MODES) for k in rng.sample(keys, rng.randint(0, len(keys)))}
        case "syncs":
            snapshot.syncs = {k: random_assessment(rng, at) for k in rng.sample(keys, rng.randint(0, len(keys)))}
        case "nothing":
            snapshot.version += 1


@pytest.mark.parametrize("seed", range(12))
def test_incremental_body_equals_a_full_prometheus_client_render_across_changes(seed: int) -> None:
    rng = random.Random(seed)
    keys = [(UUID(int=rng.getrandbits(128)), kind) for kind in KINDS for _ in range(rng.randint(1, 4))]
    snapshot = Snapshot()
    metrics = Exposition(Instruments(CollectorRegistry(), "0.1.0"), snapshot, Fleet(block_keys=rng.randint(1, 4)))
    for step in range(25):
        mutate(rng, snapshot, keys, step)
        text, body = metrics.render(), metrics.render(compressed=True)
        fleet = text.split(b"# HELP integration_health_checks_total")[0]
        assert fleet == reference_fleet(snapshot), f"seed {seed}, step {step}"
        assert gzip.decompress(body) == text


def fleet_of(n: int, block_keys: int) -> tuple[Exposition, Snapshot, list[IntegrationResult]]:
    snapshot = Snapshot()
    results = [IntegrationResult(UUID(int=i), "http", make_result(HealthStatus.HEALTHY, 40, T)) for i in range(n)]
    snapshot.update(results)
    snapshot.modes = {r.org_id_key(): "active" for r in results}
    metrics = Exposition(Instruments(CollectorRegistry(), "0.1.0"), snapshot, Fleet(block_keys=block_keys))
    metrics.render(compressed=True)
    return metrics, snapshot, results


def test_only_changed_keys_are_formatted_and_only_their_blocks_compressed_again(monkeypatch) -> None:
    metrics, snapshot, results = fleet_of(10, block_keys=2)
    assert metrics.fleet.rendered == 30  # 10 results + 10 modes + 10 maintenance flags
    compressed = []
    monkeypatch.setattr(gzip, "compress", lambda data, **kw: compressed.append(data) or zlib_gzip(data))
    slower = replace(results[3], result=replace(results[3].result, latency_ms=41))
    snapshot.update([slower])  # the same result but for its latency
    assert gzip.decompress(metrics.render(compressed=True)).count(b" 0.041\n") == 1
    assert metrics.fleet.rendered == 31
    fleet_members = [d for d in compressed if d.startswith(b"integration_health_latency_seconds")]
    assert len(fleet_members) == 1 and fleet_members[0].count(b"\n") == 2, "one block of 2 keys, one family"
    assert len(compressed) == 2, "that member and the instruments' one"
    snapshot.version += 1  # a version bump without a change formats nothing
    metrics.render(compressed=True)
    assert metrics.fleet.rendered == 31


def zlib_gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def test_replacing_a_mapping_bumps_the_version_so_the_new_modes_are_served() -> None:
    metrics, snapshot, results = fleet_of(3, block_keys=2)
    snapshot.modes = {**snapshot.modes, results[0].org_id_key(): "passive"}
    assert b'mode="passive",org_id="00000000-0000-0000-0000-000000000000"} 1.0' in metrics.render()


async def test_the_fleet_is_refreshed_in_a_thread_soon_after_a_change_so_the_scrape_formats_nothing() -> None:
    metrics, snapshot, results = fleet_of(4, block_keys=2)
    threads = []
    refresh = metrics.fleet.refresh
    metrics.fleet.refresh = lambda frozen, changed: threads.append(threading.current_thread()) or refresh(frozen,
                                                                                                          changed)
    keeper = asyncio.create_task(metrics.keep_fresh(interval_s=0.001))
    try:
        snapshot.update([replace(results[0], result=make_result(HealthStatus.DEGRADED, 9, T + timedelta(minutes=1)))])
        while not threads:
            await asyncio.sleep(0.001)
        await metrics.refresh_off_loop()  # waits for the keeper's refresh, if it is still running
        formatted = metrics.fleet.rendered
        body = await metrics.render_off_loop(compressed=True)
    finally:
        keeper.cancel()
    assert threads == [threads[0]] and threads[0] is not threading.main_thread()
    assert metrics.fleet.rendered == formatted, "the scrape found the work done"
    assert b'integration_health_status{integration_type="http",org_id="00000000-0000-0000-0000-000000000000",' \
           b'status="degraded"} 1.0' in gzip.decompress(body)


async def test_a_failing_refresh_is_logged_and_the_keeper_lives_on(caplog) -> None:
    metrics, snapshot, results = fleet_of(2, block_keys=2)
    failures = []

    def refresh(frozen, changed=None):
        failures.append(frozen.version)
        raise ValueError("a family that cannot read its entry")

    metrics.fleet.refresh = refresh
    keeper = asyncio.create_task(metrics.keep_fresh(interval_s=0.001))
    snapshot.version += 1
    while "refreshing the /metrics exposition failed" not in caplog.text:
        await asyncio.sleep(0.001)
    assert failures and not keeper.done(), "the keeper must outlive one failure"
    keeper.cancel()


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
    rendered = metrics.fleet.rendered
    now[0] = XLEDGER_UPGRADE.ends_at  # the end is exclusive; no cycle, no new result
    assert maintenance_gauge(metrics.render().decode())[("aaaaaaaa", "xledger")] == "0.0"
    assert metrics.fleet.rendered == rendered + 1, "only the key whose flag changed is formatted again"


def test_a_batch_of_results_is_patched_in_without_reading_the_whole_fleet() -> None:
    reads: list[str] = []
    sources = [replace(s, rows=lambda snap, s=s: reads.append(s.families[0].name) or s.rows(snap)) for s in SOURCES]
    snapshot = Snapshot()
    results = [IntegrationResult(UUID(int=i), "http", make_result(HealthStatus.HEALTHY, 40, T)) for i in range(10)]
    snapshot.update(results)
    snapshot.modes = {r.org_id_key(): "active" for r in results}
    metrics = Exposition(Instruments(CollectorRegistry(), "0.1.0"), snapshot, Fleet(sources, block_keys=3))
    metrics.render(compressed=True)
    reads.clear()
    formatted = metrics.fleet.rendered
    later = T + timedelta(minutes=15)
    snapshot.update([replace(results[4], result=make_result(HealthStatus.UNREACHABLE, 9, later)),
                     replace(results[7], result=make_result(HealthStatus.HEALTHY, 41, later))])
    text = metrics.render()
    assert reads == [], "a batch of results reads its keys only"
    assert metrics.fleet.rendered == formatted + 2
    assert text.split(b"# HELP integration_health_checks_total")[0] == reference_fleet(snapshot)
    assert gzip.decompress(metrics.render(compressed=True)) == text
    snapshot.retain({r.org_id_key() for r in results[1:]})
    assert b'org_id="00000000-0000-0000-0000-000000000000"' not in metrics.render()
    assert "integration_health_status" in reads, "a key gone moves the rest: everything is compared"


def test_a_removal_moves_the_other_keys_lines_without_formatting_them_again(monkeypatch) -> None:
    metrics, snapshot, results = fleet_of(10, block_keys=3)
    formatted = metrics.fleet.rendered
    snapshot.retain({r.org_id_key() for r in results if r is not results[1]})
    text = metrics.render()
    assert metrics.fleet.rendered == formatted, "the keys kept were copied out of the old blocks"
    assert text.split(b"# HELP integration_health_checks_total")[0] == reference_fleet(snapshot)
    assert gzip.decompress(metrics.render(compressed=True)) == text


@pytest.mark.parametrize("block_keys", [1, 2])  # the block's only key changed, or one of its two
def test_a_block_whose_lines_come_out_the_same_is_not_compressed_again(monkeypatch, block_keys: int) -> None:
    metrics, snapshot, results = fleet_of(4, block_keys=block_keys)
    compressed = []
    monkeypatch.setattr(gzip, "compress", lambda data, **kw: compressed.append(data) or zlib_gzip(data))
    snapshot.update([replace(results[0], result=replace(results[0].result))])  # a new result, equal lines
    metrics.render(compressed=True)
    assert len(compressed) == 1, "the instruments' member only"


def test_a_failed_refresh_leaves_nothing_half_patched_for_the_next_one(monkeypatch) -> None:
    metrics, snapshot, results = fleet_of(6, block_keys=2)
    later = T + timedelta(minutes=15)
    snapshot.update([replace(r, result=make_result(HealthStatus.DEGRADED, 9, later)) for r in results[:3]])
    monkeypatch.setattr(gzip, "compress", lambda data, **kw: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(MemoryError):
        metrics.render()
    monkeypatch.undo()
    text = metrics.render()
    assert text.split(b"# HELP integration_health_checks_total")[0] == reference_fleet(snapshot)


class HeldRefresh:
    """A fleet refresh that waits in its thread until the test lets it go."""

    def __init__(self, fleet: Fleet) -> None:
        self.refresh, self.started, self.go = fleet.refresh, threading.Event(), threading.Event()
        fleet.refresh = self  # type: ignore[method-assign]

    def __call__(self, frozen: Snapshot, changed=None) -> None:
        self.started.set()
        self.go.wait(10)
        self.refresh(frozen, changed)


async def test_a_scrape_during_a_long_refresh_is_served_the_last_body_while_it_is_recent_enough() -> None:
    now = [1000.0]
    metrics, snapshot, results = fleet_of(4, block_keys=2)
    metrics.monotonic, metrics.wait_s, metrics.max_behind_s = lambda: now[0], 0.01, 15.0
    before = await metrics.render_off_loop()  # the body is known current at 1000.0
    held = HeldRefresh(metrics.fleet)
    snapshot.update([replace(results[0], result=make_result(HealthStatus.DEGRADED, 9, T + timedelta(minutes=1)))])
    now[0] += 15.0
    assert b"integration_health_metrics_behind_seconds 0.0" in before
    served = await metrics.render_off_loop()
    fleet_part = served.split(b"# HELP integration_health_checks_total")[0]
    assert fleet_part == before.split(b"# HELP integration_health_checks_total")[0], \
        "the refresh is under way: the last body, 15 s behind"
    assert b"integration_health_metrics_behind_seconds 15.0" in served, "and the scrape says how far behind"
    assert held.started.is_set()
    now[0] += 0.1
    late = asyncio.create_task(metrics.render_off_loop())
    await asyncio.sleep(0.05)
    assert not late.done(), "more than 15 s behind: the scrape waits for the refresh"
    held.go.set()
    current = await late
    assert b'status="degraded"} 1.0' in current and b"integration_health_metrics_behind_seconds 0.0" in current


async def test_a_scrape_that_waited_for_the_refresh_says_it_is_current_whatever_another_was_served() -> None:
    """The behind gauge is one series shared by concurrent scrapes: one served the last body meanwhile must
    not make a scrape that got the current body say it is behind."""
    now = [1000.0]
    metrics, snapshot, results = fleet_of(4, block_keys=2)
    metrics.monotonic, metrics.wait_s = lambda: now[0], 0.01
    await metrics.render_off_loop()  # known current at 1000.0
    held = HeldRefresh(metrics.fleet)
    snapshot.update([replace(results[0], result=make_result(HealthStatus.DEGRADED, 9, T + timedelta(minutes=1)))])
    now[0] += 5.0
    metrics.max_behind_s = -1.0  # this scrape waits for the refresh
    waiting = asyncio.create_task(metrics.render_off_loop())
    await asyncio.to_thread(held.started.wait, 10)
    await asyncio.sleep(0.05)
    metrics.max_behind_s = 15.0  # this one is served the last body, 5 s behind
    assert b"integration_health_metrics_behind_seconds 5.0" in await metrics.render_off_loop()
    held.go.set()
    current = await waiting
    assert b'status="degraded"} 1.0' in current and b"integration_health_metrics_behind_seconds 0.0" in current


async def test_a_scrape_cancelled_while_it_waits_leaves_the_refresh_running_for_the_next() -> None:
    metrics, snapshot, results = fleet_of(2, block_keys=2)
    held = HeldRefresh(metrics.fleet)
    snapshot.update([replace(results[1], result=make_result(HealthStatus.DEGRADED, 9, T + timedelta(minutes=1)))])
    metrics.max_behind_s = -1.0  # never serve a body behind the snapshot
    scrape = asyncio.create_task(metrics.render_off_loop(compressed=True))
    await asyncio.to_thread(held.started.wait, 10)
    scrape.cancel()
    with pytest.raises(asyncio.CancelledError):
        await scrape
    held.go.set()
    body = await metrics.render_off_loop()
    assert b'status="degraded"} 1.0' in body and metrics.fleet.rendered == 7, "one refresh, not two"


def test_the_keeper_rests_after_a_long_refresh_but_not_so_long_that_the_body_falls_too_far_behind() -> None:
    assert pause(0.0, 0.1, 0.25, 15.0) == 0.1, "nothing to do: poll"
    assert pause(1.0, 0.1, 0.25, 15.0) == 3.0, "a quarter of a core"
    assert pause(4.0, 0.1, 0.25, 15.0) == 7.0, "not 12 s: 4 + 7 + the next 4 s is 15 s behind at most"
    assert pause(9.0, 0.1, 0.25, 15.0) == 9.0, "never more than half a core, however far behind"
