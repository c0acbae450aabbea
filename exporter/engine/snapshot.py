"""The latest result per integration, held in memory: what /metrics renders and the scheduler consults."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from exporter.core.model import CheckState, IntegrationResult
from exporter.core.syncs import SyncAssessment
from exporter.core.warmups import WarmupRecord

Key = tuple[UUID, str]


@dataclass
class Snapshot:
    results: dict[Key, IntegrationResult] = field(default_factory=dict)
    version: int = 0  # bumped on every change, so renderers can cache per version
    syncs: dict[Key, SyncAssessment] = field(default_factory=dict)  # schedule adherence, where known
    modes: dict[Key, str] = field(default_factory=dict)  # "active" or "passive"
    status_changes: dict[Key, int] = field(default_factory=dict)  # since this process started: a counter
    warmups: dict[Key, WarmupRecord] = field(default_factory=dict)  # the latest warm-up before a sync

    def record_warmup(self, key: Key, record: WarmupRecord) -> None:
        """Keep an integration's latest warm-up (a new mapping, as __setattr__ asks: it bumps the version)."""
        self.warmups = {**self.warmups, key: record}

    def __setattr__(self, name: str, value: object) -> None:
        """Replacing a mapping (`snapshot.modes = …`) is a change too: bump the version, so a renderer that
        caches per version never serves the old one. Replace mappings; never mutate them in place."""
        initialised = "warmups" in self.__dict__  # __init__ sets the fields in order, this one last
        object.__setattr__(self, name, value)
        if initialised and name != "version":
            object.__setattr__(self, "version", self.version + 1)

    def update(self, results: Iterable[IntegrationResult]) -> None:
        """Record newer results; an older one (a late run-now, a restore) never replaces a newer one.

        Each replacement with another status counts as a change, so flapping shows as a counter's rate.
        """
        for r in results:
            key = (r.org_id, r.integration_type)
            current = self.results.get(key)
            if current is None or current.result.checked_at <= r.result.checked_at:
                self.results[key] = r
                if current is not None and current.result.status != r.result.status:
                    self.status_changes[key] = self.status_changes.get(key, 0) + 1
        self.version += 1

    def retain(self, keys: set[Key]) -> None:
        """Forget integrations that are no longer configured, so their series disappear."""
        gone = self.results.keys() - keys
        for key in gone:
            del self.results[key]
            self.status_changes.pop(key, None)
        for extra in (self.warmups, self.syncs):
            for key in extra.keys() - keys:
                del extra[key]
                gone.add(key)
        if gone:
            self.version += 1

    def copy(self) -> Snapshot:
        """A shallow copy (results are immutable) that a renderer in another thread can read safely."""
        return Snapshot(dict(self.results), self.version, dict(self.syncs), dict(self.modes),
                        dict(self.status_changes), dict(self.warmups))

    def states(self) -> dict[Key, CheckState]:
        return {k: r.state for k, r in self.results.items()}
