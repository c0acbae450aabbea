"""The /metrics exposition: the per-integration families, kept rendered and re-rendered only where the
snapshot changed, then the service's instruments (rendered by prometheus_client on each scrape).

The families are the table in exporter/web/families.py; sample output is in its docstring.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

from prometheus_client import generate_latest

from exporter.core.model import utcnow
from exporter.engine.instruments import Instruments
from exporter.engine.snapshot import Snapshot
from exporter.web.families import SOURCES
from exporter.web.textformat import MISSING, Source

log = logging.getLogger(__name__)
BLOCK_KEYS = 1024  # keys per gzip member: ~100 KiB of text per family, big enough to compress well
COMPRESSLEVEL = 6


class Rendered(NamedTuple):
    entry: Any  # what the lines were rendered from
    own: tuple[str, tuple[str, ...]]  # the key's labels, formatted once (Source.own_labels)
    lines: tuple[bytes, ...]  # one per family


class Fleet:
    """Each key's rendered lines per family, and the body cut into gzip members per (family, block of keys).

    `refresh` formats only the keys whose entry changed (`rendered` counts them): given the keys the
    snapshot's journal says changed, it reads only those (a cycle publishing in batches costs each refresh
    its batch, not the fleet); otherwise, or when keys came or went, it compares every entry. A member is
    compressed again only when a line in its block changed. Gzip members concatenate into one valid stream
    (RFC 1952), so the gzip body is their concatenation. Only one thread may use a Fleet at a time.
    """

    def __init__(self, sources: Sequence[Source] = SOURCES, *, block_keys: int = BLOCK_KEYS,
                 compresslevel: int = COMPRESSLEVEL) -> None:
        if block_keys <= 0:
            raise ValueError("block_keys must be > 0")
        self.sources, self.block_keys, self.compresslevel = tuple(sources), block_keys, compresslevel
        self.headers = [[f.header() for f in s.families] for s in self.sources]
        self.rendered = 0  # keys formatted since construction (tests count them)
        self._lines: list[dict[Hashable, Rendered]] = [{} for _ in self.sources]
        self._index: list[dict[Hashable, int]] = [{} for _ in self.sources]  # key -> its position in the body
        self._inputs: list[tuple[Any, ...] | None] = [None for _ in self.sources]  # None: never rendered
        self._members: list[dict[tuple[int, int], tuple[list[bytes], bytes]]] = [{} for _ in self.sources]
        self._layout: list[list[list[list[bytes]]]] = [[] for _ in self.sources]  # per source, family: blocks
        self._gzip = b""

    def refresh(self, snapshot: Snapshot, changed: Collection[Hashable] | None = None) -> None:
        """Bring lines and members up to `snapshot` (a copy nobody else mutates meanwhile); `changed`: the
        result keys changed since the last refresh (None: unknown, compare everything)."""
        for s, source in enumerate(self.sources):
            inputs, before = source.inputs(snapshot), self._inputs[s]
            standing = changed is not None and before is not None and len(inputs) == len(before) and all(
                a is b for a, b in zip(inputs, before, strict=True))
            if standing and (source.entry is None or self._patch(s, source, snapshot, changed)):
                continue
            self._full(s, source, snapshot)
            self._inputs[s] = inputs
        self._gzip = b"".join(member for members in self._members for _, member in members.values())

    def _full(self, s: int, source: Source, snapshot: Snapshot) -> None:
        lines = self._lines[s] = self._render_changed(source, self._lines[s], source.rows(snapshot))
        self._index[s] = {key: n for n, key in enumerate(lines)}
        rows, layout, members, cached = [r.lines for r in lines.values()], [], {}, self._members[s]
        for f, header in enumerate(self.headers[s]):
            column = list(map(itemgetter(f), rows))
            blocks = [column[i:i + self.block_keys] for i in range(0, max(len(column), 1), self.block_keys)]
            for b, block in enumerate(blocks):
                members[f, b] = self._member(cached.get((f, b)), block, header if b == 0 else b"")
            layout.append([[header], *blocks])
        self._layout[s], self._members[s] = layout, members

    def _patch(self, s: int, source: Source, snapshot: Snapshot, changed: Collection[Hashable]) -> bool:
        """Format again the changed keys' lines in place; False (nothing done) when a key came (its place in
        the body is the fleet's to decide); a key forgotten is never here (the journal answers None)."""
        lines, entries = self._lines[s], {key: source.entry(snapshot, key) for key in changed}
        if any((entry is MISSING) != (key not in lines) for key, entry in entries.items()):
            return False
        blocks: dict[tuple[int, int], list[bytes]] = {}  # (family, block) -> its lines, copied before changing
        layout, index, size = self._layout[s], self._index[s], self.block_keys
        for key, entry in entries.items():
            seen = lines.get(key)
            if seen is None or seen.entry == entry:
                continue
            seen = lines[key] = Rendered(entry, seen.own, source.render(seen.own, entry))
            self.rendered += 1
            b, at = divmod(index[key], size)
            for f, line in enumerate(seen.lines):
                block = blocks.get((f, b))
                if block is None:
                    block = blocks[f, b] = layout[f][b + 1] = list(layout[f][b + 1])
                block[at] = line
        members = self._members[s]  # replaced in place: the body keeps its order (family, block)
        for (f, b), block in blocks.items():
            members[f, b] = self._member(members[f, b], block, self.headers[s][f] if b == 0 else b"")
        return True

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
        return b"".join(b"".join(lines) for source in self._layout for family in source for lines in family)


