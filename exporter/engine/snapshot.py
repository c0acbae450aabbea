"""The latest result per integration, held in memory: what /metrics renders and the scheduler consults."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from exporter.core import maintenance
from exporter.core.maintenance import Window
from exporter.core.model import CheckState, Integration, IntegrationResult
from exporter.core.syncs import SyncAssessment
from exporter.core.warmups import WarmupRecord

Key = tuple[UUID, str]
JOURNAL_SLACK = 4096  # keys the journal keeps beyond twice the fleet, so a renderer a cycle behind still catches up


def key_of(i: Integration) -> Key:
    return (i.org_id, i.integration_type)


@dataclass
class Snapshot:
    """Mappings are replaced, never mutated in place, except `results` and `status_changes`, which only
    `update` and `retain` change: they note each key they touch in a journal (`changed_since`), so a renderer
    re-reads only those keys instead of comparing the whole fleet after every batch of a cycle."""

    results: dict[Key, IntegrationResult] = field(default_factory=dict)
    version: int = 0  # bumped on every change, so renderers can cache per version
    syncs: dict[Key, SyncAssessment] = field(default_factory=dict)  # schedule adherence, where known
    modes: dict[Key, str] = field(default_factory=dict)  # "active" or "passive"
    status_changes: dict[Key, int] = field(default_factory=dict)  # since this process started: a counter
    warmups: dict[Key, WarmupRecord] = field(default_factory=dict)  # the latest warm-up before a sync
    windows: tuple[Window, ...] = ()  # maintenance windows not yet over, as last loaded
    in_maintenance: frozenset[Key] = frozenset()  # the integrations a window covered when last judged
    # bookkeeping (a leading underscore: setting it is no change): (version, keys of results changed at it)
    _journal: deque[tuple[int, Collection[Key]]] = field(default_factory=deque, init=False, repr=False,
                                                         compare=False)
    _journaled: int = field(default=0, init=False, repr=False, compare=False)  # keys in the journal
    _forgotten: int = field(default=-1, init=False, repr=False, compare=False)  # newest version dropped from it
    _removed: int = field(default=-1, init=False, repr=False, compare=False)  # latest version that removed a key
    # each key as the one object `results` holds it by: the journal notes that one, not the copy each result
    # makes, so a cycle leaves no new key for the full collection after it to walk (engine/heap.py)
    _keys: dict[Key, Key] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ready", True)

    def __setattr__(self, name: str, value: object) -> None:
        """Replacing a mapping (`snapshot.modes = …`) is a change too: bump the version, so a renderer that
        caches per version never serves the old one. Replace mappings; never mutate them in place."""
        object.__setattr__(self, name, value)
        if name != "version" and not name.startswith("_") and self.__dict__.get("_ready"):
            object.__setattr__(self, "version", self.version + 1)

    def record_warmup(self, key: Key, record: WarmupRecord) -> None:
        """Keep an integration's latest warm-up (a new mapping, as __setattr__ asks: it bumps the version)."""
        self.warmups = {**self.warmups, key: record}

    def update(self, results: Iterable[IntegrationResult]) -> None:
        """Record newer results; an older one (a late run-now, a restore) never replaces a newer one.

        Each replacement with another status counts as a change, so flapping shows as a counter's rate.
        """
        changed = []
        keys = self._keys
        for r in results:
            key = (r.org_id, r.integration_type)
            key = keys.setdefault(key, key)
            current = self.results.get(key)
            if current is None or current.result.checked_at <= r.result.checked_at:
                self.results[key] = r
                changed.append(key)
                if current is not None and current.result.status != r.result.status:
                    self.status_changes[key] = self.status_changes.get(key, 0) + 1
        self.version += 1
        self._note(changed)

    def retain(self, keys: Collection[Key]) -> None:
        """Forget integrations that are no longer configured, so their series disappear."""
        gone = self.results.keys() - keys
        if gone:
            for key in gone:
                del self.results[key]
                self.status_changes.pop(key, None)
                self._keys.pop(key, None)
            self.version += 1
            self._removed = self.version  # the keys after it moved up: a renderer compares everything again
        for name in ("modes", "syncs", "warmups"):
            mapping = getattr(self, name)
            if mapping.keys() - keys:
                setattr(self, name, {k: v for k, v in mapping.items() if k in keys})  # replaced: a new version

    def _note(self, keys: Collection[Key]) -> None:
        if not keys:
            return
        self._journal.append((self.version, keys))
        self._journaled += len(keys)
        while self._journaled > 2 * len(self.results) + JOURNAL_SLACK and len(self._journal) > 1:
            version, dropped = self._journal.popleft()
            self._journaled -= len(dropped)
            self._forgotten = version

    def changed_since(self, version: int | None) -> set[Key] | None:
        """The keys whose result or status-change count changed after `version`; None when the journal no
        longer reaches back that far, a key was forgotten since, or `version` is None: compare everything."""
        batches = self.changes_since(version)
        return None if batches is None else set().union(*batches)

    def changes_since(self, version: int | None) -> list[Collection[Key]] | None:
        """As changed_since, but the journal's batches of keys as they are (never mutated once noted): cheap
        to take on the event loop, while their union (hashing every key, 100,000 after a cycle) is left to
        whoever reads them, in a thread."""
        if version is None or version < self._forgotten or version < self._removed:
            return None
        batches = []
        for at, keys in reversed(self._journal):
            if at <= version:
                break
            batches.append(keys)
        return batches

    def copy(self) -> Snapshot:
        """A shallow copy (results are immutable) that a renderer in another thread can read safely. The
        mappings only ever replaced are shared, not copied: a renderer tells them unchanged by identity."""
        return Snapshot(dict(self.results), self.version, self.syncs, self.modes, dict(self.status_changes),
                        self.warmups, self.windows, self.in_maintenance)

    def states(self) -> dict[Key, CheckState]:
        return {k: r.state for k, r in self.results.items()}

    def set_windows(self, windows: Iterable[Window]) -> None:
        """Replace the known maintenance windows (a change re-renders the exposition)."""
        windows = tuple(windows)
        if windows != self.windows:
            self.windows = windows

    def judge_maintenance(self, at: datetime) -> None:
        """Set `in_maintenance` for the instant `at` (a change bumps the version, so the exposition follows a
        window's start and end between cycles). Cheap when nothing changed: the windows in force at `at`
        and the version are compared first; only then is the fleet looked at."""
        active = frozenset(w.id for w in maintenance.active(self.windows, at))
        if self.__dict__.get("_judged") == (active, self.version):
            return
        covered = frozenset(maintenance.covered(self.windows, self.results.keys(), at))
        if covered != self.in_maintenance:
            self.in_maintenance = covered
        self._judged = (active, self.version)
