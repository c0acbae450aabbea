"""The early hand-off (engine/handoff.py): whole organisations, only results the incident decision cannot change,
each published as shown."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from exporter.core.model import HealthStatus, Integration, IntegrationResult, Reason, make_result
from exporter.engine.handoff import Handoff

SLOT = datetime(2026, 11, 22, tzinfo=UTC)
A, B, C = UUID(int=1), UUID(int=2), UUID(int=3)


def result(org: UUID, kind: str, status: HealthStatus = HealthStatus.HEALTHY,
           reason: Reason | None = None) -> IntegrationResult:
    return IntegrationResult(org, kind, make_result(status, 5, SLOT, None if reason is None else "x", reason))


class Outbox:
    def __init__(self) -> None:
        self.observed: list[list[IntegrationResult]] = []
        self.submitted: list[tuple[list[IntegrationResult], datetime]] = []

    def observe(self, results) -> None:
        self.observed.append(list(results))

    async def submit(self, results, slot) -> bool:
        self.submitted.append((list(results), slot))
        return True


async def test_an_organisation_goes_once_all_its_checks_are_in_and_in_batches_of_at_least_the_size() -> None:
    outbox = Outbox()
    early = Handoff(SLOT, outbox.observe, outbox.submit, batch=2)
    early.expect([Integration(A, "http", {}), Integration(A, "fiken", {}), Integration(B, "http", {})])
    early.expect([Integration(C, kind, {}) for kind in ("http", "fiken", "xledger")])
    a1, a2, b1 = result(A, "http"), result(A, "fiken"), result(B, "http")
    early.take([a1, b1], {})
    assert early.handed == {}, "B alone is fewer than the batch; A still has a check out"
    early.take([a2], {})
    assert early.handed == {(B, "http"): b1, (A, "http"): a1, (A, "fiken"): a2}
    c = [result(C, kind) for kind in ("http", "fiken", "xledger")]
    early.take(c[:2], {})
    assert len(early.handed) == 3, "C still has a check out"
    early.take(c[2:], {})  # the last: what is ready goes, however few
    await early.settle()
    assert outbox.submitted == [([b1, a1, a2], SLOT), (c, SLOT)] and outbox.observed == [[b1, a1, a2], c]


async def test_once_at_most_a_batch_of_checks_is_out_whatever_is_ready_goes() -> None:
    """The slowest checks come last: results ready before them must not wait for them."""
    outbox = Outbox()
    early = Handoff(SLOT, outbox.observe, outbox.submit, batch=2)
    early.expect([Integration(org, "http", {}) for org in (A, B, C, UUID(int=4))])
    early.take([result(A, "http")], {})
    assert early.handed == {}, "three checks are out: a batch could still fill"
    early.take([result(B, "http")], {})
    assert list(early.handed) == [(A, "http"), (B, "http")], "two are out: no batch can fill any more"
    await early.settle()


async def test_an_infrastructure_failure_keeps_its_whole_organisation_for_the_incident_decision() -> None:
    """Its flag is decided after the slot's results are in: the organisation's rows then move together."""
    outbox = Outbox()
    early = Handoff(SLOT, outbox.observe, outbox.submit, batch=1)
    early.expect([Integration(A, "http", {}), Integration(A, "fiken", {}), Integration(B, "http", {})])
    early.take([result(A, "http"), result(A, "fiken", HealthStatus.UNREACHABLE, Reason.TIMEOUT)], {})
    early.take([result(B, "http", HealthStatus.UNREACHABLE, Reason.AUTH)], {})  # not the vendor's outage
    await early.settle()
    assert [k for k in early.handed] == [(B, "http")]


async def test_a_known_one_publishes_what_it_showed_and_one_not_checked_publishes_nothing() -> None:
    outbox = Outbox()
    early = Handoff(SLOT, outbox.observe, outbox.submit, batch=1)
    early.expect([Integration(A, "http", {}), Integration(A, "fiken", {}), Integration(C, "http", {})])
    shown_a, prevented = result(A, "http"), result(A, "fiken", HealthStatus.UNREACHABLE,
                                                    Reason.CREDENTIAL_UNAVAILABLE)
    new = result(C, "http")
    early.take([result(A, "http"), prevented, new], {(A, "http"): shown_a, (A, "fiken"): None})
    await early.settle()
    assert outbox.submitted == [([shown_a, new], SLOT)], "the credential store's outage stands: nothing to publish"


async def test_a_blocked_organisation_waits_for_the_end_whole() -> None:
    """An organisation with integrations a later run of the cycle may check (a vendor's held ones, should its
    canaries recover) is not handed early: its rows move in one transaction at the end."""
    outbox = Outbox()
    early = Handoff(SLOT, outbox.observe, outbox.submit, batch=1)
    early.block([A])
    early.expect([Integration(A, "http", {}), Integration(B, "http", {})])
    early.take([result(A, "http"), result(B, "http")], {})
    await early.settle()
    assert list(early.handed) == [(B, "http")] and [[r.org_id for r in rs] for rs, _ in outbox.submitted] == [[B]]
