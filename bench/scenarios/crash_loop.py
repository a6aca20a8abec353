"""Crash loop: when a worker's app stops importing, how the master retries, and how it comes back.

    python -m bench crash_loop [--attempts 8]

Kills a serving worker while its app module raises at import, records when
each attempt failed (the master's worker_exited times), then fixes the app
and reports how long the slot took to serve again, the master's CPU time
over the whole loop (it should sleep between attempts) and how many
tracebacks its log holds (one per distinct error).
"""

import os
import tempfile

from bench.harness import Cluster

NAME = "crash_loop"
HELP = "a worker's app stops importing: when the master retries, its CPU meanwhile, how the slot comes back"
SMOKE = {"attempts": 2}


def add_arguments(p):
    p.add_argument("--attempts", type=int, default=8, help="failed attempts before the fix (default %(default)s)")

FLAKY = """
import os
if os.path.exists("fail.flag"):
    raise RuntimeError("the database is down")

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


def exits(cluster: Cluster, exitcode: int) -> list:
    return [e for e in cluster.events if e["event"] == "exited" and e["exitcode"] == exitcode]


def is_back(event: dict) -> bool:
    return event["event"] == "started" and event["info"]["id"] == 1 and event["info"]["generation"] > 1


def run(args):
    """One row per failed attempt, then the recovery and the master's cost."""
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "flaky.py"), "w") as f:
            f.write(FLAKY)
        flag = os.path.join(work, "fail.flag")
        cluster = Cluster(cwd=work, app="flaky:app", workers=2, base_port=0)
        try:
            cluster.wait_ready()
            open(flag, "w").close()
            cpu = cluster.cpu_seconds()
            cluster.kill_worker(1)
            killed_at = cluster.wait(lambda: exits(cluster, -9))[0]["t"]
            cluster.wait(lambda: len(exits(cluster, 3)) >= args.attempts, timeout=120)
            os.unlink(flag)
            back = cluster.wait(lambda: [e for e in cluster.events if is_back(e)], timeout=60)[0]
            cpu = cluster.cpu_seconds() - cpu
            with open(cluster.log_path) as log:
                text = log.read()
        finally:
            cluster.close()
    times = [e["t"] - killed_at for e in exits(cluster, 3)]
    title = "worker 1 SIGKILLed (t=0: the master saw it exit) while its app cannot be imported, then fixed"
    rows, previous = [], 0.0
    for n, t in enumerate(times, 1):
        rows.append({"table": title, "event": f"attempt {n} failed", "t s": t, "since previous s": t - previous})
        previous = t
    up = back["t"] - killed_at
    rows.append({"table": title, "event": "fixed; worker 1 serving again", "t s": up,
                 "since previous s": up - previous})
    rows.append({"table": "the master over the loop", "master CPU s": cpu,
                 "tracebacks in its log": text.count("Traceback (most recent"),
                 "'still failing' lines": text.count("still failing")})
    return rows
