"""Respawn after SIGKILL, prefork_waitress (lazy, preload) vs gunicorn sync -w1; master CPU.

    python -m bench respawn [--rounds 20] [--cpu-rounds 50] [--idle 30]

For each contender, one worker is SIGKILLed and a client polls its port until
a response comes from a different pid ("next 200 from the replacement";
connection refused and reset are counted, each attempt has a 10 s timeout).

- prefork lazy / preload: ``Master("examples.hello:app", workers=2)``, slot 0's
  worker is killed; its port keeps its listening socket in the master, so a
  connection made meanwhile waits in the backlog for the replacement.
- gunicorn sync -w1: the only worker is killed (``-w 1`` makes "a new pid
  answers" the same as "the replacement serves"); gunicorn's arbiter keeps
  the shared listening socket too.

Then ``--cpu-rounds`` more kills, and the master's (arbiter's) CPU time
(utime+stime from /proc/PID/stat, 10 ms ticks) across them divided by their
number; and the master's CPU over ``--idle`` idle seconds.
"""

import importlib.util
import statistics
import sys
import time

from bench import harness
from bench.scenarios import core

NAME = "respawn"
HELP = "SIGKILL a worker -> next 200 from its replacement, prefork lazy/preload vs gunicorn sync -w1; master CPU"
SMOKE = {"rounds": 2, "cpu_rounds": 2, "idle": 0.5}


def add_arguments(p):
    p.add_argument("--rounds", type=int, default=20, help="timed kills per contender (default %(default)s)")
    p.add_argument("--cpu-rounds", type=int, default=50,
                   help="kills for the master CPU per respawn (default %(default)s)")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of idle master CPU (default %(default)s)")
    p.add_argument("--contenders", type=harness.csv(str), default=["lazy", "preload", "gunicorn"])


class PreforkSide:
    def __init__(self, mode):
        self.name = f"prefork {mode}"
        self.cluster = core.start(mode)
        self.cluster.wait_ready()
        self.port = self.cluster.ports[0]
        self.master_pid = self.cluster.pid

    def worker_pid(self):
        return self.cluster.wait(lambda: self.cluster.current.get(0))

    def after_kill(self, old):
        self.cluster.wait(lambda: self.cluster.current.get(0) not in (None, old))  # our pid table is current

    def close(self):
        self.cluster.close()


class GunicornSide:
    def __init__(self):
        self.name = "gunicorn sync -w1"
        self.port = harness.free_port()
        argv = [sys.executable, "-m", "gunicorn", "-k", "sync", "-w", "1", "--bind",
                f"127.0.0.1:{self.port}", "--log-level", "warning", "examples.hello:app"]
        self.server = harness.Proc("gunicorn-w1", argv, [self.port])
        self.server.wait_ready()
        self.master_pid = self.server.pid

    def worker_pid(self):
        return core.get_pid(self.port)

    def after_kill(self, old):
        pass

    def close(self):
        self.server.stop()


def measure(side, rounds, cpu_rounds, idle):
    times, refused, failed = [], 0, 0
    for _ in range(rounds):
        old = side.worker_pid()
        t, r, f = harness.kill_and_wait(side.port, old, core.get_pid)
        side.after_kill(old)
        times.append(t)
        refused += r
        failed += f
    before = harness.cpu_seconds(side.master_pid)
    for _ in range(cpu_rounds):
        old = side.worker_pid()
        harness.kill_and_wait(side.port, old, core.get_pid)
        side.after_kill(old)
    per_respawn = (harness.cpu_seconds(side.master_pid) - before) / cpu_rounds if cpu_rounds else None
    time.sleep(1.0)  # let the last respawn settle before the idle window
    before = harness.cpu_seconds(side.master_pid)
    time.sleep(idle)  # measuring idleness itself
    idle_cpu = harness.cpu_seconds(side.master_pid) - before
    return times, refused, failed, per_respawn, idle_cpu


def run(args):
    rows = []
    title = (f"{args.rounds} timed kills, then {args.cpu_rounds} kills for master CPU, then {args.idle:g} s idle")
    for name in args.contenders:
        if name == "gunicorn" and importlib.util.find_spec("gunicorn") is None:
            args.notes.append("gunicorn: skipped, not installed")
            continue
        side = GunicornSide() if name == "gunicorn" else PreforkSide(name)
        try:
            times, refused, failed, per, idle_cpu = measure(side, args.rounds, args.cpu_rounds, args.idle)
        finally:
            side.close()
        rows.append({"table": title, "contender": side.name, "SIGKILL->200 median ms": statistics.median(times) * 1000,
                     "max ms": max(times) * 1000, "refused": refused, "other failures": failed,
                     "master CPU per respawn ms": per * 1000 if per is not None else None,
                     f"master CPU idle {args.idle:g} s (ms)": idle_cpu * 1000})
        harness.progress(f"  {side.name}: {[round(t * 1000, 1) for t in times]}")
    return rows
