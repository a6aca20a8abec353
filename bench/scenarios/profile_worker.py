"""Where a prefork_waitress worker spends each microsecond of a request.

    python -m bench profile_worker [--requests 40000] [--conns 8] [--close] [--app bench.apps:hello]
        [--inline] [--meter] [--py-spy] [--time-app] [--compare DIR,DIR] [--no-profile] [--top 25]

One process runs the worker's real request path (``_child._waitress_server.DrainableServer``
with ``_child.run.WorkerRequests`` on a ``Worker``, pinned to CPU 0 like slot 0),
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
- ``--inline``: requests run inline on the I/O thread (the server's ``inline``)
  instead of on waitress's task thread, for A/B.
- ``--time-app``: the app's own CPU per request inside the server, and alone
  on the same environ: what is outside the app (bench/PROFILE.md, "Flask").
- ``--py-spy``: trust its shares on the inline path (one thread); on the task
  thread a thread waiting for the GIL is sampled as busy on its last line.

Each measurement runs in a fresh interpreter: ``python -m bench.scenarios.profile_worker --child ...``.
"""

import argparse
import ast
import cProfile
import logging
import os
import pstats
import shutil
import subprocess
import sys
import threading
import time

from bench import harness

# cProfile on sys.monitoring (3.12+) allows one active profiler, and it sees every thread.
ONE_PROFILER = sys.version_info >= (3, 12)
NAME = "profile_worker"
HELP = "where a worker spends each µs of a request: the real request path, cProfile or py-spy, by part"
SMOKE = {"requests": 2000, "conns": 4, "top": 5}
CHILD = [sys.executable, "-m", "bench.scenarios.profile_worker", "--child"]

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


SYSCALL_LINES = (
    ("syscall send", (".send(",)),
    ("syscall recv", (".recv(",)),
    ("syscall select", ("select.select(", "pollster.poll(", "poller.poll(")),
    ("syscall accept/close", (".accept(", ".close()", "setsockopt(", ".shutdown(")),
)


def _source_line(path, lineno):
    import linecache

    for root in [""] + sys.path:
        full = os.path.join(root, path) if root else path
        if os.path.exists(full):
            return linecache.getline(full, lineno)
    return ""


def _is_server_file(frame):
    """A py-spy frame in waitress's or our code (or threading's)."""
    return any(m in frame for m in ("waitress/", "prefork_waitress/", "threading.py", "profile_worker.py"))


def _in_app(frames):
    """The stack passes through a frame of the app (code that is not the server's) below WSGITask.execute."""
    for i, frame in enumerate(frames):
        if frame.startswith("WSGITask.execute ("):
            return any(not _is_server_file(f) for f in frames[i + 1:])
    return False


def spy_parts(raw_path):
    """{part: samples} from py-spy's raw output, only stacks under serve() or the task thread.

    A sample's leaf is the Python line being run; a line that is a socket
    call counts as that syscall, the others go to the part of their function.
    A sample under the app's frame whose leaf is not server code is the app's,
    whatever its module (Flask, werkzeug, json, ...); start_response stays
    the server's. The task thread's wait on its queue is idle, not counted.
    """
    totals = dict.fromkeys([p for p, _ in PARTS], 0)
    leaves = {}
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if "DrainableServer.serve (" not in stack and "handler_thread (" not in stack:
                continue
            frames = stack.split(";")
            leaf = frames[-1]
            if _in_app(frames) and not _is_server_file(leaf):
                leaf = "(app) " + leaf  # under the app's frame, in the app's own code (or what it calls)
            leaves[leaf] = leaves.get(leaf, 0) + int(count)
    for leaf, count in list(leaves.items()):
        if leaf.startswith("(app) "):
            totals["app"] += count
            continue
        name, _, where = leaf.rpartition(" (")
        path, _, lineno = where.rstrip(")").rpartition(":")
        text = _source_line(path, int(lineno)) if lineno.isdigit() else ""
        if "waiter.acquire(" in text:  # the task thread asleep on its queue: py-spy does not see it idle
            del leaves[leaf]
            continue
        part = next((p for p, marks in SYSCALL_LINES if any(m in text for m in marks)), None)
        if part is None:
            part = part_of((path, 0, name.rsplit(".", 1)[-1])) or "other"
            if "Dispatcher" in name and part == "WSGI task":
                part = "handoff"
        totals[part] += count
    return totals, sorted(leaves.items(), key=lambda kv: kv[1], reverse=True)


