"""The /metrics exposition: the per-integration families, kept rendered and re-rendered only where the
snapshot changed, then the service's instruments (rendered by prometheus_client on each scrape).

The families are the table in exporter/web/families.py; sample output is in its docstring.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import Hashable, Mapping, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

from prometheus_client import generate_latest

from exporter.engine.instruments import Instruments
from exporter.engine.snapshot import Snapshot
from exporter.web.families import SOURCES
from exporter.web.textformat import Source

log = logging.getLogger(__name__)
BLOCK_KEYS = 1024  # keys per gzip member: ~100 KiB of text per family, big enough to compress well
COMPRESSLEVEL = 6


class Rendered(NamedTuple):
    entry: Any  # what the lines were rendered from
    own: tuple[str, tuple[str, ...]]  # the key's labels, formatted once (Source.own_labels)
    lines: tuple[bytes, ...]  # one per family


class Fleet:
    """Each key's rendered lines per family, and the body cut into gzip members per (family, block of keys).

    `refresh` compares every entry with the one its lines were rendered from and formats only the keys
    whose entry changed (`rendered` counts them); a member is compressed again only when a line in its
    block changed. Gzip members concatenate into one valid stream (RFC 1952), so the gzip body is their
    concatenation. Only one thread may use a Fleet at a time.
    """

    def __init__(self, sources: Sequence[Source] = SOURCES, *, block_keys: int = BLOCK_KEYS,
                 compresslevel: int = COMPRESSLEVEL) -> None:
        if block_keys <= 0:
            raise ValueError("block_keys must be > 0")
        self.sources, self.block_keys, self.compresslevel = tuple(sources), block_keys, compresslevel
        self.headers = [[f.header() for f in s.families] for s in self.sources]
        self.rendered = 0  # keys formatted since construction (tests count them)
        self._lines: list[dict[Hashable, Rendered]] = [{} for _ in self.sources]
        self._members: dict[tuple[int, int, int], tuple[list[bytes], bytes]] = {}
        self._layout: list[list[list[bytes]]] = []  # per family, its blocks' lines (the plain body, unjoined)
        self._gzip = b""

    def refresh(self, snapshot: Snapshot) -> None:
        """Bring lines and members up to `snapshot` (a copy nobody else mutates meanwhile)."""
        layout, members = [], {}
        for s, source in enumerate(self.sources):
            lines = self._lines[s] = self._render_changed(source, self._lines[s], source.rows(snapshot))
            rows = [r.lines for r in lines.values()]
            for f, header in enumerate(self.headers[s]):
                column = list(map(itemgetter(f), rows))
                blocks = [column[i:i + self.block_keys] for i in range(0, max(len(column), 1), self.block_keys)]
                for b, block in enumerate(blocks):
                    members[s, f, b] = self._member(self._members.get((s, f, b)), block, header if b == 0 else b"")
                layout.append([[header], *blocks])
        self._members, self._layout = members, layout
        self._gzip = b"".join(member for _, member in members.values())

    def _render_changed(self, source: Source, before: dict[Hashable, Rendered],
                        rows: Mapping[Hashable, Any]) -> dict[Hashable, Rendered]:
        after = {}
        for key, entry in rows.items():
            seen = before.get(key)
            if seen is None or seen.entry != entry:
                own = source.own_labels(key) if seen is None else seen.own
                seen = Rendered(entry, own, source.render(own, entry))
                self.rendered += 1
            after[key] = seen
        return after

    def _member(self, cached: tuple[list[bytes], bytes] | None, block: list[bytes],
                header: bytes) -> tuple[list[bytes], bytes]:
        if cached is not None and cached[0] == block:  # identical objects compare at C speed
            return cached
        return block, gzip.compress(header + b"".join(block), compresslevel=self.compresslevel, mtime=0)

    def body(self, compressed: bool) -> bytes:
        """The gzip body (kept), or the plain one joined now: not kept, it is ~1.2 KiB per integration."""
        if compressed:
            return self._gzip
        return b"".join(b"".join(lines) for family in self._layout for lines in family)


class Exposition:
    """What /metrics serves: the fleet part, brought up to the snapshot's version when a scrape finds it
    behind (or sooner, by `keep_fresh`), then the service's instruments, a few series, fresh per scrape."""

    def __init__(self, instruments: Instruments, snapshot: Snapshot, fleet: Fleet | None = None) -> None:
        self.registry, self.snapshot = instruments.registry, snapshot
        self.fleet = fleet or Fleet()
        self._version: int | None = None  # the snapshot version the fleet reflects
        self._lock = asyncio.Lock()  # one refresh at a time; concurrent scrapes after a cycle wait for it

    def render(self, compressed: bool = False) -> bytes:
        """The exposition text (or a multi-member gzip of it), refreshed here: for tests and one-shot uses."""
        if self._stale():
            version = self.snapshot.version
            self.fleet.refresh(self.snapshot)
            self._version = version
        return self._assemble(self.fleet.body(compressed), compressed)

    async def render_off_loop(self, compressed: bool = False) -> bytes:
        """As render(), but what changed is formatted in a thread from a copy of the snapshot, and the
        plain body is joined there too, so the event loop keeps serving and checking meanwhile."""
        await self.refresh_off_loop()
        async with self._lock:  # the plain body is joined per request (Prometheus asks gzip), in the thread
            fleet = self.fleet.body(True) if compressed else await asyncio.to_thread(self.fleet.body, False)
        return self._assemble(fleet, compressed)

    async def refresh_off_loop(self) -> None:
        if self._stale():
            async with self._lock:
                if self._stale():
                    version, frozen = self.snapshot.version, self.snapshot.copy()
                    await asyncio.to_thread(self.fleet.refresh, frozen)
                    self._version = version

    async def keep_fresh(self, interval_s: float = 0.1) -> None:
        """Refresh soon after the snapshot changes (while a cycle persists its results, say), so the next
        scrape finds the work done. Runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh_off_loop()
            except Exception:  # a scrape will try again (and answer 500 with the same error) meanwhile
                log.exception("refreshing the /metrics exposition failed")
                await asyncio.sleep(60)

    def _stale(self) -> bool:
        return self._version != self.snapshot.version

    def _assemble(self, fleet: bytes, compressed: bool) -> bytes:
        own = generate_latest(self.registry)
        if compressed:  # gzip members concatenate into one valid stream (RFC 1952)
            return fleet + gzip.compress(own, compresslevel=COMPRESSLEVEL, mtime=0)
        return fleet + own
