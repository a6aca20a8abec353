"""Core figures: fork-to-first-response, respawn time, and the idle master's CPU.

    python -m bench core [--rounds 20] [--idle 10]

For lazy and preload mode (``examples.hello:app``, 2 workers): the time from starting the master
to the first 200 on every port, the time from SIGKILL of a worker to the next 200 on its port
(median and max over --rounds kills, with refused connections counted), and the master's CPU
seconds over --idle idle seconds.
"""

import http.client
import statistics
import time

from bench import harness

NAME = "core"
HELP = "prefork start -> first 200 on 2 ports, SIGKILL -> next 200 (lazy/preload), idle master CPU"
SMOKE = {"rounds": 2, "idle": 0.5}
APP = "examples.hello:app"


def add_arguments(p):
    p.add_argument("--rounds", type=int, default=20, help="timed kills per mode (default %(default)s)")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle master CPU (default %(default)s)")


def get_pid(port, timeout=10.0):
    """The pid examples.hello's body names (its 4th word); HTTPException on another status than 200."""
    status, body = harness.http_get(port, timeout=timeout)
    if status != 200:
        raise http.client.HTTPException(f"HTTP {status}")
    return int(body.decode().split()[3])


def start(mode):
    return harness.Cluster(cwd=harness.REPO_ROOT, app=APP, workers=2, base_port=0, preload=mode == "preload")


def first_response(mode):
    started = time.perf_counter()
    cluster = start(mode)
    try:
        cluster.wait_ready()
        for port in cluster.ports:
            get_pid(port)
        return time.perf_counter() - started
    finally:
        cluster.close()


def respawn_times(mode, rounds, deadline_s=30.0):
    cluster = start(mode)
    times, refused = [], 0
    try:
        cluster.wait_ready()
        port = cluster.ports[0]
        for _ in range(rounds):
            old = cluster.wait(lambda: cluster.current.get(0))
            try:
                seconds, refused_now, _ = harness.kill_and_wait(port, old, get_pid, deadline_s)
            except TimeoutError as exc:
                raise TimeoutError(f"{mode}: {exc}") from None
            times.append(seconds)
            refused += refused_now
            cluster.wait(lambda o=old: cluster.current.get(0) not in (None, o))
        return times, refused
    finally:
        cluster.close()


def idle_cpu(mode, seconds):
    cluster = start(mode)
    try:
        cluster.wait_ready()
        before = cluster.cpu_seconds()
        time.sleep(seconds)  # measuring idleness itself, not synchronising
        return cluster.cpu_seconds() - before
    finally:
        cluster.close()


def run(args):
    rows = []
    for mode in ("lazy", "preload"):
        start_s = first_response(mode)
        times, refused = respawn_times(mode, args.rounds)
        cpu = idle_cpu(mode, args.idle)
        rows.append({"table": f"2 workers, {APP}", "mode": mode, "start -> first 200 on 2 ports ms": start_s * 1000,
                     f"SIGKILL -> next 200 median ms (n={len(times)})": statistics.median(times) * 1000,
                     "max ms": max(times) * 1000, "refused": refused,
                     f"master CPU over {args.idle:g} s idle, s": cpu})
    return rows
