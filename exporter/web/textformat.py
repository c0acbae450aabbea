"""Prometheus text format written by hand, byte for byte what prometheus_client's generate_latest writes.

Why by hand: generate_latest builds a Sample per series and formats every one on every render (~0.8 s
for 10,000 integrations); the exposition instead keeps each key's lines and formats only what changed.
tests/unit/test_exposition.py proves the bytes equal generate_latest's for the same snapshot.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Source:
    """Families rendered from one mapping of the snapshot (key -> immutable entry). A key's lines are
    formatted again only when its entry changes (compared with ==, so entries must be values)."""

    rows: Callable[[Any], Mapping[Hashable, Any]]
    labels: tuple[str, ...]  # the key's label names, e.g. ("org_id", "integration_type")
    key_labels: Callable[[Any], tuple[str, ...]]  # the key's label values, in that order
    families: tuple[Family, ...]
    _templates: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_templates", tuple(_template(self.labels, f) for f in self.families))

    def render(self, key: Any, entry: Any) -> tuple[bytes, ...]:
        """The key's lines, one bytes per family (empty where the family has no sample for it)."""
        own = tuple(escape(v) for v in self.key_labels(key))
        return tuple("".join([template.format(*own, *map(escape, extra), floatToGoString(value))
                              for extra, value in family.samples(entry)]).encode()
                     for family, template in zip(self.families, self._templates, strict=True))


def _template(key_labels: tuple[str, ...], family: Family) -> str:
    """A str.format template for one sample line: labels sorted by name, as prometheus_client sorts them."""
    names = [*key_labels, *family.labels]
    for name in names:
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"{family.name}: {name!r} is not a label name")
    if len(set(names)) != len(names):
        raise ValueError(f"{family.name}: a label name repeats: {names}")
    labels = ",".join(f'{names[i]}="{{{i}}}"' for i in sorted(range(len(names)), key=names.__getitem__))
    return f"{family.name}{{{{{labels}}}}} {{{len(names)}}}\n" if names else f"{family.name} {{0}}\n"
