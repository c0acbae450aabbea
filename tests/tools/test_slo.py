"""The SLO rules are generated from alerts/slo.yml: the committed file must match, and an override per type
must move that type's thresholds and no other's (proven with promtool)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.adapters import ADAPTERS
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "alerts"))

import generate_slo  # noqa: E402


def test_committed_slo_rules_match_the_generator_and_slo_yml() -> None:
    objectives = generate_slo.load_objectives((ROOT / "alerts/slo.yml").read_text(), ADAPTERS)
    assert (ROOT / "alerts/integration-health-slo.rules.yml").read_text() == generate_slo.render(objectives), (
        "alerts/integration-health-slo.rules.yml is out of date: run .venv/bin/python alerts/generate_slo.py")


def test_the_shipped_objective_is_99_percent_for_every_integration() -> None:
    objectives = generate_slo.load_objectives((ROOT / "alerts/slo.yml").read_text(), ADAPTERS)
    assert objectives == generate_slo.Objectives(0.99, {})


@pytest.mark.parametrize(("text", "message"), [
    ("default: 1", "slo.yml: default: 1 must be below 1 and above 0.9306 (the fast alert fires at 14.4× the error "
                   "budget, which must stay below 100 %)"),
    ("default: 0.9", "slo.yml: default: 0.9 must be below 1 and above 0.9306"),
    ("default: '99%'", "slo.yml: default: expected a number such as 0.99, got '99%'"),
    ("default: true", "slo.yml: default: expected a number such as 0.99, got True"),
    ("default: 0.99\ntypes: {xledgr: 0.995}", "slo.yml: types.xledgr: not an integration type (known: dynamics365, "
                                               "fiken, http, tripletex, xledger)"),
    ("default: 0.99\ntypes: {xledger: 2}", "slo.yml: types.xledger: 2 must be below 1"),
    ("default: 0.99\ntypes: [xledger]", "slo.yml: types: expected a mapping of integration type to objective"),
    ("default: 0.99\nwindow: 7d", "slo.yml: expected the keys `default` and `types` only"),
])
def test_a_bad_objective_is_refused_with_its_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        generate_slo.load_objectives(text, ADAPTERS)
    assert str(err.value).startswith(message)


def test_an_override_writes_one_objective_rule_per_type_and_leaves_the_rest_to_the_default() -> None:
    objectives = generate_slo.load_objectives("default: 0.99\ntypes: {xledger: 0.999, fiken: 0.95}", ADAPTERS)
    rules = [r["expr"] for r in generate_slo.objective_rules(objectives)]
    assert rules == [
        '0.99 * group by (org_id, integration_type) (integration_health_status{integration_type!~"fiken|xledger"})',
        '0.95 * group by (org_id, integration_type) (integration_health_status{integration_type="fiken"})',
        '0.999 * group by (org_id, integration_type) (integration_health_status{integration_type="xledger"})']


def test_an_overridden_type_pages_at_its_own_budget_and_the_others_at_the_default(tmp_path: Path) -> None:
    """5 % of the time unreachable, in separate failures: 50× a 99.9 % objective's budget, 5× a 99 % one's."""
    objectives = generate_slo.load_objectives("default: 0.99\ntypes: {xledger: 0.999}", ADAPTERS)
    (tmp_path / "slo.rules.yml").write_text(generate_slo.render(objectives))
    burn = "0x59 " + " ".join(["1 0x18"] * 6) + " 0x9"  # an hour fine, then one failed check in twenty
    series, expected = [], []
    for org, kind in (("a", "xledger"), ("b", "http")):
        key = f'org_id="4f1c0000-0000-4000-8000-00000000000{org}",integration_type="{kind}"'
        series += [{"series": f'integration_health_status{{{key},status="unreachable"}}', "values": burn},
                   {"series": f"integration_health_consecutive_failures{{{key}}}", "values": burn}]
        expected.append({"labels": f"integration_health:slo_objective:ratio{{{key}}}",
                         "value": 0.999 if kind == "xledger" else 0.99})
    firing = [f'ALERTS{{alertname="IntegrationErrorBudgetBurn{speed}",alertstate="firing",integration_type="xledger",'
              f'org_id="4f1c0000-0000-4000-8000-00000000000a",severity="{severity}"}}'
              for speed, severity in (("Fast", "critical"), ("Slow", "warning"))]  # http: neither
    (tmp_path / "slo.test.yml").write_text(yaml.safe_dump({
        "rule_files": ["slo.rules.yml"], "evaluation_interval": "1m", "tests": [{
            "interval": "1m", "input_series": series, "promql_expr_test": [
                {"expr": "integration_health:slo_objective:ratio", "eval_time": "142m", "exp_samples": expected},
                {"expr": 'ALERTS{alertstate="firing"}', "eval_time": "142m",
                 "exp_samples": [{"labels": f, "value": 1} for f in firing]}]}]}))
    proc = subprocess.run([require_tool("promtool", "prometheus"), "test", "rules", "slo.test.yml"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
