"""The runner: concurrency, deadlines, and every failure mapped to a result."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from uuid import UUID

import pytest

from exporter.adapters.base import AdapterContext
from exporter.adapters.classify import describe_exception
from exporter.adapters.client import CertificateError, ConnectError, DNSError, InvalidURL
from exporter.adapters.http1 import InvalidRequest, PayloadError, ProtocolError, ServerDisconnected
from exporter.adapters.transport import BodyTooLarge
from exporter.core.model import (
    CREDENTIAL_REFUSED,
    CredentialError,
    HealthResult,
    HealthStatus,
    Integration,
    Reason,
    make_result,
)
from tests.support.fakes import runner_for

ORG = UUID("11111111-1111-4111-8111-111111111111")
HTTP_CONFIG = {"url": "http://127.0.0.1:1/x"}


def integration(kind: str, config: object = None) -> Integration:
    return Integration(ORG, kind, HTTP_CONFIG if config is None else config)


class Recorder:
    """Fake adapters keyed by type; each records its start/end on the monotonic clock."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[float, float]] = {}

    def sleeper(self, name: str, seconds: float):
        recorder = self

        class Sleeper:
            def __init__(self, ctx: AdapterContext) -> None:
                self.ctx = ctx

            async def check(self, org_id: UUID, config: object) -> HealthResult:
                start = time.monotonic()
                await asyncio.sleep(seconds)
                recorder.spans[name] = (start, time.monotonic())
                return make_result(HealthStatus.HEALTHY, seconds * 1000, datetime.now(UTC))

        return Sleeper


def adapter_raising(exc: BaseException):
    class Raising:
        def __init__(self, ctx: AdapterContext) -> None:
            pass

        async def check(self, org_id: UUID, config: object) -> HealthResult:
            raise exc

    return Raising


class Stubborn:
    """Catches CancelledError and keeps sleeping: the runner must not wait for it."""

    def __init__(self, ctx: AdapterContext) -> None:
        pass

    async def check(self, org_id: UUID, config: object) -> HealthResult:
        for _ in range(3):
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                continue
        raise RuntimeError("stubborn check finally gave up")


async def test_checks_overlap_in_time_rather_than_running_one_after_another(ctx: AdapterContext) -> None:
    rec = Recorder()
    slow, fast = rec.sleeper("slow", 0.4), rec.sleeper("fast", 0.1)
    runner = runner_for(ctx, {"http": slow, "xledger": fast})
    results = await runner.run([integration("http"), integration("xledger", {})])
    assert all(r.result.status == HealthStatus.HEALTHY for r in results)
    (s_start, s_end), (f_start, f_end) = rec.spans["slow"], rec.spans["fast"]
    assert f_start < s_end and s_start < f_end, "the two checks did not overlap"
    assert f_end < s_end, "the fast check waited for the slow one"


async def test_check_slower_than_the_timeout_is_cancelled_and_unreachable(ctx: AdapterContext) -> None:
    rec = Recorder()
    runner = runner_for(ctx, {"http": rec.sleeper("slow", 30)}, timeout=0.2)
    [r] = await runner.run([integration("http")])
    assert r.result.status == HealthStatus.UNREACHABLE
    assert r.result.reason == Reason.TIMEOUT
    assert r.result.error == "timed out after 0.2 s"
    assert r.result.latency_ms == 200
    assert "slow" not in rec.spans, "the slow check ran to completion instead of being cancelled"


async def test_check_that_ignores_cancellation_is_still_cut_at_timeout(ctx: AdapterContext) -> None:
    rec = Recorder()
    runner = runner_for(ctx, {"http": Stubborn, "xledger": rec.sleeper("fast", 0.05)}, timeout=0.3)
    started = time.monotonic()
    results = await runner.run([integration("http"), integration("xledger", {})])
    # The runner's own deadline, generously bounded: it stops waiting at the timeout, not when the check gives in.
    assert time.monotonic() - started < 0.3 + 1.0, "run() waited for the check that ignores cancellation"
    by_type = {r.integration_type: r.result for r in results}
    assert by_type["http"].reason == Reason.TIMEOUT
    assert by_type["xledger"].status == HealthStatus.HEALTHY
    # run() returned while the stubborn task is still alive: it was abandoned, not awaited.
    assert len(runner.abandoned) == 1
    task = next(iter(runner.abandoned))
    assert not task.done()
    task.cancel()  # tidy up: the stubborn check absorbs a few cancellations, then ends
    for _ in range(3):
        task.cancel()
        await asyncio.sleep(0)


