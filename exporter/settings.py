"""Configuration from the environment (EXPORTER_*, DATABASE_URL) and .env, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from exporter.core.egress import parse_allow_entry
from exporter.core.incidents import DEFAULT_CANARIES, DEFAULT_MIN_ORGS, DEFAULT_RATIO, IncidentRules
from exporter.core.policy import (
    BACKOFF_CAP_S,
    UNREACHABLE_BACKOFF_CAP_S,
    BackoffCaps,
    validate_interval,
)
from exporter.core.sealing import Keyring
from exporter.core.webhooks import RetrySchedule

MIN_TOKEN_CHARS = 16
MIN_JWT_SECRET_CHARS = 32  # 256 bits for HS256 (RFC 7518 §3.2); Supabase's secrets are at least this long
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
EXAMPLE_KEY = "REPLACEwithOpensslRandBase64ThirtyTwoOutput="  # .env.example's placeholder: valid, public, refused


class Settings(BaseSettings):
    # hide_input_in_errors: a rejected secret (a short JWT secret, a malformed sealing key) never appears in the
    # ValidationError's text, so not in a traceback either; describe_settings_error says what is wrong instead.
    model_config = SettingsConfigDict(env_prefix="EXPORTER_", env_file=".env", extra="ignore",
                                      hide_input_in_errors=True)

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "EXPORTER_DATABASE_URL"),
        description="PostgreSQL DSN; unset means the embedded PostgreSQL in data_dir")
    db_role: str | None = Field(default="service_role", description="role the service's sessions SET; empty: none")
    data_dir: Path = Field(default=Path(".data"), description="where the embedded PostgreSQL keeps its files")
    host: str = "0.0.0.0"
    port: int = Field(default=9464, ge=1, le=65535)
    check_interval: int = Field(default=900, description="seconds between cycles, aligned to the wall clock")
    allow_fast_interval: bool = False
    type_intervals: dict[str, int] | None = Field(
        default=None, description="per-type intervals (JSON); unset: each type's own default (xledger hourly)")
    check_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_concurrency: int = Field(default=512, ge=1, le=10_000, description="checks in flight at once")
    api_token: SecretStr | None = None
    api_enabled: bool = Field(default=True, description="false serves /metrics without the /api/v1 routes")
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 secret of the app's (Supabase) JWTs")
    jwt_jwks_url: str | None = Field(default=None, description="JWKS of the app's RS256/ES256 JWTs (https)")
    jwt_audience: str = Field(default="authenticated", min_length=1, description="the `aud` app JWTs must carry")
    jwt_issuer: str | None = Field(default=None, description="the `iss` app JWTs must carry; unset: any")
    metrics_token: SecretStr | None = Field(default=None, description="bearer token /metrics requires; unset: open")
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300,
                                               description="a connection's first request head must arrive within this")
    http_keepalive_seconds: float = Field(default=75.0, gt=0, le=3600,
                                          description="an idle kept-alive connection is closed after this")
    http_max_connections: int = Field(default=256, ge=1, le=100_000, description="connections served at once")
    run_now_min_interval_seconds: float = Field(default=60.0, ge=0)
    persist_queue_max: int = Field(default=100_000, ge=1)
    credential_provider: Literal["supabase-vault", "directory", "none"] = "supabase-vault"
    credentials_dir: Path | None = Field(default=None, description="secret files: <dir>/<org_id>/<ref>")
    credential_cache_seconds: float = Field(default=300.0, ge=0)
    credential_stale_seconds: float = Field(
        default=3600.0, ge=0, description="while the vault is unavailable, keep using the last secret this long")
    passive_types: Annotated[frozenset[str], NoDecode] = frozenset()  # e.g. xledger,dynamics365: never pinged
    rate_limit_fallback_after: int = Field(default=3, ge=0, description="throttled N times in a row → passive; 0: never")
    passive_cooldown_seconds: int = Field(default=86400, ge=0)
    backoff_max_seconds: int = Field(default=BACKOFF_CAP_S, ge=0,
                                     description="longest deferral when throttled, out of quota or refused")
    backoff_unreachable_max_seconds: int = Field(
        default=UNREACHABLE_BACKOFF_CAP_S, ge=0, description="longest deferral when unreachable: network, timeout, 5xx")
    vendor_incident_min_orgs: int = Field(
        default=DEFAULT_MIN_ORGS, ge=1, le=1_000_000,
        description="organisations failing on one type in one slot (network, TLS, timeout, 5xx) for a vendor incident")
    vendor_incident_ratio: float = Field(default=DEFAULT_RATIO, gt=0, le=1,
                                         description="and at least this share of that type's checked integrations")
    vendor_incident_canaries: int = Field(default=DEFAULT_CANARIES, ge=1, le=1000,
                                          description="integrations of the type still checked while it lasts")
    vendor_incident_types: Annotated[frozenset[str] | None, NoDecode] = Field(
        default=None, description="types that can have a vendor-wide incident; default those whose adapter reaches "
        "only its vendor's hosts (not http: each tenant chooses its URL, so tenants could silence each other)")
    replica_id: str | None = Field(default=None, description="names this replica in shard leases; default host-pid")
    lease_ttl_seconds: float = Field(default=30.0, gt=0, description="a dead replica's shards move after this")
    egress_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="CIDRs and host names a tenant's URL may reach besides public addresses")
    sovereign_clouds: Annotated[frozenset[Literal["us-gov", "china"]], NoDecode] = Field(
        default=frozenset(), description="Dynamics 365 government / China cloud hosts a tenant's URL may reach")
    sync_warmup_lead_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="warm a sync function up this long before each scheduled sync")
    sync_cold_start_seconds: float = Field(
        default=2.0, gt=0, le=120, description="a warm-up answered slower than this counts as a cold start")
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120,
                                           description="a webhook receiver must answer within this, per attempt")
    webhook_max_attempts: int = Field(default=12, ge=1, le=100,
                                      description="attempts before a delivery is dead-lettered")
    webhook_retry_min_seconds: float = Field(default=30.0, gt=0, description="the first retry's delay; doubles")
    webhook_retry_max_seconds: float = Field(default=6 * 3600.0, gt=0, description="the longest delay between attempts")
    webhook_concurrency: int = Field(default=16, ge=1, le=1000, description="webhook requests in flight at once")
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=300, description="how often an idle worker looks for work")
    webhook_keep_seconds: float = Field(default=7 * 86400.0, ge=0,
                                        description="delivered and dead deliveries are kept this long, then pruned")
    webhooks_per_org: int = Field(default=10, ge=0, le=1000, description="subscriptions an organisation may have")
    webhook_secret_keys: SecretStr | None = Field(
        default=None, description="keys that seal webhook signing secrets at rest: id:base64key,… (the first seals)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @property
    def backoff_caps(self) -> BackoffCaps:
        return BackoffCaps(refused_s=self.backoff_max_seconds, unreachable_s=self.backoff_unreachable_max_seconds)

    @property
    def webhook_schedule(self) -> RetrySchedule:
        return RetrySchedule(self.webhook_max_attempts, self.webhook_retry_min_seconds,
                             max(self.webhook_retry_min_seconds, self.webhook_retry_max_seconds))

    @property
    def incident_rules(self) -> IncidentRules:
        return IncidentRules(self.vendor_incident_min_orgs, self.vendor_incident_ratio, self.vendor_incident_canaries)

    @field_validator("passive_types", "sovereign_clouds", "vendor_incident_types", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return frozenset(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else value

    @field_validator("egress_allow", mode="before")
    @classmethod
    def _allow_list(cls, value: object) -> object:
        """Comma-separated; each entry a CIDR, an address or a host name, kept in its normal form."""
        entries = value.split(",") if isinstance(value, str) else value
        if not isinstance(entries, list | tuple | set | frozenset):
            return value
        return tuple(str(parse_allow_entry(str(e))) for e in entries if str(e).strip())

    @field_validator("jwt_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """A short HS256 secret can be guessed offline from any one token: refuse it at load time."""
        if value is not None and len(value.get_secret_value()) < MIN_JWT_SECRET_CHARS:
            raise ValueError(f"shorter than {MIN_JWT_SECRET_CHARS} characters: use the project's JWT secret "
                             "(Supabase: Settings → API → JWT secret)")
        return value

    @field_validator("webhook_secret_keys")
    @classmethod
    def _keyring(cls, value: SecretStr | None) -> SecretStr | None:
        """Parsed at load time, so a malformed key stops the start with its entry's number, never its bytes."""
        if value is None or not value.get_secret_value().strip():
            return None
        if EXAMPLE_KEY in value.get_secret_value():
            raise ValueError("still the example key of .env.example: make your own, e.g. k1:$(openssl rand -base64 32)")
        Keyring.parse(value.get_secret_value())
        return value

    @property
    def webhook_keyring(self) -> Keyring | None:
        """The keys of EXPORTER_WEBHOOK_SECRET_KEYS; None when unset."""
        return Keyring.parse(self.webhook_secret_keys.get_secret_value()) if self.webhook_secret_keys else None

    @field_validator("jwt_jwks_url", "jwt_issuer", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        """Keys fetched in clear text could be swapped on the way: https, or http to this host only."""
        if value is None:
            return None
        url = urlsplit(value)
        if url.scheme == "https" and url.hostname:
            return value
        if url.scheme == "http" and url.hostname in LOOPBACK_HOSTS:
            return value
        raise ValueError("must be an https:// URL (http:// only for localhost), e.g. "
                         "https://<project>.supabase.co/auth/v1/.well-known/jwks.json")

    @property
    def jwt_enabled(self) -> bool:
        """App JWTs are accepted: a secret or a JWKS to verify them with."""
        return self.jwt_secret is not None or self.jwt_jwks_url is not None

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _long_or_unset(cls, value: object) -> object:
        """An empty value means unset; a short one would be guessable, so it is refused rather than used."""
        if value == "":
            return None
        if isinstance(value, str) and len(value) < MIN_TOKEN_CHARS:
            raise ValueError(f"shorter than {MIN_TOKEN_CHARS} characters: use a long random token "
                             "(e.g. `openssl rand -hex 24`), or leave it unset for an open /metrics")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        try:
            validate_interval(self.check_interval, self.allow_fast_interval)
        except ValueError as exc:
            raise ValueError(f"check_interval: {exc}") from None
        if self.credential_provider == "directory" and not self.credentials_dir:
            raise ValueError("credentials_dir: required when EXPORTER_CREDENTIAL_PROVIDER=directory")
        return self


def describe_settings_error(exc: ValidationError) -> str:
    """One line per bad variable: its environment name and what to put there."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["loc"]:
            name = str(err["loc"][0]).upper()
        elif ": " in msg:  # a model-level check names its field first
            name, msg = msg.split(": ", 1)
            name = name.upper()
        else:
            name = "?"
        env = name if name == "DATABASE_URL" else f"EXPORTER_{name}"
        lines.append(f"{env}: {msg}")
    return "; ".join(lines)
