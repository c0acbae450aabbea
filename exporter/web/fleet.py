"""The fleet part of /metrics: each integration's lines per family, kept compressed in gzip members per
block of keys and patched where the snapshot changed. Exposition (exporter/web/metrics.py) serves it."""

from __future__ import annotations

import gzip
import zlib
from array import array
from collections.abc import Collection, Hashable, Sequence
from itertools import accumulate
from typing import Any, NamedTuple

from exporter.engine.snapshot import Snapshot
from exporter.web.families import SOURCES
from exporter.web.textformat import MISSING, Source

BLOCK_KEYS = 1024  # keys per gzip member: ~100 KiB of text per family, big enough to compress well
COMPRESSLEVEL = 6
GZIP_WBITS = 31  # zlib's wbits for one gzip member


class Block(NamedTuple):
    """One family's lines for a run of keys, kept only compressed (a tenth of the text): the gzip member,
    how many bytes each key's lines take in it (to patch one key without formatting the others), and the
    member's plain size (the header's included)."""

    member: bytes
    lengths: array[int]
    size: int


class Published(NamedTuple):
    """The fleet part as the latest refresh left it: immutable, so a scrape may read it while a refresh runs."""

    members: tuple[bytes, ...]  # gzip members, in body order (source, family, block)
    size: int  # bytes of text they decompress to


