"""The event registry and the two-in-a-row rule that decides when a status change is news."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from exporter.core.events import (
    EVENT_KINDS,
    CredentialExpiring,
    EventType,
    StatusChanged,
    confirm,
    make_event,
    parse_event_types,
    status_changed,
)
from exporter.core.model import HealthStatus

H, D, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNREACHABLE
ORG = UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def announcements(statuses: list[HealthStatus], confirmed: HealthStatus | None = None) -> list[HealthStatus]:
    """Feed results one by one, as the store does after each persist; the statuses announced."""
    said, previous = [], None
    for latest in statuses:
        confirmed, news = confirm(confirmed, latest, previous)
        if news:
            said.append(latest)
        previous = latest
    return said


@pytest.mark.parametrize(("results", "announced"), [
    ([H, H, H], []),  # a new integration that works is no news
    ([U], []),  # one failure is not a change
    ([U, U], [U]),  # two in a row are
    ([U, U, U, U], [U]),  # and it is said once
    ([H, H, U, H, H], []),  # a blip between two equal results changes nothing
    ([H, U, U, H, H], [U, H]),  # down, then recovered
    ([U, U, H, U, U], [U]),  # a single good result does not end an outage
    ([U, U, D, D], [U, D]),  # unreachable to degraded is a change too
    ([H, D, U, D, U], []),  # flapping with no two alike confirms nothing
])
def test_a_status_is_announced_when_two_consecutive_results_confirm_a_change(results, announced) -> None:
    assert announcements(results) == announced


def test_an_integration_with_no_confirmed_status_counts_as_healthy() -> None:
    assert confirm(None, H, H) == (H, False)  # confirmed, silently
    assert confirm(None, D, D) == (D, True)
    assert confirm(U, U, U) == (U, False)


def test_event_ids_are_the_same_for_the_same_occurrence_and_differ_otherwise() -> None:
    a = status_changed(ORG, "http", H, U, 10, T, "http_5xx", "HTTP 503")
    assert a.id == status_changed(ORG, "http", H, U, 10, T, "http_5xx", "HTTP 503").id
    assert a.id != status_changed(ORG, "fiken", H, U, 10, T, "http_5xx", "HTTP 503").id
    assert a.id != status_changed(ORG, "http", H, U, 10, T.replace(minute=15), None, None).id


def test_the_status_changed_body_is_the_documented_payload() -> None:
    event = status_changed(ORG, "http", None, U, 10_000, T, "timeout", "timed out after 10 s")
    assert event.body() == {
        "id": str(event.id), "type": "integration.status_changed", "org_id": str(ORG),
        "occurred_at": "2026-11-23T12:00:00Z",
        "data": {"integration_type": "http", "status": "unreachable", "previous_status": "healthy",
                 "reason": "timeout", "error": "timed out after 10 s", "latency_ms": 10000,
                 "checked_at": "2026-11-23T12:00:00Z"}}


def test_an_event_carries_only_its_kinds_payload() -> None:
    data = CredentialExpiring(integration_type="fiken", expires_at=T, threshold_days=30)
    assert make_event(EventType.CREDENTIAL_EXPIRING, ORG, T, data, "fiken").data == data
    with pytest.raises(TypeError, match="credential.expiring carries a CredentialExpiring, not a StatusChanged"):
        make_event(EventType.CREDENTIAL_EXPIRING, ORG, T,
                   StatusChanged(integration_type="x", status=U, previous_status=H, latency_ms=0, checked_at=T))


def test_every_kind_is_registered_once_and_every_kind_is_emitted() -> None:
    assert list(EVENT_KINDS) == list(EventType)
    assert all(k.emitted for k in EVENT_KINDS.values())


def test_subscription_event_names_are_parsed_in_registry_order_and_unknown_ones_named() -> None:
    assert parse_event_types(["credential.expiring", "integration.status_changed", "credential.expiring"]) == [
        EventType.STATUS_CHANGED, EventType.CREDENTIAL_EXPIRING]
    with pytest.raises(ValueError, match=r"unknown event types \['nope'\]"):
        parse_event_types(["nope", "vendor.incident"])
