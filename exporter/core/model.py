"""The check contract: statuses, results, the fields every config shares, and validating a row. No I/O."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Protocol
from uuid import UUID

from pydantic import AnyUrl, AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.dataclasses import dataclass as validated_dataclass

from exporter.core.sanitize import sanitize

DEFAULT_DEGRADED_LATENCY_MS = 2000
MAX_LATENCY_MS = 2**31 - 1  # the `integer` column; a sync running ~25 days would overflow it


def utcnow() -> datetime:
    """The clock every layer defaults to; tests pass their own."""
    return datetime.now(UTC)


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
    AUTH = "auth"  # credentials refused, and the vendor did not say why
    AUTH_EXPIRED = "auth_expired"  # the secret has expired (Entra AADSTS7000222)
    AUTH_INVALID = "auth_invalid"  # the secret is wrong (Entra AADSTS7000215)
    AUTH_UNKNOWN_APP = "auth_unknown_app"  # no such application in the tenant (Entra AADSTS700016)
    AUTH_NO_USER = "auth_no_user"  # signed in, but no application user in Dataverse (0x80072560)
    AUTH_FORBIDDEN = "auth_forbidden"  # signed in, but without the permission the check needs (403)
    CREDENTIAL_UNAVAILABLE = "credential_unavailable"  # the vault could not be read: no vendor was asked
    BAD_RESPONSE = "bad_response"
    INVALID_CONFIG = "invalid_config"
    BLOCKED = "blocked"  # the egress policy refused the destination; nothing was sent
    ERROR = "error"

    @property
    def is_auth(self) -> bool:
        """Credentials refused, for whatever reason the vendor gave: one alert, one backoff, one cache drop."""
        return self in AUTH_REASONS


# Every way a vendor refuses credentials. Code that treats refused credentials specially tests membership
# here (or Reason.is_auth), never `== Reason.AUTH`; the rules match them as reason=~"auth.*".
AUTH_REASONS = frozenset({Reason.AUTH, Reason.AUTH_EXPIRED, Reason.AUTH_INVALID, Reason.AUTH_UNKNOWN_APP,
                          Reason.AUTH_NO_USER, Reason.AUTH_FORBIDDEN})


@validated_dataclass(frozen=True, slots=True)
class HealthResult:
    """The outcome of one check. Failures are values too: the runner never lets an exception escape.

    A validated, slotted dataclass rather than a BaseModel: one object for the garbage collector to walk
    instead of three (a model's instance, its __dict__ and its fields-set), and the fleet's results live
    until the full collection after each cycle walks them (engine/heap.py). Still validated when built;
    copy with dataclasses.replace, which validates too."""

    status: HealthStatus
    latency_ms: Annotated[int, Field(ge=0, le=MAX_LATENCY_MS)]
    checked_at: AwareDatetime
    error: str | None = None
    reason: Reason | None = None
    retry_after_s: float | None = Field(default=None, ge=0)  # the vendor asked us to wait this long
    tls_expires_at: AwareDatetime | None = None  # notAfter of the server certificate, for https targets
    vendor_incident_since: AwareDatetime | None = None  # the vendor is down for everyone (core/incidents.py)
    credential_expires_at: AwareDatetime | None = None  # when the credential stops working, where known ahead


class IntegrationConfigBase(BaseModel):
    """Fields every integration type shares. Unknown keys are refused so a typo is reported, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    credential_ref: str | None = None
    degraded_latency_ms: int = Field(default=DEFAULT_DEGRADED_LATENCY_MS, gt=0)
    check_interval_seconds: int | None = Field(default=None, gt=0, le=7 * 86400)  # rounded up to whole cycles

    @field_validator("*")
    @classmethod
    def _no_userinfo(cls, value: Any) -> Any:
        """Refuse `user:password@` in any URL: a secret belongs in credential_ref, not in a tenant-written row."""
        if isinstance(value, AnyUrl) and (value.username is not None or value.password is not None):
            raise ValueError("user-info (user:password@) is not allowed in a URL: put the secret in credential_ref")
        return value


class CredentialError(LookupError):
    """A credential reference did not resolve. The message names neither the reference nor a secret."""


class CredentialUnavailable(CredentialError):
    """The vault (or its database) could not be asked: infrastructure trouble, not the vendor's or the org's."""


# A credential_ref is a plain name (or a vault secret's id, which is one too); it is tenant-controlled, so
# it never carries a path or another organisation's prefix: `<org_id>/<ref>` is built here, from the row's
# org_id, never taken from the reference.
CREDENTIAL_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# One answer for a reference that is malformed, missing or owned by another organisation, so a tenant
# cannot probe which secrets exist.
CREDENTIAL_REFUSED = "credential_ref names no secret of this organisation"


def is_plain_ref(ref: str) -> bool:
    """True when `ref` is a plain name: letters, digits, `.`, `_`, `-`, at most 128, not starting with a dot."""
    return CREDENTIAL_REF.fullmatch(ref) is not None


def secret_name(org_id: UUID, ref: str) -> str:
    """The name an organisation's secret has in the store: `<org_id>/<ref>` (the ownership convention)."""
    if not is_plain_ref(ref):
        raise ValueError("a credential reference is a plain name: letters, digits, '.', '_', '-'")
    return f"{UUID(str(org_id))}/{ref}"


class CredentialProvider(Protocol):
    """Secrets by organisation and reference: a reference resolves only to a secret its organisation owns."""

    async def get(self, org_id: UUID, ref: str) -> SecretStr:
        """Return the secret `ref` names for `org_id`, or raise CredentialError (CREDENTIAL_REFUSED when it
        is malformed, missing or another organisation's)."""
        ...

    def forget(self, org_id: UUID, ref: str) -> None:
        """Drop anything cached for (org_id, ref), so the next get reads the store again (after a vendor
        refused the secret, say); providers without a cache do nothing."""
        ...

    async def expiry(self, org_id: UUID, ref: str) -> datetime | None:
        """When the secret `ref` names for `org_id` expires, from the store's metadata (never the secret);
        None when unknown. Never raises for a missing or malformed expiry."""
        ...

    async def prefetch(self, keys: Collection[tuple[UUID, str]]) -> None:
        """Read these (org_id, ref) pairs ahead, secrets and expiries, in as few round trips to the store as it
        can, so the gets and expiries that follow are answered from memory; providers without a cache do
        nothing. Never raises: a pair it could not read is read by get as before."""
        ...


def parse_expiry(value: str) -> datetime:
    """An expiry written by an operator: ISO 8601 with a zone (`2027-05-01T00:00:00Z`), or a date (midnight
    UTC); a time without a zone is UTC. ValueError when it is none of those."""
    value = value.strip()
    if not value or len(value) > 64:
        raise ValueError("not an ISO 8601 date or time")
    when = datetime.fromisoformat(value)  # 3.11 reads `Z`, offsets and plain dates
    return when if when.tzinfo else when.replace(tzinfo=UTC)


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
    warmup_url: str | None = None  # the sync function's endpoint, warmed before each scheduled sync


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
    maintenance: bool = False  # checked while a maintenance window covered it (core/maintenance.py)

    def org_id_key(self) -> tuple[UUID, str]:
        return (self.org_id, self.integration_type)


def parse_config(integration: Integration, models: Mapping[str, type[IntegrationConfigBase]]) -> Any:
    """Validate a row with its type's registered config model, or raise InvalidConfig naming the bad field."""
    model = models.get(integration.integration_type)
    if model is None:
        raise InvalidConfig(f"no adapter for {integration.integration_type!r}")
    if not isinstance(integration.config, dict):
        raise InvalidConfig(f"config must be a JSON object, got {_json_type(integration.config)}")
    data = {**integration.config, "credential_ref": integration.credential_ref}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidConfig(describe_validation_error(exc)) from None


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "an array"}
    return names.get(type(value), type(value).__name__)


def describe_validation_error(exc: ValidationError, root: str = "config") -> str:
    """One `config.<field>: <message>` per problem, without echoing the offending values."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(p)[:64] for p in err["loc"]]  # a key can be a megabyte long
        msg = err["msg"].removeprefix("Value error, ")
        if msg[1:2].islower():  # "Field required" → "field required", but "URL input …" stays
            msg = msg[:1].lower() + msg[1:]
        prefix = ".".join([root, *loc]) if root else ".".join(loc)
        parts.append(f"{prefix}: {msg}" if prefix else msg)
    return "; ".join(parts)


def make_result(status: HealthStatus, latency_ms: float, checked_at: datetime, error: str | None = None,
                reason: Reason | None = None, retry_after_s: float | None = None,
                tls_expires_at: datetime | None = None) -> HealthResult:
    """Build a result with a sanitised error and an integer latency clamped to what the database stores."""
    return HealthResult(
        status=status,
        latency_ms=min(MAX_LATENCY_MS, max(0, round(latency_ms))),
        checked_at=checked_at,
        error=sanitize(error) if error else None,
        reason=reason,
        retry_after_s=retry_after_s,
        tls_expires_at=tls_expires_at,
    )
