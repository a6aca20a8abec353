"""Memory of N workers over time: prefork_waitress lazy/preload/preload+freeze/refork vs gunicorn sync.

    python -m bench memory [--workers 4] [--checkpoints 0,1000,10000] [--app bench.bigapp:app]

App: bench/bigapp.py (100,000 small records and 3,000 classes built at
import, ~80 MB RSS; each request builds and drops some cyclic garbage,
reads a hot subset and churns a bounded cache, so full GC collections do
happen in a long-lived worker). Each contender is started once; at each
checkpoint every worker has served that many requests in total (prefork:
requests to each worker's own port; gunicorn: N x as many to its one port,
spread by the kernel; the "refork" contenders refork after 1,000 requests,
so from the 1,000 checkpoint on three of their workers are copies of the
fourth; the "refork 50/1000/10000" ones (--refork-after 50,1000,10000) refork in three generations: the
worker that first served 50 requests is the template again at 1,000 and at
10,000, so the @1000 and @10000 figures follow a refork and a later
checkpoint, e.g. 20000, shows the climb after the last one), and once the
worker pids have not changed for ``--settle`` (2) s, /proc/PID/smaps_rollup of the master and of
every worker is read: private = Private_Clean + Private_Dirty, Pss.
"total Pss" = master + all workers, MiB. The client: one process per port,
keep-alive where the server keeps it (gunicorn sync closes every one).
"""

import http.client
import importlib.util
import multiprocessing
import signal
import sys
import time

from bench import harness

NAME = "memory"
HELP = ("total Pss and worker private memory of N workers after 0, 1,000 and 10,000 requests each: prefork "
        "lazy/preload/freeze/refork vs gunicorn sync (--preload, freeze hook)")

PREFORK = ["-m", "prefork_waitress", "--log-level", "warning", "--cpu-affinity", "off"]
GUNICORN = ["-m", "gunicorn", "-k", "sync", "--log-level", "warning"]
CONTENDERS = {
    "prefork lazy": (PREFORK, []),
    "prefork preload no-freeze": (PREFORK, ["--preload", "--no-gc-freeze"]),
    "prefork preload+freeze": (PREFORK, ["--preload"]),
    "prefork preload+freeze no-gen2": (
        PREFORK,
        ["--preload", "--worker-class", "bench.memworkers:NoFullCollectWorker"],
    ),
    "prefork preload+freeze gen0=7000": (
        PREFORK,
        ["--preload", "--worker-class", "bench.memworkers:LazyYoungWorker"],
    ),
    "prefork lazy + refork": (PREFORK, ["--refork-after", "1000"]),
    "prefork preload+freeze + refork": (PREFORK, ["--preload", "--refork-after", "1000"]),
    "prefork lazy + refork 50/1000/10000": (PREFORK, ["--refork-after", "50,1000,10000"]),
    "prefork preload+freeze + refork 50/1000/10000": (PREFORK, ["--preload", "--refork-after", "50,1000,10000"]),
    "gunicorn lazy": (GUNICORN, []),
    "gunicorn --preload": (GUNICORN, ["--preload"]),
    "gunicorn --preload + freeze hook": (GUNICORN, ["--preload", "-c", "python:bench.gunicorn_freeze"]),
}
REFERENCE = "gunicorn --preload"
SMOKE = {"workers": 2, "checkpoints": [0, 20], "settle": 0.4,
         "contenders": ["prefork preload+freeze no-gen2", "gunicorn --preload", "gunicorn --preload + freeze hook"]}


def add_arguments(p):
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--checkpoints", type=harness.csv(int), default=[0, 1000, 10000],
                   help="requests per worker at each measurement (default 0,1000,10000)")
    p.add_argument("--app", default="bench.bigapp:app",
                   help="default %(default)s; bench.memapp:app the older 20 MB app")
    p.add_argument("--contenders", type=harness.csv(str), default=list(CONTENDERS), help=", ".join(CONTENDERS))
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds the worker pids must stay the same before a measurement (default %(default)s)")


def rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024.0
    return {"pss": out.get("Pss", 0.0), "private": out.get("Private_Clean", 0.0) + out.get("Private_Dirty", 0.0)}




