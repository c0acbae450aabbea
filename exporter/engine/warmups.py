"""The warm-up loop: a little before each scheduled sync, ask the sync function once and time its first answer.

Its own task beside the cycle loop (a cycle never waits for it, nor it for a cycle); it reads the
integrations the scheduler last loaded, so it costs the database nothing. When to send is
core/warmups.next_warmup's decision; this module only sleeps, sends, counts and records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

from exporter.adapters.base import AdapterContext
from exporter.adapters.client import HttpClient
from exporter.adapters.http1 import ProtocolError
from exporter.adapters.transport import fetch
from exporter.core import syncs, warmups
from exporter.core.egress import Blocked, EgressPolicy
from exporter.core.model import Integration, utcnow
from exporter.core.warmups import Warmup, WarmupOutcome, WarmupRecord
from exporter.engine.instruments import Instruments
from exporter.engine.snapshot import Snapshot

log = logging.getLogger(__name__)
Key = tuple[UUID, str]
REPLAN_S = 60.0  # look again at least this often, whatever the schedules say
TICK_S = 1.0  # how often a sleeping loop notices that a cycle loaded a new integration list
MAX_IN_FLIGHT = 64  # warm-ups sent at once; a schedule shared by thousands of orgs waits its turn


class Warmer:
    """Sends each integration's warm-up when next_warmup says, records the answer, counts cold starts."""

    def __init__(self, *, session: HttpClient, instruments: Instruments, snapshot: Snapshot,
                 integrations: Callable[[], Sequence[Integration]], lead_s: float, cold_start_s: float,
                 timeout_s: float, clock: Callable[[], datetime] = utcnow,
                 monotonic: Callable[[], float] = time.monotonic, replan_s: float = REPLAN_S) -> None:
        # fetch refuses a session without a policy; the https rule then judges by the strictest one
        self.policy = session.policy if isinstance(session, HttpClient) else EgressPolicy()
        self.ctx = AdapterContext(session=session, clock=clock, monotonic=monotonic)
        self.instruments, self.snapshot, self.integrations = instruments, snapshot, integrations
        self.lead_s, self.cold_start_s, self.timeout_s, self.replan_s = lead_s, cold_start_s, timeout_s, replan_s
        self.clock = clock
        self.warmed: dict[Key, datetime] = {}  # the sync each integration's last warm-up prepared
        self.in_flight: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(MAX_IN_FLIGHT)

    def due(self, now: datetime) -> tuple[list[tuple[list[Integration], Warmup]], float]:
        """The warm-ups due at `now` (marked as sent), and how long to sleep before the next one.

        Integrations that share a sync function (one endpoint for every organisation, as an Edge Function
        per type usually is) and a sync time are one warm-up: one request warms the function for all.
        """
        groups: dict[tuple[str, datetime], tuple[list[Integration], Warmup]] = {}
        wait, live = self.replan_s, set()
        for i in self.integrations():
            key = (i.org_id, i.integration_type)
            try:  # a bad schedule is the scheduler's to report (its own integration only); no warm-up here
                schedule = syncs.schedule_from_columns(i.sync) if i.warmup_url else None
            except ValueError:
                schedule = None
            if schedule is None or i.warmup_url is None:
                continue
            live.add(key)
            warmup = warmups.next_warmup(schedule, now, self.lead_s, self.warmed.get(key))
            if warmup.at <= now:
                self.warmed[key] = warmup.sync_at
                groups.setdefault((i.warmup_url, warmup.sync_at), ([], warmup))[0].append(i)
            else:
                wait = min(wait, (warmup.at - now).total_seconds())
        for gone in self.warmed.keys() - live:
            del self.warmed[gone]
        return list(groups.values()), wait

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Send what is due, sleep until the next one (or REPLAN_S), until `stop`; then cancel what is in flight."""
        try:
            while not stop.is_set():
                todo, wait = self.due(self.clock())
                for members, warmup in todo:
                    task = asyncio.create_task(self.send(members, warmup))
                    self.in_flight.add(task)
                    task.add_done_callback(self.in_flight.discard)
                await self._sleep(stop, wait)
        finally:
            for task in list(self.in_flight):
                task.cancel()
            await asyncio.gather(*self.in_flight, return_exceptions=True)

    async def _sleep(self, stop: asyncio.Event, wait: float) -> None:
        """Sleep `wait` seconds, or less when stopped or when a cycle loaded a new integration list (the
        scheduler replaces the list, so an identity check costs nothing; the first cycle after a start-up
        is what makes the warm-ups known)."""
        loop, seen = asyncio.get_running_loop(), self.integrations()
        deadline = loop.time() + wait
        while not stop.is_set() and self.integrations() is seen and (left := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(left, TICK_S))

    async def send(self, members: Sequence[Integration], warmup: Warmup) -> None:
        """One warm-up for integrations sharing a URL and a sync: validate, apply the egress policy, GET,
        classify; count the request and a cold start once (per type), record and log per integration."""
        async with self._limit:
            outcome, latency_s = await self._request(members[0].warmup_url)
        self.instruments.sync_warmups.labels(outcome.value).inc()
        if outcome is WarmupOutcome.COLD_START:
            for kind in {i.integration_type for i in members}:
                self.instruments.count_cold_starts(kind, "warmup")
        for i in members:
            key = (i.org_id, i.integration_type)
            record = warmups.record(self.snapshot.warmups.get(key), self.clock(), warmup.sync_at, outcome, latency_s)
            self.snapshot.record_warmup(key, record)
            self._log(i, warmup, record)

    @staticmethod
    def _log(i: Integration, warmup: Warmup, record: WarmupRecord) -> None:
        extra = {"org_id": str(i.org_id), "integration_type": i.integration_type,
                 "sync_at": warmup.sync_at.isoformat()}
        if record.outcome is WarmupOutcome.COLD_START:
            log.info("cold start: the sync function took %.1f s to answer its warm-up", record.latency_s, extra=extra)
        elif record.outcome.failed and record.consecutive_failures >= warmups.FAILING_AFTER:
            log.warning("warm-up failed (%s), %d times in a row: the next syncs may hit cold starts",
                        record.outcome.value, record.consecutive_failures, extra=extra)
        elif record.outcome.failed:
            log.info("warm-up failed (%s)", record.outcome.value, extra=extra)

    async def _request(self, raw_url: str | None) -> tuple[WarmupOutcome, float | None]:
        try:
            url = warmups.parse_warmup_url(raw_url)
        except ValueError:
            return WarmupOutcome.INVALID_CONFIG, None
        try:
            warmups.check_destination(url, self.policy)
            async with asyncio.timeout(self.timeout_s):
                response = await fetch(self.ctx, "GET", url, read_body=False, headers={warmups.WARMUP_HEADER: "1"})
        except Blocked:
            return WarmupOutcome.BLOCKED, None
        except TimeoutError:
            return WarmupOutcome.TIMEOUT, None
        except (OSError, ValueError, ProtocolError):  # DNS, connect, TLS, a reset, not HTTP
            return WarmupOutcome.UNREACHABLE, None
        latency_s = response.latency_ms / 1000
        return warmups.classify(response.status, latency_s, self.cold_start_s), latency_s
