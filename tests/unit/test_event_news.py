"""Which moves of a status row's flags are news: a vendor incident reaching or leaving the organisation, a
maintenance window starting or ending for it, a credential nearing its expiry (core/events, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from exporter.core.events import (
    EVENT_KINDS,
    CredentialExpiring,
    Event,
    EventType,
    Flags,
    MaintenanceWindowEvent,
    VendorIncident,
    credential_news,
    expiry_threshold,
    incident_news,
    maintenance_news,
    row_news,
    window_cut_short,
)
from exporter.core.maintenance import Window

ORG = UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
OTHER = UUID("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb")
T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
M = timedelta(minutes=15)
DAY = timedelta(days=1)


def at(n: int, **flags) -> Flags:
    """The row after the n-th quarter-hour check."""
    return Flags(T + n * M, **flags)


def walk(rows: list[Flags], news, *args) -> list[Event]:
    """Feed successive readings of one row, as successive persists do; every event said (ids deduplicated,
    as the outbox does)."""
    said: dict[UUID, Event] = {}
    before = None
    for row in rows:
        for e in news(ORG, "xledger", before, row, *args):
            said.setdefault(e.id, e)
        before = row
    return list(said.values())


def data(events: list[Event]) -> list[dict]:
    return [e.data.model_dump() for e in events]


def test_a_vendor_incident_is_announced_when_it_reaches_the_org_and_when_it_leaves() -> None:
    since = T + M
    said = walk([at(0), at(1, vendor_incident_since=since), at(2, vendor_incident_since=since), at(3)], incident_news)
    assert [(e.type, e.occurred_at) for e in said] == [(EventType.VENDOR_INCIDENT, since),
                                                        (EventType.VENDOR_INCIDENT, T + 3 * M)]
    assert data(said) == [
        {"integration_type": "xledger", "phase": "started", "since": since, "ended_at": None},
        {"integration_type": "xledger", "phase": "ended", "since": since, "ended_at": T + 3 * M}]


def test_a_row_flagged_cleared_and_flagged_again_within_one_incident_says_each_move() -> None:
    """A "test connection" that worked clears the flag inside an incident; flagged again, the receiver must not be
    left with "ended" as the last word while the organisation is in the incident (attacker review)."""
    since = T
    flapping = [at(0, vendor_incident_since=since), at(1), at(2, vendor_incident_since=since), at(3)]
    assert [e.data.phase for e in walk(flapping, incident_news)] == ["started", "ended", "started", "ended"]
    assert [e.data.phase for e in walk(flapping[:3], incident_news)][-1] == "started"


def test_a_new_incident_straight_after_another_ends_one_and_starts_the_other() -> None:
    said = incident_news(ORG, "xledger", at(3, vendor_incident_since=T), at(4, vendor_incident_since=T + 4 * M))
    assert [e.data.phase for e in said] == ["ended", "started"]
    assert said[0].id != said[1].id


def test_incident_event_ids_are_per_org_type_and_incident() -> None:
    [a] = incident_news(ORG, "xledger", None, at(1, vendor_incident_since=T))
    assert a.id == incident_news(ORG, "xledger", at(0), at(1, vendor_incident_since=T))[0].id  # the move again
    assert a.id != incident_news(OTHER, "xledger", None, at(1, vendor_incident_since=T))[0].id
    assert a.id != incident_news(ORG, "fiken", None, at(1, vendor_incident_since=T))[0].id
    assert a.id != incident_news(ORG, "xledger", None, at(1, vendor_incident_since=T + M))[0].id


WINDOW = Window(UUID("11111111-1111-4111-8111-111111111111"), None, None, T + 2 * M, T + 5 * M, "vendor upgrade")


def test_a_window_is_announced_at_the_first_flagged_result_inside_it_and_after_its_end() -> None:
    rows = [at(1), at(2, maintenance=True), at(3, maintenance=True), at(4, maintenance=True), at(6)]
    said = walk(rows, maintenance_news, [WINDOW])
    assert [(e.type, e.occurred_at) for e in said] == [(EventType.MAINTENANCE_WINDOW, WINDOW.starts_at),
                                                        (EventType.MAINTENANCE_WINDOW, WINDOW.ends_at)]
    assert data(said)[0] == {"window_id": WINDOW.id, "phase": "started", "integration_type": None,
                             "starts_at": WINDOW.starts_at, "ends_at": WINDOW.ends_at, "description": "vendor upgrade"}
    assert data(said)[1]["phase"] == "ended"


def test_a_flapping_maintenance_flag_inside_one_window_says_nothing_more() -> None:
    rows = [at(2, maintenance=True), at(3), at(3, maintenance=True), at(4), at(4, maintenance=True), at(6)]
    assert [e.data.phase for e in walk(rows, maintenance_news, [WINDOW])] == ["started", "ended"]


def test_an_org_wide_window_is_one_event_per_org_whichever_integration_moves_first() -> None:
    window = Window(WINDOW.id, ORG, None, WINDOW.starts_at, WINDOW.ends_at, "ERP move")
    [a] = maintenance_news(ORG, "xledger", at(1), at(2, maintenance=True), [window])
    [b] = maintenance_news(ORG, "fiken", at(1), at(3, maintenance=True), [window])
    assert a.id == b.id and a.data.integration_type is None
    assert maintenance_news(OTHER, "xledger", at(1), at(2, maintenance=True), [window]) == []  # not its window


def test_a_global_window_is_announced_to_each_org_under_its_own_id() -> None:
    [a] = maintenance_news(ORG, "xledger", None, at(2, maintenance=True), [WINDOW])
    [b] = maintenance_news(OTHER, "xledger", None, at(2, maintenance=True), [WINDOW])
    assert a.id != b.id and (a.org_id, b.org_id) == (ORG, OTHER)


def test_a_window_for_another_type_or_without_the_flag_says_nothing() -> None:
    fiken = Window(WINDOW.id, None, "fiken", WINDOW.starts_at, WINDOW.ends_at, "x")
    assert maintenance_news(ORG, "xledger", at(1), at(2, maintenance=True), [fiken]) == []
    assert maintenance_news(ORG, "xledger", at(1), at(2), [WINDOW]) == []  # no result was flagged: nothing silenced


def test_overlapping_windows_each_start_and_end() -> None:
    later = Window(UUID("22222222-2222-4222-8222-222222222222"), None, None, T + 4 * M, T + 8 * M, "second")
    rows = [at(1), at(3, maintenance=True), at(4, maintenance=True), at(6, maintenance=True), at(9)]
    said = walk(rows, maintenance_news, [WINDOW, later])
    assert [(e.data.window_id, e.data.phase) for e in said] == [
        (WINDOW.id, "started"), (later.id, "started"), (WINDOW.id, "ended"), (later.id, "ended")]


def test_a_window_deleted_while_in_force_ends_now_for_each_org_it_flagged_under_the_usual_id() -> None:
    now = T + 3 * M
    said = window_cut_short([OTHER, ORG, ORG], WINDOW, now)
    assert [(e.org_id, e.data.phase, e.data.ends_at, e.occurred_at) for e in said] == [
        (ORG, "ended", now, now), (OTHER, "ended", now, now)]
    [natural] = maintenance_news(ORG, "xledger", at(3, maintenance=True), at(6), [WINDOW])
    assert said[0].id == natural.id  # a replica that still saw the window says nothing new
    assert window_cut_short([ORG], WINDOW, T) == []  # upcoming: nothing was announced
    assert window_cut_short([ORG], WINDOW, WINDOW.ends_at) == []  # over: its end was announced already


@pytest.mark.parametrize(("left", "threshold"), [
    (DAY * 31, None), (DAY * 30, 30), (DAY * 8, 30), (DAY * 7, 7), (timedelta(seconds=1), 7),
    (timedelta(0), 0), (-DAY, 0)])
def test_the_threshold_reached_is_the_most_urgent_one(left, threshold) -> None:
    assert expiry_threshold(T + left, T) == threshold


def test_a_credential_is_announced_at_30_days_at_7_and_when_expired_each_once() -> None:
    expires = T + 40 * DAY
    rows = [Flags(T + d * DAY, credential_expires_at=expires) for d in (0, 5, 10, 11, 20, 33, 34, 40, 41)]
    said = walk(rows, credential_news)
    assert [(e.data.threshold_days, e.occurred_at) for e in said] == [(30, T + 10 * DAY), (7, T + 33 * DAY),
                                                                      (0, T + 40 * DAY)]
    assert data(said)[0] == {"integration_type": "xledger", "expires_at": expires, "threshold_days": 30}


def test_a_credential_first_seen_close_to_expiry_is_announced_once_at_its_threshold() -> None:
    said = walk([Flags(T, credential_expires_at=T + 5 * DAY), Flags(T + DAY, credential_expires_at=T + 5 * DAY)],
                credential_news)
    assert [e.data.threshold_days for e in said] == [7]


def test_a_renewed_credential_can_be_announced_again_and_a_far_one_is_not() -> None:
    old, new = T + 3 * DAY, T + 20 * DAY
    assert [e.data.threshold_days for e in credential_news(ORG, "x", Flags(T, credential_expires_at=old),
                                                            Flags(T + M, credential_expires_at=new))] == [30]
    assert credential_news(ORG, "x", Flags(T, credential_expires_at=old),
                           Flags(T + M, credential_expires_at=T + 400 * DAY)) == []
    assert credential_news(ORG, "x", Flags(T, credential_expires_at=old), Flags(T + M)) == []  # unknown: nothing


def test_an_unchanged_row_says_nothing_and_a_moved_one_says_each_kind() -> None:
    row = Flags(T + 3 * M, True, T, T + DAY)
    assert row_news(ORG, "xledger", row, row, [WINDOW]) == []
    said = row_news(ORG, "xledger", at(1), row, [WINDOW])
    assert [e.type for e in said] == [EventType.VENDOR_INCIDENT, EventType.MAINTENANCE_WINDOW,
                                      EventType.CREDENTIAL_EXPIRING]
    for e in said:  # every payload validates against its registered model, and carries no secret field
        assert type(e.data) is EVENT_KINDS[e.type].payload
        EVENT_KINDS[e.type].payload.model_validate(e.body()["data"])
    assert {VendorIncident, MaintenanceWindowEvent, CredentialExpiring} == {type(e.data) for e in said}
