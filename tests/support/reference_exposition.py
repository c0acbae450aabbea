"""The fleet part of /metrics rendered the plain way, by prometheus_client: fresh families from the same
table, every sample formatted by generate_latest. The oracle the incremental exposition must equal."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.engine.snapshot import Snapshot
from exporter.web.families import SOURCES
from exporter.web.textformat import Source


class TableCollector:
    def __init__(self, snapshot: Snapshot, sources: Sequence[Source]) -> None:
        self.snapshot, self.sources = snapshot, sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            rows = source.rows(self.snapshot)
            for family in source.families:
                labels = [*source.labels, *family.labels]
                metric = (CounterMetricFamily(family.name.removesuffix("_total"), family.help, labels=labels)
                          if family.type == "counter" else GaugeMetricFamily(family.name, family.help, labels=labels))
                for key, entry in rows.items():
                    for extra, value in family.samples(entry):
                        metric.add_metric([*source.key_labels(key), *extra], value)
                yield metric


def reference_fleet(snapshot: Snapshot, sources: Sequence[Source] = SOURCES) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TableCollector(snapshot, sources))
    return generate_latest(registry)
