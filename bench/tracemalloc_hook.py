"""Bench-only: find what grows in the master. With PREFORK_TRACEMALLOC=path[,seconds] set, the bench
master (bench/harness/cluster.py's Cluster) traces its allocations and every ``seconds`` (default 30) rewrites ``path``
with the allocation sites (by traceback) that grew most since the first snapshot, taken after one
interval of warm-up. Workers stop tracing right after the fork, so only the master pays for it."""

import linecache
import os
import threading
import time
import tracemalloc

FRAMES = 12
TOP = 30


def start(spec: str) -> None:
    path, _, every = spec.partition(",")
    interval = float(every or 30)
    tracemalloc.start(FRAMES)
    os.register_at_fork(after_in_child=tracemalloc.stop)
    threading.Thread(target=_run, args=(path, interval), daemon=True, name="tracemalloc-hook").start()


def _run(path: str, interval: float) -> None:
    time.sleep(interval)
    base = tracemalloc.take_snapshot()
    began = time.monotonic()
    # the hook's own allocations (its snapshots, linecache's copies of the source files it prints) are noise
    filters = [tracemalloc.Filter(False, name) for name in (tracemalloc.__file__, __file__, linecache.__file__)]
    base = base.filter_traces(filters)
    while True:
        time.sleep(interval)
        snap = tracemalloc.take_snapshot().filter_traces(filters)
        stats = snap.compare_to(base, "traceback")
        total = sum(s.size for s in snap.statistics("filename"))
        lines = [
            f"after {time.monotonic() - began:.0f} s: traced {total / 1024:.1f} KiB, "
            f"base {sum(s.size for s in base.statistics('filename')) / 1024:.1f} KiB"
        ]
        for stat in stats[:TOP]:
            grown = f"{stat.size_diff / 1024:+.1f} KiB ({stat.count_diff:+d} blocks)"
            lines.append(f"\n{grown} now {stat.size / 1024:.1f} KiB")
            lines.extend("    " + line for line in stat.traceback.format()[-2 * FRAMES :])
        with open(path + ".new", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(path + ".new", path)
