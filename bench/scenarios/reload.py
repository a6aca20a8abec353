"""Rolling reload under load, prefork_waitress vs gunicorn; and reload=True edit-to-new-code latency.

    python -m bench reload [--rounds 3] [--duration 8] [--conns 32] [--edits 5] [--parts 1,2]

Part 1, under load (N=4 workers, app bench.apps:hello): one wrk run of
``--duration`` seconds (harness.run_wrk; prefork: threads spread over the 4
ports; gunicorn: its one port) and, ``--at`` seconds into it, SIGHUP to the
master. Failed requests = wrk's connect/read/write/timeout errors + non-2xx.
Reload duration:
  prefork   SIGHUP -> the master logs "rolling reload done" (--log-level info;
            the server's output is polled every 5 ms)
  gunicorn  SIGHUP -> the arbiter's children are 4 pids none of which was a
            worker before the HUP, and every old worker has exited (polled
            every 5 ms from /proc)
Each round runs prefork keep-alive, prefork Connection: close and gunicorn
(which closes every connection anyway), alternating; a baseline run with no
reload is not made (see `python -m bench throughput` for that).

Part 2, reload=True (prefork CLI ``--reload``, N=4, lazy and ``--preload``):
a throwaway package in a temp dir; its module is rewritten with a new body;
time from the write to the first 200 with the new body on any port, and on
all 4 ports. The master uses inotify on Linux.
"""

import importlib.util
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

from bench import harness
from bench.harness import pid_alive

NAME = "reload"
HELP = "rolling reload (SIGHUP) under wrk load, prefork vs gunicorn; reload=True: file write -> new code served"
SMOKE = {"rounds": 1, "duration": 1, "at": 0.3, "conns": 4, "edits": 1}
N = 4


def add_arguments(p):
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8, help="seconds of each wrk run")
    p.add_argument("--at", type=float, default=2.0, help="seconds into the wrk run to send SIGHUP")
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--edits", type=int, default=5)
    p.add_argument("--parts", type=harness.csv(str), default=["1", "2"], help="1: under load, 2: reload=True")

def start_prefork(app, extra=(), env=None):
    base = harness.free_port_range(N)
    ports = list(range(base, base + N))
    argv = [sys.executable, "-m", "prefork_waitress", "--workers", str(N), "--base-port", str(base),
            "--log-level", "info", *extra, app]
    return harness.Proc("prefork", argv, ports, env=env), ports


def start_gunicorn(app):
    port = harness.free_port()
    argv = [sys.executable, "-m", "gunicorn", "-k", "sync", "-w", str(N), "--bind", f"127.0.0.1:{port}",
            "--log-level", "warning", app]
    return harness.Proc("gunicorn", argv, [port]), [port]


def prefork_reload_done(server, hup_at, timeout=60.0):
    already = server.output().count("rolling reload done")
    os.kill(server.pid, signal.SIGHUP)
    while time.monotonic() - hup_at < timeout:
        if server.output().count("rolling reload done") > already:
            return time.monotonic() - hup_at
        time.sleep(0.005)
    raise TimeoutError("prefork: no 'rolling reload done'")


def gunicorn_reload_done(server, hup_at, timeout=60.0):
    old = harness.children(server.pid)
    os.kill(server.pid, signal.SIGHUP)
    while time.monotonic() - hup_at < timeout:
        now = harness.children(server.pid)
        if len(now) == N and not (now & old) and not any(pid_alive(p) for p in old):
            return time.monotonic() - hup_at
        time.sleep(0.005)
    raise TimeoutError("gunicorn: old workers still there")


def reload_under_load(kind, server, ports, duration, at, conns, close):
    result = {}

    def trigger():
        time.sleep(at)  # the reload must fall inside the wrk run
        hup_at = time.monotonic()
        done = prefork_reload_done if kind == "prefork" else gunicorn_reload_done
        try:
            result["seconds"] = done(server, hup_at)
        except TimeoutError as exc:
            result["error"] = str(exc)

    t = threading.Thread(target=trigger)
    t.start()
    r = harness.run_wrk(ports, conns, duration, close=close)
    t.join()
    if "error" in result:
        raise RuntimeError(result["error"])
    return r, result["seconds"]


