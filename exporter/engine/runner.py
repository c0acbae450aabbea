"""Run the checks of a set of integrations concurrently; every outcome, good or bad, becomes a result."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from uuid import UUID

from exporter.adapters.base import Adapter, HealthCheck
from exporter.adapters.classify import Failure, describe_exception
from exporter.core import concurrency
from exporter.core.model import (
    HealthResult,
    HealthStatus,
    Integration,
    IntegrationResult,
    InvalidConfig,
    Reason,
    make_result,
    parse_config,
    utcnow,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0


class Runner:
    """Runs checks with a per-check deadline. Holds the tasks it had to abandon so none is lost unawaited."""

    def __init__(self, adapters: Mapping[str, Adapter], *, timeout: float = DEFAULT_TIMEOUT_S,
                 limiter: asyncio.Semaphore | None = None, clock: Callable[[], datetime] = utcnow,
                 monotonic: Callable[[], float] = time.monotonic, window: int = 1024,
                 slow_slots: int | None = None, slots: int | None = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        if window <= 0:
            raise ValueError("window must be > 0 (checks alive at once; at least the limiter's size)")
        _check_slow_slots(slow_slots)
        if slots is not None and slots <= 0:
            raise ValueError("slots must be > 0 (the limiter's size), or None: unknown")
        self.window = window
        self.slow_slots = slow_slots  # checks expected slow (see batches) running at once at most; None: any
        self.slots = slots  # the limiter's size: with it, `slow_cap` plans the cap for each run instead
        self.adapters, self.timeout, self.limiter = adapters, timeout, limiter
        self.clock, self.monotonic = clock, monotonic
        self.models = {name: a.config for name, a in adapters.items()}
        self.abandoned: set[asyncio.Task[HealthResult]] = set()

    async def run(self, integrations: Sequence[Integration]) -> list[IntegrationResult]:
        """Check all concurrently, like Promise.allSettled: one failure never aborts the others."""
        results = await asyncio.gather(*(self._run_one(i) for i in integrations))
        return [IntegrationResult(i.org_id, i.integration_type, r) for i, r in zip(integrations, results, strict=True)]

    def run_slots(self, expected_s: float) -> int | None:
        """The slots a run of checks expected to take `expected_s` seconds in all uses (`batches(slots=)`): as
        many as end it within one check timeout, at least concurrency.BASE_SLOTS (core/concurrency.py); None
        when the limiter's size is not known (all of it)."""
        return None if self.slots is None else concurrency.run_slots(self.slots, expected_s, self.timeout)

    def slow_cap(self, slow_s: Sequence[float], rest_s: float, slots: int | None = None) -> int | None:
        """The slots the slow checks may hold in a run (`batches(slow_slots=)`), when they are expected to take
        `slow_s` seconds each and the others `rest_s` seconds in all: planned so both end together on the
        run's `slots` (default: the limiter's size) when that is known (core/concurrency.py), else the fixed
        `slow_slots`."""
        slots = slots or self.slots
        if slots is None or not slow_s:
            return self.slow_slots
        return concurrency.slow_slots(slots, slow_s, rest_s)

    def start_order(self, integrations: Sequence[Integration], slow: int = 0, slow_slots: int | None = None,
                    slots: int | None = None) -> list[Integration]:
        """The order `batches` starts these checks in, as near as it can be known before they run: the first
        window exactly (at most `slow_slots` of the `slow` first ones, the others' checks filling the rest),
        then the two queues taken in turn. The credential read-ahead reads in this order, so the checks that
        start first never wait for a batch read far down the list."""
        slow_slots = self.slow_slots if slow_slots is None else _check_slow_slots(slow_slots)
        cap = slow if slow_slots is None else min(slow, slow_slots)
        fast_first = max(0, (self.window if slots is None else min(self.window, slots)) - cap)
        slowest, others = integrations[:slow], integrations[slow:]
        order = [*slowest[:cap], *others[:fast_first]]
        rest_slow, rest_other = slowest[cap:], others[fast_first:]
        for n in range(max(len(rest_slow), len(rest_other))):
            order += rest_slow[n:n + 1]
            order += rest_other[n:n + 1]
        return order

    async def batches(self, integrations: Sequence[Integration], *, every_s: float = 0.25, slow: int = 0,
                      slow_slots: int | None = None,
                      slots: int | None = None) -> AsyncIterator[list[IntegrationResult]]:
        """Check all concurrently, as `run`, but yield the results in batches as checks finish, at most one
        batch per `every_s` (the first at once), so a cycle can show them while slower checks still run.
        Every result comes once; leaving early cancels the checks still running and waits for them to end:
        close it when done with it (`contextlib.aclosing`), or an early exit leaves them to the garbage collector.

        At most `window` checks are tasks at a time, the next started as one finishes: creating 10,000 tasks
        in one go held the event loop ~100 ms, and all but the limiter's few would only have waited.

        The first `slow` integrations (the scheduler's, slowest first) start first, but at most `slow_slots` of
        them run at once (the runner's own, or this run's `slow_slots`: see `slow_cap`), the others' checks
        filling the rest: at 100,000, 1,000 hanging targets held all 256 slots for 40 s (four rounds of their
        10 s timeout) while no other check could run. `slots`: at most this many of this run's checks are
        started at once (see `run_slots`, which leaves some of the limiter's for checks run now meanwhile).
        """
        slow_slots = self.slow_slots if slow_slots is None else _check_slow_slots(slow_slots)
        done: list[IntegrationResult] = []
        failed: list[BaseException] = []
        ready, everything = asyncio.Event(), asyncio.Event()  # a check finished; all have
        slowest, waiting, tasks, finished = iter(integrations[:slow]), iter(integrations[slow:]), set(), [0]
        cap, running_slow = len(integrations) if slow_slots is None else slow_slots, [0]

        def start_next() -> None:
            is_slow = running_slow[0] < cap and (i := next(slowest, None)) is not None
            if not is_slow and (i := next(waiting, None)) is None:
                is_slow = (i := next(slowest, None)) is not None  # only slow ones left: past the cap
            if i is not None:
                running_slow[0] += is_slow
                task = asyncio.ensure_future(one(i, is_slow))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        async def one(i: Integration, is_slow: bool) -> None:
            try:
                done.append(IntegrationResult(i.org_id, i.integration_type, await self._run_one(i)))
            except Exception as exc:  # a bug, not a check's failure (those are results): fail as gather would
                failed.append(exc)
            running_slow[0] -= is_slow
            finished[0] += 1
            if finished[0] == len(integrations):
                everything.set()
            ready.set()
            start_next()

        for _ in range(self.window if slots is None else min(self.window, slots)):
            start_next()
        loop = asyncio.get_running_loop()
        left, last = len(integrations), loop.time() - every_s
        try:
            while left:
                await ready.wait()
                if failed:
                    raise failed[0]
                if (wait := last + every_s - loop.time()) > 0 and len(done) < left:
                    with contextlib.suppress(TimeoutError):  # more finish meanwhile: one batch for them all,
                        async with asyncio.timeout(wait):  # but none waits once the last is in (the
                            await everything.wait()  # hanging ones time out a few ms apart)
                ready.clear()
                batch, done[:] = done[:], []
                left, last = left - len(batch), loop.time()
                yield batch
        finally:  # left early (the consumer failed or stopped): no check goes on, none is left unawaited
            running = list(tasks)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _run_one(self, integration: Integration) -> HealthResult:
        try:
            config = parse_config(integration, self.models)
        except InvalidConfig as exc:
            return self._failure(0, describe_exception(exc))
        async with self.limiter or contextlib.nullcontext():
            return await self._check_with_deadline(self.adapters[integration.integration_type].check,
                                                   integration.org_id, config)

    async def _check_with_deadline(self, check: HealthCheck, org_id: UUID, config: object) -> HealthResult:
        start = self.monotonic()
        task = asyncio.ensure_future(check.check(org_id, config))
        try:
            finished = await _finished_within(task, self.timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        elapsed_ms = (self.monotonic() - start) * 1000
        if not finished:
            # Cancel, but do not wait: a check that swallows cancellation must not hold up the others.
            task.cancel()
            self.abandoned.add(task)
            task.add_done_callback(self._forget)
            return self._failure(self.timeout * 1000, (HealthStatus.UNREACHABLE, Reason.TIMEOUT,
                                                        f"timed out after {self.timeout:g} s"))
        exc = task.exception()
        if exc is not None:
            return self._failure(elapsed_ms, describe_exception(exc))
        result = task.result()
        if not isinstance(result, HealthResult):
            return self._failure(elapsed_ms, (HealthStatus.UNREACHABLE, Reason.ERROR,
                                              f"adapter returned {type(result).__name__}, not a HealthResult"))
        return result

    def _forget(self, task: asyncio.Task[HealthResult]) -> None:
        self.abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("abandoned check ended with %s", type(task.exception()).__name__)

    def _failure(self, latency_ms: float, failure: Failure) -> HealthResult:
        status, reason, message = failure
        return make_result(status, latency_ms, self.clock(), message, reason)


def _check_slow_slots(slow_slots: int | None) -> int | None:
    if slow_slots is not None and slow_slots <= 0:
        raise ValueError("slow_slots must be > 0 (or None: no cap)")
    return slow_slots


async def _finished_within(task: asyncio.Future[HealthResult], timeout: float) -> bool:
    """Wait until `task` is done or `timeout` seconds have passed, without cancelling it: whether it finished.

    What `asyncio.wait({task}, timeout=…)` does for one task, without its sets, its counter and its second
    future: a check's own overhead, paid once per check (bench/blackbox.py)."""
    if task.done():
        return True
    waiter = asyncio.get_running_loop().create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    timer = waiter.get_loop().call_later(timeout, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
    return task.done()
