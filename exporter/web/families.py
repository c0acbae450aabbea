"""The per-integration metric families /metrics serves: one table, in exposition order.

To add a family, add a `Family` to the source whose entry it reads (or a `Source` for a new mapping of
the snapshot): its name, help, type, extra labels, and a function from one entry to its samples.
Sample of what the table renders, per integration:

    integration_health_status{integration_type="xledger",org_id="6f1c…",status="healthy"} 1.0
    integration_health_latency_seconds{integration_type="xledger",org_id="6f1c…"} 0.182
    integration_health_last_check_timestamp_seconds{integration_type="xledger",org_id="6f1c…"} 1.7638e+09
    integration_health_consecutive_failures{integration_type="xledger",org_id="6f1c…"} 0.0
    integration_health_status_changes_total{integration_type="xledger",org_id="6f1c…"} 2.0
    integration_health_next_check_timestamp_seconds{integration_type="xledger",org_id="6f1c…"} 1.7638e+09
    integration_health_failure_reason{integration_type="fiken",org_id="6f1c…",reason="rate_limited"} 1.0
    integration_health_tls_cert_expiry_timestamp_seconds{integration_type="http",org_id="6f1c…"} 1.79e+09
    integration_health_credential_expiry_timestamp_seconds{integration_type="dynamics365",org_id="6f1c…"} 1.81e+09
    integration_health_mode{integration_type="xledger",mode="active",org_id="6f1c…"} 1.0
    integration_health_sync_state{integration_type="xledger",org_id="6f1c…",state="on_schedule"} 1.0
    integration_health_sync_warmup_latency_seconds{integration_type="xledger",org_id="6f1c…"} 2.61
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from exporter.core.model import HealthStatus, IntegrationResult
from exporter.core.syncs import SyncAssessment, SyncState
from exporter.engine.snapshot import Key, Snapshot
from exporter.web.textformat import MISSING, Family, Sample, Source

INTEGRATION = ("org_id", "integration_type")
STATUSES = tuple(s.value for s in HealthStatus)
SYNC_STATES = tuple(s.value for s in SyncState)
MODES = ("active", "passive")


@dataclass(frozen=True, slots=True, eq=False)
class Checked:
    """An integration's latest result with its status-change count: the entry of the results source.

    Equal when it is the same (immutable) result: comparing results field by field would cost more than
    formatting them again."""

    latest: IntegrationResult
    status_changes: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checked) and (self.latest is other.latest
                                               and self.status_changes == other.status_changes)

    __hash__ = None  # type: ignore[assignment]


def checked(snapshot: Snapshot) -> dict[Key, Checked]:
    changes = snapshot.status_changes
    return {k: Checked(r, changes.get(k, 0)) for k, r in snapshot.results.items()}


def one_checked(snapshot: Snapshot, key: Key) -> Checked | object:
    latest = snapshot.results.get(key)
    return MISSING if latest is None else Checked(latest, snapshot.status_changes.get(key, 0))


def maintained(snapshot: Snapshot, key: Key) -> bool | object:
    return MISSING if key not in snapshot.results else key in snapshot.in_maintenance


def integration_labels(key: Key) -> tuple[str, str]:
    return str(key[0]), key[1]


def one_hot(choices: Iterable[str], current: str) -> list[Sample]:
    """1 for `current`, 0 for each other choice: one series per choice, labelled with it."""
    return [((c,), 1.0 if c == current else 0.0) for c in choices]


def value(v: float) -> list[Sample]:
    return [((), v)]


def timestamp(at: datetime | None) -> list[Sample]:
    """Seconds since the epoch; no sample when there is no time to tell."""
    return [] if at is None else [((), at.timestamp())]


def _drift(a: SyncAssessment) -> list[Sample]:
    return [] if a.last_run is None or a.last_run.drift_s is None else [((), a.last_run.drift_s)]


def _invocation(a: SyncAssessment) -> list[Sample]:
    ms = a.last_run.invocation_latency_ms if a.last_run else None
    return [] if ms is None else [((), ms / 1000)]


def _reason(c: Checked) -> list[Sample]:
    reason = c.latest.result.reason
    return [] if reason is None else [((reason.value,), 1.0)]


RESULTS = Source(checked, INTEGRATION, integration_labels, (
    Family("integration_health_status", "1 for the integration's current status, 0 for the others", "gauge",
           lambda c: one_hot(STATUSES, c.latest.result.status), ("status",)),
    Family("integration_health_latency_seconds", "Latency of the latest check", "gauge",
           lambda c: value(c.latest.result.latency_ms / 1000)),
    Family("integration_health_last_check_timestamp_seconds", "When the latest check finished", "gauge",
           lambda c: timestamp(c.latest.result.checked_at)),
    Family("integration_health_consecutive_failures",
           "Failed checks in a row (unreachable, throttled or credentials rejected)", "gauge",
           lambda c: value(c.latest.state.consecutive_failures)),
    Family("integration_health_status_changes_total",
           "Times the status changed since the exporter started (flapping)", "counter",
           lambda c: value(c.status_changes)),
    Family("integration_health_next_check_timestamp_seconds",
           "When the integration is next due (later than its interval while backing off)", "gauge",
           lambda c: timestamp(c.latest.state.next_check_at)),
    Family("integration_health_failure_reason", "1 for the reason of the latest non-healthy check", "gauge",
           _reason, ("reason",)),
    Family("integration_health_tls_cert_expiry_timestamp_seconds",
           "notAfter of the server certificate (https targets)", "gauge",
           lambda c: timestamp(c.latest.result.tls_expires_at)),
    Family("integration_health_credential_expiry_timestamp_seconds",
           "When the integration's credential expires (vault metadata, or the vendor's own record), where known",
           "gauge", lambda c: timestamp(c.latest.result.credential_expires_at)),
), entry=one_checked)

MODE = Source(lambda s: s.modes, INTEGRATION, integration_labels, (
    Family("integration_health_mode", "1 for how the integration's health is judged now: "
           "active (pinged) or passive (from its sync runs)", "gauge", lambda m: one_hot(MODES, m), ("mode",)),
), inputs=lambda s: (s.modes,))

SYNCS = Source(lambda s: s.syncs, INTEGRATION, integration_labels, (
    Family("integration_health_sync_state", "1 for the state of the integration's scheduled syncs", "gauge",
           lambda a: one_hot(SYNC_STATES, a.state), ("state",)),
    Family("integration_health_sync_drift_seconds", "Start of the latest sync run minus its scheduled time",
           "gauge", _drift),
    Family("integration_health_sync_last_success_timestamp_seconds", "When the latest successful sync finished",
           "gauge", lambda a: timestamp(a.last_success)),
    Family("integration_health_sync_next_expected_timestamp_seconds", "When the next sync is expected to start",
           "gauge", lambda a: timestamp(a.next_expected)),
    Family("integration_health_sync_lateness_seconds",
           "How long the oldest outstanding expected sync is overdue (0 when none is)", "gauge",
           lambda a: value(a.lateness_s)),
    Family("integration_health_sync_invocation_latency_seconds",
           "How long the sync function took to answer, as the latest run reported it", "gauge", _invocation),
), inputs=lambda s: (s.syncs,))

WARMUPS = Source(lambda s: s.warmups, INTEGRATION, integration_labels, (
    Family("integration_health_sync_warmup_latency_seconds",
           "First answer of the latest warm-up before a scheduled sync", "gauge",
           lambda w: [] if w.latency_s is None else value(w.latency_s)),
    Family("integration_health_sync_warmup_consecutive_failures",
           "Warm-ups before scheduled syncs that failed in a row", "gauge", lambda w: value(w.consecutive_failures)),
), inputs=lambda s: (s.warmups,))

# 1 while a maintenance window covers the integration (Snapshot.judge_maintenance, at each scrape), else 0:
# one series per integration with a result, as integration_health_status (alert rules use `unless` on it).
MAINTENANCE = Source(lambda s: {k: k in s.in_maintenance for k in s.results}, INTEGRATION, integration_labels, (
    Family("integration_health_maintenance", "1 while a maintenance window covers the integration (its alerts are "
           "silenced), else 0", "gauge", lambda covered: value(1.0 if covered else 0.0)),
), inputs=lambda s: (s.in_maintenance,), entry=maintained)

SOURCES = (RESULTS, MODE, SYNCS, WARMUPS, MAINTENANCE)
