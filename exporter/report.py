"""Render results as a plain-text table for the terminal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from exporter.model import IntegrationResult

COLUMNS = ("org", "integration", "status", "latency", "reason", "error")


def format_table(results: Sequence[IntegrationResult], names: Mapping[UUID, str] | None = None) -> str:
    """One line per integration, columns aligned, sorted by org and type; orgs by name when given."""
    names = names or {}
    rows = [COLUMNS] + [
        (names.get(r.org_id, str(r.org_id)), r.integration_type, r.result.status.value, f"{r.result.latency_ms} ms",
         r.result.reason.value if r.result.reason else "-", r.result.error or "-")
        for r in sorted(results, key=lambda r: (names.get(r.org_id, str(r.org_id)), r.integration_type))
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
    )
