"""The timeline harness's own arithmetic: promtool's series notation, reading its report, Alertmanager's
inhibition and grouping, and attributing notifications to faults. A harness that miscounts proves nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from tests.support.alerting import (
    InhibitRule,
    Notification,
    change_points,
    inhibit_rules,
    matcher,
    minutes,
    notifications,
    promtool_values,
    read_firing,
    score,
)
from tests.support.timeline import VICTIM, Fault, Scenario

ALERTMANAGER = Path(__file__).resolve().parents[2] / "alerts" / "alertmanager.yml"
GROUP_BY = ["alertname", "org_id", "integration_type"]


def alert(name: str, **labels: str) -> frozenset[tuple[str, str]]:
    return frozenset({"alertname": name, **VICTIM, **labels}.items())


def test_series_notation_marks_a_vanished_series_stale_once_then_missing() -> None:
    assert promtool_values([1, 1, 1, None, None, 2, None]) == "1.0x2 stale _ 2.0 stale"
    assert promtool_values([None, None, 0.5]) == "_x2 0.5"


def test_the_notation_means_to_promtool_what_it_means_here(tmp_path) -> None:
    values = [None, 3, 3, None, None, None, 4]
    doc = {"tests": [{"interval": "1m", "input_series": [{"series": "x", "values": promtool_values(values)}],
                      "promql_expr_test": [{"expr": "x", "eval_time": f"{m}m",
                                            "exp_samples": [] if v is None else [{"labels": "x", "value": v}]}
                                           for m, v in enumerate(values)]}]}
    (tmp_path / "t.yml").write_text(yaml.safe_dump(doc))
    proc = subprocess.run([require_tool("promtool", "prometheus"), "test", "rules", "t.yml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("text", "value"), [("0s", 0), ("59m", 59), ("2h15m", 135), ("1d", 1440), ("1d1m", 1441)])
def test_promtool_durations_read_as_minutes(text: str, value: int) -> None:
    assert minutes(text) == value


REPORT = '''  FAILED:
    expr: "label_replace(ALERTS{alertstate=\\"firing\\"}, \\"scenario\\", \\"day one\\", \\"\\", \\"\\")", time: 2h15m,
        exp: nil
        got: {__name__="ALERTS", alertname="A", alertstate="firing", org_id="o\\"1", scenario="day one"} 1E+00, \
{__name__="ALERTS", alertname="B", alertstate="firing", scenario="day one"} 1E+00
'''


def test_the_report_is_read_alert_by_alert() -> None:
    assert read_firing(REPORT) == {"day one": {135: {frozenset({("alertname", "A"), ("org_id", 'o\\"1')}),
                                                    frozenset({("alertname", "B")})}}}


def test_a_report_entry_that_cannot_be_read_stops_the_harness() -> None:
    with pytest.raises(ValueError, match="read 1 of the 2"):
        read_firing(REPORT + REPORT.replace("label_replace", "something_else").split("FAILED:")[1])


def test_change_points_state_each_change_and_the_minute_before() -> None:
    a = {alert("A")}
    assert change_points({3: a, 4: a}, 10) == {2: set(), 3: a, 4: a, 5: set()}
    assert change_points({}, 10) == {}


def test_matchers_are_anchored_like_alertmanagers() -> None:
    assert matcher('alertname=~"Integration(Down|Up)"')({"alertname": "IntegrationDown"})
    assert not matcher('alertname=~"Integration"')({"alertname": "IntegrationDown"})
    assert matcher('severity!="critical"')({})
    assert matcher('alertname="X"')({"alertname": "X"}) and not matcher('alertname!~"X|Y"')({"alertname": "Y"})


def test_an_alert_muted_throughout_its_episode_notifies_nobody() -> None:
    rules = inhibit_rules(yaml.safe_load(ALERTMANAGER.read_text()))
    firing = {m: {alert("IntegrationUnreachable"), alert("IntegrationRateLimited")} for m in range(10, 40)}
    sent = notifications(firing, rules, GROUP_BY, 60)
    assert [(n.alertnames, n.start, n.end) for n in sent] == [(frozenset({"IntegrationUnreachable"}), 10, 40)]


def test_an_alert_notifies_once_its_inhibition_lifts() -> None:
    rule = InhibitRule((matcher('alertname="S"'),), (matcher('alertname="T"'),), ("org_id",))
    firing = {m: {alert("T")} | ({alert("S")} if m < 20 else set()) for m in range(10, 40)}
    sent = notifications(firing, [rule], GROUP_BY, 60)
    assert [(sorted(n.alertnames), n.start) for n in sent] == [(["S"], 10), (["T"], 20)]


def test_an_alert_that_resolves_and_fires_again_is_two_notifications() -> None:
    firing = {m: {alert("IntegrationUnreachable")} for m in [*range(10, 20), *range(22, 30)]}
    assert [(n.start, n.end) for n in notifications(firing, [], GROUP_BY, 60)] == [(10, 20), (22, 30)]


def test_overlapping_alerts_of_one_group_are_one_incident() -> None:
    firing = {m: {alert("IntegrationRateLimited", reason="rate_limited")} for m in range(10, 30)}
    for m in range(25, 40):
        firing.setdefault(m, set()).add(alert("IntegrationRateLimited", reason="quota"))
    sent = notifications(firing, [], GROUP_BY, 60)
    assert [(n.start, n.end) for n in sent] == [(10, 40)]


def notified(name: str, start: int, end: int) -> Notification:
    return Notification(frozenset({("alertname", name), *VICTIM.items()}), frozenset({name}), start, end)


def test_score_counts_false_missed_duplicate_and_late() -> None:
    down = Fault("down", 100, 200, frozenset({"IntegrationUnreachable"}))
    scenario = Scenario("s", faults=[down, Fault("throttled", 500, 600, frozenset({"IntegrationRateLimited"}))])
    row = score(scenario, [notified("IntegrationUnreachable", 116, 150), notified("IntegrationUnreachable", 160, 270),
                           notified("IntegrationDegraded", 300, 310)])
    assert (row.notifications, row.false, row.missed, row.duplicates) == (3, 1, 1, 1)
    assert (row.fire, row.resolve) == ([16], [70])
    assert row.late == ["down: fired after 16 min (≤ 32), resolved 70 min after recovery (≤ 61)"]
    assert not row.meets_target


def test_score_accepts_one_notification_on_time() -> None:
    row = score(Scenario("s", faults=[Fault("down", 100, 200, frozenset({"IntegrationUnreachable"}))]),
                [notified("IntegrationUnreachable", 116, 245)])
    assert row.meets_target and (row.fire, row.resolve) == ([16], [45])


def test_a_notification_before_its_fault_began_is_not_on_time() -> None:
    """A fault that begins when a maintenance window ends: an alert from inside the window is not its report."""
    row = score(Scenario("s", faults=[Fault("down after the window", 240, 300, frozenset({"IntegrationUnreachable"}))]),
                [notified("IntegrationUnreachable", 166, 345)])
    assert row.late == ["down after the window: fired 74 min before it began"] and not row.meets_target


def test_a_vendor_outage_is_one_notification_and_mutes_only_its_types_outage_alerts() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    rules, group_by = inhibit_rules(config), config["route"]["group_by"]

    def labels(name: str, kind: str = "xledger", **more: str) -> frozenset[tuple[str, str]]:
        return frozenset({"alertname": name, "integration_type": kind, "severity": "critical", **more}.items())

    vendor = labels("IntegrationVendorOutage")
    per_org = [labels(name, org_id=f"org-{n}") for n in range(12)
               for name in ("IntegrationUnreachable", "IntegrationFlapping", "IntegrationSyncFailed")]
    own = labels("IntegrationCredentialsRejected", org_id="org-1")  # one org's credentials: its own
    elsewhere = labels("IntegrationUnreachable", "fiken", org_id="org-1")  # another vendor
    firing = {m: {vendor, own, elsewhere, *(per_org if m >= 12 else ())} for m in range(10, 40)}
    sent = notifications(firing, rules, group_by, 60)
    assert sorted((sorted(n.alertnames), dict(n.group).get("org_id", ""), n.start) for n in sent) == [
        (["IntegrationCredentialsRejected"], "org-1", 10), (["IntegrationUnreachable"], "org-1", 10),
        (["IntegrationVendorOutage"], "", 10)]