def hit(job):
    """n GETs to one port, reusing the connection unless the server closed it; returns failures."""
    port, n = job
    failures = 0
    conn = None
    for _ in range(n):
        try:
            if conn is None:
                conn = http.client.HTTPConnection(harness.HOST, port, timeout=10)
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures += 1
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            failures += 1
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return failures


def _client_process():
    """Pool processes are plain clients: harness's stop-the-servers handler is the parent's."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def start(name, workers, app):
    runner, extra = CONTENDERS[name]
    if runner is GUNICORN:
        port = harness.free_port()
        argv = [sys.executable, *runner, "-w", str(workers), "--bind", f"127.0.0.1:{port}", *extra, app]
        return harness.Proc(name, argv, [port])
    base = harness.free_port_range(workers)
    argv = [sys.executable, *runner, "--workers", str(workers), "--base-port", str(base), *extra, app]
    return harness.Proc(name, argv, list(range(base, base + workers)))


def settled(server, workers, quiet=2.0, timeout=30.0):
    """The worker pids once there are ``workers`` of them and none changed for ``quiet`` s (a refork
    round in progress replaces one slot after the other)."""
    deadline = time.monotonic() + timeout
    kids, since = sorted(harness.children(server.pid)), time.monotonic()
    while len(kids) != workers or time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: expected {workers} settled workers, found {kids}")
        time.sleep(0.2)
        now = sorted(harness.children(server.pid))
        if now != kids:
            kids, since = now, time.monotonic()
    return kids


def measure(server, workers, settle):
    time.sleep(settle / 2)  # the last responses' garbage goes
    kids = settled(server, workers, quiet=settle)
    ws = [rollup(w) for w in kids]
    master = rollup(server.pid)
    return {
        "total": master["pss"] + sum(w["pss"] for w in ws),
        "private": sum(w["private"] for w in ws) / len(ws),
        "privates": [round(w["private"], 1) for w in ws],
        "master": master["pss"],
    }


def run_contender(name, args, pool):
    server = start(name, args.workers, args.app)
    figures = {}
    failures = 0
    try:
        server.wait_ready(timeout=90)
        done = 0
        for checkpoint in args.checkpoints:
            # one client process per worker, each sending its share to its port (gunicorn: the one port)
            jobs = [(server.ports[i % len(server.ports)], checkpoint - done) for i in range(args.workers)]
            started = time.monotonic()
            failures += sum(pool.map(hit, jobs))
            done = checkpoint
            figures[checkpoint] = measure(server, args.workers, args.settle)
            harness.progress(f"  {name} @{checkpoint}: total Pss {figures[checkpoint]['total']:.1f}, worker private "
                             f"{figures[checkpoint]['privates']} MiB ({time.monotonic() - started:.1f} s)")
    finally:
        server.stop()
    return figures, failures


def run(args):
    unknown = [n for n in args.contenders if n not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown contenders {unknown}; known: {', '.join(CONTENDERS)}")
    if importlib.util.find_spec("gunicorn") is None:
        skipped = [n for n in args.contenders if n.startswith("gunicorn")]
        if skipped:
            args.notes.append(f"{', '.join(skipped)}: skipped, gunicorn not installed (pip install gunicorn)")
        args.contenders = [n for n in args.contenders if n not in skipped]
    results = {}
    with multiprocessing.get_context("fork").Pool(max(args.workers, 1), _client_process) as pool:
        for name in args.contenders:
            results[name] = run_contender(name, args, pool)
    ref = results.get(REFERENCE, ({}, 0))[0]
    rows = []
    for name in args.contenders:
        figures, failures = results[name]
        row = {"table": f"N={args.workers}, app {args.app}, MiB", "contender": name}
        for c in args.checkpoints:
            row[f"total Pss @{c}"] = figures[c]["total"]
            row[f"worker private @{c}"] = figures[c]["private"]
            if ref:
                row[f"vs {REFERENCE} @{c}"] = f"{figures[c]['total'] / ref[c]['total']:.2f}x"
        row["failed requests"] = failures
        rows.append(row)
    return rows
