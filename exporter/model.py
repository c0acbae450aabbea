"""The check contract: statuses, results and the typed configuration of each integration type. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
)

DEFAULT_DEGRADED_LATENCY_MS = 2000
MAX_ERROR_CHARS = 300


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"


class Reason(StrEnum):
    """Why a check was not healthy: a small, fixed set, so it is safe as a metric label."""

    SLOW = "slow"
    SYNC_FAILED = "sync_failed"
    SYNC_LATE = "sync_late"
    SYNC_MISSED = "sync_missed"
    TIMEOUT = "timeout"
    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    HTTP_5XX = "http_5xx"
    HTTP_4XX = "http_4xx"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    AUTH = "auth"
    BAD_RESPONSE = "bad_response"
    INVALID_CONFIG = "invalid_config"
    ERROR = "error"


class HealthResult(BaseModel):
    """The outcome of one check. Failures are values too: the runner never lets an exception escape."""

    model_config = ConfigDict(frozen=True)

    status: HealthStatus
    latency_ms: int = Field(ge=0)
    checked_at: AwareDatetime
    error: str | None = None
    reason: Reason | None = None
    retry_after_s: float | None = Field(default=None, ge=0)  # the vendor asked us to wait this long
    tls_expires_at: AwareDatetime | None = None  # notAfter of the server certificate, for https targets


class _Base(BaseModel):
    """Fields every integration type shares. Unknown keys are refused so a typo is reported, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    credential_ref: str | None = None
    degraded_latency_ms: int = Field(default=DEFAULT_DEGRADED_LATENCY_MS, gt=0)


class HttpConfig(_Base):
    """A plain HTTP(S) endpoint: HEAD (GET when the server answers 405), expected status codes."""

    integration_type: Literal["http"]
    url: HttpUrl
    method: Literal["HEAD", "GET"] = "HEAD"
    expected_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=list, max_length=50)
    auth: Literal["none", "bearer", "basic", "header"] = "none"
    auth_header: str = "Authorization"
    body_contains: str | None = Field(default=None, min_length=1)  # GET only: the answer must contain this
    tls_verify: bool = True  # false trusts any certificate (self-signed, expired): an explicit, per-integration choice


class XledgerConfig(_Base):
    """Xledger GraphQL; the credential is the API token (sent as `Authorization: token …`)."""

    integration_type: Literal["xledger"]
    url: HttpUrl = HttpUrl("https://www.xledger.net/graphql")  # demo company: https://demo.xledger.net/graphql


class Dynamics365Config(_Base):
    """Dynamics 365 Web API via OAuth2 client credentials; the credential is the client secret."""

    integration_type: Literal["dynamics365"]
    org_url: HttpUrl  # https://<org>.crm<N>.dynamics.com
    tenant_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9.-]+$")
    client_id: str = Field(min_length=1)
    token_url: HttpUrl | None = None  # default: https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token

    @property
    def effective_token_url(self) -> str:
        if self.token_url:
            return str(self.token_url)
        return f"https://login.microsoftonline.com/{self.tenant_id}/oauth2/v2.0/token"


class TripletexConfig(_Base):
    """Tripletex v2; the credential is JSON `{"consumer_token": …, "employee_token": …}`."""

    integration_type: Literal["tripletex"]
    url: HttpUrl = HttpUrl("https://tripletex.no/v2")


class FikenConfig(_Base):
    """Fiken v2; the credential is a personal API token or OAuth access token (Bearer)."""

    integration_type: Literal["fiken"]
    url: HttpUrl = HttpUrl("https://api.fiken.no/api/v2")


IntegrationConfig = Annotated[
    HttpConfig | XledgerConfig | Dynamics365Config | TripletexConfig | FikenConfig,
    Field(discriminator="integration_type"),
]
_CONFIG_ADAPTER: TypeAdapter[Any] = TypeAdapter(IntegrationConfig)


class InvalidConfig(ValueError):
    """An integration row that cannot be checked; the message names the field and the problem."""


