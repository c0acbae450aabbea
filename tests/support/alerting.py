"""Evaluate the repository's alert rules over recorded scrapes with promtool, then route what fires
through Alertmanager's inhibition rules and count the notifications a person would get.

promtool's `test rules` is the rule engine: the scrapes become `input_series` (one value a minute; a
failed scrape leaves every series stale, as Prometheus marks it, and `up` 0), and a query of
`ALERTS{alertstate="firing"}` at every minute reads out what fired. promtool has no way to print
results, so the first pass expects nothing and reads the firing alerts from its failure report; a
second pass states exactly what was read at every minute the set changes (and the minute before) and
must succeed, so a misread report cannot go unnoticed.

Its clock starts at 0, so every `*_timestamp_seconds` value is shifted by the day's start; durations,
counts and the rules are unchanged.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.timeline import Fault, Scenario

JOB, INSTANCE = "integration-health", "exporter:9464"
FIRING = 'ALERTS{alertstate="firing"}'
Labels = frozenset[tuple[str, str]]


# --- scrapes → input series -------------------------------------------------------------------------------

def series_by_minute(scrapes: Sequence[str | None], t0: datetime) -> dict[str, list[float | None]]:
    """Every series' value at each minute (None: not in that scrape), with the target labels Prometheus adds."""
    series: dict[str, list[float | None]] = {}
    parsed: tuple[str | None, dict[str, float]] = (None, {})
    for minute, text in enumerate(scrapes):
        up = f'up{{instance="{INSTANCE}",job="{JOB}"}}'
        series.setdefault(up, [None] * len(scrapes))[minute] = 0.0 if text is None else 1.0
        if text is None:
            continue
        if text != parsed[0]:
            parsed = (text, _samples(text, t0.timestamp()))
        for name, value in parsed[1].items():
            series.setdefault(name, [None] * len(scrapes))[minute] = value
    return series


def _samples(text: str, shift: float) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {**s.labels, "instance": INSTANCE, "job": JOB}
            value = s.value - shift if s.name.endswith("_timestamp_seconds") else s.value
            out[series_name(s.name, labels)] = value
    return out


def series_name(name: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def promtool_values(values: Sequence[float | None]) -> str:
    """promtool's expanding notation: `vxN` is N+1 equal samples, `_xN` N missing ones, `stale` a marker
    where a series that was scraped the minute before is gone."""
    tokens: list[tuple[str, int]] = []
    previous: float | None = None
    for minute, value in enumerate(values):
        if value is None:
            token = "stale" if minute and previous is not None else "_"
        else:
            token = repr(float(value))
        previous = value
        if tokens and tokens[-1][0] == token and token != "stale":
            tokens[-1] = (token, tokens[-1][1] + 1)
        else:
            tokens.append((token, 1))
    parts = []
    for token, n in tokens:
        if n == 1:
            parts.append(token)
        elif token == "_":
            parts.append(f"_x{n}")
        else:
            parts.append(f"{token}x{n - 1}")
    return " ".join(parts)


# --- promtool ---------------------------------------------------------------------------------------------

def alerting_rules(rule_files: Iterable[Path], workdir: Path) -> Path:
    """The rule files' alerting groups, unchanged (with the recording rules an alert of theirs reads, as the
    SLO burn alerts do); the recording-only groups feed dashboards, not alerts, and would double promtool's time."""
    groups = [g for rule_file in rule_files for g in yaml.safe_load(rule_file.read_text())["groups"]
              if any("alert" in r for r in g["rules"])]
    path = workdir / "alerting.rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def rules_test(rule_file: Path, name: str, series: Mapping[str, Sequence[float | None]],
               checks: Mapping[int, set[Labels] | None]) -> dict:
    """A `promtool test rules` document: the day's series and a firing-alerts query at each minute in
    `checks` (the alerts expected, or None to expect nothing and read the report)."""
    return {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": [{
        "name": name,
        "interval": "1m",
        "input_series": [{"series": s, "values": promtool_values(v)} for s, v in series.items()],
        "promql_expr_test": [
            {"expr": _tagged(name), "eval_time": f"{minute}m",
             "exp_samples": [{"labels": series_name("ALERTS", {**dict(a), "alertstate": "firing", "scenario": name}),
                              "value": 1} for a in sorted(expected or (), key=sorted)]}
            for minute, expected in sorted(checks.items())],
    }]}


