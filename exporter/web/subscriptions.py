"""/api/v1/orgs/{org_id}/webhooks: an organisation's webhook subscriptions (create, list, delete).

The URL is judged by the egress policy here, after DNS, so a forbidden destination is refused when it is
subscribed, not only when a delivery would reach for it (the check client judges every connection again).
The signing secret is generated here and returned once, in the 201; nothing returns it afterwards (the
row holds it sealed under the operator's key, storage/webhooks).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.adapters.transport import check_destination
from exporter.core.egress import Blocked
from exporter.core.events import EVENT_KINDS, parse_event_types
from exporter.core.model import describe_validation_error
from exporter.core.webhooks import BadWebhookUrl, destination, new_secret
from exporter.storage.webhooks import Subscription, Webhooks
from exporter.web.api import SERVICES, SETTINGS, error_json, iso, json_refused, org_id_of

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 16 * 1024
DNS_TIMEOUT_S = 5.0


class WebhookRequest(BaseModel):
    """A subscription as an admin asks for it: where, and which events (all kinds when left out)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    events: list[str] = Field(default_factory=lambda: [t.value for t in EVENT_KINDS], min_length=1, max_length=16)


def subscription_json(s: Subscription) -> dict[str, Any]:
    return {"id": str(s.id), "org_id": str(s.org_id), "url": s.url, "events": s.events, "enabled": s.enabled,
            "created_at": iso(s.created_at)}


def webhooks_of(request: web.Request) -> Webhooks:
    webhooks = request.app[SERVICES].webhooks
    if webhooks is None:
        raise web.HTTPServiceUnavailable(reason="webhooks need the database; this process has none")
    return webhooks


async def post_webhook(request: web.Request) -> web.Response:
    """Subscribe: 201 with the subscription and its signing secret (shown this once), or 400 saying why not."""
    org_id, webhooks, services = org_id_of(request), webhooks_of(request), request.app[SERVICES]
    if (refused := json_refused(request, "the subscription")) is not None:
        return refused
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return error_json(413, f"a subscription is at most {MAX_BODY_BYTES // 1024} KiB")
    try:
        asked = WebhookRequest.model_validate_json(await request.content.read(MAX_BODY_BYTES))
        kinds = parse_event_types(asked.events)
    except ValidationError as exc:
        return error_json(400, f"invalid subscription: {describe_validation_error(exc, root='')}")
    except ValueError as exc:
        return error_json(400, f"invalid subscription: events: {exc}")
    egress = services.egress
    if egress is None:
        raise web.HTTPServiceUnavailable(reason="webhooks need the egress policy; this process has none")
    try:
        where = destination(asked.url, egress)
        async with asyncio.timeout(DNS_TIMEOUT_S):
            await check_destination(egress, where.host, where.port)
    except (BadWebhookUrl, Blocked) as exc:
        return error_json(400, f"invalid subscription: url: {exc}")
    except (OSError, TimeoutError):
        return error_json(400, "invalid subscription: url: the host name does not resolve")
    if webhooks.keyring is None:
        raise web.HTTPServiceUnavailable(reason="webhooks need EXPORTER_WEBHOOK_SECRET_KEYS; this process has none")
    limit = request.app[SETTINGS].webhooks_per_org
    secret = new_secret()
    created = await webhooks.subscribe(org_id, asked.url, [k.value for k in kinds], secret, limit)
    if created is None:
        return error_json(409, f"this organisation already has {limit} webhook subscriptions; delete one first")
    log.info("webhook subscription created", extra={"org_id": str(org_id), "subscription_id": str(created.id)})
    return web.json_response(subscription_json(created) | {"secret": secret}, status=201)


async def get_webhooks(request: web.Request) -> web.Response:
    org_id = org_id_of(request)
    subs = await webhooks_of(request).subscriptions(org_id)
    return web.json_response({"org_id": str(org_id), "webhooks": [subscription_json(s) for s in subs]})


async def delete_webhook(request: web.Request) -> web.Response:
    """Unsubscribe; its pending deliveries and secret go with it. 404 unless it is this organisation's."""
    org_id, webhooks = org_id_of(request), webhooks_of(request)
    try:
        subscription_id = UUID(request.match_info["subscription_id"])
    except ValueError:
        raise web.HTTPBadRequest(reason="subscription_id must be a UUID") from None
    if not await webhooks.unsubscribe(org_id, subscription_id):
        raise web.HTTPNotFound(reason=f"organisation {org_id} has no webhook subscription {subscription_id}")
    log.info("webhook subscription deleted", extra={"org_id": str(org_id), "subscription_id": str(subscription_id)})
    return web.Response(status=204)