async def test_an_unforeseen_exception_is_mapped_by_its_type_alone(ctx: AdapterContext) -> None:
    runner = runner_for(ctx, {"http": adapter_raising(RuntimeError("vendor echoed PLANTED-secret"))})
    [r] = await runner.run([integration("http")])
    assert r.result.status == HealthStatus.UNREACHABLE
    assert r.result.reason == Reason.ERROR
    assert r.result.error == "unexpected RuntimeError in the check"


async def test_one_bad_config_row_does_not_affect_the_others(ctx: AdapterContext) -> None:
    rec = Recorder()
    runner = runner_for(ctx, {"http": rec.sleeper("ok", 0.01), "xledger": rec.sleeper("x", 0.01)})
    results = await runner.run([
        integration("http", {"url": "not a url"}),
        integration("xledger", {}),
        integration("ftp", {}),
        integration("http", ["not", "an", "object"]),
    ])
    statuses = [(r.integration_type, r.result.status, r.result.reason) for r in results]
    assert statuses == [
        ("http", HealthStatus.UNREACHABLE, Reason.INVALID_CONFIG),
        ("xledger", HealthStatus.HEALTHY, None),
        ("ftp", HealthStatus.UNREACHABLE, Reason.INVALID_CONFIG),
        ("http", HealthStatus.UNREACHABLE, Reason.INVALID_CONFIG),
    ]
    assert results[0].result.error == (
        "invalid configuration: config.url: input should be a valid URL, relative URL without a base")
    assert results[2].result.error == "invalid configuration: no adapter for 'ftp'"
    assert results[3].result.error == "invalid configuration: config must be a JSON object, got an array"


async def test_adapter_returning_something_else_is_an_error_not_a_crash(ctx: AdapterContext) -> None:
    class Wrong:
        def __init__(self, ctx: AdapterContext) -> None:
            pass

        async def check(self, org_id: UUID, config: object) -> object:
            return {"status": "healthy"}

    [r] = await runner_for(ctx, {"http": Wrong}).run([integration("http")])
    assert r.result.status == HealthStatus.UNREACHABLE
    assert r.result.error == "adapter returned dict, not a HealthResult"


async def test_cancelling_the_run_cancels_the_checks(ctx: AdapterContext) -> None:
    started, inner = asyncio.Event(), []

    class Waiting:
        """Runs until cancelled; tells when it started and which task it runs in."""

        def __init__(self, ctx: AdapterContext) -> None:
            pass

        async def check(self, org_id: UUID, config: object) -> HealthResult:
            inner.append(asyncio.current_task())
            started.set()
            await asyncio.sleep(30)
            raise AssertionError("never cancelled")

    runner = runner_for(ctx, {"http": Waiting}, timeout=60)
    task = asyncio.ensure_future(runner.run([integration("http")]))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.abandoned == set()
    [check] = inner
    try:
        await asyncio.wait({check}, timeout=5)  # a hang guard only: a cancelled check ends at its next await
        assert check.cancelled(), "the check went on running after run() was cancelled"
    finally:
        check.cancel()


def test_timeout_must_be_positive(ctx: AdapterContext) -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        runner_for(ctx, {}, timeout=0)