@dataclass(frozen=True, slots=True)
class Integration:
    """One row of integration_config as loaded: the raw config is validated later, per integration."""

    org_id: UUID
    integration_type: str
    config: Any
    credential_ref: str | None = None
    health_mode: str = "active"
    sync: dict[str, Any] | None = None  # the expected sync schedule's columns, when one is set


@dataclass(frozen=True, slots=True)
class CheckState:
    """What the scheduler remembers about an integration between checks (persisted in its status row)."""

    consecutive_failures: int = 0
    next_check_at: datetime | None = None  # when next due: its next slot, or later while backing off
    rate_limited_streak: int = 0  # throttled or out of quota, in a row
    passive_until: datetime | None = None  # switched to passive health after repeated throttling


@dataclass(frozen=True, slots=True)
class IntegrationResult:
    """A result with its integration's key and the scheduler's state after it (persisted together)."""

    org_id: UUID
    integration_type: str
    result: HealthResult
    state: CheckState = CheckState()


def parse_config(integration: Integration) -> Any:
    """Validate a row into its typed IntegrationConfig, or raise InvalidConfig naming the bad field."""
    if not isinstance(integration.config, dict):
        raise InvalidConfig(f"config must be a JSON object, got {_json_type(integration.config)}")
    data = {**integration.config, "integration_type": integration.integration_type,
            "credential_ref": integration.credential_ref}
    try:
        return _CONFIG_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise InvalidConfig(describe_validation_error(exc, integration.integration_type)) from None


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "an array"}
    return names.get(type(value), type(value).__name__)


def describe_validation_error(exc: ValidationError, integration_type: str, root: str = "config") -> str:
    """One `config.<field>: <message>` per problem, without echoing the offending values."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        if err["type"] == "union_tag_invalid":
            parts.append(f"integration_type: unknown type {integration_type!r}")
            continue
        loc = [str(p)[:64] for p in err["loc"]]  # a key can be a megabyte long
        if loc and loc[0] == integration_type:  # the discriminated union prefixes the tag
            loc = loc[1:]
        msg = err["msg"].removeprefix("Value error, ")
        if msg[1:2].islower():  # "Field required" → "field required", but "URL input …" stays
            msg = msg[:1].lower() + msg[1:]
        prefix = ".".join([root, *loc]) if root else ".".join(loc)
        parts.append(f"{prefix}: {msg}" if prefix else msg)
    return "; ".join(parts)


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s@]*@", re.IGNORECASE)
_URL_QUERY = re.compile(r"(?P<base>[a-z][a-z0-9+.-]*://[^\s?#]*)[?#][^\s]*", re.IGNORECASE)
_AUTH_VALUE = re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"\b(authorization\s*[:=]\s*)(\w+\s+)?[^\s,;]+", re.IGNORECASE)


def sanitize(message: str) -> str:
    """Make an error message safe to store and show: no URL userinfo or query, no auth values, bounded."""
    message = message[: MAX_ERROR_CHARS * 4]  # cut first: the patterns below are quadratic on a huge run
    message = _URL_CREDENTIALS.sub(r"\g<scheme>", message)
    message = _URL_QUERY.sub(r"\g<base>", message)
    message = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2) or ''}[redacted]", message)
    message = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} [redacted]", message)
    message = " ".join(message.split())
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return message


def make_result(status: HealthStatus, latency_ms: float, checked_at: datetime, error: str | None = None,
                reason: Reason | None = None, retry_after_s: float | None = None,
                tls_expires_at: datetime | None = None) -> HealthResult:
    """Build a result with a sanitised error and a non-negative integer latency."""
    return HealthResult(
        status=status,
        latency_ms=max(0, round(latency_ms)),
        checked_at=checked_at,
        error=sanitize(error) if error else None,
        reason=reason,
        retry_after_s=retry_after_s,
        tls_expires_at=tls_expires_at,
    )
