"""The master keeps nothing per past worker: its memory stays flat however many workers it replaced
(issue 22: the chaos run's master grew by ~5 KB per fault)."""

import gc
import json
import os
import subprocess
import sys
import tracemalloc
import weakref

from conftest import ENV, HERE, free_ports, stop_process_group

from prefork_waitress._core.loop import EventLoop

RECYCLES = 100
# A retired worker's record (its process, pipe, outbox, meter views, timers) is ~3 KB; what a recycle may
# leave is far less (a log record's cache, the allocator's rounding), so 100 recycles stay under 100 of these.
PER_RECYCLE = 512


class Held:
    """Something a timer's callback refers to (as a worker's stop deadline refers to its worker)."""


def test_a_cancelled_timer_lets_go_of_what_its_callback_holds():
    loop = EventLoop()
    held = Held()
    gone = weakref.ref(held)
    timer = loop.call_later(3600, lambda held=held: None)  # a default: not a cell `del` would empty
    del held
    timer.cancel()
    gc.collect()
    assert gone() is None, "a cancelled timer kept its callback (and the worker it refers to) until its deadline"


def test_cancelled_timers_do_not_pile_up_until_their_deadline():
    loop = EventLoop()
    tracemalloc.start()
    try:
        for _ in range(1000):
            loop.call_later(3600, lambda: None).cancel()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20000):
            loop.call_later(3600, lambda: None).cancel()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # kept until their deadline, 20,000 cancelled timers take ~2.5 MB; dropped, nothing grows but rounding
    assert grown < 64 * 1024, f"20,000 cancelled timers grew the loop by {grown} bytes"


def test_the_master_keeps_nothing_per_recycled_worker():
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "leak_master.py"), "20", str(RECYCLES), str(free_ports(1))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        start_new_session=True,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=50)
    finally:
        stop_process_group(proc)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"the master reported nothing (exit {proc.returncode}): {err[-2000:]}"
    report = json.loads(lines[-1])
    assert report["growth"] < RECYCLES * PER_RECYCLE, (
        f"the master's memory grew by {report['growth']} bytes over {RECYCLES} recycled workers: {report['top']}"
    )
