"""Prometheus text format written by hand, byte for byte what prometheus_client's generate_latest writes.

Why by hand: generate_latest builds a Sample per series and formats every one on every render (~0.8 s
for 10,000 integrations); the exposition instead keeps each key's lines (compressed) and formats only
what changed.
tests/unit/test_metrics.py proves the bytes equal generate_latest's for the same snapshot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.utils import floatToGoString

Sample = tuple[tuple[str, ...], float]  # the family's own label values (after the key's), and the value
TYPES = ("gauge", "counter")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def escape(value: str) -> str:
    """A label value as prometheus_client escapes it: backslash, newline and double quote."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


_GO = {0.0: "0.0", 1.0: "1.0"}  # most samples are one-hot flags and zero counts


def go_float(value: float) -> str:
    """floatToGoString, with the two commonest values looked up (-0.0 equals 0.0 but prints "-0.0")."""
    text = _GO.get(value)
    if text is None or (not value and math.copysign(1.0, value) < 0):
        return floatToGoString(value)
    return text


@dataclass(frozen=True)
class Family:
    """One metric family: its exposed name (a counter's ends in `_total`), help, type, the labels it adds
    to its source's key labels, and `samples`, a function from one entry to that entry's samples."""

    name: str
    help: str
    type: str
    samples: Callable[[Any], Iterable[Sample]]
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"{self.name}: type must be one of {TYPES}, not {self.type!r}")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"{self.name}: a counter's exposed name ends in _total")
        if not _METRIC_NAME.fullmatch(self.name):
            raise ValueError(f"{self.name!r} is not a Prometheus metric name")

    def header(self) -> bytes:
        text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} {self.type}\n".encode()


MISSING = object()  # Source.entry's answer for a key the source has no entry for


def _no_inputs(_: Any) -> tuple[()]:
    return ()


@dataclass(frozen=True)
class Source:
    """Families rendered from one mapping of the snapshot (key -> immutable entry). A key's lines are
    formatted again only when its entry changes (compared with ==, so entries must be values).

    What tells a renderer that nothing else changed: `inputs`, the snapshot's objects the rows are made of
    (compared by identity: they are replaced, never mutated). A source with `entry` (one key's entry, or
    MISSING) also follows the snapshot's journal of changed result keys: while its inputs stand, only those
    keys are read again. A source without it is read again whole when an input was replaced."""

    rows: Callable[[Any], Mapping[Hashable, Any]]
    labels: tuple[str, ...]  # the key's label names, e.g. ("org_id", "integration_type")
    key_labels: Callable[[Any], tuple[str, ...]]  # the key's label values, in that order
    families: tuple[Family, ...]
    inputs: Callable[[Any], tuple[Any, ...]] = _no_inputs
    entry: Callable[[Any, Hashable], Any] | None = None
    _formats: tuple[_Format, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_formats", tuple(_Format(self.labels, f) for f in self.families))

    def own_labels(self, key: Any) -> tuple[str, tuple[str, ...]]:
        """The key's labels, formatted once per key: sorted `name="value"` pairs, and the escaped values."""
        values = tuple(map(escape, self.key_labels(key)))
        return ",".join(f'{n}="{v}"' for n, v in sorted(zip(self.labels, values, strict=True))), values

    def render(self, own: tuple[str, tuple[str, ...]], entry: Any) -> tuple[bytes, ...]:
        """The key's lines, one bytes per family (empty where the family has no sample for it)."""
        return tuple(f.lines(own, f.family.samples(entry)) for f in self._formats)


class _Format:
    """How one family's sample lines are written, labels sorted by name as prometheus_client sorts them.

    The common case (the family's own labels sort after the key's) concatenates the key's formatted labels
    with a per-value tail; otherwise a str.format template places every label."""

    def __init__(self, key_labels: tuple[str, ...], family: Family) -> None:
        names = [*key_labels, *family.labels]
        for name in names:
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ValueError(f"{family.name}: {name!r} is not a label name")
        if len(set(names)) != len(names):
            raise ValueError(f"{family.name}: a label name repeats: {names}")
        self.family, self.head = family, family.name + "{"
        self.joined = bool(key_labels) and all(e > k for e in family.labels for k in key_labels)
        self.tails: dict[tuple[str, ...], str] = {}
        labels = ",".join(f'{names[i]}="{{{i}}}"' for i in sorted(range(len(names)), key=names.__getitem__))
        self.template = f"{family.name}{{{{{labels}}}}} {{{len(names)}}}\n" if names else f"{family.name} {{0}}\n"

    def lines(self, own: tuple[str, tuple[str, ...]], samples: Iterable[Sample]) -> bytes:
        if not self.joined:
            return "".join([self.template.format(*own[1], *map(escape, extra), go_float(value))
                            for extra, value in samples]).encode()
        head, formatted, tails = self.head, own[0], self.tails
        out = []
        for extra, value in samples:
            tail = tails.get(extra)
            if tail is None:
                tail = self._tail(extra)
            out.append(f"{head}{formatted}{tail}{go_float(value)}\n")
        return "".join(out).encode()

    def _tail(self, extra: tuple[str, ...]) -> str:
        """`,name="value"} ` for the family's own labels (sorted), remembered: they come from small sets."""
        if len(self.tails) > 4096:  # bounded, whatever a family puts in its labels
            self.tails.clear()
        pairs = sorted(zip(self.family.labels, map(escape, extra), strict=True))
        tail = self.tails[extra] = "".join(f',{n}="{v}"' for n, v in pairs) + "} "
        return tail
