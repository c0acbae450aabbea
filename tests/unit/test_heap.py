"""Settling the heap: what survived is frozen out of the collector's way, and still freed when unreferenced."""

from __future__ import annotations

import gc
import weakref

from exporter.engine import heap


class Entry:
    """A tracked object, as the snapshot's results are."""


def test_settle_freezes_what_survived_and_a_frozen_object_is_still_freed_when_dropped() -> None:
    entry, freed = Entry(), []
    weakref.finalize(entry, freed.append, True)
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0
        del entry  # no cycle: reference counting frees it, frozen or not
        assert freed == [True]
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
