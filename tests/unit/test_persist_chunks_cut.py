"""How store.persist cuts a batch into transactions: by organisation, so an organisation's rows move together
(its API never shows it half in the new cycle), the latest result of a repeated key kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from exporter.core.model import HealthResult, HealthStatus, IntegrationResult
from exporter.storage.store import _chunks

SLOT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TYPES = ("http", "xledger", "fiken")


def result(org: int, kind: str, minutes: int = 0) -> IntegrationResult:
    return IntegrationResult(UUID(int=org), kind, HealthResult(status=HealthStatus.HEALTHY, latency_ms=minutes,
                                                               checked_at=SLOT + timedelta(minutes=minutes)))


def test_chunks_are_cut_between_organisations_never_inside_one() -> None:
    results = [result(org, kind) for kind in TYPES for org in range(1, 8)]  # by type: each org spread out
    chunks = _chunks(results, 4)
    orgs_per_chunk = [set(columns[0]) for columns in chunks]
    assert all(len(columns[0]) >= 4 for columns in chunks[:-1]), "about the size asked, never smaller but last"
    for n, orgs in enumerate(orgs_per_chunk):
        for other in orgs_per_chunk[n + 1:]:
            assert not orgs & other, "an organisation in two transactions"
    assert sorted((o.int, t) for columns in chunks for o, t in zip(columns[0], columns[1], strict=True)) == \
        sorted((org, kind) for kind in TYPES for org in range(1, 8))


def test_a_repeated_key_keeps_its_latest_result_whatever_the_order() -> None:
    chunks = _chunks([result(1, "http", 5), result(2, "http"), result(1, "http", 9), result(1, "http", 7)], 2000)
    (columns,) = chunks
    assert list(zip(columns[0], columns[3], strict=True)) == [(UUID(int=1), 9), (UUID(int=2), 0)]
