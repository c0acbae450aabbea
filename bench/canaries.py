"""Checks saved by canaries during a vendor-wide outage; prints the figures. Not a test.

    .venv/bin/python bench/canaries.py [--integrations 1000] [--outage-minutes 60]

The real scheduler (build_services) on a scripted clock, 15-minute cycles, an in-memory store and the
loopback simulator: every integration (one per organisation) is on one vendor, which answers 500 from
the first slot for the outage's length and then heals. Counted at the simulator, with the vendor-wide
incident and its canaries (the default settings) and without (every integration on its own backoff):
requests during the outage, and minutes from the vendor healing until every integration reads healthy.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table  # noqa: E402
from exporter.core.model import HealthStatus, Integration  # noqa: E402
from exporter.demo.simulator import Mode, SimState  # noqa: E402
from exporter.demo.simulator import create_app as create_simulator  # noqa: E402
from exporter.engine.canaries import VendorWatch  # noqa: E402
from exporter.services import build_services  # noqa: E402
from exporter.settings import Settings  # noqa: E402
from tests.support.fakes import loopback_session  # noqa: E402
from tests.support.memory_store import MemoryStore  # noqa: E402

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CYCLE = timedelta(minutes=15)


async def outage(integrations: int, outage_minutes: int, canaries: bool) -> tuple[int, int, int | None]:
    """(requests during the outage, requests in the first cycle after it, minutes to all healthy after it)."""
    sim = SimState(modes={"vendor": Mode("server_error")})
    server = TestServer(create_simulator(sim))
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        store = MemoryStore([Integration(UUID(int=n + 1), "http", {"url": f"{base}/http/vendor", "method": "GET"})
                             for n in range(integrations)])
        now = [T0]
        settings = Settings(database_url="memory://", credential_provider="none", max_concurrency=256,
                            vendor_incident_types=frozenset({"http"}))  # the simulated vendor
        async with loopback_session(limit=256) as session:
            services = build_services(settings, store=store, session=session,  # type: ignore[arg-type]
                                      clock=lambda: now[0], rng=random.Random(1).random)
            if not canaries:
                services.scheduler.vendors = VendorWatch(None, services.instruments)
            during = after = 0
            healed_at = T0 + timedelta(minutes=outage_minutes)
            slot = T0
            while slot < healed_at + timedelta(hours=2):
                if slot >= healed_at:
                    sim.modes["vendor"] = Mode("healthy")
                before = sim.requests.get("vendor", 0)
                now[0] = slot
                await services.scheduler.run_cycle(slot, slot)
                spent = sim.requests.get("vendor", 0) - before
                if slot < healed_at:
                    during += spent
                elif slot == healed_at:
                    after = spent
                if slot >= healed_at and all(r.result.status == HealthStatus.HEALTHY
                                             for r in services.snapshot.results.values()):
                    return during, after, int((slot - healed_at).total_seconds() // 60)
                slot += CYCLE
            return during, after, None
    finally:
        await server.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--integrations", type=int, default=1000)
    parser.add_argument("--outage-minutes", type=int, default=60)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the incident's own log lines are not the figures
    with_c = await outage(args.integrations, args.outage_minutes, canaries=True)
    without = await outage(args.integrations, args.outage_minutes, canaries=False)
    n, hours = args.integrations, args.outage_minutes / 60
    saved = without[0] - with_c[0]
    print_table([
        (f"checks during a {hours:g}-h outage of {n:,} integrations, with canaries", f"{with_c[0]:,}",
         "first slot: all; then 3 canaries a cycle"),
        ("same, without (each integration on its own backoff)", f"{without[0]:,}", "15 → 30 → 60 min backoff"),
        ("checks saved by canaries", f"{saved:,}", f"{saved / without[0]:.0%} of the outage's checks"),
        ("checks in the first cycle after the vendor heals, with / without", f"{with_c[1]:,} / {without[1]:,}",
         "with: the canaries recover, then everyone at once"),
        ("minutes from healing until all read healthy, with / without",
         f"{with_c[2]} / {without[2]}", "with: within the cycle"),
    ], value_header="value")


if __name__ == "__main__":
    asyncio.run(main())
