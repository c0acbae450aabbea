"""The hand-written text format: misuse refused at construction, values printed as prometheus_client prints them."""

from __future__ import annotations

import pytest
from prometheus_client.utils import floatToGoString

from exporter.web.textformat import Family, Source, go_float


def gauge(name: str = "x_seconds", labels: tuple[str, ...] = ()) -> Family:
    return Family(name, "help", "gauge", lambda v: [((), v)], labels)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Family("x", "help", "summary", lambda v: []), "type must be one of"),
    (lambda: Family("x_changes", "help", "counter", lambda v: []), "ends in _total"),
    (lambda: gauge("x-y"), "not a Prometheus metric name"),
    (lambda: Source(dict, ("org_id",), tuple, (gauge(labels=("org_id",)),)), "a label name repeats"),
    (lambda: Source(dict, ("org-id",), tuple, (gauge(),)), "not a label name"),
    (lambda: Source(dict, ("__name",), tuple, (gauge(),)), "not a label name"),
])
def test_a_family_that_cannot_be_exposed_is_refused_when_declared(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("value", [0, 1, True, 0.0, -0.0, 1.0, 2, 0.182, 1.7953488e9, 1e22, -3.5, float("inf"),
                                   float("-inf"), float("nan"), 123456.7])
def test_values_print_as_prometheus_client_prints_them(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


def test_a_source_without_key_labels_writes_bare_names_and_sorted_family_labels() -> None:
    source = Source(dict, (), lambda key: (), (
        Family("up", "help", "gauge", lambda v: [((), v)]),
        Family("incident", "help", "gauge", lambda v: [(("b", 'q"'), v)], ("zone", "id")),
    ))
    assert source.render(source.own_labels("k"), 1) == (b"up 1.0\n", b'incident{id="q\\"",zone="b"} 1.0\n')
