"""The OpenAPI 3.1 description of the HTTP API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from exporter.core.events import EVENT_KINDS, EventKind

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ORG = {"name": "org_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_OPERATOR_ONLY = [{"bearer": []}]
_EVENT_TYPES = [t.value for t in EVENT_KINDS]
_HEALTH = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/OrgHealth"}}}}
_WINDOW = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"window": {"$ref": "#/components/schemas/MaintenanceWindow"}}}}}}
_SCOPE = "; null or absent: every "

_DELIVERY_HEADERS = [
    {"name": "Webhook-Id", "in": "header", "required": True, "schema": {"type": "string", "format": "uuid"},
     "description": "the event's id: the same on every retry, so receivers dedupe by it"},
    {"name": "Webhook-Timestamp", "in": "header", "required": True, "schema": {"type": "integer"}},
    {"name": "X-Integration-Health-Signature", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\" keyed with the subscription's secret>"},
]


def _payload_schemas() -> dict[str, Any]:
    """Each kind's payload model (and the enums it uses) as component schemas."""
    schemas: dict[str, Any] = {}
    for kind in EVENT_KINDS.values():
        schema = kind.payload.model_json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
        schemas |= schema.pop("$defs", {}) | {kind.payload.__name__: schema}
    return schemas


def _delivery(kind: EventKind) -> dict[str, Any]:
    """What a subscriber receives for one kind of event: the envelope around that kind's payload."""
    envelope = {"type": "object", "required": ["id", "type", "org_id", "occurred_at", "data"], "properties": {
        "id": {"type": "string", "format": "uuid"}, "type": {"const": kind.type.value},
        "org_id": {"type": "string", "format": "uuid"}, "occurred_at": {"type": "string", "format": "date-time"},
        "data": {"$ref": f"#/components/schemas/{kind.payload.__name__}"}}}
    return {"post": {"summary": kind.summary + ("" if kind.emitted else " (not sent yet)"),
                     "parameters": _DELIVERY_HEADERS,
                     "requestBody": {"content": {"application/json": {"schema": envelope}}},
                     "responses": {"2XX": {"description": "delivered; anything else is retried with backoff"}}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "integration-health", "version": "1"},
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "the operator's token (EXPORTER_API_TOKEN): every route, every organisation"},
            "appJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                       "description": "a signed-in app user's Supabase / PostgREST access token (role "
                       "`authenticated`, audience EXPORTER_JWT_AUDIENCE; HS256 with EXPORTER_JWT_SECRET or RS256/"
                       "ES256 from EXPORTER_JWT_JWKS_URL): /api/v1/orgs/{org_id}/… of the organisations its claims "
                       "name (`org_id`, `app_metadata.org_id`, `app_metadata.org_ids`), as row-level security "
                       "reads them; 403 on any other organisation"},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            **_payload_schemas(),
            "Integration": {"type": "object", "properties": {
                "integration_type": {"type": "string"},
                "status": {"enum": ["healthy", "degraded", "unreachable"]},
                "latency_ms": {"type": "integer"}, "checked_at": {"type": "string", "format": "date-time"},
                "error": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]},
                "consecutive_failures": {"type": "integer"},
                "next_check_at": {"type": ["string", "null"], "format": "date-time"},
                "tls_expires_at": {"type": ["string", "null"], "format": "date-time"},
                "maintenance": {"type": "boolean", "description": "checked while a maintenance window covered it: "
                                "a failure then neither pages nor counts against availability"},
                "vendor_incident_since": {"type": ["string", "null"], "format": "date-time", "description":
                                          "set while the vendor is down for many organisations at once: the "
                                          "start of that vendor-wide incident"},
                "vendor_incident": {"type": ["string", "null"],
                                    "description": "the same, as a sentence: vendor-wide incident since 10:15 UTC"},
                "credential_expires_at": {"type": ["string", "null"], "format": "date-time"}}},

            "MaintenanceWindow": {"type": "object", "properties": {
                "id": {"type": "string", "format": "uuid"},
                "org_id": {"type": ["string", "null"], "format": "uuid", "description": "null: every organisation"},
                "integration_type": {"type": ["string", "null"], "description": "null: every type"},
                "starts_at": {"type": "string", "format": "date-time", "description": "UTC"},
                "ends_at": {"type": "string", "format": "date-time", "description": "UTC"},
                "reason": {"type": "string"}, "created_by": {"type": "string"},
                "created_at": {"type": ["string", "null"], "format": "date-time"},
                "active": {"type": "boolean", "description": "whether it is in force now"}}},
            "Webhook": {"type": "object", "properties": {
                "id": {"type": "string", "format": "uuid"}, "org_id": {"type": "string", "format": "uuid"},
                "url": {"type": "string", "format": "uri"},
                "events": {"type": "array", "items": {"enum": _EVENT_TYPES}},
                "enabled": {"type": "boolean"}, "created_at": {"type": "string", "format": "date-time"}}},
            "OrgHealth": {"type": "object", "properties": {
                "org_id": {"type": "string", "format": "uuid"},
                "integrations": {"type": "array", "items": {"$ref": "#/components/schemas/Integration"}},
                "stored": {"type": "boolean", "description": "run-now only: false when another replica owns the "
                           "organisation (results answered, its state left to the owner)"}}},
        },
    },
    "security": [{"bearer": []}, {"appJwt": []}],
    "webhooks": {kind.type.value: _delivery(kind) for kind in EVENT_KINDS.values()},
    "paths": {
        "/api/v1/orgs/{org_id}/health": {"get": {
            "summary": "Current status of an organisation's integrations", "parameters": [_ORG],
            "responses": {"200": {"description": "status", **_HEALTH}, "400": _ERROR, "401": _ERROR, "403": _ERROR,
                          "404": _ERROR}}},
        "/api/v1/orgs/{org_id}/health/history": {"get": {
            "summary": "The 96-slot (24 h) history per integration", "parameters": [_ORG],
            "responses": {"200": {"description": "history"}, "400": _ERROR, "401": _ERROR, "403": _ERROR,
                          "404": _ERROR}}},
        "/api/v1/sync-runs": {"post": {
            "summary": "Report a sync run; the same period again updates it (idempotent)",
            "description": "Operator token only: an app user's JWT gets 403.", "security": _OPERATOR_ONLY,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["org_id", "integration_type", "scheduled_for", "outcome"],
                "additionalProperties": False, "properties": {
                    "org_id": {"type": "string", "format": "uuid"}, "integration_type": {"type": "string"},
                    "scheduled_for": {"type": "string", "format": "date-time"},
                    "started_at": {"type": ["string", "null"], "format": "date-time"},
                    "finished_at": {"type": ["string", "null"], "format": "date-time"},
                    "outcome": {"enum": ["success", "failure", "running"]},
                    "error_message": {"type": ["string", "null"], "maxLength": 2000},
                    "cold_start": {"type": ["boolean", "null"],
                                   "description": "the sync function started cold (counted and charted)"},
                    "invocation_latency_ms": {"type": ["integer", "null"], "minimum": 0, "maximum": 86400000,
                                              "description": "how long the sync function took to answer its "
                                              "invocation"}}}}}},
            "responses": {"200": {"description": "stored"}, "400": _ERROR, "401": _ERROR, "403": _ERROR,
                          "409": {"description": "that period already finished with another outcome"},
                          "413": _ERROR, "415": _ERROR}}},
        "/api/v1/orgs/{org_id}/webhooks": {
            "post": {
                "summary": "Subscribe a webhook; the answer carries its signing secret, shown this once",
                "description": "The URL must be https (http only to hosts in EXPORTER_EGRESS_ALLOW), without "
                               "user-info, and reach no loopback, private, link-local or metadata address unless "
                               "the operator allowed it (judged after DNS here, and again at every delivery). "
                               "`events` defaults to every kind. Deliveries are POSTs signed with "
                               "X-Integration-Health-Signature: t=<unix>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">.",
                "parameters": [_ORG],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["url"], "additionalProperties": False, "properties": {
                        "url": {"type": "string", "maxLength": 2048},
                        "events": {"type": "array", "minItems": 1, "items": {"enum": _EVENT_TYPES}}}}}}},
                "responses": {"201": {"description": "subscribed", "content": {"application/json": {"schema": {
                    "allOf": [{"$ref": "#/components/schemas/Webhook"}, {
                        "type": "object", "properties": {"secret": {"type": "string"}}}]}}}},
                    "400": _ERROR, "401": _ERROR, "403": _ERROR, "409": _ERROR, "413": _ERROR, "415": _ERROR}},
            "get": {
                "summary": "The organisation's webhook subscriptions (never their secrets)", "parameters": [_ORG],
                "responses": {"200": {"description": "subscriptions", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"org_id": {"type": "string", "format": "uuid"}, "webhooks": {
                        "type": "array", "items": {"$ref": "#/components/schemas/Webhook"}}}}}}},
                    "400": _ERROR, "401": _ERROR, "403": _ERROR}}},
        "/api/v1/orgs/{org_id}/webhooks/{subscription_id}": {"delete": {
            "summary": "Unsubscribe (its pending deliveries go with it)",
            "parameters": [_ORG, {"name": "subscription_id", "in": "path", "required": True,
                                  "schema": {"type": "string", "format": "uuid"}}],
            "responses": {"204": {"description": "deleted"}, "400": _ERROR, "401": _ERROR, "403": _ERROR,
                          "404": _ERROR}}},
        "/api/v1/maintenance": {
            "post": {
                "summary": "Create a maintenance window: its integrations are still checked, but flagged, "
                           "silenced and left out of availability while it lasts",
                "description": "Operator token only. Times need an offset (any; stored in UTC); the window must "
                               "end after it starts and after now, last at most 7 days unless force=true, and "
                               "not overlap a window of exactly the same scope unless force=true.",
                "security": _OPERATOR_ONLY,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["starts_at", "ends_at", "reason"], "additionalProperties": False,
                    "properties": {
                        "org_id": {"type": ["string", "null"], "format": "uuid",
                                   "description": "the organisation" + _SCOPE + "organisation"},
                        "integration_type": {"type": ["string", "null"], "maxLength": 64,
                                             "description": "a registered type" + _SCOPE + "type"},
                        "starts_at": {"type": "string", "format": "date-time"},
                        "ends_at": {"type": "string", "format": "date-time"},
                        "reason": {"type": "string", "minLength": 1, "maxLength": 500},
                        "created_by": {"type": "string", "minLength": 1, "maxLength": 200},
                        "force": {"type": "boolean", "default": False}}}}}},
                "responses": {"201": {"description": "created", **_WINDOW}, "400": _ERROR, "401": _ERROR,
                              "403": _ERROR, "409": {"description": "a window of the same scope overlaps it"},
                              "413": _ERROR, "415": _ERROR}},
            "get": {
                "summary": "Maintenance windows: active and upcoming, or by state; those applying to an org",
                "security": _OPERATOR_ONLY,
                "parameters": [
                    {"name": "state", "in": "query", "required": False,
                     "schema": {"enum": ["active", "upcoming", "ended"]}},
                    {"name": "org_id", "in": "query", "required": False,
                     "description": "its own windows and the global ones", "schema": {"type": "string",
                                                                                     "format": "uuid"}}],
                "responses": {"200": {"description": "windows, soonest first", "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"windows": {
                        "type": "array", "items": {"$ref": "#/components/schemas/MaintenanceWindow"}}}}}}},
                    "400": _ERROR, "401": _ERROR, "403": _ERROR}}},
        "/api/v1/maintenance/{window_id}": {"delete": {
            "summary": "Delete a maintenance window (an active one ends now)", "security": _OPERATOR_ONLY,
            "parameters": [{"name": "window_id", "in": "path", "required": True,
                            "schema": {"type": "string", "format": "uuid"}}],
            "responses": {"200": {"description": "deleted", **_WINDOW}, "400": _ERROR, "401": _ERROR,
                          "403": _ERROR, "404": _ERROR}}},
        "/api/v1/orgs/{org_id}/checks": {"post": {
            "summary": "Run the organisation's checks now (test connection); at most once a minute per org",
            "parameters": [_ORG],
            "responses": {"200": {"description": "fresh results", **_HEALTH}, "400": _ERROR, "401": _ERROR,
                          "403": _ERROR, "404": _ERROR, "429": _ERROR}}},
    },
}
