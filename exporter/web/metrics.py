"""The /metrics exposition: a Collector that renders the snapshot, cached per snapshot version.

Sample of what the collector renders, per integration:

    integration_health_status{org_id="6f1c…",integration_type="xledger",status="healthy"} 1.0
    integration_health_status{org_id="6f1c…",integration_type="xledger",status="degraded"} 0.0
    integration_health_status{org_id="6f1c…",integration_type="xledger",status="unreachable"} 0.0
    integration_health_latency_seconds{org_id="6f1c…",integration_type="xledger"} 0.182
    integration_health_last_check_timestamp_seconds{org_id="6f1c…",integration_type="xledger"} 1.7638e+09
    integration_health_consecutive_failures{org_id="6f1c…",integration_type="xledger"} 0.0
    integration_health_status_changes_total{org_id="6f1c…",integration_type="xledger"} 2.0
    integration_health_next_check_timestamp_seconds{org_id="6f1c…",integration_type="xledger"} 1.7638e+09
    integration_health_failure_reason{org_id="6f1c…",integration_type="fiken",reason="rate_limited"} 1.0
    integration_health_tls_cert_expiry_timestamp_seconds{org_id="6f1c…",integration_type="http"} 1.79e+09
    integration_health_maintenance{org_id="6f1c…",integration_type="xledger"} 0.0

integration_health_maintenance is decided at each scrape from the windows the scheduler last loaded, so a
window starts and ends on time between cycles; the cached render is keyed on the windows in force too.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.core import maintenance
from exporter.core.model import HealthStatus, utcnow
from exporter.core.syncs import SyncState
from exporter.engine.instruments import Instruments
from exporter.engine.snapshot import Snapshot

LABELS = ["org_id", "integration_type"]
STATUSES = [s.value for s in HealthStatus]
SYNC_STATES = [s.value for s in SyncState]
MODES = ("active", "passive")


class SnapshotCollector:
    """Builds fresh per-integration families from the snapshot on each scrape; never awaits or queries."""

    def __init__(self, snapshot: Snapshot, at: datetime | None = None) -> None:
        self.snapshot, self.at = snapshot, at or utcnow()  # `at`: the instant maintenance is judged at

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        status, latency, last, failures, changes, next_, reason, tls, mode, in_window, *sync = families = (
            self._families())
        covered = maintenance.covered(self.snapshot.windows, self.snapshot.results.keys(), self.at)
        for k, r in self.snapshot.results.items():
            key = [str(r.org_id), r.integration_type]
            for s in STATUSES:
                status.add_metric([*key, s], 1.0 if r.result.status == s else 0.0)
            latency.add_metric(key, r.result.latency_ms / 1000)
            last.add_metric(key, r.result.checked_at.timestamp())
            failures.add_metric(key, r.state.consecutive_failures)
            changes.add_metric(key, self.snapshot.status_changes.get(k, 0))
            if r.state.next_check_at:
                next_.add_metric(key, r.state.next_check_at.timestamp())
            if r.result.reason:
                reason.add_metric([*key, r.result.reason.value], 1.0)
            if r.result.tls_expires_at:
                tls.add_metric(key, r.result.tls_expires_at.timestamp())
            in_window.add_metric(key, 1.0 if k in covered else 0.0)
        for (org_id, kind), m in self.snapshot.modes.items():
            for value in MODES:
                mode.add_metric([str(org_id), kind, value], 1.0 if m == value else 0.0)
        self._collect_syncs(*sync)
        yield from families

    def _collect_syncs(self, state: GaugeMetricFamily, drift: GaugeMetricFamily, success: GaugeMetricFamily,
                       expected: GaugeMetricFamily, lateness: GaugeMetricFamily) -> None:
        for (org_id, kind), a in self.snapshot.syncs.items():
            key = [str(org_id), kind]
            for value in SYNC_STATES:
                state.add_metric([*key, value], 1.0 if a.state == value else 0.0)
            if a.last_run and a.last_run.drift_s is not None:
                drift.add_metric(key, a.last_run.drift_s)
            if a.last_success:
                success.add_metric(key, a.last_success.timestamp())
            if a.next_expected:
                expected.add_metric(key, a.next_expected.timestamp())
            lateness.add_metric(key, a.lateness_s)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily | CounterMetricFamily, ...]:
        return (
            GaugeMetricFamily("integration_health_status", "1 for the integration's current status, 0 for the others",
                              labels=[*LABELS, "status"]),
            GaugeMetricFamily("integration_health_latency_seconds", "Latency of the latest check", labels=LABELS),
            GaugeMetricFamily("integration_health_last_check_timestamp_seconds", "When the latest check finished",
                              labels=LABELS),
            GaugeMetricFamily("integration_health_consecutive_failures",
                              "Failed checks in a row (unreachable, throttled or credentials rejected)", labels=LABELS),
            CounterMetricFamily("integration_health_status_changes",
                                "Times the status changed since the exporter started (flapping)", labels=LABELS),
            GaugeMetricFamily("integration_health_next_check_timestamp_seconds",
                              "When the integration is next due (later than its interval while backing off)",
                              labels=LABELS),
            GaugeMetricFamily("integration_health_failure_reason",
                              "1 for the reason of the latest non-healthy check", labels=[*LABELS, "reason"]),
            GaugeMetricFamily("integration_health_tls_cert_expiry_timestamp_seconds",
                              "notAfter of the server certificate (https targets)", labels=LABELS),
            GaugeMetricFamily("integration_health_mode", "1 for how the integration's health is judged now: "
                              "active (pinged) or passive (from its sync runs)", labels=[*LABELS, "mode"]),
            GaugeMetricFamily("integration_health_maintenance",
                              "1 while a maintenance window covers the integration (its alerts are silenced), "
                              "else 0", labels=LABELS),
            GaugeMetricFamily("integration_health_sync_state", "1 for the state of the integration's scheduled syncs",
                              labels=[*LABELS, "state"]),
            GaugeMetricFamily("integration_health_sync_drift_seconds",
                              "Start of the latest sync run minus its scheduled time", labels=LABELS),
            GaugeMetricFamily("integration_health_sync_last_success_timestamp_seconds",
                              "When the latest successful sync finished", labels=LABELS),
            GaugeMetricFamily("integration_health_sync_next_expected_timestamp_seconds",
                              "When the next sync is expected to start", labels=LABELS),
            GaugeMetricFamily("integration_health_sync_lateness_seconds",
                              "How long the oldest outstanding expected sync is overdue (0 when none is)",
                              labels=LABELS),
        )


def render_fleet(snapshot: Snapshot, at: datetime | None = None) -> tuple[bytes, bytes]:
    """The per-integration series as exposition text and gzipped; touches nothing but `snapshot`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, at))
    text = generate_latest(registry)
    return text, gzip.compress(text, compresslevel=5)