class Fleet:
    """Each key's lines per family, kept as gzip members per (family, block of keys), and each key's entry.

    `refresh` formats only the keys whose entry changed (`rendered` counts them): given the keys the
    snapshot's journal says changed, it reads only those (a cycle publishing in batches costs each refresh
    its batch, not the fleet); otherwise, or when keys came or went, it compares every entry. A block is
    decompressed to patch a key's lines and compressed again only when a line in it changed. Gzip members
    concatenate into one valid stream (RFC 1952), so the gzip body is their concatenation. Only one thread
    may refresh a Fleet at a time; `published` may be read meanwhile.
    """

    def __init__(self, sources: Sequence[Source] = SOURCES, *, block_keys: int = BLOCK_KEYS,
                 compresslevel: int = COMPRESSLEVEL) -> None:
        if block_keys <= 0:
            raise ValueError("block_keys must be > 0")
        self.sources, self.block_keys, self.compresslevel = tuple(sources), block_keys, compresslevel
        self.headers = [[f.header() for f in s.families] for s in self.sources]
        self.rendered = 0  # keys formatted since construction (tests count them)
        self.published = Published((), 0)
        self._forget()

    def _forget(self) -> None:
        self._index: list[dict[Hashable, int]] = [{} for _ in self.sources]  # key -> its position; shared
        # between sources that have the same keys in the same order (never mutated once built)
        self._entries: list[list[Any]] = [[] for _ in self.sources]  # what each key's lines were rendered from
        self._blocks: list[list[list[Block]]] = [[] for _ in self.sources]  # per source, family: its blocks
        self._inputs: list[tuple[Any, ...] | None] = [None for _ in self.sources]  # None: never rendered

    def refresh(self, snapshot: Snapshot, changed: Collection[Hashable] | None = None) -> None:
        """Bring the blocks up to `snapshot` (a copy nobody else mutates meanwhile); `changed`: the result
        keys changed since the last refresh (None: unknown, compare everything). A refresh that fails
        forgets everything, so the next one renders the fleet whole rather than patch a half-done one."""
        try:
            for s, source in enumerate(self.sources):
                inputs, before = source.inputs(snapshot), self._inputs[s]
                standing = changed is not None and before is not None and len(inputs) == len(before) and all(
                    a is b for a, b in zip(inputs, before, strict=True))
                if standing and (source.entry is None or self._patch(s, source, snapshot, changed)):
                    continue
                self._full(s, source, snapshot)
                self._inputs[s] = inputs
        except BaseException:
            self._forget()
            raise
        blocks = [block for families in self._blocks for family in families for block in family]
        self.published = Published(tuple(b.member for b in blocks), sum(b.size for b in blocks))

    def _render(self, source: Source, key: Hashable, entry: Any) -> tuple[bytes, ...]:
        self.rendered += 1
        return source.render(source.own_labels(key), entry)

    def _full(self, s: int, source: Source, snapshot: Snapshot) -> None:
        """Lay the source out again in its rows' order: a key whose entry is unchanged keeps its lines
        (copied out of the old blocks), and a block whose keys all stayed in place keeps its member."""
        rows, size, headers = source.rows(snapshot), self.block_keys, self.headers[s]
        keys, entries = list(rows), list(rows.values())
        index, entries_before, old = self._index[s], self._entries[s], _OldLines(self._blocks[s], headers, size)
        blocks: list[list[Block]] = [[] for _ in headers]
        for start in range(0, max(len(keys), 1), size):
            items: list[int | tuple[bytes, ...]] = []  # per key: its old position, or its new lines
            for key, entry in zip(keys[start:start + size], entries[start:start + size], strict=True):
                n = index.get(key)
                items.append(n if n is not None and entries_before[n] == entry else self._render(source, key, entry))
            b = start // size
            kept = old.in_place(b, items)
            for f, header in enumerate(headers):
                if kept:
                    blocks[f].append(old.blocks[f][b])
                    continue
                lines = [old.line(f, item) if isinstance(item, int) else item[f] for item in items]
                blocks[f].append(self._block(header if b == 0 else b"", lines))
            old.forget_before(min((i for i in items if isinstance(i, int)), default=0) // size)
        self._index[s], self._entries[s], self._blocks[s] = self._shared_index(s, keys), entries, blocks

    def _shared_index(self, s: int, keys: list[Hashable]) -> dict[Hashable, int]:
        """Positions by key: another source's dict when its keys are the same, in the same order."""
        for index in self._index[:s] + self._index[s:s + 1]:
            if len(index) == len(keys) and list(index) == keys:
                return index
        return {key: n for n, key in enumerate(keys)}

    def _patch(self, s: int, source: Source, snapshot: Snapshot, changed: Collection[Hashable]) -> bool:
        """Format again the changed keys' lines and patch them into their blocks; False (nothing done) when
        a key came (its place in the body is the fleet's to decide); a key forgotten is never here (the
        journal answers None)."""
        index, entries = self._index[s], self._entries[s]
        news = {key: source.entry(snapshot, key) for key in changed}
        if any((entry is MISSING) != (key not in index) for key, entry in news.items()):
            return False
        touched: dict[int, dict[int, tuple[bytes, ...]]] = {}  # block -> position in it -> the key's lines
        updates = []
        for key, entry in news.items():
            n = index.get(key)
            if n is None or entries[n] == entry:
                continue
            b, at = divmod(n, self.block_keys)
            touched.setdefault(b, {})[at] = self._render(source, key, entry)
            updates.append((n, entry))
        for f, blocks in enumerate(self._blocks[s]):
            header = self.headers[s][f]
            for b, lines in touched.items():
                blocks[b] = self._patched(blocks[b], {at: new[f] for at, new in lines.items()},
                                          header if b == 0 else b"")
        for n, entry in updates:
            entries[n] = entry
        return True

    def _patched(self, block: Block, lines: dict[int, bytes], header: bytes) -> Block:
        """`block` with the lines at some positions replaced; the same block when none differs."""
        if len(lines) == len(block.lengths):  # every key's lines: the old text matters only if it is the same
            new = [lines[at] for at in range(len(lines))]
            text = header + b"".join(new)
            if len(text) == block.size and zlib.crc32(text) == _crc(block.member) and text == _text(block):
                return block
            return self._compressed(text, array("I", map(len, new)))
        plain = _text(block)[len(header):]
        ends, lengths = list(accumulate(block.lengths)), block.lengths
        pieces, done, differs = [], 0, False
        for at in sorted(lines):
            line, start = lines[at], ends[at] - lengths[at]
            differs = differs or plain[start:ends[at]] != line
            pieces += (plain[done:start], line)
            done = ends[at]
        if not differs:
            return block
        pieces.append(plain[done:])
        lengths = array("I", lengths)
        for at, line in lines.items():
            lengths[at] = len(line)
        return self._block(header, pieces, lengths)

    def _block(self, header: bytes, lines: list[bytes], lengths: array[int] | None = None) -> Block:
        return self._compressed(header + b"".join(lines), array("I", map(len, lines)) if lengths is None else lengths)

    def _compressed(self, text: bytes, lengths: array[int]) -> Block:
        return Block(gzip.compress(text, compresslevel=self.compresslevel, mtime=0), lengths, len(text))


def _text(block: Block) -> bytes:
    return zlib.decompress(block.member, GZIP_WBITS)


def _crc(member: bytes) -> int:
    """The CRC-32 of a gzip member's text, from its trailer (RFC 1952): a cheap first test of equal text."""
    return int.from_bytes(member[-8:-4], "little")


class _OldLines:
    """A source's blocks before a full refresh, decompressed on demand, so unchanged keys keep their lines."""

    def __init__(self, blocks: list[list[Block]], headers: list[bytes], block_keys: int) -> None:
        self.blocks, self.headers, self.block_keys = blocks, headers, block_keys
        self._plain: dict[tuple[int, int], tuple[bytes, list[int]]] = {}  # (family, block) -> text, line ends

    def in_place(self, b: int, items: list[int | tuple[bytes, ...]]) -> bool:
        """Whether block `b` holds exactly these keys, unchanged and at the same positions as before."""
        start = b * self.block_keys
        return (bool(self.blocks) and b < len(self.blocks[0]) and len(self.blocks[0][b].lengths) == len(items)
                and all(item == n for n, item in enumerate(items, start)))

    def line(self, f: int, n: int) -> bytes:
        b, at = divmod(n, self.block_keys)
        cached = self._plain.get((f, b))
        if cached is None:
            block = self.blocks[f][b]
            text = _text(block)[len(self.headers[f]) if b == 0 else 0:]
            cached = self._plain[f, b] = text, [0, *accumulate(block.lengths)]
        text, ends = cached
        return text[ends[at]:ends[at + 1]]

    def forget_before(self, b: int) -> None:
        """Drop the text of blocks before `b`: keys move little between refreshes, so few are needed at once."""
        for key in [key for key in self._plain if key[1] < b]:
            del self._plain[key]


def assemble(published: Published, own: bytes, compressed: bool) -> bytes:
    """The body: the fleet's members, then the instruments' text, gzipped (members concatenate into one
    valid stream, RFC 1952) or as text, decompressed into one buffer of the known size (no second copy)."""
    if compressed:
        return b"".join([*published.members, gzip.compress(own, compresslevel=COMPRESSLEVEL, mtime=0)])
    body = bytearray(published.size + len(own))
    view, at = memoryview(body), 0
    for member in published.members:
        text = zlib.decompress(member, GZIP_WBITS)
        view[at:at + len(text)] = text
        at += len(text)
    view[at:] = own
    return body  # type: ignore[return-value]  # a bytearray: bytes-like wherever a body is written
