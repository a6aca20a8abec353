"""The text exposition format, checked with Prometheus's own parser (prometheus_client)."""

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prefork_waitress.integrations import exposition

pytestmark = pytest.mark.timeout(10)


def parse(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_counters_gauges_and_labels_parse_back():
    text = exposition.render(
        [
            exposition.counter("x_requests_total", "Requests.", [({"slot": "0"}, 3), ({"slot": "1"}, 4)]),
            exposition.gauge("x_rss_bytes", "RSS.", [({}, 123456789)]),
            exposition.gauge("x_ratio", "A float.", [({}, 0.25)]),
        ]
    )
    families = parse(text)
    requests = families["x_requests"]
    assert requests.type == "counter" and requests.documentation == "Requests."
    assert [(s.name, s.labels, s.value) for s in requests.samples] == [
        ("x_requests_total", {"slot": "0"}, 3.0),
        ("x_requests_total", {"slot": "1"}, 4.0),
    ]
    assert families["x_rss_bytes"].samples[0].value == 123456789
    assert families["x_ratio"].samples[0].value == 0.25
    assert "x_rss_bytes 123456789\n" in text  # an integer is written without a point


def test_hostile_label_values_and_help_are_escaped():
    value = 'a "quoted" \\ back\nslash'
    text = exposition.render([exposition.gauge("x_info", "Help with \\ and\nnewline.", [({"v": value}, 1)])])
    assert text.count("\n") == 3  # HELP, TYPE, one sample: no raw newline leaked
    family = parse(text)["x_info"]
    assert family.samples[0].labels == {"v": value}
    assert family.documentation == "Help with \\ and\nnewline."


def test_histogram_buckets_are_cumulative_and_end_at_inf():
    text = exposition.render(
        [exposition.histogram("x_seconds", "Durations.", (0.1, 1.0), [({"slot": "0"}, (2, 0, 1), 5.5)])]
    )
    family = parse(text)["x_seconds"]
    assert family.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("x_seconds_bucket", "0.1")] == 2
    assert samples[("x_seconds_bucket", "1")] == 2
    assert samples[("x_seconds_bucket", "+Inf")] == 3
    assert samples[("x_seconds_count", None)] == 3 and samples[("x_seconds_sum", None)] == 5.5


def test_special_values():
    assert exposition.format_value(math.inf) == "+Inf"
    assert exposition.format_value(-math.inf) == "-Inf"
    assert exposition.format_value(math.nan) == "NaN"
    assert exposition.format_value(2.0) == "2" and exposition.format_value(1e300) == "1e+300"
