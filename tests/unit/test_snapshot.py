"""The snapshot: what counts as a change (a new version), and the journal a renderer follows between versions."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from uuid import UUID

from exporter.core.model import HealthStatus, IntegrationResult, make_result
from exporter.core.syncs import SyncAssessment, SyncState
from exporter.core.warmups import WarmupOutcome, WarmupRecord
from exporter.engine.snapshot import JOURNAL_SLACK, Snapshot

T = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
A, B, C = ((UUID(int=n), "http") for n in (1, 2, 3))


def result(key: tuple[UUID, str], minute: int = 0) -> IntegrationResult:
    return IntegrationResult(*key, make_result(HealthStatus.HEALTHY, 5, T + timedelta(minutes=minute)))


def test_replacing_any_public_field_but_the_version_bumps_the_version() -> None:
    snapshot = Snapshot()
    for f in fields(Snapshot):
        if f.name == "version" or f.name.startswith("_"):
            continue
        before = snapshot.version
        setattr(snapshot, f.name, getattr(Snapshot(), f.name))
        assert snapshot.version == before + 1, f.name


def test_bookkeeping_and_the_constructor_bump_nothing() -> None:
    snapshot = Snapshot({A: result(A)}, 7)
    assert snapshot.version == 7
    snapshot.judge_maintenance(T)
    assert snapshot.version == 7


def test_retain_forgets_modes_syncs_and_warmups_by_replacing_them() -> None:
    snapshot = Snapshot()
    snapshot.update([result(A), result(B)])
    snapshot.modes = {A: "active", B: "passive"}
    snapshot.syncs = {A: SyncAssessment(SyncState.ON_SCHEDULE, None, 0.0, None, None),
                      B: SyncAssessment(SyncState.LATE, None, 9.0, None, None)}
    snapshot.record_warmup(B, WarmupRecord(T, T, WarmupOutcome.COLD_START, 2.5, 0))
    modes, syncs, warmups, version = snapshot.modes, snapshot.syncs, snapshot.warmups, snapshot.version
    snapshot.retain({A})
    assert (list(snapshot.results), list(snapshot.modes), list(snapshot.syncs), snapshot.warmups) == ([A], [A], [A], {})
    assert (list(modes), list(syncs), list(warmups)) == ([A, B], [A, B], [B]), "a reader's old mapping stands"
    assert snapshot.version > version


def test_the_journal_names_the_keys_changed_since_a_version() -> None:
    snapshot = Snapshot()
    snapshot.update([result(A), result(B)])
    seen = snapshot.version
    snapshot.update([result(B, 15)])
    snapshot.update([result(C, 15), result(A, -15)])  # A's is older: no change
    assert snapshot.changed_since(seen) == {B, C}
    assert snapshot.changed_since(snapshot.version) == set()
    assert snapshot.changed_since(None) is None, "a renderer that never rendered compares everything"


def test_the_journal_hands_out_its_batches_unjoined_for_a_thread_to_join() -> None:
    snapshot = Snapshot()
    snapshot.update([result(A), result(B)])
    seen = snapshot.version
    snapshot.update([result(B, 15)])
    snapshot.update([result(C, 15), result(B, 30)])
    batches = snapshot.changes_since(seen)
    assert sorted(map(sorted, batches)) == [[B], sorted([B, C])]
    assert set().union(*batches) == snapshot.changed_since(seen) == {B, C}
    assert snapshot.changes_since(None) is None


def test_a_forgotten_key_or_a_journal_that_no_longer_reaches_back_means_compare_everything() -> None:
    snapshot = Snapshot()
    snapshot.update([result(A), result(B)])
    seen = snapshot.version
    snapshot.retain({A})
    assert snapshot.changed_since(seen) is None, "the keys after B moved up"
    seen = snapshot.version
    for minute in range(JOURNAL_SLACK + 10):
        snapshot.update([result(A, minute + 1)])
    assert snapshot.changed_since(seen) is None
    assert snapshot.changed_since(snapshot.version - 1) == {A}


def test_the_journal_notes_each_key_as_the_object_the_results_hold_it_by() -> None:
    """A result's own key tuple would live in the journal until the next cycle, for the full collection after
    this one to walk (engine/heap.py): the journal notes the key the snapshot already holds."""
    snapshot = Snapshot()
    snapshot.update([result(A)])
    held = next(iter(snapshot.results))
    seen = snapshot.version
    snapshot.update([result((UUID(int=1), "http"), 15)])  # an equal key, another tuple
    [batch] = snapshot.changes_since(seen)
    assert [key is held for key in batch] == [True]
    snapshot.retain(set())
    snapshot.update([result(A, 30)])
    assert next(iter(snapshot.results)) is not held, "a key forgotten is forgotten as the one held too"