class Exposition:
    """What /metrics serves: the fleet part, brought up to the snapshot's version when a scrape finds it
    behind (or sooner, by `keep_fresh`), then the service's instruments, a few series, fresh per scrape."""

    def __init__(self, instruments: Instruments, snapshot: Snapshot, fleet: Fleet | None = None, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.registry, self.snapshot, self.clock = instruments.registry, snapshot, clock
        self.fleet = fleet or Fleet()
        self._version: int | None = None  # the snapshot version the fleet reflects
        self._lock = asyncio.Lock()  # one refresh at a time; concurrent scrapes after a cycle wait for it

    def render(self, compressed: bool = False) -> bytes:
        """The exposition text (or a multi-member gzip of it), refreshed here: for tests and one-shot uses."""
        if self.stale(self.clock()):
            version, changed = self.snapshot.version, self.snapshot.changed_since(self._version)
            self._version = None  # until this refresh is through (a failed one leaves the fleet half done)
            self.fleet.refresh(self.snapshot, changed)
            self._version = version
        return self._assemble(self.fleet.body(compressed), compressed)

    async def render_off_loop(self, compressed: bool = False) -> bytes:
        """As render(), but what changed is formatted in a thread from a copy of the snapshot, and the
        plain body is joined there too, so the event loop keeps serving and checking meanwhile."""
        await self.refresh_off_loop()
        async with self._lock:  # the plain body is joined per request (Prometheus asks gzip), in the thread
            fleet = self.fleet.body(True) if compressed else await asyncio.to_thread(self.fleet.body, False)
        return self._assemble(fleet, compressed)

    async def refresh_off_loop(self) -> float:
        """Refresh in a thread if the snapshot moved on; the seconds the refresh took (0.0: none was due)."""
        if not self.stale(self.clock()):
            return 0.0
        async with self._lock:
            if not self._stale():
                return 0.0
            start = time.perf_counter()
            version, frozen = self.snapshot.version, self.snapshot.copy()
            changed, self._version = self.snapshot.changed_since(self._version), None
            await asyncio.to_thread(self.fleet.refresh, frozen, changed)
            self._version = version
            return time.perf_counter() - start

    async def keep_fresh(self, interval_s: float = 0.1, busy_share: float = 0.25) -> None:
        """Refresh soon after the snapshot changes (a cycle publishes its results in batches as checks
        finish), so the next scrape finds the work done. Runs until cancelled.

        A refresh costs its batch (formatting, compressing the blocks it touched), so after one that took
        long the next waits longer: refreshing takes at most about `busy_share` of a core from the checks."""
        while True:
            try:
                took = await self.refresh_off_loop()
            except Exception:  # a scrape will try again (and answer 500 with the same error) meanwhile
                log.exception("refreshing the /metrics exposition failed")
                await asyncio.sleep(60)
                continue
            await asyncio.sleep(max(interval_s, took / busy_share - took))

    def stale(self, at: datetime) -> bool:
        """Whether the fleet part is behind the snapshot at `at` (a maintenance window began or ended too)."""
        self.snapshot.judge_maintenance(at)
        return self._stale()

    def _stale(self) -> bool:
        return self._version != self.snapshot.version

    def _assemble(self, fleet: bytes, compressed: bool) -> bytes:
        own = generate_latest(self.registry)
        if compressed:  # gzip members concatenate into one valid stream (RFC 1952)
            return fleet + gzip.compress(own, compresslevel=COMPRESSLEVEL, mtime=0)
        return fleet + own