@pytest.mark.parametrize(("exc", "status", "reason", "message"), [
    (CredentialError(CREDENTIAL_REFUSED), HealthStatus.DEGRADED, Reason.AUTH,
     f"credential unavailable: {CREDENTIAL_REFUSED}"),
    (TimeoutError(), HealthStatus.UNREACHABLE, Reason.TIMEOUT, "timed out"),
    (ConnectError("vendor.example", 443, "Connection refused"),
     HealthStatus.UNREACHABLE, Reason.CONNECT, "cannot connect to vendor.example:443: Connection refused"),
    (ServerDisconnected("closed"), HealthStatus.UNREACHABLE, Reason.CONNECT,
     "connection closed or reset by the server"),
    (BodyTooLarge("response body larger than 256 KiB"), HealthStatus.DEGRADED, Reason.BAD_RESPONSE,
     "unexpected response: response body larger than 256 KiB"),
    (InvalidURL("nope"), HealthStatus.UNREACHABLE, Reason.INVALID_CONFIG, "invalid configuration: nope"),
    (DNSError("vendor.example"), HealthStatus.UNREACHABLE, Reason.DNS, "DNS lookup failed for vendor.example"),
    (CertificateError("vendor.example"), HealthStatus.UNREACHABLE, Reason.TLS,
     "TLS certificate rejected for vendor.example"),
    (PayloadError("cut"), HealthStatus.UNREACHABLE, Reason.CONNECT,
     "the answer was cut off (connection closed mid-body)"),
    (ProtocolError("not a valid HTTP response"), HealthStatus.UNREACHABLE, Reason.BAD_RESPONSE,
     "unexpected response: not a valid HTTP response"),
    (InvalidRequest("the value of header Authorization contains a line break or NUL"), HealthStatus.UNREACHABLE,
     Reason.INVALID_CONFIG, "invalid configuration: the value of header Authorization contains a line break or NUL"),
])
def test_exceptions_map_to_status_reason_and_message(exc, status, reason, message) -> None:
    assert describe_exception(exc) == (status, reason, message)


async def test_batches_yield_each_result_once_as_its_check_finishes_not_when_the_slowest_does(ctx) -> None:
    rec = Recorder()
    runner = runner_for(ctx, {"http": rec.sleeper("slow", 0.6), "xledger": rec.sleeper("fast", 0.0)})
    batches = []
    async for batch in runner.batches([integration("http"), integration("xledger", {})], every_s=0.05):
        batches.append(([r.integration_type for r in batch], set(rec.spans)))
    assert batches == [(["xledger"], {"fast"}), (["http"], {"fast", "slow"})], \
        "the fast result came while the slow check still ran"


async def test_the_last_results_come_once_the_last_check_is_in_not_a_batch_interval_after(ctx) -> None:
    """Batches come at most every `every_s`, but none waits out that interval once every check is in: the
    hanging checks time out a few ms apart, and the cycle's end waited up to 0.25 s for the last of them."""
    rec = Recorder()
    runner = runner_for(ctx, {"http": rec.sleeper("slow", 0.02), "fiken": rec.sleeper("slower", 0.04),
                              "xledger": rec.sleeper("fast", 0.0)})
    batches = []
    async with asyncio.timeout(60):  # without the fix: an hour's wait for the last batch
        async for batch in runner.batches([integration("http"), integration("fiken", {}), integration("xledger", {})],
                                          every_s=3600):
            batches.append(sorted(r.integration_type for r in batch))
    assert batches[0] == ["xledger"] and sorted(sum(batches[1:], [])) == ["fiken", "http"]


@pytest.mark.parametrize(("runner_cap", "run_cap"), [(1, None), (None, 1), (3, 1)],
                         ids=["the-runners-cap", "the-runs-cap", "the-runs-cap-over-the-runners"])