def _tagged(name: str) -> str:
    return f'label_replace({FIRING}, "scenario", "{name}", "", "")'


def run_promtool(docs: Sequence[dict], workdir: Path, label: str) -> list[subprocess.CompletedProcess[str]]:
    """`promtool test rules` on each document, as many at once as there are CPUs."""
    paths = []
    for n, doc in enumerate(docs):
        paths.append(workdir / f"{label}-{n}.test.yml")
        paths[-1].write_text(yaml.safe_dump(doc, sort_keys=False, width=1 << 20))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(lambda path: subprocess.run(["promtool", "test", "rules", str(path)],
                                                         capture_output=True, text=True), paths))


_FAILURE = re.compile(r'expr: "label_replace\(ALERTS\{alertstate=\\"firing\\"\}, \\"scenario\\", \\"([^"\\]+)\\", '
                      r'.*?", time: (\w+),\n\s+exp: .*\n\s+got: (.*)\n')
_DURATION = re.compile(r"(\d+)(ms|[ywdhms])")
_UNIT_S = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}


def minutes(duration: str) -> int:
    """A Prometheus duration as promtool prints it (`2h15m`, `1d`) in whole minutes."""
    return round(sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(duration)) / 60)
_SAMPLE = re.compile(r"\{([^{}]*)\} [-+.0-9Ee]+")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def read_firing(report: str) -> dict[str, dict[int, set[Labels]]]:
    """The firing alerts per scenario and minute, from a report of queries that expected none."""
    firing: dict[str, dict[int, set[Labels]]] = {}
    entries = _FAILURE.findall(report)
    if len(entries) != report.count("    expr: "):
        raise ValueError(f"read {len(entries)} of the {report.count('    expr: ')} failures promtool reported")
    for scenario, minute, got in entries:
        alerts = set()
        for inner in _SAMPLE.findall(got):
            labels = {k: v for k, v in _LABEL.findall(inner) if k not in ("__name__", "alertstate", "scenario")}
            alerts.add(frozenset(labels.items()))
        firing.setdefault(scenario, {})[minutes(minute)] = alerts
    return firing


def change_points(firing: Mapping[int, set[Labels]], minutes: int) -> dict[int, set[Labels]]:
    """The expected firing set at each minute where it changes, and the minute before (none: nothing fired,
    which the first pass's report already showed in full)."""
    checks: dict[int, set[Labels]] = {}
    previous: set[Labels] = set()
    for minute in range(minutes):
        current = firing.get(minute, set())
        if current != previous:
            checks[minute] = current
            if minute:
                checks[minute - 1] = previous
        previous = current
    return checks


# --- Alertmanager -----------------------------------------------------------------------------------------