class Exposition:
    """What /metrics serves: the per-integration series from the snapshot, then the service's instruments.

    The per-integration part (tens of thousands of series at scale) changes only when the snapshot does:
    it is rendered once per snapshot version and served from that cache (gzip too). The instruments, a
    few series, are rendered on every scrape.
    """

    def __init__(self, instruments: Instruments, snapshot: Snapshot, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.registry, self.snapshot, self.clock = instruments.registry, snapshot, clock
        self._cache: tuple[Any, bytes, bytes] | None = None  # (what it was rendered from, text, gzip) of the fleet part
        self._render_lock = asyncio.Lock()

    def render(self, compressed: bool = False) -> bytes:
        """The exposition text (or a multi-member gzip of it): cached fleet part + fresh service part."""
        at = self.clock()
        if self.stale(at):
            self._cache = (self._key(at), *render_fleet(self.snapshot, at))
        return self._assemble(compressed)

    async def render_off_loop(self, compressed: bool = False) -> bytes:
        """As render(), but a stale fleet part (~0.9 s at 10,000 integrations) is rendered in a thread
        from a copy of the snapshot, so the event loop keeps serving and checking meanwhile."""
        at = self.clock()
        if self.stale(at):
            async with self._render_lock:  # concurrent scrapes after a cycle wait for one render
                if self.stale(at):
                    key, frozen = self._key(at), self.snapshot.copy()
                    self._cache = (key, *await asyncio.to_thread(render_fleet, frozen, at))
        return self._assemble(compressed)

    def stale(self, at: datetime) -> bool:
        """Whether the cached fleet part is out of date at `at`: the snapshot changed, or a window began or ended."""
        return self._cache is None or self._cache[0] != self._key(at)

    def _key(self, at: datetime) -> tuple[int, frozenset[Any]]:
        return self.snapshot.version, frozenset(w.id for w in maintenance.active(self.snapshot.windows, at))

    def _assemble(self, compressed: bool) -> bytes:
        assert self._cache is not None
        own = generate_latest(self.registry)
        if compressed:  # gzip members concatenate into one valid stream (RFC 1952), so the cache is reused
            return self._cache[2] + gzip.compress(own, compresslevel=5)
        return self._cache[1] + own
