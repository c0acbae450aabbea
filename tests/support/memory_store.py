"""An in-memory stand-in for storage.store.Store, for web and engine tests that are not about SQL.

The database tests keep using the real Store on a real PostgreSQL; this fake only keeps what the
service reads back, so a web test needs no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from uuid import UUID, uuid4

from exporter.core.maintenance import Window
from exporter.core.model import HealthStatus, Integration, IntegrationResult
from exporter.core.syncs import SyncRun


class MemoryStore:
    """Integrations to load, the latest result per integration, history by slot, sync runs, maintenance
    windows; `down` fails all."""

    def __init__(self, integrations: Sequence[Integration] = ()) -> None:
        self.integrations = list(integrations)
        self.status: dict[tuple[UUID, str], IntegrationResult] = {}
        self.slots: dict[tuple[UUID, str, datetime], IntegrationResult] = {}
        self.runs: dict[tuple[UUID, str], list[SyncRun]] = {}
        self.windows: list[Window] = []
        self.down = False

    def _available(self) -> None:
        if self.down:
            raise OSError("the in-memory database is down")

    async def ping(self) -> None:
        self._available()

    async def load_integrations(self, org_id: UUID | None = None) -> list[Integration]:
        self._available()
        return [i for i in self.integrations if org_id is None or i.org_id == org_id]

    async def persist(self, results: Sequence[IntegrationResult], slot: datetime | None) -> None:
        self._available()
        for r in results:
            key = (r.org_id, r.integration_type)
            if key not in self.status or self.status[key].result.checked_at <= r.result.checked_at:
                self.status[key] = r
            if slot is not None:  # None: status rows only
                self.slots.setdefault((*key, slot), r)

    async def last_results(self, org_id: UUID | None = None) -> list[IntegrationResult]:
        self._available()
        configured = {(i.org_id, i.integration_type) for i in self.integrations}  # the enabled ones
        return [r for k, r in sorted(self.status.items()) if k in configured and (org_id is None or k[0] == org_id)]

    async def history(self, org_id: UUID) -> list[dict]:
        self._available()
        return [{"integration_type": kind, "slot": slot, "status": r.result.status.value,
                 "latency_ms": r.result.latency_ms, "checked_at": r.result.checked_at, "error_message": r.result.error,
                 "reason": r.result.reason.value if r.result.reason else None, "maintenance": r.maintenance,
                 "vendor_incident_since": r.result.vendor_incident_since}
                for (org, kind, slot), r in sorted(self.slots.items()) if org == org_id]

    async def recent_sync_runs(self, limit_per_integration: int = 5) -> dict[tuple[UUID, str], list[SyncRun]]:
        self._available()
        return {k: runs[-limit_per_integration:] for k, runs in self.runs.items()}

    async def report_sync_run(self, org_id: UUID, integration_type: str, run: SyncRun) -> tuple[bool, SyncRun]:
        self._available()
        self.runs.setdefault((org_id, integration_type), []).append(run)
        return True, run

    async def availability(self, org_id: UUID) -> list[dict]:
        """As the SQL: per type, the share of slots not unreachable, slots in maintenance left out."""
        self._available()
        by_type: dict[str, list[IntegrationResult]] = {}
        for (org, kind, _), r in sorted(self.slots.items()):
            if org == org_id:
                by_type.setdefault(kind, []).append(r)
        out = []
        for kind, rs in by_type.items():
            counted = [r for r in rs if not r.maintenance]
            usable = sum(r.result.status != HealthStatus.UNREACHABLE for r in counted)
            out.append({"integration_type": kind, "availability": usable / len(counted) if counted else None,
                        "counted_slots": len(counted), "maintenance_slots": len(rs) - len(counted)})
        return out

    async def maintenance_windows(self, now: datetime, *, state: str | None = None, org_id: UUID | None = None,
                                  limit: int = 1000) -> list[Window]:
        self._available()
        states = {"active": lambda w: w.active(now), "upcoming": lambda w: w.starts_at > now,
                  "ended": lambda w: w.ends_at <= now}
        wanted = states.get(state or "", lambda w: w.ends_at > now)
        chosen = [w for w in self.windows if wanted(w) and (org_id is None or w.org_id in (None, org_id))]
        return sorted(chosen, key=lambda w: (w.starts_at, str(w.id)))[:limit]

    async def add_maintenance_window(self, window: Window) -> Window:
        self._available()
        stored = replace(window, id=uuid4(), created_at=window.created_at or window.starts_at)
        self.windows.append(stored)
        return stored

    async def delete_maintenance_window(self, window_id: UUID) -> Window | None:
        self._available()
        found = next((w for w in self.windows if w.id == window_id), None)
        if found:
            self.windows.remove(found)
        return found
