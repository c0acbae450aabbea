"""What the benchmark scripts share: starting helper processes and printing the figures table."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def start_process(cmd: Sequence[str], ready: str | None = None) -> subprocess.Popen:
    """Start a helper process; with `ready`, wait until it prints a line containing it."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if ready:
        assert proc.stdout is not None
        for line in proc.stdout:
            if ready in line:
                break
    return proc


def start_simulator(port: int, latency_ms: int) -> subprocess.Popen:
    return start_process([sys.executable, "-m", "exporter", "simulate", "--port", str(port), "--latency-ms",
                          str(latency_ms)], ready="listening")


def print_table(rows: Sequence[tuple[str, str, str]], value_header: str = "median") -> None:
    width = max(len(r[0]) for r in rows)
    value_width = max(len(value_header), *(len(r[1]) for r in rows))
    print(f"\n{'figure'.ljust(width)}  {value_header:>{value_width}}  target / note")
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value:>{value_width}}  {note}")
