"""The OpenAPI 3.1 description of the HTTP API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ORG = {"name": "org_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_OPERATOR_ONLY = [{"bearer": []}]
_HEALTH = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/OrgHealth"}}}}

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
            "Integration": {"type": "object", "properties": {
                "integration_type": {"type": "string"},
                "status": {"enum": ["healthy", "degraded", "unreachable"]},
                "latency_ms": {"type": "integer"}, "checked_at": {"type": "string", "format": "date-time"},
                "error": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]},
                "consecutive_failures": {"type": "integer"},
                "next_check_at": {"type": ["string", "null"], "format": "date-time"},
                "tls_expires_at": {"type": ["string", "null"], "format": "date-time"},
                "credential_expires_at": {"type": ["string", "null"], "format": "date-time"}}},
            "OrgHealth": {"type": "object", "properties": {
                "org_id": {"type": "string", "format": "uuid"},
                "integrations": {"type": "array", "items": {"$ref": "#/components/schemas/Integration"}},
                "stored": {"type": "boolean", "description": "run-now only: false when another replica owns the "
                           "organisation (results answered, its state left to the owner)"}}},
        },
    },
    "security": [{"bearer": []}, {"appJwt": []}],
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
                    "error_message": {"type": ["string", "null"]}}}}}},
            "responses": {"200": {"description": "stored"}, "400": _ERROR, "401": _ERROR, "403": _ERROR,
                          "409": {"description": "that period already finished with another outcome"},
                          "413": _ERROR, "415": _ERROR}}},
        "/api/v1/orgs/{org_id}/checks": {"post": {
            "summary": "Run the organisation's checks now (test connection); at most once a minute per org",
            "parameters": [_ORG],
            "responses": {"200": {"description": "fresh results", **_HEALTH}, "400": _ERROR, "401": _ERROR,
                          "403": _ERROR, "404": _ERROR, "429": _ERROR}}},
    },
}
