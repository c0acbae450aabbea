"""The service's own counters and gauges, which the engine records into (the exposition lives in web/metrics.py)."""

from __future__ import annotations

import collections
from collections.abc import Collection, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from exporter.core.model import IntegrationResult
from exporter.core.warmups import WarmupOutcome

COLD_START_SOURCES = ("warmup", "sync_run")  # measured by our warm-up; reported by the sync side

WEBHOOK_OUTCOMES = ("delivered", "failed", "dead", "blocked", "held")


class Instruments:
    """A few service-level series in a registry of their own (one per app, one per test)."""

    def __init__(self, registry: CollectorRegistry, version: str, known_types: Collection[str] = ()) -> None:
        disable_created_metrics()  # `_created` series double the output and say nothing to an operator
        self.registry = registry
        self.known_types = frozenset(known_types)
        kw = {"registry": registry}
        self.checks = Counter("integration_health_checks", "Checks run, by type and resulting status",
                              ["integration_type", "status"], **kw)
        self.check_duration = Histogram("integration_health_check_duration_seconds", "Duration of checks",
                                        ["integration_type"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), **kw)
        self.cycle_duration = Gauge("integration_health_cycle_duration_seconds", "Duration of the latest cycle", **kw)
        self.cycle_drift = Gauge("integration_health_cycle_drift_seconds",
                                 "How late the latest cycle started after it was due", **kw)
        self.cycle_last_success = Gauge("integration_health_cycle_last_success_timestamp_seconds",
                                        "When the latest successful cycle finished", **kw)
        self.cycles = Counter("integration_health_cycles", "Cycles run, by outcome", ["outcome"], **kw)
        self.persist_errors = Counter("integration_health_persist_errors",
                                      "Attempts to write results that failed (results are kept and retried)", **kw)
        self.persist_queue = Gauge("integration_health_persist_queue_results",
                                   "Results waiting to be written to the database", **kw)
        self.not_checked = Counter("integration_health_checks_not_run",
                                   "Checks not made: the credential store was unavailable, or the vendor is down "
                                   "for everyone and only canaries are checked; the last result stands",
                                   ["cause"], **kw)
        self.not_checked.labels("credential_unavailable")
        self.not_checked.labels("vendor_incident")
        self.vendor_incident = Gauge("integration_health_vendor_incident",
                                     "1 while the integration type's vendor is down for many organisations at once "
                                     "(only a few canaries are checked meanwhile)", ["integration_type"], **kw)
        self.vendor_failing_ratio = Gauge("integration_health_vendor_failing_ratio",
                                          "Share of the type's integrations whose latest check failed as "
                                          "infrastructure (network, TLS, timeout, 5xx)", ["integration_type"], **kw)
        for kind in sorted(self.known_types):
            self.vendor_incident.labels(kind).set(0)
            self.vendor_failing_ratio.labels(kind).set(0)
        self.persist_rejected = Counter("integration_health_persist_rejected_results",
                                        "Results the database refused as invalid data, dropped alone (the rest of "
                                        "their batch is written)", **kw)
        self.persist_dropped = Counter("integration_health_persist_dropped_results",
                                       "Results dropped because the write queue was full", **kw)
        Gauge("integration_health_build_info", "Build information", ["version"], **kw).labels(version).set(1)
        self.interval = Gauge("integration_health_check_interval_seconds",
                              "The cycle's interval (alert rules scale their staleness thresholds by it)", **kw)
        self.loop_lag = Gauge("integration_health_event_loop_lag_seconds",
                              "Longest delay of the event loop over the last minute: how late a 0.25 s sleep "
                              "woke (checks, scrapes and probes wait this long too)", **kw)
        self.metrics_behind = Gauge("integration_health_metrics_behind_seconds",
                                    "How far behind the latest results the per-integration series of the latest "
                                    "scrape were: 0 when current; up to 15 s while a large cycle's results are "
                                    "being formatted", **kw)
        for outcome in ("success", "failure"):
            self.cycles.labels(outcome)
        # Per organisation the warm-ups show in the snapshot's gauges; these two stay a few series.
        self.sync_warmups = Counter("integration_health_sync_warmups", "Warm-up requests sent before scheduled "
                                    "syncs (or refused before sending), by outcome", ["outcome"], **kw)
        for warmup in WarmupOutcome:
            self.sync_warmups.labels(warmup.value)
        self.sync_cold_starts = Counter("integration_health_sync_cold_starts", "Cold starts of sync functions: "
                                        "a warm-up's slow first answer, or a run the sync side reported cold",
                                        ["integration_type", "source"], **kw)
        for kind in sorted(self.known_types):  # present from the start, so increase() sees the first one
            for source in COLD_START_SOURCES:
                self.sync_cold_starts.labels(kind, source)
        self.webhook_deliveries = Counter(
            "integration_health_webhook_deliveries", "Webhook delivery attempts, by outcome: delivered, failed "
            "(retried later), dead (gave up after the last attempt), blocked (refused by the egress policy), held "
            "(not sent: the signing secret does not open with the configured keys; retried, not counted)",
            ["outcome"], **kw)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome)
        self.webhook_pending = Gauge("integration_health_webhook_deliveries_pending",
                                     "Webhook deliveries waiting in the outbox (every replica reports the same total)",
                                     **kw)

    def bounded_type(self, integration_type: str) -> str:
        """A registered type as is, anything else as `other`, so a bad row cannot add series."""
        return integration_type if integration_type in self.known_types else "other"

    def count_cold_starts(self, integration_type: str, source: str, n: int = 1) -> None:
        if n:
            self.sync_cold_starts.labels(self.bounded_type(integration_type), source).inc(n)

    def observe(self, results: Sequence[IntegrationResult]) -> None:
        """Count each result by type and status; an unregistered type counts as `other`, so labels stay bounded.
        Labels are looked up once per type and status in the batch, not once per result."""
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        durations: dict[str, list[float]] = {}
        for r in results:
            counts[r.integration_type, r.result.status.value] += 1
            durations.setdefault(r.integration_type, []).append(r.result.latency_ms / 1000)
        for (kind, status), n in counts.items():
            self.checks.labels(self.bounded_type(kind), status).inc(n)
        for kind, seconds in durations.items():
            histogram = self.check_duration.labels(self.bounded_type(kind))
            for s in seconds:
                histogram.observe(s)
