"""Config validation messages and the sanitising of error text."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from exporter.adapters import ADAPTERS
from exporter.adapters.http import HttpConfig
from exporter.core.model import (
    HealthResult,
    HealthStatus,
    Integration,
    InvalidConfig,
    Reason,
    make_result,
    parse_config,
)
from exporter.core.sanitize import sanitize

MODELS = {name: spec.config for name, spec in ADAPTERS.items()}
ORG = UUID("22222222-2222-4222-8222-222222222222")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_http_row_becomes_a_typed_config_with_defaults() -> None:
    config = parse_config(Integration(ORG, "http", {"url": "https://api.example.com/health"}, "ref-1"), MODELS)
    assert isinstance(config, HttpConfig)
    assert config.method == "HEAD"
    assert config.degraded_latency_ms == 2000
    assert config.credential_ref == "ref-1"


@pytest.mark.parametrize(("kind", "config", "message"), [
    ("dynamics365", {"org_url": "https://x.crm4.dynamics.com", "client_id": "c"},
     "config.tenant_id: field required"),
    ("http", {"url": "https://a.example", "tenantid": "x"}, "config.tenantid: extra inputs are not permitted"),
    ("http", {"url": "https://a.example", "degraded_latency_ms": 0},
     "config.degraded_latency_ms: input should be greater than 0"),
    ("http", {"url": "https://a.example", "method": "DELETE"}, "config.method: input should be 'HEAD' or 'GET'"),
    ("gopher", {}, "no adapter for 'gopher'"),
])
def test_invalid_config_names_the_field_and_the_problem(kind: str, config: dict, message: str) -> None:
    with pytest.raises(InvalidConfig) as err:
        parse_config(Integration(ORG, kind, config), MODELS)
    assert str(err.value) == message


def test_invalid_config_message_does_not_echo_the_value() -> None:
    with pytest.raises(InvalidConfig) as err:
        parse_config(Integration(ORG, "http", {"url": "https://a.example", "method": "s3cr3t-value"}), MODELS)
    assert "s3cr3t-value" not in str(err.value)


def test_result_is_frozen_and_requires_an_aware_timestamp() -> None:
    result = make_result(HealthStatus.HEALTHY, 12.6, NOW)
    assert result.latency_ms == 13
    with pytest.raises(FrozenInstanceError):
        result.status = HealthStatus.DEGRADED  # type: ignore[misc]
    with pytest.raises(ValidationError):
        HealthResult(status=HealthStatus.HEALTHY, latency_ms=1, checked_at=datetime(2026, 1, 1))


def test_result_serialises_checked_at_as_iso_8601() -> None:
    result = make_result(HealthStatus.DEGRADED, 5, NOW, "rate limited", Reason.RATE_LIMITED, 30)
    assert TypeAdapter(HealthResult).dump_python(result, mode="json") == {
        "status": "degraded", "latency_ms": 5, "checked_at": "2026-11-22T12:00:00Z",
        "error": "rate limited", "reason": "rate_limited", "retry_after_s": 30.0, "tls_expires_at": None,
        "vendor_incident_since": None,
        "credential_expires_at": None,
    }


@pytest.mark.parametrize(("raw", "clean"), [
    ("GET https://user:pa55@api.example.com/v2/x?token=abc&b=2 failed",
     "GET https://api.example.com/v2/x failed"),
    ("header was Bearer eyJhbGciOi.J9.abc", "header was Bearer [redacted]"),
    ("Authorization: token 12345abc", "Authorization: token [redacted]"),
    ("  many\n  lines\tof   text ", "many lines of text"),
])
def test_sanitize_strips_credentials_from_messages(raw: str, clean: str) -> None:
    assert sanitize(raw) == clean


def test_sanitize_bounds_the_length() -> None:
    assert len(sanitize("x" * 5000)) == 300


secret_chars = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=12,
                       max_size=40)


@given(secret=secret_chars, host=st.sampled_from(["api.example.com", "10.0.0.1:8443", "vendor.no"]))
def test_a_secret_in_url_userinfo_or_query_never_survives_sanitize(secret: str, host: str) -> None:
    for message in (f"failed https://u:{secret}@{host}/p", f"failed https://{host}/p?key={secret}",
                    f"failed http://{host}/p#{secret}", f"sent Bearer {secret}"):
        assert secret not in sanitize(message)


@pytest.mark.parametrize(("kind", "config", "field"), [
    ("dynamics365", {"org_url": "https://x.crm4.dynamics.com", "tenant_id": "t", "client_id": "c" * 5_000_000},
     "config.client_id"),
    ("dynamics365", {"org_url": "https://x.crm4.dynamics.com", "tenant_id": "t" * 1_000_000, "client_id": "c"},
     "config.tenant_id"),
    ("http", {"url": "https://a.example", "body_contains": "x" * 100_000}, "config.body_contains"),
    ("http", {"url": "https://a.example", "auth": "header", "auth_header": "X-Key\r\nHost: evil"},
     "config.auth_header"),
])
def test_free_text_fields_are_bounded_so_a_tenant_cannot_grow_caches_or_inject_headers(kind, config, field) -> None:
    with pytest.raises(InvalidConfig) as err:
        parse_config(Integration(ORG, kind, config), MODELS)
    assert str(err.value).startswith(field)
