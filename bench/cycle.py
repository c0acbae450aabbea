"""Benchmark one service cycle at scale; prints medians. Not a test: figures go in the issue notes.

    .venv/bin/python bench/cycle.py [--integrations 10000] [--orgs 2000] [--runs 3] [--history-slots 96]
    .venv/bin/python bench/cycle.py --integrations 100000 --orgs 20000 --runs 1 --history-slots 96  # issue 18

Embedded PostgreSQL, the simulator as a separate process (50 ms per answer, 1 % of targets hanging),
the service's own scheduler in this process (EXPORTER_MAX_CONCURRENCY's default, 10 s timeout). Reports cycle wall
time, exporter CPU per check, persistence time, peak RSS, /metrics render time and size (the exposition
kept fresh in the background, as the service keeps it), the longest event-loop lag the service's own probe
(integration_health_event_loop_lag_seconds) saw during each cycle and its first scrape, and the loop's
longest stall while /metrics renders everything again; and the credential store's queries per cycle (its
cache sees the cycles 15 minutes apart, as the service does; `--no-prefetch` reads per check, as before 0024).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import gzip
import json
import logging
import os
import resource
import statistics
import sys
import time
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, scratch_dir, seed_history, start_simulator  # noqa: E402
from exporter.adapters import ADAPTERS  # noqa: E402
from exporter.adapters.transport import make_session  # noqa: E402
from exporter.core.model import secret_name  # noqa: E402
from exporter.demo.embedded_pg import LocalPostgres, embedded_bin_dir, free_port  # noqa: E402
from exporter.demo.seed import install_vault_stand_in  # noqa: E402
from exporter.demo.simulator import FAKES  # noqa: E402
from exporter.engine import heap  # noqa: E402
from exporter.engine.loop_lag import LoopLagProbe  # noqa: E402
from exporter.services import build_services, egress_policy  # noqa: E402
from exporter.settings import Settings  # noqa: E402
from exporter.storage.credentials import CachedCredentials, SupabaseVaultCredentials  # noqa: E402
from exporter.storage.migrate import migrate  # noqa: E402
from exporter.storage.store import (
    Store,  # noqa: E402
    create_pool,  # noqa: E402
)
from exporter.web.metrics import Exposition  # noqa: E402
from tests.support.fakes import CountingPool  # noqa: E402
from tests.support.reference_exposition import reference_fleet  # noqa: E402

KINDS = tuple(ADAPTERS)
SECRETS = {f"bench-{kind}": FAKES[kind].credential("bench")[0] for kind in KINDS}  # ref → secret; fakes accept any


def config(kind: str, base: str, tenant: str) -> dict:
    """The simulator fake's own config for the type; the http target is read with a plain GET (no auth)."""
    if kind == "http":
        return {"url": f"{base}/http/{tenant}", "method": "GET"}
    return FAKES[kind].config(base, tenant)


