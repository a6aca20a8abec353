"""The Prometheus text exposition format, version 0.0.4: pure functions, no I/O.

https://prometheus.io/docs/instrumenting/exposition_formats/ : one
``# HELP`` and one ``# TYPE`` line per family, then its samples
``name{label="value"} number``; label values escape ``\\``, ``"`` and newline,
help text escapes ``\\`` and newline; a histogram is cumulative ``_bucket``
samples with an ``le`` label ending at ``+Inf``, then ``_sum`` and ``_count``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, List, Mapping, Sequence, Tuple

__all__ = ["CONTENT_TYPE", "Family", "counter", "gauge", "histogram", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = Mapping[str, str]
Sample = Tuple[str, Labels, float]  # (name, labels, value)


@dataclasses.dataclass(frozen=True)
class Family:
    """One metric family: its name, type, help line and samples."""

    name: str
    kind: str  # counter, gauge or histogram
    help: str
    samples: Sequence[Sample]


def counter(name: str, help: str, series: Iterable[Tuple[Labels, float]]) -> Family:
    """A counter family; ``name`` ends in ``_total`` (Prometheus convention)."""
    return Family(name, "counter", help, [(name, labels, value) for labels, value in series])


def gauge(name: str, help: str, series: Iterable[Tuple[Labels, float]]) -> Family:
    return Family(name, "gauge", help, [(name, labels, value) for labels, value in series])


def histogram(
    name: str, help: str, bounds: Sequence[float], series: Iterable[Tuple[Labels, Sequence[int], float]]
) -> Family:
    """A histogram family from per-bucket counts (not cumulative, one more than ``bounds``: +Inf) and sums."""
    samples: List[Sample] = []
    for labels, counts, total in series:
        running = 0
        for bound, count in zip(list(bounds) + [math.inf], counts):
            running += count
            samples.append((name + "_bucket", {**labels, "le": format_value(bound)}, running))
        samples.append((name + "_sum", labels, total))
        samples.append((name + "_count", labels, running))
    return Family(name, "histogram", help, samples)


def format_value(value: float) -> str:
    """A sample value: integers without a point, +Inf/-Inf/NaN spelled as Prometheus does."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _sample_line(name: str, labels: Labels, value: float) -> str:
    if labels:
        inner = ",".join(f'{key}="{_escape_label(str(val))}"' for key, val in labels.items())
        return f"{name}{{{inner}}} {format_value(value)}\n"
    return f"{name} {format_value(value)}\n"


def render(families: Iterable[Family]) -> str:
    """The exposition text of ``families``, in order."""
    out: List[str] = []
    for family in families:
        out.append(f"# HELP {family.name} {_escape_help(family.help)}\n")
        out.append(f"# TYPE {family.name} {family.kind}\n")
        out.extend(_sample_line(*sample) for sample in family.samples)
    return "".join(out)
