"""FileWatcher latency: time from a file write to its fd being readable (inotify and polling).

    python -m bench watcher_latency [--runs 20]

The loop below is what the master does: select() on fileno() with a timeout
up to next_poll_deadline(), and poll() when that deadline passes.  Writes
happen at a random phase of the polling schedule, as an editor's would.
"""

from __future__ import annotations

import os
import random
import select
import statistics
import tempfile
import time

from bench import harness
from prefork_waitress.reloading import FileWatcher

NAME = "watcher_latency"
HELP = "FileWatcher latency, inotify and polling: a file write -> the watcher's fd readable, ms"
SMOKE = {"runs": 3}


def add_arguments(p):
    p.add_argument("--runs", type=int, default=20, help="writes per mode (default %(default)s)")


def wait_readable(watcher: FileWatcher, timeout: float = 5.0) -> float:
    """Return the perf_counter() time at which the watcher's fd became readable."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        due = watcher.next_poll_deadline()
        limit = deadline if due is None else min(deadline, due)
        if select.select([watcher], [], [], max(0.0, limit - time.monotonic()))[0]:
            return time.perf_counter()
        if due is not None and time.monotonic() >= due:
            watcher.poll()
    raise TimeoutError("no change seen")


def measure(use_polling: bool, runs: int, directory: str) -> list[float]:
    """Write ``runs`` times and return each write-to-readable latency in ms."""
    path = os.path.join(directory, "polling.py" if use_polling else "inotify.py")
    with open(path, "w") as f:
        f.write("x = 0\n")
    latencies = []
    with FileWatcher([path], use_polling=use_polling, debounce=0) as watcher:
        for i in range(runs):
            time.sleep(random.uniform(0, watcher.poll_interval))  # random phase
            start = time.perf_counter()
            with open(path, "w") as f:
                f.write(f"x = {i + 1}\n" + "#" * (i % 2))
            latencies.append((wait_readable(watcher) - start) * 1000)
            watcher.changed_files()
    return latencies


def run(args):
    """One row per mode: median, min and max of ``--runs`` write-to-readable latencies."""
    random.seed(1)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for use_polling in (False, True):
            ms = measure(use_polling, args.runs, directory)
            name = "polling (0.25 s interval)" if use_polling else "inotify"
            harness.progress(f"  {name}: {[round(x, 2) for x in ms]}")
            rows.append({"table": f"write -> fd readable, {args.runs} writes per mode, ms", "mode": name,
                         "median ms": statistics.median(ms), "min ms": min(ms), "max ms": max(ms), "n": len(ms)})
    return rows
