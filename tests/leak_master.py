"""A master that recycles its worker after every request and measures, with tracemalloc, what its own
memory (allocated in prefork_waitress' modules) grew by across many recycles; prints it as JSON and stops.

    python leak_master.py WARMUP RECYCLES BASE_PORT

Run by tests/test_master_memory.py: a master that keeps something per past worker grows with RECYCLES.
"""

import gc
import http.client
import json
import os
import signal
import sys
import threading
import time
import tracemalloc

from procfs import children_of  # this script's folder is first on sys.path

from prefork_waitress import Master

OURS = [tracemalloc.Filter(True, "*prefork_waitress*")]


def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def get(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read()
    except OSError:
        return None  # the worker is being replaced: ask again
    finally:
        conn.close()


def live_children():
    """The master's children that have not exited (zombies left out)."""
    return {pid for pid, state in children_of(os.getpid()).items() if state != "Z"}


def settled(deadline=20.0):
    """Wait until one worker is left (the one that will answer next), so that both snapshots see the
    master in the same state, not one with a retiring worker's record still held (a busy box)."""
    end = time.monotonic() + deadline
    while len(live_children()) != 1:
        if time.monotonic() > end:
            raise SystemExit(f"the master did not settle to one worker in {deadline} s: {live_children()}")
        time.sleep(0.01)


class Measuring(Master):
    def when_ready(self):
        threading.Thread(target=self.measure, daemon=True).start()

    def measure(self):
        warmup, recycles = int(sys.argv[1]), int(sys.argv[2])
        pids = set()

        def serve_until(count):
            while len(pids) < count:  # each pid answers once (max_requests=1): one recycle per request
                body = get(self.ports[0])
                if body:
                    pids.add(body)

        serve_until(warmup)
        settled()
        gc.collect()
        before = tracemalloc.take_snapshot().filter_traces(OURS)
        serve_until(warmup + recycles)
        settled()
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(OURS)
        stats = after.compare_to(before, "lineno")
        report = {"growth": sum(s.size_diff for s in stats), "top": [str(s) for s in stats[:5]]}
        print(json.dumps(report), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    tracemalloc.start(1)
    os.register_at_fork(after_in_child=tracemalloc.stop)  # only the master's own allocations count
    Measuring(app, workers=1, base_port=int(sys.argv[3]), max_requests=1).start()
