"""Settling the heap: cyclic garbage is collected, what survived is frozen out of the collector's way, and a
frozen object is still freed when unreferenced."""

from __future__ import annotations

import gc
import weakref
from datetime import UTC, datetime
from uuid import UUID

from exporter.core.model import CheckState, HealthStatus, IntegrationResult, Reason, make_result
from exporter.engine import heap


class Entry:
    """A tracked object, as the snapshot's results are."""


def tracked(obj: object) -> bool:
    """Whether a collection still walks it (a frozen object is in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_settle_freezes_what_survived_and_a_frozen_object_is_still_freed_when_dropped() -> None:
    entry, freed = Entry(), []
    weakref.finalize(entry, freed.append, True)
    try:
        assert tracked(entry)
        heap.settle()
        assert not tracked(entry), "frozen"
        del entry  # no cycle: reference counting frees it, frozen or not
        assert freed == [True]
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual


def test_settle_collects_cyclic_garbage_that_aged_into_the_oldest_generation_before_freezing_the_rest() -> None:
    a, b = Entry(), Entry()
    a.other, b.other = b, a  # a reference cycle: only the collector frees it
    gone = weakref.ref(a)
    try:
        gc.collect(1)
        gc.collect(1)  # it survived two young collections, as a cycle's state does: now in the oldest one
        assert any(o is a for o in gc.get_objects(generation=2))
        del a, b  # garbage now, in the generation young collections never walk
        heap.settle()
        assert gone() is None, "collected, not frozen for good"
    finally:
        gc.unfreeze()


def test_a_result_is_two_objects_for_the_collector_to_walk() -> None:
    """The fleet's results live from one cycle to the next, so the full collection after each cycle walks
    every one: a result and its check's outcome, nothing more per result (a BaseModel outcome was three)."""
    org, state, at = UUID(int=1), CheckState(), datetime(2026, 11, 24, tzinfo=UTC)
    gc.collect()
    before = {id(o) for o in gc.get_objects()}
    results = [IntegrationResult(org, "http", make_result(HealthStatus.UNREACHABLE, n, at, f"error {n}",
                                                          Reason.TIMEOUT, 30.0, at), state) for n in range(1000)]
    new = [o for o in gc.get_objects() if id(o) not in before and o is not results]
    assert len(new) <= 2 * len(results) + 10, {type(o).__name__ for o in new}
