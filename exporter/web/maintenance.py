"""/api/v1/maintenance: create, list and delete maintenance windows (operator token only).

A body is validated by pydantic (offsets required, bounded text), then by core/maintenance.py (end after
start and after now, at most 7 days unless forced, no second window of the same scope overlapping one).
Times are stored and answered in UTC, whatever offset they came with. The replica that answers applies a
change to its gauges at once; the others at their next cycle, when they reload the windows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from exporter.core import maintenance
from exporter.core.maintenance import REASON_MAX_CHARS, Window
from exporter.core.model import describe_validation_error
from exporter.web.api import SERVICES, error_json, iso, json_refused, uuid_or_400, within_run_years

STATES = ("active", "upcoming", "ended")
NO_CONTROL = r"^[^\x00-\x08\x0b-\x1f\x7f]*$"  # PostgreSQL text has no NUL; a log line no other controls


class WindowRequest(BaseModel):
    """A new window. org_id / integration_type absent or null: every organisation / every type."""

    model_config = ConfigDict(extra="forbid")

    org_id: UUID | None = None
    integration_type: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    reason: str = Field(min_length=1, max_length=REASON_MAX_CHARS, pattern=NO_CONTROL)
    created_by: str = Field(default="operator", min_length=1, max_length=200, pattern=NO_CONTROL)
    force: bool = False

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        """Any offset is accepted; the window is kept in UTC."""
        return within_run_years(value).astimezone(UTC)

    @field_validator("reason", "created_by")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


def window_json(w: Window, now: datetime) -> dict[str, Any]:
    return {"id": str(w.id), "org_id": str(w.org_id) if w.org_id else None, "integration_type": w.integration_type,
            "starts_at": iso(w.starts_at.astimezone(UTC)), "ends_at": iso(w.ends_at.astimezone(UTC)),
            "reason": w.reason, "created_by": w.created_by,
            "created_at": iso(w.created_at.astimezone(UTC)) if w.created_at else None, "active": w.active(now)}


async def post_window(request: web.Request) -> web.Response:
    """Create a window; 400 with the reason for a bad one, 409 when one of the same scope overlaps it."""
    if (refused := json_refused(request, "the window")) is not None:
        return refused
    try:
        asked = WindowRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        return error_json(400, f"invalid maintenance window: {describe_validation_error(exc, root='')}")
    services = request.app[SERVICES]
    known = sorted(services.runner.models)
    if asked.integration_type is not None and asked.integration_type not in known:
        return error_json(400, f"invalid maintenance window: integration_type {asked.integration_type!r} is not a "
                               f"registered type (one of {', '.join(known)}; leave it out for every type)")
    now = services.scheduler.clock()
    if (why := maintenance.refusal(asked.starts_at, asked.ends_at, now, force=asked.force)) is not None:
        return error_json(400, f"invalid maintenance window: {why}")
    new = Window(UUID(int=0), asked.org_id, asked.integration_type, asked.starts_at, asked.ends_at, asked.reason,
                 asked.created_by)
    known_windows = await services.store.maintenance_windows(now, org_id=asked.org_id)
    if not asked.force and (clash := maintenance.same_scope_overlap(new, known_windows)) is not None:
        return web.json_response({"error": f"window {clash.id} already covers the same organisation and type "
                                           "for part of that time; change or delete it, or send force=true",
                                  "window": window_json(clash, now)}, status=409)
    stored = await services.store.add_maintenance_window(new)
    services.snapshot.set_windows([*services.snapshot.windows, stored])  # this replica's gauges at once
    return web.json_response({"window": window_json(stored, now)}, status=201)


async def get_windows(request: web.Request) -> web.Response:
    """Windows not yet ended (or `?state=active|upcoming|ended`), optionally those applying to `?org_id=`."""
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise web.HTTPBadRequest(reason=f"state must be one of {', '.join(STATES)} (absent: active and upcoming)")
    org_id = uuid_or_400(request.query["org_id"], "org_id") if "org_id" in request.query else None
    services = request.app[SERVICES]
    now = services.scheduler.clock()
    windows = await services.store.maintenance_windows(now, state=state, org_id=org_id)
    return web.json_response({"windows": [window_json(w, now) for w in windows]})


async def delete_window(request: web.Request) -> web.Response:
    """Delete a window (an active one ends now); 404 when there is none with that id."""
    window_id = uuid_or_400(request.match_info["window_id"], "the window id")
    services = request.app[SERVICES]
    deleted = await services.store.delete_maintenance_window(window_id)
    if deleted is None:
        raise web.HTTPNotFound(reason=f"no maintenance window {window_id}")
    services.snapshot.set_windows([w for w in services.snapshot.windows if w.id != window_id])
    return web.json_response({"window": window_json(deleted, services.scheduler.clock())})

