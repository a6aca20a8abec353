"""Where a prefork_waitress worker spends each microsecond of a request.

Run from the repo root:
    python bench/profile_worker.py [--requests 40000] [--conns 8] [--close] [--app bench.apps:hello]
        [--threaded] [--meter] [--no-profile] [--top 25]

One process runs the worker's real request path (``_waitress.DrainableServer``
with ``_child.WorkerRequests`` on a ``Worker``, pinned to CPU 0 like slot 0),
wrk loads it from CPU 1, and after exactly ``--requests`` requests the server
drains and the figures are divided by that count.

- ``--no-profile``: CPU time (utime+stime from /proc) per request, per thread
  (I/O loop, waitress task thread): the unprofiled reference.
- default: ``cProfile`` with a per-thread CPU clock (``time.thread_time``),
  enabled in the I/O thread and in the task thread, so waiting is not counted.
  Self time is grouped into the parts of a request (parse, loop, handoff, app,
  response build, send, our bookkeeping); a builtin's time goes to the part of
  its caller, except the syscalls, listed on their own. cProfile's own cost
  inflates every figure, so the table also gives each part scaled to the
  unprofiled CPU per request (``--scale-us``, or measured by a first
  ``--no-profile`` run in the same invocation).
- ``--threaded``: the task on waitress's task thread (the old path) instead of
  inline on the I/O thread, for A/B.
"""

import argparse
import cProfile
import logging
import os
import pstats
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

PARTS = [
    ("recv + parse", "read the socket, parse request line and headers (channel.received, parser, receiver)"),
    ("loop", "wasyncore poll: readable()/writable() scan, select dispatch, trigger, maintenance"),
    ("handoff", "task queue to the task thread and back: dispatcher, conditions, locks"),
    ("WSGI task", "environ, start_response, response header build (task.py), channel.service"),
    ("app", "the application callable"),
    ("send", "write_soon, outbuf buffers, _flush_some (Python side of sending)"),
    ("ours", "prefork_waitress: request hooks, drain-aware task/channel overrides, meter"),
    ("syscall select", "select()/poll() itself"),
    ("syscall recv", "socket.recv"),
    ("syscall send", "socket.send"),
    ("syscall accept/close", "accept, setsockopt, close (Connection: close)"),
    ("other", "everything else (time.time, logging checks, ...)"),
]


def part_of(func):
    """The part of a request a profiled function belongs to (None: a builtin, see callers)."""
    filename, _, name = func
    base = os.path.basename(filename)
    if filename == "~":
        if "select" in name or "poll" in name:
            return "syscall select"
        if "'recv'" in name:
            return "syscall recv"
        if "'send'" in name:
            return "syscall send"
        if "accept" in name or "setsockopt" in name or "'close'" in name or "shutdown" in name:
            return "syscall accept/close"
        return None
    if "prefork_waitress" in filename:
        return "ours"
    if "bench" in filename and base == "apps.py":
        return "app"
    if "waitress" in filename:
        if base in ("parser.py", "receiver.py", "utilities.py", "rfc7230.py"):
            return "recv + parse"
        if base == "channel.py":
            if name in ("received", "handle_read", "send_continue"):
                return "recv + parse"
            if name in ("write_soon", "_flush_some", "_flush_exception", "_flush_some_if_lockable",
                        "_flush_outbufs_below_high_watermark"):
                return "send"
            if name in ("service",):
                return "WSGI task"
            return "loop"
        if base == "buffers.py":
            return "send"
        if base == "task.py":
            if "Dispatcher" in name or name in ("handler_thread", "add_task", "set_thread_count"):
                return "handoff"
            return "WSGI task"
        if base == "wasyncore.py":
            if name in ("recv",):
                return "recv + parse"
            if name in ("send",):
                return "send"
            return "loop"
        if base in ("server.py", "trigger.py"):
            return "handoff" if name == "add_task" else "loop"
    if base == "threading.py":
        return "handoff"
    return "other"


def group(stats):
    """{part: self seconds}: builtins split over their callers' parts."""
    totals = dict.fromkeys([p for p, _ in PARTS], 0.0)
    for func, (_, _, tt, _, callers) in stats.stats.items():
        part = part_of(func)
        if part is not None:
            totals[part] += tt
            continue
        edge_tt = sum(v[2] for v in callers.values())
        if not callers or edge_tt <= 0:
            totals["other"] += tt
            continue
        for caller, v in callers.items():
            totals[part_of(caller) or "other"] += tt * v[2] / edge_tt
    return totals


