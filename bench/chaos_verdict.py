"""The chaos scenario's verdict: which failures are defects, and the report."""

import re
from typing import List, Optional, Tuple

from bench.chaos_faults import KILL_GRACE, NO_SERVER, RELOAD_GAP
from bench.harness import Load


def reload_gaps(load: Load, reloads: List[float]) -> Tuple[int, Load]:
    """(HAProxy's 503s "no server" in the RELOAD_GAP after one of its reloads, ``load`` without them).

    A reloaded HAProxy has none of the servers added at run time until the master puts them back, within
    the bound README states; a 503 later than that, or of another kind, stays a failure.
    """
    kept, gaps = [], 0
    for started, ended, what in load.failure_log:
        if NO_SERVER in what and "status 503" in what and any(r <= started <= r + RELOAD_GAP for r in reloads):
            gaps += 1
        else:
            kept.append((started, ended, what))
    load.failure_log = kept
    return gaps, load


def span(times: List[Tuple[float, float]], began: float) -> List[float]:
    """[first start, last end] of ``times``, in seconds after ``began`` ([] if none)."""
    if not times:
        return []
    return [round(min(t for t, _ in times) - began, 1), round(max(t for _, t in times) - began, 1)]


def classify(
    load: Load, kills: List[float], times: Optional[List[Tuple[float, float]]] = None
) -> Tuple[int, List[str]]:
    """(failures that were in flight on a worker we SIGKILLed, the others: defects).

    One is excused when it overlapped a kill and failed as a lost upstream does (a reset or closed
    connection, 502 or 504; never a 503: that is a frontend with no server), and each kill excuses
    at most as many as the load has threads (each could have had one request on the killed worker).
    """
    in_flight, other = 0, []
    excused = [0] * len(kills)
    per_kill = load.threads
    for started, ended, what in load.failure_log:
        lost = not re.search(r"status (?!50[24])\d+", what)
        hit = next(
            (
                i
                for i, killed in enumerate(kills)
                if started <= killed + KILL_GRACE and ended >= killed and excused[i] < per_kill
            ),
            None,
        )
        if lost and hit is not None:
            excused[hit] += 1
            in_flight += 1
        else:
            other.append(what)
            if times is not None:
                times.append((started, ended))
    return in_flight, other


def master_log_defects(path: str) -> List[str]:
    """What the master's log shows went wrong. A reload reported incomplete is one: a slot waiting to retry
    a failed fork (an fd dip) is waited for, ``boot_timeout`` at most, far longer than a dip lasts."""
    with open(path, errors="replace") as f:
        text = f.read()
    found = []
    incomplete = len(re.findall(r"rolling reload incomplete: slots \[", text))
    if incomplete:
        found.append(f"{incomplete} reloads reported incomplete")
    for pattern, what in (
        (r"Traceback \(most recent call last\)", "tracebacks in the master's log"),
        (r"did not stop within .*; killing it", "workers SIGKILLed for not stopping"),
    ):
        count = len(re.findall(pattern, text))
        if count:
            found.append(f"{count} {what}")
    return found


def summarize(samples: List[Tuple[float, int, int, float]]) -> List[str]:
    if not samples:
        return ["no samples of the master"]
    t0 = samples[0][0]
    step = max(1, len(samples) // 10)
    rows = [
        f"  {t - t0:6.0f} s  fds {fds:4d}  rss {rss / 1024:7.1f} MiB  cpu {cpu:7.2f} s"
        for t, fds, rss, cpu in samples[::step]
    ]
    return ["the master over time:"] + rows