_MATCHER = re.compile(r'^\s*(\w+)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def matcher(text: str):
    """One Alertmanager matcher (`name="v"`, `!=`, `=~`, `!~`; regexes are anchored) as a predicate."""
    name, op, value = _MATCHER.match(text).groups()  # type: ignore[union-attr]
    if op in ("=~", "!~"):
        pattern = re.compile(f"^(?:{value})$")
        return lambda labels: (pattern.match(labels.get(name, "")) is not None) == (op == "=~")
    return lambda labels: (labels.get(name, "") == value) == (op == "=")


@dataclass(frozen=True)
class InhibitRule:
    source: tuple
    target: tuple
    equal: tuple[str, ...]

    def mutes(self, target: Mapping[str, str], firing: Iterable[Mapping[str, str]]) -> bool:
        if not all(m(target) for m in self.target):
            return False
        two_sided = all(m(target) for m in self.source)  # as Alertmanager: a two-sided alert mutes no twin
        return any(all(m(s) for m in self.source) and not (two_sided and all(m(s) for m in self.target))
                   and all(s.get(k, "") == target.get(k, "") for k in self.equal) and s != target
                   for s in firing)


def inhibit_rules(config: Mapping) -> list[InhibitRule]:
    return [InhibitRule(tuple(map(matcher, r.get("source_matchers", []))),
                        tuple(map(matcher, r.get("target_matchers", []))), tuple(r.get("equal", [])))
            for r in config.get("inhibit_rules", [])]


@dataclass(frozen=True)
class Notification:
    """One incident a person hears about: a group's alerts, from the first unmuted firing to resolution."""

    group: Labels
    alertnames: frozenset[str]
    start: int
    end: int  # the first minute it no longer fires


def notifications(firing: Mapping[int, set[Labels]], rules: Sequence[InhibitRule], group_by: Sequence[str],
                  minutes: int) -> list[Notification]:
    """Alertmanager's view: an alert's firing episode notifies once, at its first minute not inhibited (an
    episode muted throughout says nothing); a group's overlapping episodes are one incident."""
    episodes: dict[Labels, list[list[int]]] = {}  # alert → [[start, end, first unmuted or -1], …]
    for minute in range(minutes):
        current = firing.get(minute, set())
        as_dicts = [dict(a) for a in current]
        for alert in current:
            runs = episodes.setdefault(alert, [])
            if not runs or runs[-1][1] != minute:
                runs.append([minute, minute + 1, -1])
            else:
                runs[-1][1] = minute + 1
            if runs[-1][2] < 0 and not any(r.mutes(dict(alert), as_dicts) for r in rules):
                runs[-1][2] = minute
    spans: dict[Labels, list[tuple[int, int, str]]] = {}
    for alert, runs in episodes.items():
        labels = dict(alert)
        group = frozenset((k, labels.get(k, "")) for k in group_by)
        spans.setdefault(group, []).extend((unmuted, end, labels["alertname"]) for _, end, unmuted in runs
                                           if unmuted >= 0)
    out = []
    for group, items in spans.items():
        for start, end, name in sorted(items):
            if out and out[-1].group == group and start <= out[-1].end:
                last = out.pop()
                out.append(Notification(group, last.alertnames | {name}, last.start, max(last.end, end)))
            else:
                out.append(Notification(group, frozenset({name}), start, end))
    return sorted(out, key=lambda n: n.start)


# --- scoring ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    scenario: str
    faults: int
    notifications: int
    false: int
    missed: int
    duplicates: int
    fire: list[int]  # minutes from each fault's start to its notification
    resolve: list[int]  # minutes from each fault's recovery to its resolution
    late: list[str]  # faults notified or resolved later than allowed
    pending: str | None = None

    @property
    def meets_target(self) -> bool:
        return not (self.false or self.missed or self.duplicates or self.late)


def score(scenario: Scenario, sent: Sequence[Notification]) -> Row:
    """Attribute each notification to the fault it reports (alert name and labels, overlapping in time);
    the rest are false. A fault needs exactly one, on time, resolved on time."""
    claimed: set[Notification] = set()
    missed = duplicates = 0
    fire, resolve, late = [], [], []
    for fault in scenario.faults:
        mine = [n for n in sent if _reports(n, fault)]
        claimed.update(mine)
        if not mine:
            missed += 1
            continue
        duplicates += len(mine) - 1
        fire.append(mine[0].start - fault.start)
        resolve.append(mine[-1].end - fault.end)
        if fire[-1] > fault.max_fire or resolve[-1] > fault.max_resolve:
            late.append(f"{fault.what}: fired after {fire[-1]} min (≤ {fault.max_fire}), resolved "
                        f"{resolve[-1]} min after recovery (≤ {fault.max_resolve})")
    false = [n for n in sent if n not in claimed]
    return Row(scenario.name, len(scenario.faults), len(sent), len(false), missed, duplicates, fire, resolve, late,
               scenario.pending)


def _reports(n: Notification, fault: Fault) -> bool:
    group = dict(n.group)
    return (bool(n.alertnames & fault.alerts) and all(group.get(k, v) == v for k, v in fault.labels.items())
            and n.start < fault.end + fault.max_resolve and n.end > fault.start)