def run_py_spy(args):
    """The unprofiled child under ``py-spy record`` (sampling: no per-call cost)."""
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        sys.exit("py-spy not found: pip install py-spy")
    out = os.path.join(harness.REPO_ROOT, f".py-spy-{os.getpid()}.txt")
    argv = [spy, "record", "-r", str(args.rate), "-f", "raw", "--threads", "-o", out, "--",
            *CHILD, "--no-profile", "--requests",
            str(args.requests), "--conns", str(args.conns), "--app", args.app]
    argv += ["--close"] * args.close + ["--inline"] * args.inline + ["--meter"] * args.meter
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                              cwd=harness.REPO_ROOT)
        result = next((ast.literal_eval(x[len("RESULT "):]) for x in proc.stdout.splitlines()
                       if x.startswith("RESULT ")), None)  # our own repr() of plain data
        if result is None:
            raise RuntimeError(f"py-spy run failed:\n{proc.stdout}\n{proc.stderr}")
        return result, spy_parts(out)
    finally:
        if os.path.exists(out):
            os.unlink(out)


def report_py_spy(args, total_us):
    """Rows: each part's share of py-spy's samples, scaled to the unprofiled µs; then the top leaf lines."""
    result, (parts, leaves) = run_py_spy(args)
    samples = sum(parts.values()) or 1
    title = (f"py-spy -r {args.rate}: {samples} samples under serve(), {result['served'] / result['wall']:,.0f} req/s "
             f"while sampled; us/request = share x unprofiled {total_us:.1f} us")
    rows = [{"table": title, "part": part, "samples": parts[part], "share": f"{parts[part] / samples * 100:.1f} %",
             "us/request": parts[part] / samples * total_us, "what": what} for part, what in PARTS]
    rows.append({"table": title, "part": "total", "samples": samples, "share": "100 %", "us/request": total_us,
                 "what": ""})
    top = f"top {args.top} lines (py-spy leaf frames)"
    rows += [{"table": top, "line": leaf[-90:], "samples": n, "us/request": n / samples * total_us}
             for leaf, n in leaves[: args.top]]
    return rows


