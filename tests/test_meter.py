"""The shared request meter (written in a forked child, read by the parent) and the master's counters."""

import os
import time

import pytest

from prefork_waitress._core.counters import RESTART_REASONS, ClusterCounters, exit_reason
from prefork_waitress._wire.meter import BUCKETS, TEXT_MAX, RequestCounts, RequestMeter

pytestmark = pytest.mark.timeout(20)


def in_child(meter, durations, hold_last=False, method="GET", path="/"):
    """Fork; the child times one request per duration (the last left running if hold_last)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a worker's task thread does
        try:
            for i, seconds in enumerate(durations):
                meter.started(method, path)
                time.sleep(seconds)
                if hold_last and i == len(durations) - 1:
                    os.write(write, b"r")
                    time.sleep(30)
                meter.finished()
            os.write(write, b"d")
        finally:
            os._exit(0)
    os.close(write)
    return pid, read


def test_the_parent_reads_what_the_child_counted_by_bucket():
    meter = RequestMeter()
    pid, read = in_child(meter, [0.0, 0.0, 0.3])
    try:
        assert os.read(read, 1) == b"d"
    finally:
        os.waitpid(pid, 0)
    counts = meter.counts()
    assert counts.requests == 3 and counts.in_flight == 0
    assert 0.3 <= counts.duration_sum < 10
    quarter = BUCKETS.index(0.25)
    assert sum(counts.buckets[: quarter + 1]) == 2  # the instant ones (<= 250 ms even on a loaded box)
    assert sum(counts.buckets[quarter + 1 :]) == 1  # the 300 ms one
    assert len(counts.buckets) == len(BUCKETS) + 1
    assert meter.read() == 0.0
    meter.close()


def test_a_running_request_is_in_flight_with_its_start():
    meter = RequestMeter()
    before = time.monotonic()
    pid, read = in_child(meter, [0.0], hold_last=True)
    try:
        assert os.read(read, 1) == b"r"
        assert meter.counts().in_flight == 1 and meter.counts().requests == 0
        assert before <= meter.read() <= time.monotonic()
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    meter.close()


def test_the_running_request_line_is_read_by_the_parent_truncated():
    meter = RequestMeter()
    path = "/a?" + "x" * 300
    pid, read = in_child(meter, [0.0, 0.0], hold_last=True, method="PROPFIND", path=path)
    try:
        assert os.read(read, 1) == b"r"
        current = meter.current()
        assert current is not None and current.started == meter.read()
        assert current.method == "PROPFIND" and path.startswith(current.path)
        assert len(current.method) + 1 + len(current.path) == TEXT_MAX
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    meter.close()


def test_an_idle_worker_has_no_current_request_and_a_memfd_page_carries_it():
    meter = RequestMeter.in_memfd()  # how a reforked worker gets its page: it maps the memory file
    pid, read = in_child(RequestMeter(meter.fd), [0.0], hold_last=True, method="POST", path="/caf\xe9")
    try:
        assert os.read(read, 1) == b"r"
        current = meter.current()
        assert (current.method, current.path) == ("POST", "/caf\xe9")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    idle = RequestMeter()
    pid, read = in_child(idle, [0.0])
    try:
        assert os.read(read, 1) == b"d" and idle.current() is None and idle.counts().requests == 1
    finally:
        os.waitpid(pid, 0)
    meter.close()
    idle.close()


def test_counts_add_up_and_an_exited_worker_has_nothing_in_flight():
    a = RequestCounts((1,) + (0,) * len(BUCKETS), 0.5, 1)
    b = RequestCounts((0,) * len(BUCKETS) + (2,), 70.0, 0)
    total = a + b
    assert total.requests == 3 and total.duration_sum == 70.5 and total.in_flight == 1
    assert total.finished().in_flight == 0 and total.finished().requests == 3


def test_cluster_counters_keep_a_slot_monotonic_across_its_processes():
    counters = ClusterCounters()
    one = RequestCounts((3,) + (0,) * len(BUCKETS), 0.003, 1)
    counters.process_exited(0, one)
    live = RequestCounts((0, 2) + (0,) * (len(BUCKETS) - 1), 0.004, 1)
    totals = counters.requests([(0, live), (1, live)])
    assert totals[0].requests == 5 and totals[0].in_flight == 1  # the exited one is not in flight
    assert totals[1].requests == 2
    assert list(totals) == [0, 1]


def test_restart_reasons_and_reloads():
    counters = ClusterCounters()
    for exitcode in (-9, 4, None):
        counters.restarted(exit_reason(exitcode))
    counters.replaced("reload")
    counters.replaced("recycle")
    counters.replaced("refork")
    counters.restarted("timeout")
    counters.reloaded(True)
    counters.reloaded(False)
    counters.reloaded(True)
    assert counters.restarts == {"crash": 2, "killed": 1, "timeout": 1, "recycled": 1, "reload": 1, "refork": 1}
    assert tuple(counters.restarts) == RESTART_REASONS
    assert counters.reloads == {"ok": 2, "failed": 1}
