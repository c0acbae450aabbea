"""What organisations are notified of: the event kinds (one registry), their payloads, and when a status
change is news. Pure: storage writes the events, engine delivers them.

Adding a kind: its `EventType`, a payload model, one line in EVENT_KINDS (and the name in the CHECK of
webhook_subscription.events, migrations/0014_webhooks.sql). The feature that detects it builds events with
`make_event` and hands them to `storage.webhooks.enqueue` inside its own transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict

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


class VendorIncident(Payload):
    """A vendor is down for many organisations, this one among them (issue 15.1)."""

    integration_type: str
    since: AwareDatetime
    ended_at: AwareDatetime | None = None


class MaintenanceWindow(Payload):
    """A maintenance window starts or ends for one of the organisation's integrations (issue 15.2)."""

    integration_type: str | None = None  # None: every integration of the organisation
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    description: str | None = None


class CredentialExpiring(Payload):
    """An integration's credential expires soon (issue 17); the secret itself is never in a payload."""

    integration_type: str
    expires_at: AwareDatetime


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
                  "a vendor-wide incident affects one of the organisation's integrations", emitted=False),
        EventKind(EventType.MAINTENANCE_WINDOW, MaintenanceWindow,
                  "a maintenance window starts or ends", emitted=False),
        EventKind(EventType.CREDENTIAL_EXPIRING, CredentialExpiring,
                  "an integration's credential is about to expire", emitted=False),
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


def parse_event_types(names: Sequence[str]) -> list[EventType]:
    """Subscription event names as types, in registry order, each once; ValueError names the unknown ones."""
    unknown = sorted({n for n in names if n not in EVENT_KINDS})
    if unknown:
        raise ValueError(f"unknown event types {unknown}; known: {[t.value for t in EVENT_KINDS]}")
    return [t for t in EVENT_KINDS if t.value in set(names)]