def thread_cpu(kernel_only=False):
    """{thread name: utime+stime (or stime only) seconds} for the threads of this process."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = int(fields[12]) + (0 if kernel_only else int(fields[11]))
        out[names.get(int(tid), tid)] = ticks / os.sysconf("SC_CLK_TCK")
    return out


def serve(args, port, sock):
    """Run the worker request path in this process until args.requests were served."""
    from waitress import task as waitress_task

    from prefork_waitress.worker import Worker

    try:
        from prefork_waitress._child import _waitress
        from prefork_waitress._child.run import WorkerRequests
        from prefork_waitress._wire.meter import RequestMeter
    except ImportError:  # a checkout from before the layers (issue 9), for --compare
        from prefork_waitress._timeouts import RequestMeter

        from prefork_waitress import _waitress
        from prefork_waitress._child import WorkerRequests

    try:
        from prefork_waitress._child._waitress_server import DrainableServer
    except ImportError:  # before the server had its own module
        DrainableServer = _waitress.DrainableServer
    os.sched_setaffinity(0, {0})
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # as _child.run does
    app = common_load(args.app)
    if args.time_app:
        app = AppTimer(app)
    profilers = []

    if not args.no_profile and not ONE_PROFILER:
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
    try:
        server = DrainableServer(app, sock, requests, {}, inline=args.inline)
    except TypeError:  # a checkout from before the server's inline argument, for --compare
        _waitress.INLINE_TASKS = args.inline
        server = DrainableServer(app, sock, requests, {})
    marks = {}
    finished = requests.request_finished

    def counting_finished():
        finished()
        if worker.requests_served == args.requests:
            marks["end"] = thread_cpu()
            marks["sys_end"] = thread_cpu(kernel_only=True)
            server.request_stop()

    requests.request_finished = counting_finished
    wrk = subprocess.Popen(
        ["taskset", "-c", "1", harness.wrk_path(), "-t1", f"-c{args.conns}", "-d120s", "--timeout=2s"]
        + (["-H", "Connection: close"] if args.close else []) + [f"http://127.0.0.1:{port}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        marks["start"] = thread_cpu()
        marks["sys_start"] = thread_cpu(kernel_only=True)
        started = time.monotonic()
        main_prof = None
        if not args.no_profile:
            main_prof = cProfile.Profile() if ONE_PROFILER else cProfile.Profile(time.thread_time)
            main_prof.enable()
        server.serve()
        if main_prof is not None:
            main_prof.disable()
            profilers.append(main_prof)
        wall = time.monotonic() - started
    finally:
        wrk.kill()
        wrk.wait()
    if args.time_app:
        marks["app"] = (app.ns / app.calls / 1000, app.replay())
    return worker.requests_served, wall, marks, profilers


class AppTimer:
    """The app's own CPU per request inside the server (call, iteration, close: thread CPU clock),
    and the same app replayed alone on the environ of a real request, in the same process.

    The difference is what the server's work between two requests costs the app
    (caches, allocator): its code is the same, its environ too.
    """

    def __init__(self, app):
        self.app, self.ns, self.calls, self.environ = app, 0, 0, None

    def __call__(self, environ, start_response):
        if self.environ is None:
            self.environ = dict(environ)
        clock = time.thread_time_ns
        started = clock()
        result = self.app(environ, start_response)
        chunks = list(result)
        if hasattr(result, "close"):
            result.close()
        self.ns += clock() - started
        self.calls += 1
        return chunks

    def replay(self, n=5000):
        """The app alone, n times on a copy of the first request's environ: us per call."""
        import io

        def start_response(status, headers, exc_info=None):
            return lambda data: None

        def once():
            environ = dict(self.environ, **{"wsgi.input": io.BytesIO(b"")})
            result = self.app(environ, start_response)
            list(result)
            if hasattr(result, "close"):
                result.close()

        for _ in range(n // 5):
            once()
        started = time.thread_time_ns()
        for _ in range(n):
            once()
        return (time.thread_time_ns() - started) / n / 1000


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
    import prefork_waitress

    sys_cpu = {name: end - marks["sys_start"].get(name, 0.0) for name, end in marks["sys_end"].items()}
    result = {"library": os.path.dirname(prefork_waitress.__file__), "served": served, "sys": sys_cpu,
              "wall": wall, "cpu": cpu, "parts": None, "top": [], "app": marks.get("app")}
    if profilers:
        stats = pstats.Stats(profilers[0])
        for prof in profilers[1:]:
            stats.add(prof)
        result["parts"] = group(stats)
        top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[: args.top]
        result["top"] = [(f"{os.path.basename(f[0])}:{f[1]}({f[2]})", v[1], v[2]) for f, v in top]
    print("RESULT", repr(result), flush=True)


def measure(args, no_profile):
    argv = [*CHILD, "--requests", str(args.requests),
            "--conns", str(args.conns), "--app", args.app, "--top", str(args.top)]
    argv += ["--close"] * args.close + ["--inline"] * args.inline + ["--meter"] * args.meter
    argv += ["--no-profile"] * no_profile + ["--time-app"] * args.time_app
    env = dict(os.environ)
    if args.prefork_path:
        env["PYTHONPATH"] = os.pathsep.join([args.prefork_path, harness.REPO_ROOT])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                          cwd=harness.REPO_ROOT, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return ast.literal_eval(line[len("RESULT "):])  # our own repr() of plain data
    raise RuntimeError(f"profile run failed:\n{proc.stdout}\n{proc.stderr}")


def compare(args, paths):
    """Rows: unprofiled CPU per request (and kernel part) for each checkout, alternated, rotated each round."""
    results = {p: [] for p in paths}
    for rnd in range(args.rounds):
        for path in harness.rotated(paths, rnd):
            args.prefork_path = path
            r = measure(args, no_profile=True)
            us = sum(r["cpu"].values()) / r["served"] * 1e6
            sys_us = sum(r["sys"].values()) / r["served"] * 1e6
            results[path].append((us, sys_us, r["served"] / r["wall"]))
            harness.progress(f"  {path} round {rnd + 1}: {us:.1f} us/request (kernel {sys_us:.1f}), "
                             f"{r['served'] / r['wall']:,.0f} req/s")
    base = harness.median([x[0] for x in results[paths[0]]])
    rows = []
    title = f"A/B of checkouts, unprofiled, medians of {args.rounds} rounds of {args.requests} requests"
    for path in paths:
        xs = results[path]
        us = harness.median([x[0] for x in xs])
        rows.append({"table": title, "library": path, "CPU us/request": us,
                     "range": f"{min(x[0] for x in xs):.1f}-{max(x[0] for x in xs):.1f}",
                     "kernel us/request": harness.median([x[1] for x in xs]),
                     "req/s": harness.median([x[2] for x in xs]), "vs first": f"{us / base:.3f}x"})
    return rows


def add_arguments(p):
    p.add_argument("--requests", type=int, default=40000)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--close", action="store_true", help="wrk sends Connection: close")
    p.add_argument("--app", default="bench.apps:hello")
    p.add_argument("--inline", action="store_true", help="requests inline on the I/O thread")
    p.add_argument("--meter", action="store_true", help="with request_timeout's meter")
    p.add_argument("--time-app", action="store_true",
                   help="also time the app inside the server (its list()ed response included), and alone")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--prefork-path", default=None, help="directory to put first on PYTHONPATH (A/B)")
    p.add_argument("--compare", default=None,
                   help="A/B: comma-separated library checkouts, unprofiled, alternated --rounds times")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--py-spy", action="store_true", help="sample with py-spy instead of cProfile")
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")


def run(args):
    if not shutil.which("taskset"):
        raise SystemExit("taskset not found (util-linux)")
    harness.progress(f"# app {args.app}, {args.requests} requests, wrk -t1 -c{args.conns} on CPU 1, "
                     f"{'Connection: close' if args.close else 'keep-alive'}, worker on CPU 0, "
                     f"task {'inline on the I/O thread' if args.inline else 'on the task thread'}")
    if args.compare:
        return compare(args, args.compare.split(","))
    plain = measure(args, no_profile=True)
    n = plain["served"]
    plain_us = {k: v / n * 1e6 for k, v in plain["cpu"].items() if v > 0}
    total_us = sum(plain_us.values())
    title = f"unprofiled: {plain['library']}, {n} requests"
    rows = [{"table": title, "thread": k, "CPU us/request": v} for k, v in sorted(plain_us.items())]
    rows.append({"table": title, "thread": "total", "CPU us/request": total_us, "req/s": n / plain["wall"]})
    if plain.get("app"):
        in_server, alone = plain["app"]
        app_table = "the app's own CPU per request (--time-app; app probes included in the outside)"
        rows.append({"table": app_table, "app in the server us": in_server, "app alone us": alone,
                     "outside the app us": total_us - in_server})
    if args.no_profile:
        return rows
    if args.py_spy:
        return rows + report_py_spy(args, total_us)
    if ONE_PROFILER:
        args.notes.append("Python >= 3.12: cProfile runs on sys.monitoring, one profiler for every thread, so the "
                          "profile uses the wall clock (a thread's waits count); --py-spy or Python 3.11 for CPU time")
    prof = measure(args, no_profile=False)
    n = prof["served"]
    parts = prof["parts"]
    profiled_total = sum(parts.values()) / n * 1e6
    title = (f"profiled: {n / prof['wall']:,.0f} req/s; self CPU per request by part "
             f"(scaled = share x unprofiled {total_us:.1f} us)")
    for part, what in PARTS:
        us = parts[part] / n * 1e6
        rows.append({"table": title, "part": part, "profiled us/req": us,
                     "share": f"{us / profiled_total * 100:.1f} %", "scaled us/req": us * total_us / profiled_total,
                     "what": what})
    rows.append({"table": title, "part": "total", "profiled us/req": profiled_total, "share": "100 %",
                 "scaled us/req": total_us, "what": ""})
    top = f"top {args.top} functions by self time (us/request, profiled)"
    rows += [{"table": top, "function": name, "calls/req": calls / n, "self us/req": tt / n * 1e6}
             for name, calls, tt in prof["top"]]
    return rows


if __name__ == "__main__":  # one measurement, in a fresh interpreter (see measure())
    _parser = argparse.ArgumentParser()
    add_arguments(_parser)
    _parser.add_argument("--child", action="store_true", required=True)
    child_main(_parser.parse_args())
