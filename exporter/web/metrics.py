"""The /metrics exposition: the per-integration families (exporter/web/fleet.py: kept rendered, compressed,
and re-rendered only where the snapshot changed), then the service's instruments (rendered by
prometheus_client on each scrape).

The families are the table in exporter/web/families.py; sample output is in its docstring.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection
from datetime import datetime

from prometheus_client import generate_latest

from exporter.core.model import utcnow
from exporter.engine.instruments import Instruments
from exporter.engine.snapshot import Key, Snapshot
from exporter.web.fleet import Fleet, Published, assemble

log = logging.getLogger(__name__)
WAIT_S = 0.5  # how long a scrape waits for a refresh before it is served the last body (if recent enough)
MAX_BEHIND_S = 15.0  # how far behind the snapshot that body may be: half of Prometheus's 30 s scrape interval


class Exposition:
    """What /metrics serves: the fleet part, brought up to the snapshot's version when a scrape finds it
    behind (or sooner, by `keep_fresh`), then the service's instruments, a few series, fresh per scrape.

    A scrape waits for the refresh it needs at most `wait_s`; past that (a cycle of 100,000 integrations
    has just published: formatting them takes seconds) it is served the body the last refresh left, if
    that body is no more than `max_behind_s` behind the snapshot: every result published earlier than that
    is in it. Otherwise it waits for the refresh, however long. Checks come every 15 minutes and Prometheus
    scrapes every 30 s, so a result shown up to 15 s late changes no alert; a scrape that takes seconds
    times out and loses every series."""

    def __init__(self, instruments: Instruments, snapshot: Snapshot, fleet: Fleet | None = None, *,
                 clock: Callable[[], datetime] = utcnow, wait_s: float = WAIT_S,
                 max_behind_s: float = MAX_BEHIND_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.registry, self.snapshot, self.clock = instruments.registry, snapshot, clock
        self.behind = instruments.metrics_behind
        self.fleet = fleet or Fleet()
        self.wait_s, self.max_behind_s, self.monotonic = wait_s, max_behind_s, monotonic
        self._version: int | None = None  # the snapshot version the fleet's blocks reflect (None: unknown)
        self._shown = -1  # the snapshot version `fleet.published` reflects
        self._fresh_at = -math.inf  # the latest instant `fleet.published` was known to show the whole snapshot
        self._refreshing: asyncio.Task[float] | None = None  # one refresh at a time; scrapes share it

    def render(self, compressed: bool = False) -> bytes:
        """The exposition text (or a multi-member gzip of it), refreshed here: for tests and one-shot uses."""
        self.behind.set(0.0)
        if self.stale(self.clock()):
            version, changed = self.snapshot.version, self.snapshot.changed_since(self._version)
            self._version = None  # until this refresh is through (a failed one leaves the fleet empty)
            self.fleet.refresh(self.snapshot, changed)
            self._version = self._shown = version
        return assemble(self.fleet.published, generate_latest(self.registry), compressed)

    async def render_off_loop(self, compressed: bool = False) -> bytes:
        """As render(), but what changed is formatted in a thread from a copy of the snapshot, and the
        plain body is decompressed there too, so the event loop keeps serving and checking meanwhile."""
        published, own = await self._current(), generate_latest(self.registry)
        if compressed:  # joining the members: a few ms at 100,000 integrations
            return assemble(published, own, True)
        return await asyncio.to_thread(assemble, published, own, False)

    async def _current(self) -> Published:
        """The fleet part to serve: refreshed up to the snapshot's version now, or, if that takes longer
        than `wait_s`, the last one when it is at most `max_behind_s` behind."""
        self.behind.set(0.0)
        if not self.stale(self.clock()):
            return self.fleet.published
        wanted, deadline = self.snapshot.version, self.monotonic() + self.wait_s
        while self._shown < wanted:
            refreshing = self._refresh_task()
            done, _ = await asyncio.wait({refreshing}, timeout=max(0.0, deadline - self.monotonic()))
            behind = self.monotonic() - self._fresh_at
            if not done and behind <= self.max_behind_s:
                self.behind.set(behind)  # the scrape's own instruments, rendered after this, show it
                return self.fleet.published
            await asyncio.shield(refreshing)  # raises its failure; a scrape cancelled never cancels it
        self.behind.set(0.0)  # current after all (a scrape served the last body meanwhile set its own figure)
        return self.fleet.published

    async def refresh_off_loop(self) -> float:
        """Refresh in a thread if the snapshot moved on; the seconds the refresh took (0.0: none was due).
        A refresh under way is awaited, then another started if the snapshot moved on meanwhile."""
        took = 0.0
        for _ in range(2):
            if not self.stale(self.clock()):
                break
            took += await asyncio.shield(self._refresh_task())
        return took

    def _refresh_task(self) -> asyncio.Task[float]:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh())
            self._refreshing.add_done_callback(_retrieved)
        return self._refreshing

    async def _refresh(self) -> float:
        start, copied_at = time.perf_counter(), self.monotonic()
        version, frozen = self.snapshot.version, self.snapshot.copy()
        batches, self._version = self.snapshot.changes_since(self._version), None
        await asyncio.to_thread(self._refresh_from, frozen, batches)
        self._version = self._shown = version
        self._fresh_at = max(self._fresh_at, copied_at)  # what was published after the copy is not in it
        return time.perf_counter() - start

    def _refresh_from(self, frozen: Snapshot, batches: list[Collection[Key]] | None) -> None:
        self.fleet.refresh(frozen, None if batches is None else set().union(*batches))

    async def keep_fresh(self, interval_s: float = 0.1, busy_share: float = 0.25) -> None:
        """Refresh soon after the snapshot changes (a cycle publishes its results in batches as checks
        finish), so the next scrape finds the work done. Runs until cancelled.

        A refresh costs its batch (formatting, compressing the blocks it touched), so after one that took
        long the next waits longer: refreshing takes at most about `busy_share` of a core from the checks,
        unless waiting that long would leave the body more than `max_behind_s` behind (see `pause`)."""
        while True:
            try:
                took = await self.refresh_off_loop()
            except Exception:  # a scrape will try again (and answer 500 with the same error) meanwhile
                log.exception("refreshing the /metrics exposition failed")
                await asyncio.sleep(60)
                continue
            await asyncio.sleep(pause(took, interval_s, busy_share, self.max_behind_s))

    def stale(self, at: datetime) -> bool:
        """Whether the fleet part is behind the snapshot at `at` (a maintenance window began or ended too)."""
        self.snapshot.judge_maintenance(at)
        return self._stale()

    def _stale(self) -> bool:
        if self._shown == self.snapshot.version:
            self._fresh_at = self.monotonic()
            return False
        return True


def pause(took: float, interval_s: float, busy_share: float, max_behind_s: float) -> float:
    """Seconds to wait after a refresh that took `took` before the next: long enough that refreshing takes
    about `busy_share` of a core, but short enough that the body stays within `max_behind_s` of the
    snapshot through the wait and the next refresh (behind by `took` when done, and again by the next's);
    never shorter than `took`, so the refreshes take at most half a core from the checks (past that, a
    scrape may find the body too far behind and wait for a refresh)."""
    return max(interval_s, min(took / busy_share - took, max(took, max_behind_s - 2 * took)))


def _retrieved(task: asyncio.Task[float]) -> None:
    """Mark a refresh's failure seen: the scrapes that waited for it answered it, or will meet it again."""
    if not task.cancelled():
        task.exception()
