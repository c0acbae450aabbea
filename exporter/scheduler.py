"""The cycle loop: each wall-clock slot, check what is due, record backoff state, publish, persist."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from uuid import UUID

from exporter import schedule
from exporter.collector import Metrics
from exporter.model import Integration, IntegrationResult
from exporter.outbox import Outbox
from exporter.runner import Runner
from exporter.snapshot import Snapshot
from exporter.store import TRANSIENT_ERRORS, Store

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Runs cycles on slot boundaries. Holds the last integration list so checks go on while the
    database is away (their results wait in the outbox)."""

    def __init__(self, *, store: Store, runner: Runner, snapshot: Snapshot, metrics: Metrics, outbox: Outbox,
                 interval_s: int, type_intervals: Mapping[str, int] = schedule.DEFAULT_TYPE_INTERVALS,
                 clock: Callable[[], datetime] = utcnow, rng: Callable[[], float] = random.random,
                 on_cycle: Callable[[datetime, Sequence[IntegrationResult]], Awaitable[None] | None] | None = None,
                 ) -> None:
        self.store, self.runner, self.snapshot, self.metrics, self.outbox = store, runner, snapshot, metrics, outbox
        self.interval_s, self.type_intervals, self.clock, self.rng = interval_s, type_intervals, clock, rng
        self.on_cycle = on_cycle
        self.integrations: list[Integration] = []
        self.last_slot: datetime | None = None
        self.cycle_task: asyncio.Task[None] | None = None

    def _last_latency(self, integration: Integration) -> int:
        last = self.snapshot.results.get((integration.org_id, integration.integration_type))
        return last.result.latency_ms if last else 0

    def _interval(self, integration: Integration) -> int:
        return schedule.interval_for(integration, self.interval_s, self.type_intervals)

    async def run_cycle(self, slot: datetime, due_at: datetime) -> list[IntegrationResult]:
        """One cycle for `slot`: load configs (or reuse the last), check what is due, publish, persist."""
        started = self.clock()
        drift = (started - due_at).total_seconds()
        self.metrics.cycle_drift.set(drift)
        log.info("cycle start", extra={"slot": slot.isoformat(), "due_at": due_at.isoformat(),
                                       "started_at": started.isoformat(), "drift_s": round(drift, 3)})
        try:
            self.integrations = await self.store.load_integrations()
        except TRANSIENT_ERRORS as exc:
            log.warning("cannot load integrations (%s); checking the %d known from the last cycle",
                        type(exc).__name__, len(self.integrations))
        self.snapshot.retain({(i.org_id, i.integration_type) for i in self.integrations})
        active = [i for i in self.integrations if i.health_mode == "active"]
        todo = schedule.due(active, slot, self.interval_s, self.type_intervals, self.snapshot.states())
        todo.sort(key=self._last_latency, reverse=True)  # slowest first: a hang's 10 s overlaps the rest
        results = await self.check(todo, slot)
        duration = (self.clock() - started).total_seconds()
        self.metrics.cycle_duration.set(duration)
        self.metrics.cycles.labels("success").inc()
        self.metrics.cycle_last_success.set(self.clock().timestamp())
        self.last_slot = slot
        log.info("cycle done", extra={"slot": slot.isoformat(), "checked": len(results),
                                      "duration_s": round(duration, 3), "queued": self.outbox.pending})
        if self.on_cycle:
            outcome = self.on_cycle(slot, results)
            if outcome is not None:
                await outcome
        return results

    async def check(self, integrations: Sequence[Integration], slot: datetime) -> list[IntegrationResult]:
        """Check, attach the next backoff state, publish to the snapshot and hand to the outbox."""
        results = await self.runner.run(integrations)
        states = self.snapshot.states()
        by_key = {(i.org_id, i.integration_type): i for i in integrations}
        stated = []
        for r in results:
            key = (r.org_id, r.integration_type)
            state = schedule.after_check(states.get(key), r.result, slot, self._interval(by_key[key]), self.rng)
            stated.append(IntegrationResult(r.org_id, r.integration_type, r.result, state.consecutive_failures,
                                            state.next_check_at))
        self.snapshot.update(stated)
        self.metrics.observe(stated)
        await self.outbox.submit(stated, slot)
        return stated

    async def run_org_now(self, org_id: UUID) -> list[IntegrationResult]:
        """'Test connection': check every enabled active integration of one org now, whatever its schedule."""
        integrations = [i for i in await self.store.load_integrations(org_id) if i.health_mode == "active"]
        return await self.check(integrations, schedule.slot_start(self.clock(), self.interval_s))

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run a cycle for each new slot until `stop` is set; a late start runs once, for the latest slot."""
        due_at = self.clock()  # the first cycle is due now, if its slot has not been checked yet
        while not stop.is_set():
            now = self.clock()
            slot = schedule.slot_start(now, self.interval_s)
            if self.last_slot is None or slot > self.last_slot:
                self.cycle_task = asyncio.create_task(self.run_cycle(slot, max(due_at, slot)))
                try:
                    await asyncio.shield(self.cycle_task)  # shutdown cancels the loop, not the cycle
                except Exception:
                    self.metrics.cycles.labels("failure").inc()
                    log.exception("cycle failed", extra={"slot": slot.isoformat()})
                    self.last_slot = slot  # do not spin on a failing slot; the next slot tries again
                continue
            due_at = schedule.next_slot(now, self.interval_s)
            wait = max(0.0, (due_at - now).total_seconds())
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    def restore(self, results: Sequence[IntegrationResult]) -> None:
        """Load the last known results (from the database) so a restart neither blanks nor re-checks."""
        self.snapshot.update(results)
        if results:
            newest = max(r.result.checked_at for r in results)
            self.last_slot = schedule.slot_start(newest, self.interval_s)
