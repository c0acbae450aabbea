"""What organisations are notified of: the event kinds (one registry), their payloads, and when a status
change is news. Pure: storage writes the events, engine delivers them.

Adding a kind: its `EventType`, a payload model, one line in EVENT_KINDS (and the name in the CHECK of
webhook_subscription.events, migrations/0014_webhooks.sql). The feature that detects it builds events with
`make_event` and hands them to `storage.webhooks.enqueue` inside its own transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict

from exporter.core.maintenance import Window
from exporter.core.model import HealthStatus

# uuid5 namespace of event ids: an event's id is a function of what happened, so the same event written
# twice (a retried batch, a second replica) is one row and one Webhook-Id.
EVENT_NAMESPACE = UUID("5b0e7a52-3c1d-4c4e-9a57-0f1b6a4c2d11")


class EventType(StrEnum):
    STATUS_CHANGED = "integration.status_changed"
    VENDOR_INCIDENT = "vendor.incident"
    MAINTENANCE_WINDOW = "maintenance.window"
    CREDENTIAL_EXPIRING = "credential.expiring"


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatusChanged(Payload):
    """An integration's status changed, confirmed by two consecutive results."""

    integration_type: str
    status: HealthStatus
    previous_status: HealthStatus
    reason: str | None = None
    error: str | None = None  # sanitised when the result was made
    latency_ms: int
    checked_at: AwareDatetime


Phase = Literal["started", "ended"]


class VendorIncident(Payload):
    """A vendor is down for many organisations, this one among them (issue 15.1): when the organisation's
    integration is first flagged with the incident, and again when it no longer is."""

    integration_type: str
    phase: Phase = "started"
    since: AwareDatetime  # the slot the incident began, the same for every organisation
    ended_at: AwareDatetime | None = None  # when phase is "ended": the result that no longer carried it


class MaintenanceWindowEvent(Payload):
    """A maintenance window starts or ends for the organisation (issue 15.2): once per window, whatever the
    number of its integrations it covers (a global window, org_id NULL, is announced to each organisation)."""

    window_id: UUID
    phase: Phase
    integration_type: str | None = None  # None: every integration of the organisation
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    description: str | None = None  # the window's reason, as the operator wrote it


class CredentialExpiring(Payload):
    """An integration's credential expires soon (issue 17); the secret itself is never in a payload.

    Sent when 30 days or fewer are left, again at 7, and once more when it has expired (`threshold_days` 0);
    each once per expiry date, so a renewed credential (a new `expires_at`) is announced afresh."""

    integration_type: str
    expires_at: AwareDatetime
    threshold_days: Literal[30, 7, 0]


@dataclass(frozen=True, slots=True)
class EventKind:
    """One kind of notification: its payload model, and whether anything produces it yet."""

    type: EventType
    payload: type[Payload]
    summary: str
    emitted: bool


EVENT_KINDS: Mapping[EventType, EventKind] = {
    k.type: k for k in (
        EventKind(EventType.STATUS_CHANGED, StatusChanged,
                  "an integration changed status (confirmed by two consecutive results)", emitted=True),
        EventKind(EventType.VENDOR_INCIDENT, VendorIncident,
                  "a vendor-wide incident affects one of the organisation's integrations, or no longer does",
                  emitted=True),
        EventKind(EventType.MAINTENANCE_WINDOW, MaintenanceWindowEvent,
                  "a maintenance window starts or ends for the organisation", emitted=True),
        EventKind(EventType.CREDENTIAL_EXPIRING, CredentialExpiring,
                  "an integration's credential expires within 30 days, within 7, or has expired", emitted=True),
    )
}


@dataclass(frozen=True, slots=True)
class Event:
    """An event for one organisation, ready for the outbox: `body()` is what the receiver gets."""

    id: UUID
    type: EventType
    org_id: UUID
    occurred_at: datetime
    data: Payload

    def body(self) -> dict[str, Any]:
        return {"id": str(self.id), "type": self.type.value, "org_id": str(self.org_id),
                "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
                "data": self.data.model_dump(mode="json")}