async def test_the_slowest_start_first_but_never_take_more_than_their_slots_from_the_others(
        ctx, runner_cap: int | None, run_cap: int | None) -> None:
    """1,000 hanging targets at 100,000 held all 256 slots for 40 s: at most `slow_slots` of the `slow` first
    run at once while other checks are left (the runner's, or the run's own: the scheduler plans one per
    run), those filling the rest; then the slow ones take every slot."""
    running, entered, order, fast_done = [0], [], [], []
    release = asyncio.Event()

    class Slow:
        def __init__(self, ctx: AdapterContext) -> None:
            pass

        async def check(self, org_id: UUID, config: object) -> HealthResult:
            running[0] += 1
            entered.append((running[0], len(fast_done)))
            order.append(("slow", org_id.int))
            await release.wait()
            running[0] -= 1
            return make_result(HealthStatus.HEALTHY, 1, datetime.now(UTC))

    class Fast:
        def __init__(self, ctx: AdapterContext) -> None:
            pass

        async def check(self, org_id: UUID, config: object) -> HealthResult:
            order.append(("fast", org_id.int))
            fast_done.append(org_id.int)
            if len(fast_done) == 4:  # the others are done: the slow ones may end
                release.set()
            return make_result(HealthStatus.HEALTHY, 1, datetime.now(UTC))

    runner = runner_for(ctx, {"http": Slow, "xledger": Fast}, limiter=asyncio.Semaphore(3), window=3,
                        slow_slots=runner_cap)
    slow = [Integration(UUID(int=n), "http", HTTP_CONFIG) for n in range(1, 4)]
    fast = [Integration(UUID(int=n), "xledger", {}) for n in range(10, 14)]
    async with asyncio.timeout(60):
        seen = [r.org_id.int async for batch in runner.batches(slow + fast, slow=len(slow), slow_slots=run_cap)
                for r in batch]
    assert sorted(seen) == [1, 2, 3, 10, 11, 12, 13]
    assert order[0] == ("slow", 1), "the slowest starts first"
    assert all(n == 1 for n, fast_seen in entered if fast_seen < 4), f"more than one slow beside the others: {entered}"
    assert order.index(("fast", 13)) < order.index(("slow", 2)), "the others were not held behind the slow ones"


async def test_the_read_ahead_order_starts_with_the_checks_batches_start_first(ctx) -> None:
    """The credential read-ahead reads the runner's first window before any check starts: with slow checks
    capped, that window is the first `slow_slots` slow ones and the others' first, not the list's head (the
    slow ones past the cap would have been read first, and the first checks waited for a batch far down)."""
    started: list[int] = []
    release = asyncio.Event()

    class Held:
        def __init__(self, ctx: AdapterContext) -> None:
            pass

        async def check(self, org_id: UUID, config: object) -> HealthResult:
            started.append(org_id.int)
            await release.wait()
            return make_result(HealthStatus.HEALTHY, 1, datetime.now(UTC))

    runner = runner_for(ctx, {"http": Held}, limiter=asyncio.Semaphore(4), window=4, slow_slots=1)
    everything = [Integration(UUID(int=n), "http", HTTP_CONFIG) for n in range(1, 11)]
    planned = [i.org_id.int for i in runner.start_order(everything, slow=3)]
    assert planned[:4] == [1, 4, 5, 6], "one slow (the cap), then the others' first three"
    assert sorted(planned) == list(range(1, 11)), "every one once"
    async with asyncio.timeout(60):
        batches = runner.batches(everything, slow=3)
        first = asyncio.ensure_future(anext(batches))
        while len(started) < 4:
            await asyncio.sleep(0)
        assert sorted(started) == sorted(planned[:4]), "the first window is the one read ahead"
        release.set()
        seen = [r.org_id.int for r in await first] + [r.org_id.int async for b in batches for r in b]
    assert sorted(seen) == list(range(1, 11))
    with pytest.raises(ValueError, match="slow_slots"):
        runner_for(ctx, {"http": Held}, slow_slots=0)
    with pytest.raises(ValueError, match="slow_slots"):
        runner.start_order(everything, slow=3, slow_slots=0)
    with pytest.raises(ValueError, match="slow_slots"):
        await anext(runner.batches(everything, slow=3, slow_slots=0))


def test_the_slow_cap_is_planned_from_the_slots_when_the_runner_knows_them(ctx) -> None:
    """Six checks of 10 s beside 20 s of others on 8 slots: 6 slots end both in 10 s (half of them, 4, would
    leave the slow ones a second round); without the slot count, the fixed cap stands."""
    planned = runner_for(ctx, {"http": Recorder().sleeper("x", 0.0)}, limiter=asyncio.Semaphore(8), slots=8,
                         slow_slots=4)
    assert planned.slow_cap([10.0] * 6, 20.0) == 6
    assert planned.slow_cap([], 20.0) == 4, "no slow ones: nothing to plan"
    fixed = runner_for(ctx, {"http": Recorder().sleeper("x", 0.0)}, limiter=asyncio.Semaphore(8), slow_slots=4)
    assert fixed.slow_cap([10.0] * 6, 20.0) == 4
    with pytest.raises(ValueError, match="slots"):
        runner_for(ctx, {"http": Recorder().sleeper("x", 0.0)}, slots=0)


