"""Core figures: fork-to-first-response, respawn time, and the idle master's CPU.

Run from the repo root:  python bench/core.py [--rounds 20] [--idle 10]

Prints, for lazy and preload mode: the time from start() to the first 200 on
every port, the time from SIGKILL of a worker to the next 200 on its port
(median and max over --rounds kills, with refused connections counted), and
the master's CPU seconds over --idle idle seconds.
"""

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAUNCHER = """
import json, sys, time
from prefork_waitress import Master

class M(Master):
    def worker_started(self, info):
        print(json.dumps({"slot": info.id, "pid": info.pid, "port": info.port,
                          "t": time.time()}), flush=True)
    def when_ready(self):
        print(json.dumps({"ready": self.ports, "t": time.time()}), flush=True)

print(json.dumps({"starting": time.time()}), flush=True)
M("examples.hello:app", workers=2, base_port=0, preload=sys.argv[1] == "preload").start()
"""


def get_pid(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        body = conn.getresponse().read().decode()
        return int(body.split()[3])
    finally:
        conn.close()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cluster:
    def __init__(self, mode):
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, mode],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        self.pids = {}

    def next_event(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the master exited")
        event = json.loads(line)
        if "slot" in event:
            self.pids[event["slot"]] = event["pid"]
        return event

    def wait_ready(self):
        while True:
            event = self.next_event()
            if "ready" in event:
                return event["ready"]

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def first_response(mode):
    started = time.perf_counter()
    cluster = Cluster(mode)
    try:
        ports = cluster.wait_ready()
        for port in ports:
            get_pid(port)
        return time.perf_counter() - started
    finally:
        cluster.close()


def respawn_times(mode, rounds):
    cluster = Cluster(mode)
    times, refused = [], 0
    try:
        port = cluster.wait_ready()[0]
        for _ in range(rounds):
            old = cluster.pids[0]
            os.kill(old, signal.SIGKILL)
            killed = time.perf_counter()
            while True:
                try:
                    if get_pid(port) != old:
                        break
                except ConnectionRefusedError:
                    refused += 1
                except (ConnectionResetError, http.client.HTTPException, OSError):
                    pass
            times.append(time.perf_counter() - killed)
            while cluster.pids[0] == old:
                cluster.next_event()
        return times, refused
    finally:
        cluster.close()


def idle_cpu(mode, seconds):
    cluster = Cluster(mode)
    try:
        cluster.wait_ready()
        before = cpu_seconds(cluster.proc.pid)
        time.sleep(seconds)  # measuring idleness itself, not synchronising
        return cpu_seconds(cluster.proc.pid) - before
    finally:
        cluster.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, shared and noisy; python {sys.version.split()[0]}")
    for mode in ("lazy", "preload"):
        start = first_response(mode)
        times, refused = respawn_times(mode, args.rounds)
        cpu = idle_cpu(mode, args.idle)
        print(
            f"{mode:8} start->first 200 on 2 ports: {start * 1000:6.1f} ms | "
            f"SIGKILL->next 200 (n={len(times)}): median {statistics.median(times) * 1000:5.1f} ms, "
            f"max {max(times) * 1000:5.1f} ms, refused {refused} | "
            f"master CPU over {args.idle:g} s idle: {cpu:.3f} s"
        )


if __name__ == "__main__":
    main()