def make_event(kind: EventType, org_id: UUID, occurred_at: datetime, data: Payload, *key: object) -> Event:
    """An event whose id is derived from (kind, org, `key`…): the same occurrence always gets the same id."""
    expected = EVENT_KINDS[kind].payload
    if type(data) is not expected:
        raise TypeError(f"{kind.value} carries a {expected.__name__}, not a {type(data).__name__}")
    name = ":".join([kind.value, str(org_id), *(str(k) for k in key)])
    return Event(uuid.uuid5(EVENT_NAMESPACE, name), kind, org_id, occurred_at, data)


def confirm(confirmed: HealthStatus | None, latest: HealthStatus, previous: HealthStatus | None
            ) -> tuple[HealthStatus | None, bool]:
    """The two-in-a-row rule: (the confirmed status after `latest`, whether that is news to announce).

    A status is confirmed when two consecutive results agree on it (`latest` and the one before it,
    `previous`), as the alerts wait for two failures in a row: one transient result never notifies, and a
    blip between two equal results (healthy, unreachable, healthy) changes nothing. It is news when it
    differs from the status confirmed before; an integration with none confirmed yet counts as healthy,
    so a new one that works is no news and one that is down from the start is.
    """
    if previous != latest or latest == confirmed:
        return confirmed, False
    return latest, latest != (confirmed or HealthStatus.HEALTHY)


def status_changed(org_id: UUID, integration_type: str, previous: HealthStatus | None, status: HealthStatus,
                   latency_ms: int, checked_at: datetime, reason: str | None, error: str | None) -> Event:
    """The event announcing a newly confirmed status; its id is the confirming result's (org, type, time)."""
    data = StatusChanged(integration_type=integration_type, status=status,
                         previous_status=previous or HealthStatus.HEALTHY, reason=reason, error=error,
                         latency_ms=latency_ms, checked_at=checked_at)
    return make_event(EventType.STATUS_CHANGED, org_id, checked_at, data, integration_type, checked_at.isoformat())


@dataclass(frozen=True, slots=True)
class Flags:
    """What an integration's status row says of the three flagged kinds, read before and after a persist."""

    checked_at: datetime
    maintenance: bool = False
    vendor_incident_since: datetime | None = None
    credential_expires_at: datetime | None = None


EXPIRY_THRESHOLDS_DAYS = (30, 7, 0)  # as the alerts: a warning at 30 days, a page at 7; 0: expired


def expiry_threshold(expires_at: datetime, at: datetime) -> int | None:
    """The most urgent threshold reached at `at` (days left at most 30, 7, or 0: expired), or None."""
    reached = [d for d in EXPIRY_THRESHOLDS_DAYS if expires_at - at <= timedelta(days=d)]
    return min(reached) if reached else None


def incident_news(org_id: UUID, integration_type: str, before: Flags | None, after: Flags) -> list[Event]:
    """The vendor-incident events of one row's move: flagged with an incident it was not (started), no longer
    flagged with one it was (ended). Keyed by organisation, type, incident and the result that moved the flag:
    the same move written twice (a retried batch) is one event, and a row flagged, cleared (a "test
    connection" that worked) and flagged again within one incident says started, ended, started — never an
    "ended" left standing while the organisation is in the incident again."""
    was, now = before.vendor_incident_since if before else None, after.vendor_incident_since
    if was == now:
        return []
    out = []
    if was is not None:
        data = VendorIncident(integration_type=integration_type, phase="ended", since=was, ended_at=after.checked_at)
        out.append(make_event(EventType.VENDOR_INCIDENT, org_id, after.checked_at, data, integration_type,
                              was.isoformat(), "ended", after.checked_at.isoformat()))
    if now is not None:
        data = VendorIncident(integration_type=integration_type, phase="started", since=now)
        out.append(make_event(EventType.VENDOR_INCIDENT, org_id, now, data, integration_type, now.isoformat(),
                              after.checked_at.isoformat()))
    return out


