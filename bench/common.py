"""What the benchmark scripts share: starting helper processes and printing the figures table."""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def start_process(cmd: Sequence[str], ready: str | None = None) -> subprocess.Popen:
    """Start a helper process; with `ready`, wait until it prints a line containing it."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if ready:
        assert proc.stdout is not None
        for line in proc.stdout:
            if ready in line:
                break
    return proc


def scratch_dir() -> Path:
    """A temporary directory removed when the script exits, on an error, Ctrl-C or SIGTERM (after the `finally`
    that stops the database in it): a 100,000-integration run leaves ~6 GB, and runs add up on a shared disk."""
    path = Path(tempfile.mkdtemp(prefix="ih-bench-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    signal.signal(signal.SIGTERM, _exit_on_term)  # `timeout` and `kill` too, not only Ctrl-C (SIGKILL still leaks)
    return path


def _exit_on_term(signum: int, frame: object) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM must not cut the database's stop short
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: the `finally` stops the database, atexit removes it


def start_simulator(port: int, latency_ms: int) -> subprocess.Popen:
    """The simulator in its own process (it raises its own open-files limit); this process's checks need as
    many descriptors as it serves, which Debian's default 1,024 is not at 496 slots and their kept-alive sockets."""
    from exporter.cli import SIMULATOR_LIMITS, raise_descriptor_limit
    from exporter.core.concurrency import DESCRIPTOR_SLACK

    raise_descriptor_limit(SIMULATOR_LIMITS.max_connections + DESCRIPTOR_SLACK)
    return start_process([sys.executable, "-m", "exporter", "simulate", "--port", str(port), "--latency-ms",
                          str(latency_ms)], ready="listening")


def print_table(rows: Sequence[tuple[str, str, str]], value_header: str = "median") -> None:
    width = max(len(r[0]) for r in rows)
    value_width = max(len(value_header), *(len(r[1]) for r in rows))
    print(f"\n{'figure'.ljust(width)}  {value_header:>{value_width}}  target / note")
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value:>{value_width}}  {note}")


SEED_HISTORY = """
INSERT INTO public.health_check_history (org_id, integration_type, slot, status, latency_ms, checked_at)
SELECT c.org_id, c.integration_type, s.slot, 'healthy', 50, s.slot + interval '1 second'
FROM generate_series($1::timestamptz - $2 * interval '15 minutes', $1::timestamptz - interval '15 minutes',
                     interval '15 minutes') s(slot)
CROSS JOIN public.integration_config c
ORDER BY s.slot"""  # in slot order, as a live service appends them: one cycle's rows together in the heap

# What the triggers would have left beside those rows: each key's count (migration 0023), and a status row
# per integration from its newest slot, confirmed, so the next persist updates rows as a running service does.
SEED_COUNTS = """
INSERT INTO public.health_check_history_count (org_id, integration_type, row_count)
SELECT org_id, integration_type, count(*) FROM public.health_check_history GROUP BY 1, 2
ON CONFLICT (org_id, integration_type) DO UPDATE SET row_count = EXCLUDED.row_count"""
SEED_STATUS = """
INSERT INTO public.integration_health_status (org_id, integration_type, status, latency_ms, checked_at,
                                              confirmed_status)
SELECT org_id, integration_type, status, latency_ms, checked_at, status
FROM public.health_check_history WHERE slot = $1::timestamptz - interval '15 minutes'
ON CONFLICT (org_id, integration_type) DO NOTHING"""


async def seed_history(conn, before, slots: int = 96) -> tuple[int, float]:
    """Fill health_check_history with `slots` 15-minute slots before `before` for every configured integration
    (24 h by default: the table a service has after a day), with the pruning trigger off (the rows are the
    newest 96 of each key anyway), then the counts and status rows the triggers and the service would have
    written, then VACUUM ANALYZE as autovacuum would. Returns (history rows, seconds)."""
    import time

    start = time.perf_counter()
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # no trigger: nothing to prune
        status = await conn.execute(SEED_HISTORY, before, slots)
    await conn.execute(SEED_COUNTS)
    await conn.execute(SEED_STATUS, before)
    for table in ("health_check_history", "health_check_history_count", "integration_health_status"):
        await conn.execute(f"VACUUM ANALYZE public.{table}")
    return int(status.split()[-1]), time.perf_counter() - start