async def seed(conn: asyncpg.Connection, base: str, integrations: int, orgs: int, hang: set[int]) -> list[str]:
    rows, hanging = [], []
    org_ids = [uuid4() for _ in range(orgs)]
    for n in range(integrations):
        kind = KINDS[n % len(KINDS)]
        tenant = f"t{n}"
        if n in hang:
            hanging.append(tenant)
        rows.append((org_ids[n // len(KINDS) % orgs], kind, json.dumps(config(kind, base, tenant)), f"bench-{kind}"))
    await install_vault_stand_in(conn, {secret_name(org, ref): value
                                        for org in org_ids for ref, value in SECRETS.items()})
    await conn.copy_records_to_table("integration_config", records=rows,
                                     columns=["org_id", "integration_type", "config", "credential_ref"])
    return hanging


async def set_modes(port: int, tenants: list[str]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for t in tenants:
            async with session.put(f"http://127.0.0.1:{port}/_sim/tenants/{t}", json={"mode": "hang"}) as resp:
                assert resp.status == 200


class GcPauses:
    """The longest garbage-collection pause (ms): a full collection of a large heap stalls the loop too."""

    def __init__(self) -> None:
        self.longest, self._start = 0.0, 0.0
        self.total_ms, self.count = 0.0, 0  # every collection's pause, summed: a cycle's share of its CPU
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            pause = (time.perf_counter() - self._start) * 1000
            self.longest, self.total_ms, self.count = max(self.longest, pause), self.total_ms + pause, self.count + 1


class StallMeter:
    """The longest gap (ms) a 1 ms ticker sees on the event loop while it runs: a stall of the loop."""

    async def __aenter__(self) -> StallMeter:
        self.longest, self._done = 0.0, asyncio.Event()
        self._task = asyncio.create_task(self._tick())
        return self

    async def _tick(self) -> None:
        last = time.perf_counter()
        while not self._done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest, last = max(self.longest, (now - last) * 1000), now

    async def __aexit__(self, *_: object) -> None:
        self._done.set()
        await self._task


class Timeline:
    """When each step of a cycle happened (seconds from its start; `--timeline`): the loads, the read-ahead, the
    first and last check to start, when the slowest started and ended, each batch of results, the publish and
    the persist hand-off. Wraps the service's own objects; prints one line per cycle."""

    def __init__(self, services) -> None:
        self.marks: dict[str, float] = {}
        self.starts: list[float] = []
        self.ends: list[tuple[float, float, bool]] = []  # (started, ended, timed out)
        self.batches: list[tuple[float, int]] = []
        self.caps: list[tuple[int, int | None, int | None]] = []  # each run's (slow checks, slots they may hold
        # at once, slots it used)
        self.t0 = 0.0
        runner, scheduler, store, outbox = services.runner, services.scheduler, services.store, services.outbox
        timeout_ms = runner.timeout * 1000
        run_one, batches, publish, submit = runner._run_one, runner.batches, scheduler._publish_checked, outbox.submit
        load, syncs = store.load_integrations, store.recent_sync_runs

        async def timed_run_one(integration):
            start = self.now()
            self.starts.append(start)
            result = await run_one(integration)
            self.ends.append((start, self.now(), result.latency_ms >= timeout_ms))
            return result

        async def timed_batches(integrations, **kw):
            self.caps.append((kw.get("slow", 0), kw.get("slow_slots"), kw.get("slots")))
            async for batch in batches(integrations, **kw):
                self.batches.append((self.now(), len(batch)))
                yield batch

        def mark(name, fn):
            async def wrapped(*args, **kw):
                self.marks.setdefault(f"{name} called", self.now())
                try:
                    return await fn(*args, **kw)
                finally:
                    self.marks[f"{name} done"] = self.now()
            return wrapped

        runner._run_one, runner.batches = timed_run_one, timed_batches
        scheduler._publish_checked = mark("publish", publish)
        outbox.submit = mark("persist hand-off", submit)
        store.load_integrations, store.recent_sync_runs = mark("load", load), mark("sync runs", syncs)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def begin(self) -> None:
        self.marks, self.starts, self.ends, self.batches, self.t0 = {}, [], [], [], time.perf_counter()
        self.caps = []

    def note(self, name: str) -> None:
        self.marks[name] = self.now()

    def print(self) -> None:
        hung = [(s, e) for s, e, out in self.ends if out]
        rest = [e for _, e, out in self.ends if not out]
        points = dict(self.marks)
        if self.starts:
            points |= {"first check starts": min(self.starts), "last check starts": max(self.starts)}
        if hung:
            points |= {f"first of {len(hung)} timed out starts": min(s for s, _ in hung),
                       "last timed out starts": max(s for s, _ in hung),
                       "first timeout": min(e for _, e in hung), "last timeout": max(e for _, e in hung)}
        if rest:
            points["last other check ends"] = max(rest)
        if self.batches:
            points |= {f"first of {len(self.batches)} batches": self.batches[0][0], "last batch": self.batches[-1][0]}
        print("    timeline: " + "; ".join(f"{name} {at:.3f}" for name, at in sorted(points.items(), key=lambda x: x[1]))
              + "".join(f"; {slots} slots" + (f", {slow} slow, at most {cap} at once" if slow else "")
                        for slow, cap, slots in self.caps), flush=True)


async def timed(render) -> tuple[float, bytes]:
    start = time.perf_counter()
    body = await render
    return (time.perf_counter() - start) * 1000, body


async def lag_during(gauge, work):
    """Await `work` with the service's lag probe running (its window spans the whole of it); the gauge's value."""
    probe = asyncio.create_task(LoopLagProbe(gauge, window_s=86400).run_forever())
    try:
        result = await work
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
    return result, gauge.collect()[0].samples[0].value


# Bench-only server settings: 9.6 M history rows (~1.9 GB with indexes) want more than the 128 MB default
# buffers, and seeding them more than 1 GB of WAL between checkpoints. Durability stays on (fsync).
BENCH_PG = ("shared_buffers=1GB", "max_wal_size=4GB", "maintenance_work_mem=512MB")


def memory_mb() -> tuple[float, float]:
    """(resident now, peak resident) of this process in MB, from /proc (VmRSS, VmHWM)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def print_holders(before, after, top: int = 12) -> None:
    """The lines that hold the most more memory after the cycles than before the service started."""
    print(f"\nlargest holders after the cycles (tracemalloc, top {top}):")
    for stat in after.compare_to(before, "lineno")[:top]:
        print(f"  {stat.size_diff / 1024 / 1024:8.1f} MB  {stat.count_diff:+9,d} blocks  {stat.traceback}")


async def main(integrations: int, orgs: int, runs: int, latency_ms: int, debug_stalls: bool = False,
               settle_heap: bool = True, history_slots: int = 0, trace_memory: bool = False,
               prefetch: bool = True, timeline: bool = False, max_concurrency: int | None = None) -> None:
    load_before = load()
    server = LocalPostgres(scratch_dir() / "pg", embedded_bin_dir(), settings=BENCH_PG)
    dsn = server.start()
    sim_port = free_port()
    sim = start_simulator(sim_port, latency_ms)
    base = f"http://127.0.0.1:{sim_port}"
    if debug_stalls:  # asyncio names each callback that held the loop longer than 50 ms
        asyncio.get_running_loop().set_debug(True)
        asyncio.get_running_loop().slow_callback_duration = 0.05
    gc_pauses = GcPauses()
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        hanging = await seed(conn, base, integrations, orgs, set(range(0, integrations, 100)))
        seeded = (0, 0.0)
        if history_slots:  # the history a day of cycles leaves: the persist below writes into it
            seeded = await seed_history(conn, datetime(2026, 1, 1, tzinfo=UTC), history_slots)
            print(f"history seeded: {seeded[0]:,} rows in {seeded[1]:.1f} s (load {load()})", flush=True)
        await conn.close()
        await set_modes(sim_port, hanging)
        print(f"{integrations:,} integrations in {orgs:,} orgs, {len(hanging)} hanging, simulator +{latency_ms} ms; "
              f"{runs} cycles, max concurrency {max_concurrency or Settings.model_fields['max_concurrency'].default}",
              flush=True)
        settings = Settings(database_url=dsn, check_interval=900, type_intervals={}, egress_allow=("127.0.0.1",),
                            **({} if max_concurrency is None else {"max_concurrency": max_concurrency}))
        pool = await create_pool(dsn, max_size=10)
        gc.collect()
        rss_base = memory_mb()[0]  # before the service holds anything: the bench's own seeding leftovers too
        if trace_memory:  # slows everything several-fold: for finding holders, never for the figures
            tracemalloc.start()
            traced_before = tracemalloc.take_snapshot()
        async with make_session(policy=await egress_policy(settings), limit=settings.max_concurrency) as session:
            vault = CountingPool(pool)
            since = [0.0]  # the cycles run back to back; the credential cache sees them 15 minutes apart
            credentials = CachedCredentials(SupabaseVaultCredentials(vault), ttl=settings.credential_cache_seconds,
                                            stale_s=settings.credential_stale_seconds,
                                            monotonic=lambda: time.monotonic() + since[0])
            services = build_services(settings, store=Store(pool), session=session, credentials=credentials)
            ahead, ahead_s = services.scheduler.read_ahead, [0.0]
            steps = Timeline(services) if timeline else None

            @contextlib.asynccontextmanager
            async def timed_ahead(integrations):
                start = time.perf_counter()
                if steps:
                    steps.note("read-ahead entered")
                async with ahead(integrations):
                    ahead_s[0] += time.perf_counter() - start  # the read before the checks start
                    if steps:
                        steps.note("read-ahead lets checks start")
                    yield
                    if steps:
                        steps.note("checks' results all in")
                if steps:
                    steps.note("read-ahead left")

            # without it, as before migration 0024: each check reads its secret and expiry alone
            services.scheduler.read_ahead = timed_ahead if prefetch else None
            queries: list[int] = []
            aheads: list[float] = []
            persist_calls: list[int] = []
            persist_times: list[float] = []  # each cycle's persists, summed (most overlap its checks)
            persisting = [0.0, 0]  # seconds and calls of the cycle running
            original = services.store.persist

            async def timed_persist(results, slot):
                start = time.perf_counter()
                await original(results, slot)
                persisting[0] += time.perf_counter() - start  # a cycle persists in parts (engine/handoff.py)
                persisting[1] += 1

            services.store.persist = timed_persist  # type: ignore[method-assign]
            services.outbox.submit_timeout_s = 600  # the service stops waiting after 15 s and retries the
            # write from its background task; here the cycle waits, so a slow persist is measured, not cut
            walls, cpus, firsts, plains, lags, refresh_cpus, full_collections = [], [], [], [], [], [], []
            collecting: list[tuple[float, int]] = []  # (ms, collections) of the garbage collector in each cycle
            exposition = Exposition(services.instruments, services.snapshot)  # as the service has it:
            keeper = asyncio.create_task(exposition.keep_fresh())  # kept fresh while cycles publish
            refreshes: list[tuple[float, int]] = []  # (wall ms, keys formatted) of each refresh, in its thread
            refresh = exposition.fleet.refresh

            refresh_cpu = [0.0]  # CPU seconds of every refresh in its thread: part of the CPU per check

            def timed_refresh(frozen, changed=None):
                start, before, cpu = time.perf_counter(), exposition.fleet.rendered, time.thread_time()
                refresh(frozen, changed)
                refreshes.append(((time.perf_counter() - start) * 1000, exposition.fleet.rendered - before))
                refresh_cpu[0] += time.thread_time() - cpu

            exposition.fleet.refresh = timed_refresh
            slot = datetime(2026, 1, 1, tzinfo=UTC)
            if settle_heap:  # as the service does at startup
                heap.configure()
                heap.settle()

            async def cycle_and_scrape(at: datetime):
                since[0] = (at - slot).total_seconds()
                cpu0, wall0, queried, ahead_s[0] = time.process_time(), time.perf_counter(), vault.queries, 0.0
                refresh0, full0 = refresh_cpu[0], gc.get_stats()[2]["collections"]
                gc0 = (gc_pauses.total_ms, gc_pauses.count)
                if steps:
                    steps.begin()
                persisting[:] = [0.0, 0]
                results = await services.scheduler.run_cycle(at, at)
                persist_times.append(persisting[0])
                persist_calls.append(persisting[1])
                if steps:
                    steps.note("cycle returns")
                walls.append(time.perf_counter() - wall0)
                queries.append(vault.queries - queried)
                aheads.append(ahead_s[0])
                cpus.append((time.process_time() - cpu0) / len(results) * 1000)
                refresh_cpus.append((refresh_cpu[0] - refresh0) / len(results) * 1000)
                full_collections.append(gc.get_stats()[2]["collections"] - full0)
                collecting.append((gc_pauses.total_ms - gc0[0], gc_pauses.count - gc0[1]))
                if settle_heap:  # as the service does after each cycle (engine/heap.py); --no-settle to compare
                    heap.settle()
                return results, await timed(exposition.render_off_loop(compressed=True))  # Prometheus asks gzip

            for i in range(runs):
                (results, (first, body)), lag = await lag_during(services.instruments.loop_lag,
                                                                 cycle_and_scrape(slot + i * timedelta(minutes=15)))
                lags.append(lag * 1000)
                firsts.append(first)
                plains.append((await timed(exposition.render_off_loop()))[0])
                print(f"  cycle {i + 1}: {walls[-1]:.2f} s wall, {cpus[-1]:.3f} CPU-ms/check, "
                      f"{len(results)} checked, persist {persist_times[-1] * 1000:.0f} ms in "
                      f"{persist_calls[-1]} parts, first /metrics "
                      f"{first:.0f} ms, longest event-loop lag {lags[-1]:.0f} ms, {queries[-1]} credential "
                      f"queries ({aheads[-1] * 1000:.0f} ms reading them ahead), refreshes {refresh_cpus[-1]:.3f} "
                      f"CPU-ms/check, {full_collections[-1]} full collections, garbage collection "
                      f"{collecting[-1][0]:.0f} ms in {collecting[-1][1]} collections", flush=True)
                if steps:
                    steps.print()
            keeper.cancel()
            rss_now, rss_service = memory_mb()  # peak while cycles ran and were scraped: the service's own figure
            if trace_memory:
                print_holders(traced_before, tracemalloc.take_snapshot())
                tracemalloc.stop()
            big = [ms for ms, keys in refreshes if keys >= len(results) // 2]  # the refreshes after a cycle publishes
            sizes = (len(gzip.decompress(body)), len(body))
            unchanged = [(await timed(exposition.render_off_loop(compressed=True)))[0] for _ in range(11)]
            unchanged_plain = [(await timed(exposition.render_off_loop()))[0] for _ in range(11)]
            whole, shown, whole_stalls = [], [], []
            for _ in range(3):  # worst case: a scrape the moment a cycle published, every integration changed
                services.snapshot.update([replace(r, result=replace(r.result)) for r in results])
                async with StallMeter() as stall:
                    whole.append((await timed(exposition.render_off_loop(compressed=True)))[0])
                    shown.append(whole[-1] + (await timed(exposition.refresh_off_loop()))[0])  # the refresh done
                whole_stalls.append(stall.longest)
            start = time.perf_counter()
            reference_fleet(services.snapshot)
            reference_ms = (time.perf_counter() - start) * 1000
            statuses = {s: sum(1 for r in results if r.result.status == s) for s in ("healthy", "degraded", "unreachable")}
        await pool.close()
    finally:
        sim.terminate()
        server.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_integration = (rss_service - rss_base) * 1024 * 1024 / integrations
    rows = [
        ("cycle wall time", f"{statistics.median(walls):.2f} s", "goal ≤ 11 s at 10,000 (10 s timeout + ≤ 1 s), ≤ 60 s at 100,000"),
        ("exporter CPU per check (whole process: checks, classification, metrics, persistence)",
         f"{statistics.median(cpus):.3f} ms", ""),
        ("  of which the exposition's background refreshes (their thread's CPU)",
         f"{statistics.median(refresh_cpus):.3f} ms", "they take at most about a quarter of a core, for as long as "
         "the cycle publishes"),
        ("full garbage collections during a cycle (the collector's own; not the settling after it)",
         f"{statistics.median(full_collections):.0f}", "each walks every object not frozen yet (engine/heap.py)"),
        ("credential store queries per cycle (secrets and expiries)", f"{statistics.median(queries):,.0f}",
         f"read ahead in batches (migration 0024) in {statistics.median(aheads) * 1000:.0f} ms before the checks"
         if prefetch else "--no-prefetch: each check reads its own"),
        ("persist one cycle (upsert + history + prune; its parts summed, most while checks run)",
         f"{statistics.median(persist_times) * 1000:.0f} ms", "goal ≤ 4 s at 100,000 into 9.6 M history rows"),
        ("peak RSS during the cycles and their scrapes (the service's figure)", f"{rss_service:.0f} MB",
         f"goal ≤ 200 MB at 10,000, ≤ 1 GB at 100,000; {rss_base:.0f} MB before the service started, "
         f"{rss_now:.0f} MB after"),
        ("  per integration, above the process before the service started", f"{per_integration / 1024:.1f} KiB",
         "the scheduler, snapshot, exposition, caches and a cycle's transient results"),
        ("peak RSS of the whole bench process (with the worst-case renders below)", f"{rss_mb:.0f} MB", ""),
        ("/metrics first render after a cycle (gzip, as Prometheus asks; then plain)",
         f"{statistics.median(firsts):.0f}, {statistics.median(plains):.0f} ms",
         f"goal ≤ 100 ms; {sizes[0] / 1024:.0f} KiB, {sizes[1] / 1024:.0f} KiB gzipped"),
        ("  of which, in the background: the refresh after a cycle publishes (a thread, during persistence)",
         f"{statistics.median(big):.0f} ms" if big else "-", f"{len(big)} such refreshes"),
        ("/metrics scrape the moment a cycle published (every integration formatted again, gzip)",
         f"{statistics.median(whole):.0f} ms", f"a scrape waits ≤ {exposition.wait_s:g} s for the refresh, then is "
         f"served the last body if ≤ {exposition.max_behind_s:g} s behind"),
        ("  until the body shows that cycle (the refresh, in a thread)", f"{statistics.median(shown):.0f} ms", ""),
        ("longest event-loop stall during that scrape and refresh", f"{statistics.median(whole_stalls):.0f} ms",
         "goal ≤ 50 ms"),
        ("/metrics render when nothing changed (gzip, plain)",
         f"{statistics.median(unchanged):.2f}, {statistics.median(unchanged_plain):.2f} ms", ""),
        ("the same fleet rendered whole by prometheus_client (how main renders)", f"{reference_ms:.0f} ms", ""),
        ("longest event-loop lag during a cycle and its first scrape (integration_health_event_loop_lag_seconds)",
         f"{statistics.median(lags):.0f} ms", "goal ≤ 50 ms; the cycle's own work, see --debug-stalls"),
        ("longest garbage-collection pause (any time)", f"{gc_pauses.longest:.0f} ms", "it stalls the loop too"),
        ("last cycle's statuses", json.dumps(statuses), ""),
        ("history rows when the cycles persisted (seeded before the first)",
         f"{seeded[0]:,}" if seeded[0] else "0", f"seeded in {seeded[1]:.1f} s (INSERT … SELECT, VACUUM ANALYZE)"
         if seeded[0] else "--history-slots 96 seeds 24 h"),
        ("load average (1/5/15 min) before and after the run", f"{load_before}, {load()}", "2 cores, shared"),
    ]
    print_table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--integrations", type=int, default=10_000)
    parser.add_argument("--orgs", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--debug-stalls", action="store_true", help="log what held the event loop > 50 ms")
    parser.add_argument("--no-settle", action="store_true", help="never freeze the heap (engine/heap.py), to compare")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop",
                        help="the event loop to run on: uvloop, as the service does (cli.run_service), or asyncio's")
    parser.add_argument("--history-slots", type=int, default=0,
                        help="seed this many 15-minute slots of history per integration first (96: a day, the "
                             "table a service has; at 100,000 integrations 9.6 M rows)")
    parser.add_argument("--no-prefetch", action="store_true",
                        help="no credential read-ahead: each check reads its secret and expiry alone, to compare")
    parser.add_argument("--timeline", action="store_true",
                        help="also print when each step of each cycle happened (checks, batches, publish, persist)")
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="EXPORTER_MAX_CONCURRENCY for the service (default: the setting's default)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also print the lines holding the most memory after the cycles (slow)")
    args = parser.parse_args()
    if args.debug_stalls:
        logging.basicConfig(level=logging.WARNING)
    print(f"event loop: {args.loop}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    run = main(args.integrations, args.orgs, args.runs, args.latency_ms, args.debug_stalls, not args.no_settle,
               args.history_slots, args.tracemalloc, not args.no_prefetch,
               args.timeline, args.max_concurrency)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run)
    else:
        asyncio.run(run)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
