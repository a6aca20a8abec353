"""Measure FileWatcher latency: time from a file write to its fd being readable.

Run from the repository root:  PYTHONPATH=. python bench/watcher_latency.py [--runs 20]

The loop below is what the master does: select() on fileno() with a timeout
up to next_poll_deadline(), and poll() when that deadline passes.  Writes
happen at a random phase of the polling schedule, as an editor's would.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import statistics
import tempfile
import time

from prefork_waitress.reloading import FileWatcher


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


def main() -> None:
    """Print the median (and spread) of both modes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    random.seed(1)
    with tempfile.TemporaryDirectory() as directory:
        for use_polling in (False, True):
            ms = measure(use_polling, args.runs, directory)
            name = "polling (0.25 s interval)" if use_polling else "inotify"
            print(
                f"{name:26} median {statistics.median(ms):7.2f} ms  "
                f"min {min(ms):7.2f}  max {max(ms):7.2f}  (n={len(ms)})"
            )


if __name__ == "__main__":
    main()
