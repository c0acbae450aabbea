"""The event-loop lag probe: it sees a stall we cause, keeps the window's maximum, and stops with the app."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge

from exporter.engine.loop_lag import LoopLagProbe
from exporter.services import build_services
from exporter.web.api import RUNTIME
from exporter.web.app import create_app
from tests.helpers import settings_for, wait_until
from tests.support.fakes import loopback_session
from tests.support.memory_store import MemoryStore

STALL_S = 0.3


def gauge() -> Gauge:
    return Gauge("integration_health_event_loop_lag_seconds", "lag", registry=CollectorRegistry())


def value(g: Gauge) -> float:
    return g.collect()[0].samples[0].value


async def test_a_loop_blocked_on_purpose_shows_as_lag_at_least_as_long_as_the_block() -> None:
    lag = gauge()
    probe = LoopLagProbe(lag, interval_s=0.01)
    task = asyncio.create_task(probe.run_forever())
    await asyncio.sleep(0)  # the probe is now asleep, due back in 0.01 s
    time.sleep(STALL_S)  # noqa: ASYNC251 - the stall under test: nothing runs on the loop meanwhile
    await wait_until(lambda: value(lag) > 0, what="the probe to wake")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value(lag) >= STALL_S - 0.02  # woke at least the block's length late, less its own interval


def test_the_gauge_holds_the_windows_maximum_and_forgets_it_once_it_leaves_the_window() -> None:
    lag = gauge()
    probe = LoopLagProbe(lag, interval_s=1, window_s=60)
    for now, seen, expected in [(0, 0.002, 0.002), (1, 2.5, 2.5), (2, 0.001, 2.5), (30, 0.4, 2.5),
                                 (60, 0.003, 2.5), (61, 0.002, 0.4), (90, 0.001, 0.003), (200, 0.0, 0.0)]:
        probe.record(seen, now)
        assert value(lag) == expected, f"at {now} s"


def test_a_probe_that_could_not_measure_anything_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s > 0"):
        LoopLagProbe(gauge(), interval_s=0)
    with pytest.raises(ValueError, match="window_s >= interval_s"):
        LoopLagProbe(gauge(), interval_s=5, window_s=1)


async def test_the_service_runs_the_probe_exports_it_and_stops_it_on_shutdown(aiohttp_client) -> None:
    async with loopback_session() as session:
        settings = settings_for("postgresql://unused")
        services = build_services(settings, store=MemoryStore([]), session=session)  # type: ignore[arg-type]
        client = await aiohttp_client(create_app(settings, services))
        task = client.app[RUNTIME].lag_task
        assert task is not None and not task.done()
        time.sleep(STALL_S)  # noqa: ASYNC251 - a wake-up (every 0.25 s) falls inside it: ≥ 0.05 s late
        caused = STALL_S - 0.25
        await wait_until(lambda: value(services.instruments.loop_lag) >= caused, what="the probe to see the stall")
        metrics = await (await client.get("/metrics")).text()
        line = next(x for x in metrics.splitlines() if x.startswith("integration_health_event_loop_lag_seconds "))
        assert float(line.split()[1]) >= caused
        await client.close()
    assert task.done() and task.cancelled()
