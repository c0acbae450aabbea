"""The cycle loop: each wall-clock slot, check what is due, record backoff state, publish, persist."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from exporter.core import concurrency, maintenance, policy, syncs
from exporter.core.incidents import IncidentRules
from exporter.core.model import (
    CheckState,
    HealthResult,
    HealthStatus,
    Integration,
    IntegrationResult,
    Reason,
    make_result,
    utcnow,
)
from exporter.engine.canaries import VendorWatch
from exporter.engine.handoff import Handoff
from exporter.engine.instruments import Instruments
from exporter.engine.leases import ShardLeases, shard_of
from exporter.engine.outbox import Outbox
from exporter.engine.runner import Runner
from exporter.engine.snapshot import Key, Snapshot, key_of
from exporter.storage.store import TRANSIENT_ERRORS, Store

log = logging.getLogger(__name__)


CHUNK = 256  # results stated and shown between two turns of the event loop


def reuse_unchanged(before: Sequence[Integration], loaded: list[Integration]) -> list[Integration]:
    """The loaded rows, each unchanged one as the object already held: the new copy dies at once, by reference
    counting, instead of surviving the cycle for the full collection after it to walk (engine/heap.py)."""
    if not before:
        return loaded
    held = {key_of(i): i for i in before}
    return [i if (old := held.get(key_of(i))) is None or old != i else old for i in loaded]


def slowness(r: IntegrationResult) -> int:
    return r.result.latency_ms // 1000


class Scheduler:
    """Runs cycles on slot boundaries. Holds the last integration list so checks go on while the
    database is away (their results wait in the outbox)."""

    def __init__(self, *, store: Store, runner: Runner, snapshot: Snapshot, instruments: Instruments, outbox: Outbox,
                 interval_s: int, type_intervals: Mapping[str, int] | None = None,
                 clock: Callable[[], datetime] = utcnow, rng: Callable[[], float] = random.random,
                 on_cycle: Callable[[datetime, Sequence[IntegrationResult]], Awaitable[None] | None] | None = None,
                 passive_types: Collection[str] = (), fallback_after: int = 3, passive_cooldown_s: int = 86400,
                 shards: ShardLeases | None = None, load_timeout_s: float = 15.0,
                 backoff: policy.BackoffCaps = policy.DEFAULT_BACKOFF,
                 incidents: IncidentRules | None = IncidentRules(),
                 read_ahead: Callable[[Sequence[Integration]], AbstractAsyncContextManager[None]] | None = None
                 ) -> None:
        self.read_ahead = read_ahead  # entered before checks start, left after (services: credentials ahead)
        self.shards = shards  # None: this replica checks every organisation
        self.load_timeout_s = load_timeout_s
        self.backoff = backoff
        self.passive_types, self.fallback_after = frozenset(passive_types), fallback_after
        self.passive_cooldown_s = passive_cooldown_s
        self._seen_runs: dict[tuple[UUID, str], tuple[datetime, str]] = {}
        self._cold_counted: dict[tuple[UUID, str], frozenset[datetime]] = {}  # reported cold starts counted
        self.store, self.runner, self.snapshot, self.instruments, self.outbox = store, runner, snapshot, instruments, outbox
        self.interval_s, self.type_intervals, self.clock, self.rng = interval_s, type_intervals or {}, clock, rng
        self.on_cycle = on_cycle
        self.vendors = VendorWatch(incidents, instruments)  # vendor-wide incidents and their canaries
        self._awaiting: dict[Key, IntegrationResult] = {}  # stated, held back for the slot's incident decision
        self._states: dict[CheckState, CheckState] = {}  # the states a _run stated, each once (see _stated)
        self.integrations: list[Integration] = []
        self.loaded = False  # whether the integration list was ever loaded (else a restart's restored status stands)
        self.last_slot: datetime | None = None
        self.cycle_task: asyncio.Task[None] | None = None

    def _slowness(self, integration: Integration) -> int:
        """Whole seconds the last check took: checks start slowest first by it, in the snapshot's order within."""
        last = self.snapshot.results.get(key_of(integration))
        return slowness(last) if last else 0

    def _interval(self, integration: Integration) -> int:
        return policy.interval_for(integration, self.interval_s, self.type_intervals)

    async def run_cycle(self, slot: datetime, due_at: datetime) -> list[IntegrationResult]:
        """One cycle for `slot`: load configs (or reuse the last), check what is due, publish, persist."""
        started = self.clock()
        drift = (started - due_at).total_seconds()
        self.instruments.cycle_drift.set(drift)
        log.info("cycle start", extra={"slot": slot.isoformat(), "due_at": due_at.isoformat(),
                                       "started_at": started.isoformat(), "drift_s": round(drift, 3)})
        windows = asyncio.create_task(self.load_windows())  # beside the integrations: one timeout, not two
        try:
            async with asyncio.timeout(self.load_timeout_s):  # a stalled database must not stall the checks
                loaded = await self.store.load_integrations()
            if self.shards is not None:
                await self.shards.maintain()
                loaded = [i for i in loaded if self.shards.owns(i.org_id)]
            self.integrations, self.loaded = reuse_unchanged(self.integrations, loaded), True
        except TRANSIENT_ERRORS as exc:
            if not self.loaded:  # nothing known to check yet: fail the cycle, keep the restored gauges
                raise
            log.warning("cannot load integrations (%s); checking the %d known from the last cycle",
                        type(exc).__name__, len(self.integrations))
        finally:
            await windows
        self.snapshot.retain({(i.org_id, i.integration_type) for i in self.integrations})
        await asyncio.sleep(0)  # each step below walks the fleet: let scrapes and probes in between
        states = self.snapshot.states()
        modes = {key_of(i): "passive" if self.is_passive(i, states.get(key_of(i)), slot) else "active"
                 for i in self.integrations}
        if modes != self.snapshot.modes:  # else the held one stays: no new keys survive for the GC to walk
            self.snapshot.modes = modes
        passive = [i for i in self.integrations if modes[key_of(i)] == "passive"]
        active = [i for i in self.integrations if modes[key_of(i)] == "active"]
        await asyncio.sleep(0)
        passive_results = await self.assess_syncs(passive, slot)
        if passive_results:
            await self.publish(passive_results, slot)
        await asyncio.sleep(0)
        todo = policy.due(active, slot, self.interval_s, self.type_intervals, self._with_evidence(active, slot))
        await asyncio.sleep(0)
        results = await self.check_active(active, todo, slot) + passive_results
        duration = (self.clock() - started).total_seconds()
        self.instruments.cycle_duration.set(duration)
        self.instruments.cycles.labels("success").inc()
        self.instruments.cycle_last_success.set(self.clock().timestamp())
        self.last_slot = slot
        log.info("cycle done", extra={"slot": slot.isoformat(), "checked": len(results),
                                      "duration_s": round(duration, 3), "queued": self.outbox.pending})
        if self.on_cycle:
            outcome = self.on_cycle(slot, results)
            if outcome is not None:
                await outcome
        return results

    def _with_evidence(self, active: Sequence[Integration], slot: datetime) -> dict[tuple[UUID, str], CheckState]:
        """The states that decide what is due, with backoffs ended by a successful sync since the last failure."""
        states = self.snapshot.states()
        for i in active:
            key, last, sync = key_of(i), self.snapshot.results.get(key_of(i)), self.snapshot.syncs.get(key_of(i))
            if last is None or sync is None:
                continue
            ended = policy.after_evidence(last.state, last.result, sync.last_success, slot, self._interval(i))
            if ended != last.state:
                log.info("a sync succeeded at %s, after the last failed check: checking at %s instead of %s",
                         sync.last_success.isoformat() if sync.last_success else "-",
                         ended.next_check_at.isoformat() if ended.next_check_at else "-",
                         last.state.next_check_at.isoformat() if last.state.next_check_at else "-",
                         extra={"org_id": str(i.org_id), "integration_type": i.integration_type})
                states[key] = ended
        return states

    def is_passive(self, i: Integration, state: CheckState | None, slot: datetime) -> bool:
        return policy.is_passive(i, state, slot, self.passive_types)

    async def check_active(self, active: Sequence[Integration], todo: Sequence[Integration],
                           slot: datetime) -> list[IntegrationResult]:
        """Check what is due, a type in a vendor-wide incident through its canaries only; when they recover,
        the rest of that type at once, in this cycle, whatever their backoff (the recovery is seen within a
        cycle); the integrations left standing keep their last result, flagged with the incident."""
        last = {k: r.result for k, r in self.snapshot.results.items()}
        checking, held = self.vendors.split(active, todo, slot, last, self._interval)
        # Slowest first, a hang's 10 s overlapping the rest; within a second, in the list's order, which is the
        # snapshot's too (see _run): the results then come back in the exposition's order, a batch touching few
        # of its gzip blocks, and the stragglers, first in the snapshot, share its first blocks.
        checking.sort(key=self._slowness, reverse=True)
        shown: dict[Key, IntegrationResult | None] = {}
        early = self._handoff(slot)
        early.block(i.org_id for i in held)  # checked later in this cycle if canaries recover: one transaction
        stated = await self._run(checking, slot, shown, early)
        present = {i.integration_type for i in active}
        if recovered := self.vendors.decide(stated, present, slot):
            rest = [i for i in held if i.integration_type in recovered]
            held = [i for i in held if i.integration_type not in recovered]
            log.info("canaries of %s recovered, or its hourly full check is due: checking the other %d now",
                     ", ".join(sorted(recovered)), len(rest))
            stated += await self._run(rest, slot, shown, early)
            self.vendors.decide(stated, present, slot, full=recovered)
        self.vendors.export_incidents()  # before the failures it inhibits are shown, not a scrape after
        published = await self._publish_checked(stated, slot, shown, early)
        if held := [i for i in held if i.integration_type in self.vendors.ongoing]:
            standing = [replace(r, maintenance=self.covered_at(r, slot))  # the flag as of now, not as last checked
                        for r in self.vendors.standing(held, self.snapshot.results, slot, self._interval)]
            self.instruments.not_checked.labels("vendor_incident").inc(len(standing))
            self.snapshot.update(standing)
            await self.outbox.submit(standing, None)  # the status rows say so; no history row: not checked
        self.vendors.export(self.snapshot.results.values())
        return published

    async def check(self, integrations: Sequence[Integration], slot: datetime) -> list[IntegrationResult]:
        """Check these now (whatever an incident would choose), publish to the snapshot, hand to the outbox."""
        shown: dict[Key, IntegrationResult | None] = {}
        early = self._handoff(slot)
        return await self._publish_checked(await self._run(integrations, slot, shown, early), slot, shown, early)

    def _handoff(self, slot: datetime) -> Handoff:
        """Organisations whose results are final go to the outbox while the slowest checks still run."""
        return Handoff(slot, self.instruments.observe, self.outbox.submit)

    async def _run(self, integrations: Sequence[Integration], slot: datetime,
                   shown: dict[Key, IntegrationResult | None], early: Handoff) -> list[IntegrationResult]:
        """Check and attach the next backoff state; show each batch in the snapshot as its checks finish
        (`shown` notes what), so /metrics follows the cycle instead of taking all of it at its end.

        Infrastructure failures wait for _publish_checked, where the slot's incidents are decided: shown
        before, unflagged, a vendor's outage would page every organisation until the incident inhibits it.
        Each result's state follows the one shown when it comes (a run-now meanwhile counts too)."""
        if not integrations:
            return []
        slow = sum(1 for _ in itertools.takewhile(lambda i: self._slowness(i) > 0, integrations))  # slowest first
        slots, cap = self._plan(integrations, slow)
        await asyncio.sleep(0)  # the plan and the start order each walk the fleet: 25-35 ms at 100,000
        ahead = self.read_ahead(self.runner.start_order(integrations, slow, cap, slots)) if self.read_ahead else None
        async with ahead or contextlib.nullcontext():  # credentials read in the order the checks start
            return await self._run_checks(integrations, slow, slots, cap, slot, shown, early)

    def _plan(self, integrations: Sequence[Integration], slow: int) -> tuple[int | None, int | None]:
        """The slots this run uses and of them the ones the `slow` first (slowest first) may hold at once, from
        the seconds each check took last time (the runner's `run_slots` and `slow_cap`). One never checked
        counts as the others' mean, or as concurrency.UNKNOWN_S when none was (a new fleet's first cycle)."""
        last, most_ms = self.snapshot.results, self.runner.timeout * 1000  # no check holds a slot longer
        # Each latency between 1 ms and the timeout: a passive result's comes from the tenant's own sync report
        # (a 30-day "run" would plan one check as 2**31 ms), and 0 would read as "no other checks".
        slow_s = [min(max(1, last[key_of(i)].result.latency_ms), most_ms) / 1000 for i in integrations[:slow]]
        known = [min(max(1, r.result.latency_ms), most_ms) for i in integrations[slow:]
                 if (r := last.get(key_of(i))) is not None]
        unknown_ms = sum(known) / len(known) if known else concurrency.UNKNOWN_S * 1000
        rest_ms = sum(known) + (len(integrations) - slow - len(known)) * unknown_ms
        slots = self.runner.run_slots(sum(slow_s) + rest_ms / 1000)
        return slots, self.runner.slow_cap(slow_s, rest_ms / 1000, slots) if slow else None

    async def _run_checks(self, integrations: Sequence[Integration], slow: int, slots: int | None, cap: int | None,
                          slot: datetime, shown: dict[Key, IntegrationResult | None],
                          early: Handoff) -> list[IntegrationResult]:
        by_key = {key_of(i): i for i in integrations}
        early.expect(by_key.values())
        order = {key: n for n, key in enumerate(by_key)}  # as checked, not as finished
        self._states = {}
        known = {key for key in by_key if key in self.snapshot.results}
        stated: list[IntegrationResult] = []
        new: list[IntegrationResult] = []  # shown last, slowest first: where they land in the snapshot matters
        async with contextlib.aclosing(self.runner.batches(integrations, slow=slow, slow_slots=cap, slots=slots)) as batches:  # a failure stops them
            async for batch in batches:
                for at in range(0, len(batch), CHUNK):
                    await asyncio.sleep(0)  # a batch can be thousands: let the loop in between
                    done = [self._stated(r, by_key[r.org_id_key()], slot) for r in batch[at:at + CHUNK]]
                    now = []
                    for r in done:
                        if self.vendors.awaits_decision(r):
                            self._awaiting[r.org_id_key()] = r  # not shown yet, but what comes next follows it
                        else:
                            now.append(r)
                    self._show([r for r in self.vendors.flag(now) if r.org_id_key() in known], shown)
                    new += (r for r in now if r.org_id_key() not in known)
                    early.take(done, shown)
                    stated += done
        new.sort(key=lambda r: (-slowness(r), order[r.org_id_key()]))
        self._show(self.vendors.flag(new), shown)
        stated.sort(key=lambda r: order[r.org_id_key()])
        return stated

    def _stated(self, r: IntegrationResult, integration: Integration, slot: datetime) -> IntegrationResult:
        """A check's result with the state after it (backoff, throttling's passive fallback), from the state
        shown now: not the one before the check, which a run-now meanwhile may have moved on."""
        last = self._latest(r.org_id_key())
        previous = last.state if last else None
        r = replace(r, result=policy.keep_credential_expiry(self._last_result(r.org_id_key()), r.result,
                                                            looked_up=True))
        if self.in_maintenance(r):  # checked, flagged, but a failure neither counts nor backs off
            state = maintenance.after_check(previous, r.result, slot, self._interval(integration))
            return IntegrationResult(r.org_id, r.integration_type, r.result, state, maintenance=True)
        checked = policy.after_check(previous, r.result, slot, self._interval(integration), self.rng, self.backoff)
        state = policy.throttle_fallback(checked, slot, self.fallback_after, self.passive_cooldown_s,
                                         has_sync_evidence=r.org_id_key() in self.snapshot.syncs)
        if state.passive_until != checked.passive_until:
            log.warning("throttled %d times in a row: passive health until %s", checked.rate_limited_streak,
                        state.passive_until, extra={"org_id": str(r.org_id), "integration_type": r.integration_type})
        # Equal states (every healthy check of a slot has the same) as one object: states are immutable, and
        # 10,000 copies would live until the next cycle, for the full collection after this one to walk.
        state = self._states.setdefault(state, state)
        return IntegrationResult(r.org_id, r.integration_type, r.result, state)

    def _latest(self, key: Key) -> IntegrationResult | None:
        """The newest result of `key`, shown or held back for the slot's incident decision: the state a next
        result follows (a run-now during the cycle must count the cycle's failure that is not shown yet)."""
        shown, waiting = self.snapshot.results.get(key), self._awaiting.get(key)
        if waiting is None or (shown is not None and shown.result.checked_at >= waiting.result.checked_at):
            return shown
        return waiting

    def _show(self, flagged: Sequence[IntegrationResult], shown: dict[Key, IntegrationResult | None]) -> None:
        """Show results in the snapshot, flagged with the incidents known so far; one not made (the credential
        store) leaves the last result standing, only when to try again moves (`shown` notes None)."""
        fresh, standing = [], []
        for r in flagged:
            key, last = r.org_id_key(), self.snapshot.results.get(r.org_id_key())
            if last is not None and policy.not_checked(r.result):  # no vendor was asked
                standing.append(replace(last, state=r.state))
                shown[key] = None
            else:
                fresh.append(r)
                shown[key] = r
        if standing:
            self.instruments.not_checked.labels("credential_unavailable").inc(len(standing))
        self.snapshot.update(standing + fresh)

    async def _publish_checked(self, stated: Sequence[IntegrationResult], slot: datetime,
                               shown: dict[Key, IntegrationResult | None], early: Handoff) -> list[IntegrationResult]:
        """Publish the checks' results (those made), flagged with the incidents as decided now: count and
        persist them (but those `early` handed over already); show those held back for the decision (_run),
        and again those whose flag changed."""
        flagged, published, reflagged = self.vendors.flag(stated), [], []
        self._show([r for r in flagged if r.org_id_key() not in shown], shown)
        for r in flagged:  # shown now: forget what was held back for them (unless a newer one waits)
            waiting = self._awaiting.get(r.org_id_key())
            if waiting is not None and waiting.result.checked_at <= r.result.checked_at:
                del self._awaiting[r.org_id_key()]
        for r in flagged:
            was = shown[r.org_id_key()]
            if was is None or early.handed.get(r.org_id_key()) is was:
                continue  # not checked: its last result stands, and so does its last row; or published early
            if was.result.vendor_incident_since == r.result.vendor_incident_since:
                r = was
            else:
                reflagged.append(r)
            published.append(r)
        if reflagged:
            self.snapshot.update(reflagged)
        await asyncio.sleep(0)  # each step here walks the cycle's results: let the loop in between
        self.instruments.observe(published)
        await asyncio.sleep(0)
        await self.outbox.submit(published, slot)
        await early.settle()
        return flagged

    async def publish(self, results: list[IntegrationResult], slot: datetime) -> None:
        self.snapshot.update(results)
        self.instruments.observe(results)
        await self.outbox.submit(results, slot)

    async def assess_syncs(self, passive: Sequence[Integration], slot: datetime) -> list[IntegrationResult]:
        """Judge every integration's syncs (drift and state for all; health for the passive ones)."""
        try:
            async with asyncio.timeout(self.load_timeout_s):
                runs = await self.store.recent_sync_runs()
        except TRANSIENT_ERRORS as exc:
            log.warning("cannot load sync runs (%s); passive integrations keep their status", type(exc).__name__)
            return []
        now, states, passive_keys = self.clock(), self.snapshot.states(), {key_of(i) for i in passive}
        assessments, results = {}, []
        for i in self.integrations:
            key = key_of(i)
            self._count_cold_starts(i, runs.get(key, []))
            try:  # a bad schedule fails its own integration only (croniter errors are ValueErrors)
                sched = syncs.schedule_from_columns(i.sync)
                if sched is None and key not in runs:
                    continue
                assessment = syncs.assess(sched, runs.get(key, []), now)
            except ValueError as exc:
                if key in passive_keys:
                    results.append(self._passive(i, make_result(
                        HealthStatus.UNREACHABLE, 0, now, f"invalid configuration: sync schedule: {exc}",
                        Reason.INVALID_CONFIG), states.get(key), slot))
                continue
            assessments[key] = assessment
            self._log_new_run(i, assessment.last_run)
            if key in passive_keys and (result := syncs.passive_result(assessment, now)):
                results.append(self._passive(i, result, states.get(key), slot))
        self.snapshot.syncs = assessments
        return results

    def _last_result(self, key: tuple[UUID, str]) -> HealthResult | None:
        last = self.snapshot.results.get(key)
        return last.result if last else None

    def _passive(self, i: Integration, result: HealthResult, previous: CheckState | None,
                 slot: datetime) -> IntegrationResult:
        result = policy.keep_credential_expiry(self._last_result(key_of(i)), result, looked_up=False)
        if maintenance.covering(self.snapshot.windows, i.org_id, i.integration_type, result.checked_at):
            return IntegrationResult(i.org_id, i.integration_type, result,
                                     maintenance.after_passive(previous, result, slot, self.interval_s), True)
        return IntegrationResult(i.org_id, i.integration_type, result,
                                 policy.after_passive(previous, result, slot, self.interval_s))

    def _count_cold_starts(self, i: Integration, runs: list[syncs.SyncRun]) -> None:
        """Count each cold start the sync side reported, once (those already there at first sight are not news)."""
        new, self._cold_counted[key_of(i)] = syncs.new_cold_starts(runs, self._cold_counted.get(key_of(i)))
        self.instruments.count_cold_starts(i.integration_type, "sync_run", new)

    def in_maintenance(self, r: IntegrationResult) -> bool:
        """Whether a window covered the integration when its result was made."""
        return self.covered_at(r, r.result.checked_at)

    def covered_at(self, r: IntegrationResult, at: datetime) -> bool:
        return maintenance.covering(self.snapshot.windows, r.org_id, r.integration_type, at) is not None

    async def load_windows(self) -> None:
        """The maintenance windows not yet over. On any trouble the last known stand (their times still
        apply): a window must neither lapse nor a deleted one return because the database blinked, and
        checks go on whatever happened here."""
        try:
            async with asyncio.timeout(self.load_timeout_s):
                windows = await self.store.maintenance_windows(self.clock())
        except Exception as exc:  # noqa: BLE001 - a window list is never worth a failed cycle
            log.warning("cannot load maintenance windows (%s); keeping the %d known", type(exc).__name__,
                        len(self.snapshot.windows))
            return
        self.snapshot.set_windows(windows)

    def _log_new_run(self, i: Integration, run: syncs.SyncRun | None) -> None:
        """Log each run once (scheduled vs actual), when first seen and again when it finishes."""
        if run is None or self._seen_runs.get(key_of(i)) == (run.scheduled_for, run.outcome):
            return
        self._seen_runs[key_of(i)] = (run.scheduled_for, run.outcome)
        log.info("sync run %s: scheduled %s, started %s, finished %s, drift %s s", run.outcome,
                 run.scheduled_for.isoformat(), run.started_at.isoformat() if run.started_at else "-",
                 run.finished_at.isoformat() if run.finished_at else "-",
                 f"{run.drift_s:.0f}" if run.drift_s is not None else "-",
                 extra={"org_id": str(i.org_id), "integration_type": i.integration_type})

    async def run_health_checks(self, org_id: UUID) -> list[IntegrationResult]:
        """The specification's run_health_checks(org_id), behind "test connection" and `check`: load the org's
        enabled integrations, check them all concurrently now whatever their schedule, keep the backoff state
        right, publish, and persist status and history in one transaction (through the outbox).

        An integration passive by its row or type is not pinged; one cooling down after throttling is
        (an admin pressing the button after fixing a quota is exactly who should learn it works again).
        An organisation another replica owns is checked and answered, but its state, gauges and rows are
        left to the owner: two replicas must not overwrite each other's failure counts.
        """
        integrations = [i for i in await self.store.load_integrations(org_id)
                        if i.health_mode == "active" and i.integration_type not in self.passive_types]
        if not self.owns(org_id):
            return [replace(r, maintenance=True) if self.in_maintenance(r) else r
                    for r in await self.runner.run(integrations)]
        return await self.check(integrations, policy.slot_start(self.clock(), self.interval_s))

    def owns(self, org_id: UUID) -> bool:
        """Whether this replica checks, exports and stores the organisation (always, without shards)."""
        return self.shards is None or self.shards.owns(org_id)

    async def run_forever(self, stop: asyncio.Event, *, between: Callable[[], None] | None = None) -> None:
        """Run a cycle for each new slot until `stop` is set; a late start runs once, for the latest slot.
        `between`: called after each cycle (the service settles the heap then: engine/heap.py)."""
        due_at = self.clock()  # the first cycle is due now, if its slot has not been checked yet
        while not stop.is_set():
            now = self.clock()
            slot = policy.slot_start(now, self.interval_s)
            if self.last_slot is None or slot > self.last_slot:
                self.cycle_task = asyncio.create_task(self.run_cycle(slot, max(due_at, slot)))
                try:
                    await asyncio.shield(self.cycle_task)  # shutdown cancels the loop, not the cycle
                except Exception:
                    self.instruments.cycles.labels("failure").inc()
                    log.exception("cycle failed", extra={"slot": slot.isoformat()})
                    self.last_slot = slot  # do not spin on a failing slot; the next slot tries again
                if between is not None:
                    between()
                continue
            due_at = policy.next_slot(now, self.interval_s)
            wait = max(0.0, (due_at - now).total_seconds())
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def take_over(self, gained: Collection[int]) -> list[IntegrationResult]:
        """Shards gained between cycles (their replica died or left): check, once, what their last owner
        left unchecked in the current slot, so a crashed replica costs its integrations no slot."""
        if not gained or self.shards is None:
            return []
        if self.cycle_task is not None and not self.cycle_task.done():
            await asyncio.wait({self.cycle_task})  # it filtered by the old shards; then see what is left
        if self.last_slot is None:
            return []  # no cycle has run yet: the first one covers every shard held
        slot, total = self.last_slot, self.shards.total
        try:
            mine = [i for i in await self.store.load_integrations() if shard_of(i.org_id, total) in gained]
            keys = {key_of(i) for i in mine}
            fresh = [r for r in await self.store.last_results() if (r.org_id, r.integration_type) in keys]
        except TRANSIENT_ERRORS as exc:
            log.warning("cannot load the shards taken over (%s); the next cycle checks them", type(exc).__name__)
            return []
        self.snapshot.update(fresh)  # the previous owner's latest states decide what is still due
        known = {key_of(i) for i in self.integrations}
        self.integrations = [*self.integrations, *(i for i in mine if key_of(i) not in known)]
        states = self.snapshot.states()
        active = [i for i in mine if not self.is_passive(i, states.get(key_of(i)), slot)]
        todo = policy.due(active, slot, self.interval_s, self.type_intervals, states)
        log.info("took over %d shards: %d integrations, %d left unchecked in slot %s", len(gained), len(mine),
                 len(todo), slot.isoformat())
        return await self.check(todo, slot) if todo else []

    def restore(self, results: Sequence[IntegrationResult]) -> None:
        """Load the last known results (from the database) so a restart neither blanks nor re-checks.

        The first cycle then runs for the current slot and checks only what is still due in it, by each
        integration's stored next check: a crash after part of a slot was written costs the rest nothing.
        """
        if self.shards is not None:
            results = [r for r in results if self.shards.owns(r.org_id)]
        restored = sorted(results, key=slowness, reverse=True)  # in the order a first cycle would show them (_run)
        self.snapshot.update([policy.assume_next_check(r, self.interval_s) for r in restored])
        self.vendors.restore(results)
        self.vendors.export(self.snapshot.results.values())
