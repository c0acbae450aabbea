"""Webhook decisions: which subscription URLs pass the egress policy, the signature, the retry schedule."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from exporter.core.egress import EgressPolicy
from exporter.core.webhooks import BadWebhookUrl, Destination, RetrySchedule, delivered, destination, signature
from tests.support.fakes import LOOPBACK
from tests.support.receiver import verify

PUBLIC = EgressPolicy()


@pytest.mark.parametrize(("url", "why"), [
    ("http://hooks.example.com/x", "must be https://"),
    ("ftp://hooks.example.com/x", "absolute https:// URL"),
    ("/relative", "absolute https:// URL"),
    ("https://user:pw@hooks.example.com/x", "user-info"),
    ("https://token@hooks.example.com/x", "user-info"),
    ("https://127.0.0.1/x", "loopback"),
    ("https://127.1/x", "loopback"),
    ("https://[::1]/x", "loopback"),
    ("https://localhost/x", "loopback"),
    ("https://10.0.0.8/x", "private"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://[::ffff:192.168.1.1]/x", "private"),
    ("https://hooks.example.com:99999/x", "not a valid URL"),
    ("https://hooks.example.com/x#frag", "fragment"),
    ("https://hooks.example.com/a b", "spaces or control characters"),
    ("https://hooks.example.com/" + "x" * 2048, "1 to 2048 characters"),
])
def test_forbidden_subscription_urls_are_refused_with_a_reason(url: str, why: str) -> None:
    with pytest.raises(BadWebhookUrl, match=why) as refused:
        destination(url, PUBLIC)
    assert "/x" not in str(refused.value) and "pw" not in str(refused.value)  # the path may be a capability


def test_a_public_https_url_passes_and_the_operator_can_allow_loopback_over_http() -> None:
    assert destination("https://hooks.example.com/in/T0/abc", PUBLIC) == Destination("https", "hooks.example.com", 443)
    assert destination("http://127.0.0.1:8080/hook", LOOPBACK) == Destination("http", "127.0.0.1", 8080)
    with pytest.raises(BadWebhookUrl, match="must be https://"):
        destination("http://hooks.example.com/x", LOOPBACK)  # allowing loopback allows no other http host


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_and_verifies() -> None:
    body = b'{"id":"e1"}'
    header = signature("whsec_k", 1_763_900_000, body)
    expected = hmac.new(b"whsec_k", b"1763900000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1763900000,v1={expected}"
    assert verify("whsec_k", header, body, now=1_763_900_000)
    assert not verify("whsec_k", header, body + b" ", now=1_763_900_000)  # body changed
    assert not verify("other", header, body, now=1_763_900_000)  # another subscription's secret
    assert not verify("whsec_k", header, body, now=1_763_900_000 + 3600)  # a replay an hour later


def test_retries_back_off_exponentially_up_to_the_cap_then_give_up() -> None:
    schedule = RetrySchedule(max_attempts=5, min_s=30, max_s=300)
    assert [schedule.delay_s(n, rng=lambda: 0.0) for n in range(1, 6)] == [30, 60, 120, 240, 300]
    assert schedule.delay_s(2, rng=lambda: 1.0) == pytest.approx(66)  # at most 10 % jitter
    assert [schedule.gives_up_after(n) for n in (4, 5)] == [False, True]
    with pytest.raises(ValueError):
        RetrySchedule(max_attempts=0)


@pytest.mark.parametrize(("status", "ok"), [(200, True), (204, True), (299, True), (301, False), (410, False),
                                            (500, False)])
def test_only_a_2xx_answer_is_a_delivery(status: int, ok: bool) -> None:
    assert delivered(status) is ok


def test_the_readme_verification_snippet_accepts_our_signature_and_refuses_a_forgery() -> None:
    """The Python an organisation copies from the README verifies what the exporter sends."""
    import re
    import time
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [snippet] = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "def verify" in block]
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - our own README
    now, body = int(time.time()), b'{"id":"e1","type":"integration.status_changed"}'
    header = signature("whsec_k", now, body)
    assert namespace["verify"]("whsec_k", header, body)
    assert not namespace["verify"]("whsec_k", header, body.replace(b"e1", b"e2"))
    assert not namespace["verify"]("whsec_k", signature("whsec_k", now - 3600, body), body)
    assert not namespace["verify"]("whsec_k", "garbage", body)