def maintenance_news(org_id: UUID, integration_type: str, before: Flags | None, after: Flags,
                     windows: Iterable[Window]) -> list[Event]:
    """The maintenance-window events of one row's move, judged at its results' times as the flag was.

    Started: a window covers the new result (flagged) and did not already cover a flagged result before.
    Ended: a window covered the flagged result before and is over by the new one. Each keyed by the window
    and its phase, never by integration: an organisation hears of an org-wide or global window once,
    whichever of its integrations is checked first, and overlapping windows each start and end."""
    out = []
    for w in windows:
        if not w.applies_to(org_id, integration_type):
            continue
        had = before is not None and before.maintenance and w.active(before.checked_at)
        if after.maintenance and w.active(after.checked_at) and not had:
            out.append(_window_event(org_id, w, "started", w.starts_at))
        elif had and w.ends_at <= after.checked_at:
            out.append(_window_event(org_id, w, "ended", w.ends_at))
    return out


def _window_event(org_id: UUID, w: Window, phase: Phase, at: datetime) -> Event:
    data = MaintenanceWindowEvent(window_id=w.id, phase=phase, integration_type=w.integration_type,
                                  starts_at=w.starts_at, ends_at=w.ends_at, description=w.reason or None)
    return make_event(EventType.MAINTENANCE_WINDOW, org_id, at, data, w.id, phase)


def window_cut_short(org_ids: Iterable[UUID], w: Window, at: datetime) -> list[Event]:
    """The end of a window deleted at `at` while in force, for the organisations it had flagged: its row is
    gone, so no later result finds it; `ends_at` says when it really ended. Same ids as a natural end."""
    if not w.active(at):  # upcoming: nothing was announced; over: its end already was
        return []
    ended = replace(w, ends_at=at)
    return [_window_event(org_id, ended, "ended", at) for org_id in sorted(set(org_ids))]


def credential_news(org_id: UUID, integration_type: str, before: Flags | None, after: Flags) -> list[Event]:
    """The credential-expiry event of one row's move: a threshold (30, 7 days, expired) newly reached for its
    expiry date, the most urgent only (first seen with 5 days left: one event, at 7). Keyed by the date and
    the threshold: said once each, and a renewed credential (another date) may be announced again."""
    expires = after.credential_expires_at
    if expires is None or (reached := expiry_threshold(expires, after.checked_at)) is None:
        return []
    if before is not None and before.credential_expires_at == expires:
        earlier = expiry_threshold(expires, before.checked_at)
        if earlier is not None and earlier <= reached:
            return []
    data = CredentialExpiring(integration_type=integration_type, expires_at=expires, threshold_days=reached)
    return [make_event(EventType.CREDENTIAL_EXPIRING, org_id, after.checked_at, data, integration_type,
                       expires.isoformat(), reached)]


def row_news(org_id: UUID, integration_type: str, before: Flags | None, after: Flags,
             windows: Iterable[Window] = ()) -> list[Event]:
    """Every event one status row's move announces (besides status changes, which have their own rule)."""
    if before is not None and before == after:
        return []
    return (incident_news(org_id, integration_type, before, after)
            + maintenance_news(org_id, integration_type, before, after, windows)
            + credential_news(org_id, integration_type, before, after))


def parse_event_types(names: Sequence[str]) -> list[EventType]:
    """Subscription event names as types, in registry order, each once; ValueError names the unknown ones."""
    unknown = sorted({n for n in names if n not in EVENT_KINDS})
    if unknown:
        raise ValueError(f"unknown event types {unknown}; known: {[t.value for t in EVENT_KINDS]}")
    return [t for t in EVENT_KINDS if t.value in set(names)]