async def test_a_bug_in_a_check_fails_the_batches_as_it_fails_run(ctx, monkeypatch) -> None:
    runner = runner_for(ctx, {"http": Recorder().sleeper("fast", 0.0)})

    async def broken(integration: Integration) -> HealthResult:
        raise RuntimeError("a bug, not a vendor's failure")

    monkeypatch.setattr(runner, "_run_one", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        async for _ in runner.batches([integration("http")]):
            pass


async def test_batches_keep_at_most_a_window_of_checks_alive_and_still_check_them_all(ctx) -> None:
    alive, most = 0, 0

    class Counting:
        def __init__(self, ctx: AdapterContext) -> None:
            pass

        async def check(self, org_id: UUID, config: object) -> HealthResult:
            nonlocal alive, most
            alive += 1
            most = max(most, alive)
            await asyncio.sleep(0.001)
            alive -= 1
            return make_result(HealthStatus.HEALTHY, 1, datetime.now(UTC))

    runner = runner_for(ctx, {"http": Counting}, window=3)
    orgs = [UUID(int=n) for n in range(10)]
    seen = [r.org_id async for batch in runner.batches([Integration(o, "http", HTTP_CONFIG) for o in orgs])
            for r in batch]
    assert sorted(seen) == orgs and most == 3


async def test_closing_the_batches_early_cancels_the_checks_still_running_and_waits_for_them(ctx, monkeypatch) -> None:
    runner, ended = runner_for(ctx, {"http": Recorder().sleeper("fast", 0.0)}), []
    forever = asyncio.Event()

    async def run_one(i: Integration) -> HealthResult:
        if i.org_id != ORG:
            try:
                await forever.wait()
            finally:
                ended.append(i.org_id)
        return make_result(HealthStatus.HEALTHY, 1, datetime.now(UTC))

    monkeypatch.setattr(runner, "_run_one", run_one)
    hanging = Integration(UUID(int=2), "http", HTTP_CONFIG)
    with pytest.raises(LookupError):
        async with contextlib.aclosing(runner.batches([integration("http"), hanging])) as batches:
            async for _ in batches:
                raise LookupError("the consumer failed")
    assert ended == [hanging.org_id], "the hanging check ended before the batches did"


async def test_a_run_starts_no_more_checks_at_once_than_its_slots_and_the_read_ahead_knows_it(ctx) -> None:
    """A run's `slots` bound its checks in flight below the limiter's size (a cycle that needs fewer slots
    answers in smaller bursts), and start_order plans that smaller first window."""
    running, most, release = [0], [0], asyncio.Event()

    class Counted:
        def __init__(self, ctx: AdapterContext) -> None:
            pass

        async def check(self, org_id: UUID, config: object) -> HealthResult:
            running[0] += 1
            most[0] = max(most[0], running[0])
            await release.wait()
            running[0] -= 1
            return make_result(HealthStatus.HEALTHY, 1, datetime.now(UTC))

    runner = runner_for(ctx, {"http": Counted}, limiter=asyncio.Semaphore(8), window=8, slots=8)
    everything = [Integration(UUID(int=n), "http", HTTP_CONFIG) for n in range(1, 21)]
    assert [i.org_id.int for i in runner.start_order(everything, slots=3)][:3] == [1, 2, 3]
    async with asyncio.timeout(60):
        batches = runner.batches(everything, slots=3)
        first = asyncio.ensure_future(anext(batches))
        for _ in range(50):
            await asyncio.sleep(0)
        assert most[0] == 3, "three of the limiter's eight"
        release.set()
        seen = [r.org_id.int for r in await first] + [r.org_id.int async for b in batches for r in b]
    assert sorted(seen) == list(range(1, 21)) and most[0] == 3
