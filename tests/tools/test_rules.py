"""Alert rules and Alertmanager config, checked by the real tools."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from exporter.core.model import HealthStatus, Reason, make_result
from exporter.core.policy import counts_as_failure
from tests.conftest import require_tool

ALERTS = Path(__file__).resolve().parents[2] / "alerts"


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ALERTS)


RULE_FILES = sorted(p.name for p in ALERTS.glob("*.rules.yml"))  # every file Prometheus loads (alerts/*.rules.yml)
TEST_FILES = sorted(p.name for p in ALERTS.glob("*.test.yml"))


def alerting_rules(name: str) -> list[dict]:
    return [r for g in yaml.safe_load((ALERTS / name).read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules_accepts_the_rules() -> None:
    assert "integration-health.rules.yml" in RULE_FILES
    proc = run(require_tool("promtool", "prometheus"), "check", "rules", *RULE_FILES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", TEST_FILES)
def test_promtool_unit_tests_of_every_alert_pass(name: str) -> None:
    proc = run(require_tool("promtool", "prometheus"), "test", "rules", name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_unit_test_and_the_annotations_an_operator_needs() -> None:
    """In a test file that loads the alert's own rule file, at least one case expecting it to fire."""
    tested: dict[str, set[str]] = {}
    for name in TEST_FILES:
        doc = yaml.safe_load((ALERTS / name).read_text())
        fired = {t["alertname"] for case in doc["tests"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
        for rule_file in doc["rule_files"]:
            tested.setdefault(rule_file, set()).update(fired)
    for name in RULE_FILES:
        alerts = alerting_rules(name)
        assert {a["alert"] for a in alerts} <= tested.get(name, set()), name
        for a in alerts:
            assert a["labels"]["severity"] in ("warning", "critical")
            assert {"summary", "description", "runbook_url"} <= a["annotations"].keys()
            assert "README.md#" in a["annotations"]["runbook_url"]


def test_amtool_accepts_the_alertmanager_config() -> None:
    proc = run(require_tool("amtool", "prometheus-alertmanager"), "check-config", "alertmanager.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_runbook_url_points_at_a_readme_section() -> None:
    import re

    readme = (ALERTS.parent / "README.md").read_text()
    anchors = {h.strip().lower().replace(" ", "-") for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for rule in (r for name in RULE_FILES for r in alerting_rules(name)):
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: README has no section #{anchor}"


# Which alert a lasting failure of each reason raises, by its status; None: another signal covers it
# (a passive integration's sync alerts, from integration_health_sync_state). A new Reason must be placed here.
REASON_ALERTS: dict[Reason, tuple[HealthStatus, str | None]] = {
    Reason.SLOW: (HealthStatus.DEGRADED, "IntegrationDegraded"),
    Reason.BAD_RESPONSE: (HealthStatus.DEGRADED, "IntegrationDegraded"),
    Reason.HTTP_4XX: (HealthStatus.DEGRADED, "IntegrationDegraded"),
    Reason.RATE_LIMITED: (HealthStatus.DEGRADED, "IntegrationRateLimited"),
    Reason.QUOTA: (HealthStatus.DEGRADED, "IntegrationRateLimited"),
    Reason.AUTH: (HealthStatus.DEGRADED, "IntegrationCredentialsRejected"),
    Reason.AUTH_EXPIRED: (HealthStatus.DEGRADED, "IntegrationCredentialsRejected"),
    Reason.AUTH_INVALID: (HealthStatus.DEGRADED, "IntegrationCredentialsRejected"),
    Reason.AUTH_UNKNOWN_APP: (HealthStatus.DEGRADED, "IntegrationCredentialsRejected"),
    Reason.AUTH_NO_USER: (HealthStatus.DEGRADED, "IntegrationCredentialsRejected"),
    Reason.AUTH_FORBIDDEN: (HealthStatus.DEGRADED, "IntegrationCredentialsRejected"),
    Reason.CREDENTIAL_UNAVAILABLE: (HealthStatus.DEGRADED, None),  # not a result: checks_not_run_total says it
    Reason.SYNC_LATE: (HealthStatus.DEGRADED, None),
    Reason.SYNC_MISSED: (HealthStatus.DEGRADED, None),
    Reason.SYNC_FAILED: (HealthStatus.UNREACHABLE, None),
    Reason.TIMEOUT: (HealthStatus.UNREACHABLE, "IntegrationUnreachable"),
    Reason.DNS: (HealthStatus.UNREACHABLE, "IntegrationUnreachable"),
    Reason.CONNECT: (HealthStatus.UNREACHABLE, "IntegrationUnreachable"),
    Reason.TLS: (HealthStatus.UNREACHABLE, "IntegrationUnreachable"),
    Reason.HTTP_5XX: (HealthStatus.UNREACHABLE, "IntegrationUnreachable"),
    Reason.INVALID_CONFIG: (HealthStatus.UNREACHABLE, "IntegrationUnreachable"),
    Reason.BLOCKED: (HealthStatus.UNREACHABLE, "IntegrationUnreachable"),  # the row or EXPORTER_EGRESS_ALLOW to fix
    Reason.ERROR: (HealthStatus.UNREACHABLE, "IntegrationUnreachable"),
}


def test_every_reason_raises_exactly_its_own_alert_and_no_other(tmp_path) -> None:
    """One cause, one alert, checked by promtool for every reason the code can report: 90 minutes of it
    (two failures in a row when it counts as one) raise exactly the alert above."""
    assert set(REASON_ALERTS) == set(Reason), "place every Reason in REASON_ALERTS (and in the rules)"
    tests = []
    for reason, (status, alert) in REASON_ALERTS.items():
        key = 'org_id="4f1c0000-0000-4000-8000-00000000000a",integration_type="http"'
        failures = 2 if counts_as_failure(make_result(status, 0, datetime.now(UTC), reason=reason)) else 0
        expected = [] if alert is None else [{"labels": (
            f'ALERTS{{alertname="{alert}",alertstate="firing",severity="{SEVERITY[alert]}"}}'
            if alert in SERVICE_LEVEL else  # infrastructure: one alert, no organisation's labels
            f'ALERTS{{alertname="{alert}",alertstate="firing",{key},severity="{SEVERITY[alert]}"'
            + (f',reason="{reason}"' if alert in ("IntegrationRateLimited", "IntegrationCredentialsRejected")
               else f',status="{status}"') + "}"), "value": 1}]
        tests.append({"name": reason.value, "interval": "1m", "input_series": [
            {"series": f'integration_health_status{{{key},status="{status}"}}', "values": "1x90"},
            {"series": f'integration_health_failure_reason{{{key},reason="{reason}"}}', "values": "1x90"},
            {"series": f"integration_health_consecutive_failures{{{key}}}", "values": f"{failures}x90"},
            {"series": 'up{job="integration-health",instance="exporter:9464"}', "values": "1x90"},
        ], "promql_expr_test": [{"expr": 'ALERTS{alertstate="firing"}', "eval_time": "85m", "exp_samples": expected}]})
    path = tmp_path / "reasons.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [str(ALERTS / "integration-health.rules.yml")],
                                    "evaluation_interval": "1m", "tests": tests}))
    proc = run(require_tool("promtool", "prometheus"), "test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


SEVERITY = {"IntegrationDegraded": "warning", "IntegrationRateLimited": "warning",
            "IntegrationCredentialsRejected": "critical", "IntegrationUnreachable": "critical"}
SERVICE_LEVEL: set[str] = set()


def test_keep_firing_for_is_supported_by_this_prometheus_though_the_rules_bridge_gaps_otherwise(tmp_path) -> None:
    """Debian's 2.42 evaluates keep_firing_for (the README says why the rules use last_over_time instead)."""
    (tmp_path / "kff.rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "Held", "expr": "x == 1", "keep_firing_for": "10m"}]}]}))
    (tmp_path / "kff.test.yml").write_text(yaml.safe_dump({"rule_files": ["kff.rules.yml"], "tests": [{
        "interval": "1m", "input_series": [{"series": "x", "values": "1 1 0x20"}],
        "alert_rule_test": [{"eval_time": "8m", "alertname": "Held", "exp_alerts": [{"exp_labels": {}}]},
                            {"eval_time": "13m", "alertname": "Held", "exp_alerts": []}]}]}))
    proc = subprocess.run([require_tool("promtool", "prometheus"), "test", "rules", "kff.test.yml"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


PER_INTEGRATION_GROUPS = ("integration-health-integrations", "integration-health-syncs")
MAINTENANCE_CLAUSE = "unless on (org_id, integration_type) last_over_time(integration_health_maintenance[10m]) == 1"


def test_every_per_integration_alert_is_silenced_by_a_maintenance_window() -> None:
    """The clause the promtool tests prove for a few alerts, present in all of them (a new alert must add it)."""
    rules = yaml.safe_load((ALERTS / "integration-health.rules.yml").read_text())
    alerts = [r for g in rules["groups"] if g["name"] in PER_INTEGRATION_GROUPS for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 12
    assert [a["alert"] for a in alerts if MAINTENANCE_CLAUSE not in " ".join(a["expr"].split())] == []


@pytest.mark.parametrize("alert", ["IntegrationHealthWebhooksDeadLettered", "IntegrationHealthWebhooksHeld"])
def test_webhook_alerts_are_one_operator_alert_not_one_per_organisation(alert: str) -> None:
    """Summed over everything (no organisation's labels to page per org), routed to the operator's receiver."""
    [rule] = [r for r in alerting_rules("integration-health.rules.yml") if r["alert"] == alert]
    assert rule["expr"].startswith("sum(") and " by " not in rule["expr"]
    severity = rule["labels"]["severity"]
    proc = run(require_tool("amtool", "prometheus-alertmanager"), "config", "routes", "test",
               "--config.file=alertmanager.yml", f"alertname={alert}", f"severity={severity}")
    assert proc.returncode == 0 and proc.stdout.strip() == severity, proc.stdout + proc.stderr
