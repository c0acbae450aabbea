"""Classifying answers: Retry-After in every form a server sends it, on throttling and on maintenance."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from exporter.adapters.classify import classify_http, parse_retry_after
from exporter.adapters.transport import Response
from exporter.core.model import HealthStatus, Reason

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("value", ["²", "٣", "1e3", "-5", "12.5"])
def test_retry_after_that_is_not_plain_ascii_seconds_or_a_date_is_ignored_not_a_crash(value) -> None:
    assert parse_retry_after(value, NOW) is None


def answer(status: int, **headers: str) -> Response:
    return Response(status, CIMultiDictProxy(CIMultiDict(headers)), b"", 12.0)


def test_a_503_with_retry_after_is_unreachable_and_says_when_to_come_back() -> None:
    result = classify_http(answer(503, **{"Retry-After": "600"}), NOW)
    assert result is not None
    assert (result.status, result.reason, result.retry_after_s) == (HealthStatus.UNREACHABLE, Reason.HTTP_5XX, 600.0)


def test_a_500_without_retry_after_carries_none() -> None:
    result = classify_http(answer(500), NOW)
    assert result is not None and result.retry_after_s is None