def thread_cpu():
    """{thread name: utime+stime seconds} for the threads of this process."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[names.get(int(tid), tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def serve(args, port, sock):
    """Run the worker request path in this process until args.requests were served."""
    from prefork_waitress import _waitress
    from prefork_waitress._child import WorkerRequests
    from prefork_waitress._timeouts import RequestMeter
    from prefork_waitress.worker import Worker
    from waitress import task as waitress_task

    if args.threaded:
        _waitress.INLINE_TASKS = False
    os.sched_setaffinity(0, {0})
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # as _child.run does
    app = common_load(args.app)
    profilers = []

    if not args.no_profile:
        original = waitress_task.ThreadedTaskDispatcher.handler_thread

        def profiled_handler(self, thread_no):
            prof = cProfile.Profile(time.thread_time)
            profilers.append(prof)
            prof.enable()
            try:
                original(self, thread_no)
            finally:
                prof.disable()

        waitress_task.ThreadedTaskDispatcher.handler_thread = profiled_handler

    worker = Worker(0, port, 0, app)
    requests = WorkerRequests(worker, 0, RequestMeter() if args.meter else None)
    server = _waitress.DrainableServer(app, sock, requests, {})
    marks = {}
    finished = requests.request_finished

    def counting_finished():
        finished()
        if worker.requests_served == args.requests:
            marks["end"] = thread_cpu()
            server.request_stop()

    requests.request_finished = counting_finished
    wrk = subprocess.Popen(
        ["taskset", "-c", "1", common.wrk_path(), "-t1", f"-c{args.conns}", "-d120s", "--timeout=2s"]
        + (["-H", "Connection: close"] if args.close else []) + [f"http://127.0.0.1:{port}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        marks["start"] = thread_cpu()
        started = time.monotonic()
        main_prof = None
        if not args.no_profile:
            main_prof = cProfile.Profile(time.thread_time)
            main_prof.enable()
        server.serve()
        if main_prof is not None:
            main_prof.disable()
            profilers.append(main_prof)
        wall = time.monotonic() - started
    finally:
        wrk.kill()
        wrk.wait()
    return worker.requests_served, wall, marks, profilers


def common_load(spec):
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_once(args):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    return serve(args, port, sock)


def child_main(args):
    """One measurement in this (fresh) process; prints a line of repr() for the parent."""
    served, wall, marks, profilers = run_once(args)
    cpu = {}
    for name, end in marks["end"].items():
        cpu[name] = end - marks["start"].get(name, 0.0)
    result = {"served": served, "wall": wall, "cpu": cpu, "parts": None, "top": []}
    if profilers:
        stats = pstats.Stats(profilers[0])
        for prof in profilers[1:]:
            stats.add(prof)
        result["parts"] = group(stats)
        top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[: args.top]
        result["top"] = [(f"{os.path.basename(f[0])}:{f[1]}({f[2]})", v[1], v[2]) for f, v in top]
    print("RESULT", repr(result), flush=True)


def measure(args, no_profile):
    argv = [sys.executable, os.path.abspath(__file__), "--child", "--requests", str(args.requests),
            "--conns", str(args.conns), "--app", args.app, "--top", str(args.top)]
    argv += ["--close"] * args.close + ["--threaded"] * args.threaded + ["--meter"] * args.meter
    argv += ["--no-profile"] * no_profile
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=common.REPO_ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return eval(line[len("RESULT "):], {})  # our own repr() of plain data
    raise RuntimeError(f"profile run failed:\n{proc.stdout}\n{proc.stderr}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=40000)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--close", action="store_true", help="wrk sends Connection: close")
    p.add_argument("--app", default="bench.apps:hello")
    p.add_argument("--threaded", action="store_true", help="task on waitress's task thread (old path)")
    p.add_argument("--meter", action="store_true", help="with request_timeout's meter")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(args)
        return
    if not shutil.which("taskset"):
        sys.exit("taskset not found (util-linux)")
    print(f"# machine: {common.machine_summary()}; uptime: {os.getloadavg()}")
    print(f"# app {args.app}, {args.requests} requests, wrk -t1 -c{args.conns} on CPU 1, "
          f"{'Connection: close' if args.close else 'keep-alive'}, worker on CPU 0, "
          f"task {'on the task thread' if args.threaded else 'inline on the I/O thread'}")
    plain = measure(args, no_profile=True)
    n = plain["served"]
    plain_us = {k: v / n * 1e6 for k, v in plain["cpu"].items() if v > 0}
    total_us = sum(plain_us.values())
    print(f"\nunprofiled: {n / plain['wall']:,.0f} req/s, CPU per request {total_us:.1f} us "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(plain_us.items())))
    if args.no_profile:
        return
    prof = measure(args, no_profile=False)
    n = prof["served"]
    parts = prof["parts"]
    profiled_total = sum(parts.values()) / n * 1e6
    rows = []
    for part, what in PARTS:
        us = parts[part] / n * 1e6
        rows.append([part, us, f"{us / profiled_total * 100:.1f} %", us * total_us / profiled_total, what])
    rows.append(["total", profiled_total, "100 %", total_us, ""])
    print(f"\nprofiled: {n / prof['wall']:,.0f} req/s; self CPU per request by part "
          f"(scaled = share x unprofiled {total_us:.1f} us)")
    common.print_table(["part", "profiled us/req", "share", "scaled us/req", "what"], rows)
    print(f"\ntop {args.top} functions by self time (us/request, profiled)")
    common.print_table(["function", "calls/req", "self us/req"],
                       [[name, calls / n, tt / n * 1e6] for name, calls, tt in prof["top"]])


if __name__ == "__main__":
    main()
