"""Dashboards are generated from code: the committed JSON must match the generator, and be well-formed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "dashboards"))

import generate  # noqa: E402


@pytest.mark.parametrize("name", list(generate.DASHBOARDS))
def test_committed_dashboard_json_matches_the_generator(name: str) -> None:
    committed = (ROOT / "dashboards" / name).read_text()
    assert committed == generate.render(generate.DASHBOARDS[name]), (
        f"dashboards/{name} is out of date: run .venv/bin/python dashboards/generate.py")


def dashboards() -> list[dict]:
    return [json.loads((ROOT / "dashboards" / name).read_text()) for name in generate.DASHBOARDS]


def targets(board: dict) -> list[dict]:
    return [t for p in board["panels"] for t in p.get("targets", [])]


def test_dashboards_have_stable_uids_and_a_datasource_variable() -> None:
    boards = dashboards()
    assert [b["uid"] for b in boards] == ["integration-health", "integration-health-history"]
    for b in boards:
        variables = {v["name"]: v for v in b["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert {"org_id", "integration_type"} <= variables.keys()


def test_every_query_goes_through_the_datasource_variable() -> None:
    for b in dashboards():
        assert targets(b)
        for t in targets(b):
            assert t["datasource"]["uid"] == "${datasource}", t


def test_the_trend_dashboard_covers_what_an_operator_needs() -> None:
    board = dashboards()[0]
    types = {p["type"] for p in board["panels"]}
    assert {"table", "state-timeline", "timeseries", "stat"} <= types
    exprs = " ".join(t["expr"] for t in targets(board))
    for metric in ("integration_health_status", "integration_health_latency_seconds",
                   "integration_health_failure_reason", "integration_health_consecutive_failures",
                   "integration_health_next_check_timestamp_seconds", "integration_health_cycle_drift_seconds",
                   "integration_health_sync_drift_seconds", "integration_health:availability:ratio_30d",
                   "integration_health:slo_error_budget_remaining:ratio", "integration_health:slo_objective:ratio",
                   "integration_health_sync_cold_starts_total", "integration_health_sync_invocation_latency_seconds",
                   "integration_health_sync_warmup_latency_seconds", "integration_health_sync_warmups_total"):
        assert metric in exprs


def test_provisioning_points_grafana_at_the_dashboards() -> None:
    import yaml

    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/dashboards.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/datasources.yml").read_text())
    assert {d["type"] for d in sources["datasources"]} == {"prometheus", "grafana-postgresql-datasource"}
    assert "password" not in json.dumps(sources).replace("$GRAFANA_DB_PASSWORD", "").replace('"password"', "")


def test_every_recorded_series_a_dashboard_reads_is_recorded_by_a_rule_file() -> None:
    import re

    import yaml

    recorded = {r["record"] for path in (ROOT / "alerts").glob("*.rules.yml")
                for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"] if "record" in r}
    read = {name for b in dashboards() for t in targets(b) for name in re.findall(r"\w+:\w+:\w+", t.get("expr", ""))}
    assert read and read <= recorded, read - recorded
