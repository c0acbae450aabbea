"""Property-based: whatever JSON sits in integration_config, validation answers with a config or an
InvalidConfig naming a field, and the runner turns it into exactly one bounded result, never an exception."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.adapters import ADAPTERS
from exporter.adapters.base import AdapterContext
from exporter.core.model import HealthResult, HealthStatus, Integration, InvalidConfig, Reason, parse_config
from exporter.core.sanitize import MAX_ERROR_CHARS, sanitize
from exporter.core.syncs import SyncSchedule
from tests.support.fakes import loopback_session, runner_for

ORG = UUID("44444444-4444-4444-8444-444444444444")
FIELDS = ["url", "method", "expected_status", "auth", "auth_header", "body_contains", "tls_verify",
          "degraded_latency_ms", "org_url", "tenant_id", "client_id", "token_url", "credential_ref",
          "integration_type"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50)
    | st.sampled_from(["http://a.example", "https://b.example/x?y=1", "HEAD", "GET", "bearer", "header", ""]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
configs = st.one_of(json_values, st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=20), json_values,
                                                 max_size=8))
MODELS = {name: spec.config for name, spec in ADAPTERS.items()}
types = st.sampled_from(sorted(ADAPTERS)) | st.text(max_size=20)


@settings(max_examples=400, deadline=None)
@given(kind=types, config=configs, ref=st.none() | st.text(max_size=20))
def test_validation_answers_with_a_config_or_an_invalid_config_naming_a_field(kind, config, ref) -> None:
    try:
        parsed = parse_config(Integration(ORG, kind, config, ref), MODELS)
    except InvalidConfig as exc:
        message = str(exc)
        assert message.startswith(("config", "no adapter for")), message
    else:
        assert type(parsed) is ADAPTERS[kind].config and parsed.credential_ref == ref


class Healthy:
    """A stand-in adapter: the property is about what reaches the adapter, not the network."""

    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx

    async def check(self, org_id: UUID, config: object) -> HealthResult:
        return HealthResult(status=HealthStatus.HEALTHY, latency_ms=1, checked_at=datetime.now(UTC))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(types, configs), min_size=1, max_size=6))
def test_any_rows_give_one_bounded_result_each_and_never_raise(rows) -> None:
    async def run() -> list:
        async with loopback_session() as session:
            runner = runner_for(AdapterContext(session=session), dict.fromkeys(ADAPTERS, Healthy))
            return await runner.run([Integration(ORG, kind, config) for kind, config in rows])

    results = asyncio.run(run())
    assert len(results) == len(rows)
    for (kind, config), r in zip(rows, results, strict=True):
        try:  # what the row deserves: the stand-in's healthy answer when it validates, else invalid configuration
            parse_config(Integration(ORG, kind, config), MODELS)
            expected = (HealthStatus.HEALTHY, None)
        except InvalidConfig:
            expected = (HealthStatus.UNREACHABLE, Reason.INVALID_CONFIG)
        assert (r.integration_type, r.result.status, r.result.reason) == (kind, *expected)
        if r.result.status != HealthStatus.HEALTHY:
            assert r.result.reason == Reason.INVALID_CONFIG
            assert len(r.result.error) <= MAX_ERROR_CHARS


@settings(max_examples=300, deadline=None)
@given(cron=st.none() | st.text(max_size=30) | st.sampled_from(["0 2 * * *", "0 2 31 2 *", "*/5 * * * *"]),
       timezone=st.text(max_size=40) | st.sampled_from(["Europe/Oslo", "UTC"]),
       period=st.none() | st.integers(-10, 10**9))
def test_a_sync_schedule_is_valid_and_usable_or_a_value_error(cron, timezone, period) -> None:
    try:
        schedule = SyncSchedule(cron=cron, timezone=timezone, period_s=period)
    except ValueError:
        return
    now = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # the night Europe/Oslo springs forward
    assert schedule.previous(now) <= now < schedule.next(now)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=5000) | st.builds(lambda n: "a" * n, st.integers(0, 200_000)))
def test_sanitize_bounds_any_text(text) -> None:
    assert len(sanitize(text)) <= MAX_ERROR_CHARS