def part1(args):
    app = "bench.apps:hello"
    cases = [("prefork", False), ("prefork", True), ("gunicorn", True)]
    kinds = ["prefork", "gunicorn"]
    if importlib.util.find_spec("gunicorn") is None:
        args.notes.append("gunicorn: skipped, not installed (pip install gunicorn)")
        cases, kinds = cases[:2], kinds[:1]
    servers = {}
    for kind in kinds:
        s, ports = start_prefork(app) if kind == "prefork" else start_gunicorn(app)
        s.wait_ready(timeout=60)
        servers[kind] = (s, ports)
    results = {}
    try:
        for rnd in range(args.rounds):
            k = rnd % len(cases)
            for kind, close in cases[k:] + cases[:k]:
                s, ports = servers[kind]
                r, secs = reload_under_load(kind, s, ports, args.duration, args.at, args.conns, close)
                failed = r.error_count + r["non2xx"]
                results.setdefault((kind, close), []).append((r, secs, failed))
                harness.progress(f"  {kind} {'close' if close else 'keep-alive'} round {rnd + 1}: reload "
                                 f"{secs:.3f} s, {r['requests']} requests, failed {failed} ({r['errors']}, "
                                 f"non2xx {r['non2xx']}), {r['rps']:.0f} req/s")
    finally:
        for s, _ in servers.values():
            s.stop()
    title = (f"reload under load: N={N}, c={args.conns}, wrk {args.duration} s, HUP at {args.at} s, "
             f"{args.rounds} rounds (medians; failed = errors + non-2xx, summed over rounds)")
    rows = []
    for kind, close in cases:
        rs = results[(kind, close)]
        shape = "close (server)" if kind == "gunicorn" else ("close (client)" if close else "keep-alive")
        rows.append({"table": title, "contender": kind, "connections": shape,
                     "reload ms (median)": statistics.median(x[1] for x in rs) * 1000,
                     "reload ms (max)": max(x[1] for x in rs) * 1000, "failed": sum(x[2] for x in rs),
                     "requests": sum(x[0]["requests"] for x in rs),
                     "req/s (median)": statistics.median(x[0]["rps"] for x in rs)})
    return rows


PKG_INIT = ""
VIEW = '''BODY = {body!r}


def app(environ, start_response):
    body = BODY.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def body_of(port):
    try:
        status, body = harness.http_get(port, timeout=5)
    except OSError:
        return None
    return body.decode() if status == 200 else None


def part2(args):
    title = f"reload=True: file write -> new body served (N={N}, {args.edits} edits each, inotify)"
    rows = []
    for mode in ("lazy", "preload"):
        tmp = tempfile.mkdtemp(prefix="bench-reload-")
        pkg = os.path.join(tmp, "benchreloadapp")
        os.mkdir(pkg)
        with open(os.path.join(pkg, "__init__.py"), "w") as f:
            f.write(PKG_INIT)
        view = os.path.join(pkg, "views.py")
        with open(view, "w") as f:
            f.write(VIEW.format(body="v0"))
        extra = ["--reload"] + (["--preload"] if mode == "preload" else [])
        env = {"PYTHONPATH": os.pathsep.join([tmp, harness.REPO_ROOT])}
        server, ports = start_prefork("benchreloadapp.views:app", extra, env=env)
        firsts, alls = [], []
        try:
            server.wait_ready(timeout=60)
            time.sleep(1.0)  # the watcher is set up after the first generation is ready
            for i in range(1, args.edits + 1):
                new = f"v{i}"
                tmp_view = view + ".tmp"
                with open(tmp_view, "w") as f:
                    f.write(VIEW.format(body=new))
                written = time.monotonic()
                os.replace(tmp_view, view)
                first = None
                pending = set(ports)
                while pending:
                    if time.monotonic() - written > 60:
                        raise TimeoutError(f"{mode}: {new} not served on {pending}:\n{server.output()[-2000:]}")
                    for port in list(pending):
                        if body_of(port) == new:
                            pending.discard(port)
                            if first is None:
                                first = time.monotonic() - written
                    time.sleep(0.002)
                firsts.append(first)
                alls.append(time.monotonic() - written)
                harness.progress(f"  reload=True {mode} edit {i}: first port {first * 1000:.0f} ms, "
                                 f"all ports {alls[-1] * 1000:.0f} ms")
                time.sleep(1.5)  # let the reload finish its last step
        finally:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append({"table": title, "mode": mode, "first port median ms": statistics.median(firsts) * 1000,
                     "first port max ms": max(firsts) * 1000, "all 4 ports median ms": statistics.median(alls) * 1000,
                     "all 4 ports max ms": max(alls) * 1000})
    return rows


def run(args):
    rows = []
    if "1" in args.parts:
        rows += part1(args)
    if "2" in args.parts:
        rows += part2(args)
    return rows
