"""The OpenAPI description: webhook routes, and what subscribers receive, with every reference resolvable."""

from __future__ import annotations

import json
import re

from exporter.core.events import EVENT_KINDS
from exporter.web.openapi import OPENAPI


def test_every_schema_reference_resolves() -> None:
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(OPENAPI)))
    assert {"StatusChanged", "HealthStatus", "Webhook"} <= refs
    assert refs <= set(OPENAPI["components"]["schemas"])


def test_each_event_kind_is_described_as_a_webhook_with_its_signature_header() -> None:
    assert list(OPENAPI["webhooks"]) == [t.value for t in EVENT_KINDS]
    delivery = OPENAPI["webhooks"]["integration.status_changed"]["post"]
    assert [p["name"] for p in delivery["parameters"]] == ["Webhook-Id", "Webhook-Timestamp",
                                                           "X-Integration-Health-Signature"]
    envelope = delivery["requestBody"]["content"]["application/json"]["schema"]
    assert envelope["properties"]["data"] == {"$ref": "#/components/schemas/StatusChanged"}
    assert not any("not sent yet" in w["post"]["summary"] for w in OPENAPI["webhooks"].values())


def test_each_kinds_data_is_its_own_payload_model_not_a_namesake() -> None:
    """An API schema of the same name (the maintenance window's) must not stand in for a payload."""
    schemas = OPENAPI["components"]["schemas"]
    for kind in EVENT_KINDS.values():
        envelope = OPENAPI["webhooks"][kind.type.value]["post"]["requestBody"]["content"]["application/json"]
        name = envelope["schema"]["properties"]["data"]["$ref"].rsplit("/", 1)[1]
        assert set(schemas[name]["properties"]) == set(kind.payload.model_fields), kind.type


def test_the_subscription_routes_admit_both_token_kinds() -> None:
    paths = OPENAPI["paths"]
    assert set(paths["/api/v1/orgs/{org_id}/webhooks"]) == {"post", "get"}
    assert set(paths["/api/v1/orgs/{org_id}/webhooks/{subscription_id}"]) == {"delete"}
    assert "security" not in paths["/api/v1/orgs/{org_id}/webhooks"]["post"]  # the global: operator or app JWT
