"""Alert rules and Alertmanager config, checked by the real tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import require_tool

ALERTS = Path(__file__).resolve().parents[2] / "alerts"


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ALERTS)


def test_promtool_check_rules_accepts_the_rules() -> None:
    proc = run(require_tool("promtool", "prometheus"), "check", "rules", "integration-health.rules.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    proc = run(require_tool("promtool", "prometheus"), "test", "rules", "integration-health.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_unit_test_and_the_annotations_an_operator_needs() -> None:
    rules = yaml.safe_load((ALERTS / "integration-health.rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    tested = {t["alertname"] for case in yaml.safe_load((ALERTS / "integration-health.test.yml").read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert {a["alert"] for a in alerts} <= tested
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
    rules = yaml.safe_load((ALERTS / "integration-health.rules.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"] if "alert" in r):
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: README has no section #{anchor}"
