"""Build the Grafana dashboards as code (grafana-foundation-sdk) and write their provisioned JSON.

    .venv/bin/python dashboards/generate.py          # rewrite dashboards/*.json
    .venv/bin/python dashboards/generate.py --check  # exit 1 if the committed JSON is out of date

Every query goes through a `datasource` template variable; the dashboards have stable uids.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
)

from exporter.storage.store import AVAILABILITY

HERE = Path(__file__).resolve().parent
PROM = DataSourceRef(type_val="prometheus", uid="${datasource}")
PG = DataSourceRef(type_val="grafana-postgresql-datasource", uid="${datasource}")
SEL = 'org_id=~"$org_id",integration_type=~"$integration_type"'
STATUS_CODES = {"0": ("healthy", "green"), "1": ("degraded", "yellow"), "2": ("unreachable", "red")}
SYNC_CODES = {"0": ("on_schedule", "green"), "1": ("late", "yellow"), "2": ("running_too_long", "orange"),
              "3": ("missed", "red"), "4": ("failed", "dark-red")}


def value_map(codes: dict[str, tuple[str, str]]) -> list[Any]:
    return [ValueMap(options={k: ValueMappingResult(text=t, color=c, index=i)
                              for i, (k, (t, c)) in enumerate(codes.items())})]


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=v, color=c) for v, c in steps]))


def q(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(PROM)
    if legend:
        query = query.legend_format(legend)
    return query.instant().format("table") if instant else query


class SqlQuery:
    """A PostgreSQL datasource target (the SDK has no builder for it): raw SQL, table or time series."""

    def __init__(self, sql: str, fmt: str = "table", ref: str = "A") -> None:
        self.target = {"datasource": {"type": PG.type_val, "uid": PG.uid}, "editorMode": "code",
                       "format": fmt, "rawQuery": True, "rawSql": sql, "refId": ref}

    def build(self) -> dict[str, Any]:
        return self.target


class SqlAnnotation:
    """A PostgreSQL annotation (the SDK's AnnotationQuery has no raw-SQL target): rows of time, timeend, text."""

    def __init__(self, name: str, sql: str, color: str) -> None:
        self.annotation = {"name": name, "enable": True, "iconColor": color,
                           "datasource": {"type": PG.type_val, "uid": PG.uid},
                           "target": SqlQuery(sql, ref="Anno").build()}

    def build(self) -> dict[str, Any]:
        return self.annotation


def status_variables(builder: dashboard.Dashboard) -> dashboard.Dashboard:
    return (builder
            .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
            .with_variable(dashboard.QueryVariable("org_id").label("Organisation").datasource(PROM)
                           .query("label_values(integration_health_status, org_id)").multi(True)
                           .include_all(True).all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                           .current(VariableOption(selected=True, text="All", value="$__all")))
            .with_variable(dashboard.QueryVariable("integration_type").label("Integration").datasource(PROM)
                           .query('label_values(integration_health_status{org_id=~"$org_id"}, integration_type)')
                           .multi(True).include_all(True).all_value(".*")
                           .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                           .current(VariableOption(selected=True, text="All", value="$__all"))))


def current_status_table() -> table.Panel:
    """One row per integration: status, latency, last check, failure reason, failures in a row, next check."""
    by = "org_id, integration_type"
    return (table.Panel().title("Current status").span(24).height(9)
            .description("The latest check of every integration; the next check is later than usual while "
                         "an integration backs off after failures.")
            .with_target(q(f'max by ({by}, status) (integration_health_status{{{SEL}}} == 1)', instant=True, ref="A"))
            .with_target(q(f"max by ({by}) (integration_health_latency_seconds{{{SEL}}})", instant=True, ref="B"))
            .with_target(q(f"max by ({by}) (integration_health_last_check_timestamp_seconds{{{SEL}}}) * 1000",
                           instant=True, ref="C"))
            .with_target(q(f"max by ({by}, reason) (integration_health_failure_reason{{{SEL}}})", instant=True,
                           ref="D"))
            .with_target(q(f"max by ({by}) (integration_health_consecutive_failures{{{SEL}}})", instant=True,
                           ref="E"))
            .with_target(q(f"max by ({by}) (integration_health_next_check_timestamp_seconds{{{SEL}}}) * 1000",
                           instant=True, ref="F"))
            .override_by_name("Latency", [DynamicConfigValue(id_val="unit", value="s")])
            .override_by_name("Last check", [DynamicConfigValue(id_val="unit", value="dateTimeFromNow")])
            .override_by_name("Next check", [DynamicConfigValue(id_val="unit", value="dateTimeFromNow")])
            .override_by_name("Status", [DynamicConfigValue(id_val="mappings", value=[
                {"type": "value", "options": {name: {"color": color, "index": i}
                                              for i, (name, color) in enumerate(STATUS_CODES.values())}}]),
                DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"})])
            .with_transformation(DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(DataTransformerConfig(id_val="organize", options={
                "excludeByName": {"Time": True, "Value #A": True, "Value #D": True},
                "renameByName": {"org_id": "Organisation", "integration_type": "Integration", "status": "Status",
                                 "Value #B": "Latency", "Value #C": "Last check", "reason": "Reason",
                                 "Value #E": "Failures in a row", "Value #F": "Next check"}})))


SLO_BY = "org_id, integration_type"
BUDGET_STEPS = ((None, "red"), (0, "orange"), (0.25, "green"))  # overspent, under a quarter left, fine


def burn_rate(window: str) -> str:
    """How many times faster than its objective allows the integration spent its error budget over `window`."""
    return (f"integration_health:slo_errors:ratio_rate{window}{{{SEL}}} "
            f"/ on ({SLO_BY}) (1 - integration_health:slo_objective:ratio{{{SEL}}})")


def error_budget_table() -> table.Panel:
    """One row per integration: its objective, 30-day availability, error budget left and burn rates."""
    percent = [DynamicConfigValue(id_val="unit", value="percentunit")]
    return (table.Panel().title("Error budget (30-day availability SLO)").span(16).height(9)
            .description("Objective per integration (alerts/slo.yml), the share of the last 30 days it was not "
                         "unreachable (maintenance excluded), the error budget left (below 0: overspent) and how fast "
                         "it burns: 1× spends the budget in exactly 30 days; the alerts fire at 14.4× over 1 h and "
                         "6× over 6 h. README: SLOs and error budgets.")
            .with_target(q(f"integration_health:slo_objective:ratio{{{SEL}}}", instant=True, ref="A"))
            .with_target(q(f"1 - integration_health:slo_errors:ratio_rate30d{{{SEL}}}", instant=True, ref="B"))
            .with_target(q(f"integration_health:slo_error_budget_remaining:ratio{{{SEL}}}", instant=True, ref="C"))
            .with_target(q(burn_rate("1h"), instant=True, ref="D"))
            .with_target(q(burn_rate("6h"), instant=True, ref="E"))
            .with_target(q(burn_rate("3d"), instant=True, ref="F"))
            .override_by_name("Objective", percent)
            .override_by_name("Availability 30 d", percent)
            .override_by_name("Budget left", [*percent, DynamicConfigValue(id_val="thresholds", value={
                "mode": "absolute", "steps": [{"value": v, "color": c} for v, c in BUDGET_STEPS]}),
                DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"})])
            .with_transformation(DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(DataTransformerConfig(id_val="organize", options={
                "excludeByName": {"Time": True},
                "renameByName": {"org_id": "Organisation", "integration_type": "Integration",
                                 "Value #A": "Objective", "Value #B": "Availability 30 d", "Value #C": "Budget left",
                                 "Value #D": "Burn 1 h", "Value #E": "Burn 6 h", "Value #F": "Burn 3 d"}})))


def overview() -> dashboard.Dashboard:
    per_integration = "{{org_id}} {{integration_type}}"
    status_code = (f'max by (org_id, integration_type) (integration_health_status{{status="degraded",{SEL}}}) '
                   f'+ 2 * max by (org_id, integration_type) (integration_health_status{{status="unreachable",{SEL}}})')
    sync_code = " + ".join(
        f'{code} * max by (org_id, integration_type) (integration_health_sync_state{{state="{name}",{SEL}}})'
        for code, (name, _) in SYNC_CODES.items() if code != "0")
    builder = (dashboard.Dashboard("Integration health").uid("integration-health")
               .description("Status, latency and 24-hour trend of every organisation's integrations.")
               .tags(["integration-health"]).refresh("1m").time("now-24h", "now").timezone("browser"))
    builder = status_variables(builder)
    return (builder
            .with_row(dashboard.Row("Now"))
            .with_panel(stat.Panel().title("Integrations by status").span(8).height(5)
                        .with_target(q(f"sum by (status) (integration_health_status{{{SEL}}})", "{{status}}")))
            .with_panel(stat.Panel().title("In maintenance").span(4).height(5)
                        .description("Integrations a maintenance window covers now: checked, flagged, silenced, "
                                     "left out of availability")
                        .with_target(q(f"sum(integration_health_maintenance{{{SEL}}})", "in maintenance")))
            .with_panel(stat.Panel().title("Availability (not unreachable, maintenance excluded)").unit("percentunit")
                        .span(12).height(5)
                        .with_target(q(f"avg(integration_health:availability:ratio_24h{{{SEL}}})", "24 h", ref="A"))
                        .with_target(q(f"avg(integration_health:availability:ratio_7d{{{SEL}}})", "7 d", ref="B"))
                        .with_target(q(f"avg(integration_health:availability:ratio_30d{{{SEL}}})", "30 d", ref="C")))
            .with_panel(current_status_table())
            .with_row(dashboard.Row("Service level"))
            .with_panel(error_budget_table())
            .with_panel(timeseries.Panel().title("Error budget left").unit("percentunit").span(8).height(9)
                        .thresholds(thresholds(*BUDGET_STEPS))
                        .with_target(q(f"integration_health:slo_error_budget_remaining:ratio{{{SEL}}}",
                                       per_integration)))
            .with_row(dashboard.Row("Last 24 hours"))
            .with_panel(statetimeline.Panel().title("Status").span(24).height(10)
                        .mappings(value_map(STATUS_CODES)).merge_values(True)
                        .with_target(q(status_code, per_integration)))
            .with_panel(timeseries.Panel().title("Latency").unit("s").span(12).height(8)
                        .with_target(q(f"integration_health_latency_seconds{{{SEL}}}", per_integration)))
            .with_panel(timeseries.Panel().title("Checks by status").unit("ops").span(6).height(8)
                        .with_target(q('sum by (status) (rate(integration_health_checks_total'
                                       '{integration_type=~"$integration_type"}[$__rate_interval]))', "{{status}}")))
            .with_panel(timeseries.Panel().title("Failing checks by reason").span(6).height(8)
                        .with_target(q(f"count by (reason) (integration_health_failure_reason{{{SEL}}})",
                                       "{{reason}}")))
            .with_row(dashboard.Row("Vendor-wide incidents"))
            .with_panel(statetimeline.Panel().title("Vendor-wide incident (only canaries checked)").span(12).height(6)
                        .mappings(value_map({"0": ("none", "green"), "1": ("incident", "red")})).merge_values(True)
                        .with_target(q('max by (integration_type) (integration_health_vendor_incident'
                                       '{integration_type=~"$integration_type"})', "{{integration_type}}")))
            .with_panel(timeseries.Panel().title("Share of a vendor's integrations failing (network, TLS, 5xx)")
                        .unit("percentunit").span(12).height(6)
                        .with_target(q('max by (integration_type) (integration_health_vendor_failing_ratio'
                                       '{integration_type=~"$integration_type"})', "{{integration_type}}")))
            .with_row(dashboard.Row("Scheduled syncs"))
            .with_panel(statetimeline.Panel().title("Sync state").span(12).height(8)
                        .mappings(value_map(SYNC_CODES)).merge_values(True)
                        .with_target(q(sync_code, per_integration)))
            .with_panel(timeseries.Panel().title("Sync drift (start − scheduled)").unit("s").span(6).height(8)
                        .thresholds(thresholds((None, "green"), (300, "red")))
                        .with_target(q(f"integration_health_sync_drift_seconds{{{SEL}}}", per_integration)))
            .with_panel(stat.Panel().title("Passive integrations").span(6).height(8)
                        .with_target(q(f'sum(integration_health_mode{{mode="passive",{SEL}}})', "passive")))
            .with_panel(timeseries.Panel().title("Sync function cold starts").unit("short").span(8).height(8)
                        .with_target(q('sum by (integration_type, source) (increase(integration_health_sync_'
                                       'cold_starts_total{integration_type=~"$integration_type"}[$__rate_interval]))',
                                       "{{integration_type}} ({{source}})")))
            .with_panel(timeseries.Panel().title("Sync function first answer (warm-up, reported invocation)")
                        .unit("s").span(10).height(8)
                        .thresholds(thresholds((None, "green"), (2, "orange")))
                        .with_target(q(f"integration_health_sync_warmup_latency_seconds{{{SEL}}}",
                                       "warm-up {{org_id}} {{integration_type}}", ref="A"))
                        .with_target(q(f"integration_health_sync_invocation_latency_seconds{{{SEL}}}",
                                       "invocation {{org_id}} {{integration_type}}", ref="B")))
            .with_panel(timeseries.Panel().title("Warm-ups by outcome").unit("short").span(6).height(8)
                        .with_target(q("sum by (outcome) (increase(integration_health_sync_warmups_total"
                                       "[$__rate_interval]))", "{{outcome}}")))
            .with_row(dashboard.Row("Exporter"))
            .with_panel(timeseries.Panel().title("Cycle duration and drift").unit("s").span(12).height(8)
                        .thresholds(thresholds((None, "green"), (300, "red")))
                        .with_target(q("integration_health_cycle_duration_seconds", "duration {{instance}}", ref="A"))
                        .with_target(q("integration_health_cycle_drift_seconds", "drift {{instance}}", ref="B")))
            .with_panel(timeseries.Panel().title("Results waiting for the database").span(12).height(8)
                        .with_target(q("integration_health_persist_queue_results", "{{instance}}", ref="A"))
                        .with_target(q("increase(integration_health_persist_errors_total[$__rate_interval])",
                                       "write errors {{instance}}", ref="B"))))


def maintenance_annotation(where: str) -> SqlAnnotation:
    """The maintenance windows over the time shown, for the selected organisations and types (or all)."""
    return SqlAnnotation("Maintenance windows", (
        "SELECT starts_at AS time, ends_at AS timeend, 'maintenance: ' || reason || ' (' || "
        "coalesce(org_id::text, 'every organisation') || ', ' || coalesce(integration_type, 'every type') || "
        "', by ' || created_by || ')' AS text, 'maintenance' AS tags FROM maintenance_window "
        f"WHERE starts_at < $__timeTo() AND ends_at > $__timeFrom() AND {where} ORDER BY 1"), "purple")


def history() -> dashboard.Dashboard:
    """The 96-slot history with error messages, from PostgreSQL through the read-only reporting role."""
    where = "org_id::text IN (${org_id:sqlstring}) AND integration_type IN (${integration_type:sqlstring})"
    window_where = ("(org_id IS NULL OR org_id::text IN (${org_id:sqlstring})) AND "
                    "(integration_type IS NULL OR integration_type IN (${integration_type:sqlstring}))")
    return (dashboard.Dashboard("Integration health history").uid("integration-health-history")
            .description("The stored 24-hour history (96 slots per integration) with error messages.")
            .tags(["integration-health"]).refresh("5m").time("now-24h", "now").timezone("browser")
            .with_variable(dashboard.DatasourceVariable("datasource").label("PostgreSQL")
                           .type("grafana-postgresql-datasource"))
            .with_variable(dashboard.QueryVariable("org_id").label("Organisation").datasource(PG)
                           .query("SELECT DISTINCT org_id::text FROM integration_health_status ORDER BY 1")
                           .multi(True).include_all(True).refresh(VariableRefresh.ON_DASHBOARD_LOAD)
                           .current(VariableOption(selected=True, text="All", value="$__all")))
            .with_variable(dashboard.QueryVariable("integration_type").label("Integration").datasource(PG)
                           .query("SELECT DISTINCT integration_type FROM integration_health_status ORDER BY 1")
                           .multi(True).include_all(True).refresh(VariableRefresh.ON_DASHBOARD_LOAD)
                           .current(VariableOption(selected=True, text="All", value="$__all")))
            .annotation(maintenance_annotation(window_where))
            .with_panel(statetimeline.Panel().title("Status per slot").span(24).height(10)
                        .mappings(value_map(STATUS_CODES)).merge_values(True)
                        .with_target(SqlQuery(
                            "SELECT slot AS time, org_id::text || ' ' || integration_type AS metric, "
                            "CASE status WHEN 'healthy' THEN 0 WHEN 'degraded' THEN 1 ELSE 2 END AS value "
                            f"FROM health_check_history WHERE $__timeFilter(slot) AND {where} ORDER BY 1",
                            fmt="time_series")))
            .with_panel(timeseries.Panel().title("Latency per slot").unit("ms").span(24).height(8)
                        .with_target(SqlQuery(
                            "SELECT slot AS time, org_id::text || ' ' || integration_type AS metric, "
                            f"latency_ms AS value FROM health_check_history WHERE $__timeFilter(slot) AND {where} "
                            "ORDER BY 1", fmt="time_series")))
            .with_panel(availability_table(where))
            .with_panel(table.Panel().title("Failed and degraded checks").span(24).height(12)
                        .with_target(SqlQuery(
                            "SELECT slot AS time, org_id::text AS organisation, integration_type AS integration, "
                            "status, latency_ms, reason, error_message, maintenance, "
                            "vendor_incident_since AS vendor_wide_incident_since FROM health_check_history "
                            f"WHERE $__timeFilter(slot) AND {where} AND status <> 'healthy' ORDER BY slot DESC"))))


def availability_table(where: str) -> table.Panel:
    """Availability over the stored slots shown, slots in a maintenance window left out (the API's figure)."""
    return (table.Panel().title("Availability (maintenance excluded)").span(24).height(8)
            .description("The share of checked slots that were not unreachable; slots checked during a "
                         "maintenance window are left out (the purple annotations).")
            .with_target(SqlQuery(
                "SELECT org_id::text AS organisation, integration_type AS integration, "
                f"{AVAILABILITY} AS availability, count(*) FILTER (WHERE NOT maintenance) AS counted_slots, "
                "count(*) FILTER (WHERE maintenance) AS maintenance_slots FROM health_check_history "
                f"WHERE $__timeFilter(slot) AND {where} GROUP BY 1, 2 ORDER BY 1, 2"))
            .override_by_name("availability", [DynamicConfigValue(id_val="unit", value="percentunit")]))


DASHBOARDS = {"integration-health.json": overview, "integration-health-history.json": history}


def without_nulls(value: Any) -> Any:
    """Drop null fields the SDK leaves in (e.g. panel `options`): Grafana applies its defaults instead."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def render(build: Any) -> str:
    encoded = json.loads(JSONEncoder(sort_keys=True).encode(build().build()))
    return json.dumps(without_nulls(encoded), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for name, build in DASHBOARDS.items():
        text, path = render(build), HERE / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)} ({len(json.loads(text)['panels'])} panels)")
    if stale:
        print(f"out of date: {', '.join(stale)}: run .venv/bin/python dashboards/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
