"""Throughput and latency for N = 1, 2, 4 workers: gunicorn sync vs plain waitress vs prefork variants.

For each app and worker count N, every contender (bench/contenders.py; ``nginx+NAME`` puts one
nginx, keep-alive upstream, in front of NAME's ports) is started at once, then loaded one after
the other in an order rotated every round by one wrk over its port(s). Medians over the rounds,
and the ratio to gunicorn sync with the same N. gunicorn's sync worker closes every connection
itself, whatever the shape asked for (the ``connections`` column says so).
"""

from bench import contenders, harness

NAME = "throughput"
HELP = "req/s, p50, p99 for N = 1, 2, 4: gunicorn sync, waitress threads=1/4, pinned waitress xN, prefork variants"
SMOKE = {"workers": [1], "apps": ["hello"], "contenders": ["gunicorn-sync", "waitress-t1xN", "prefork",
                                                          "nginx+prefork"],
         "conns": [4], "rounds": 1, "duration": 1}
DEFAULT_CONTENDERS = ["gunicorn-sync", "waitress-t1", "waitress-t4", "waitress-t1xN", "prefork"]


def add_arguments(p):
    p.add_argument("--workers", type=harness.csv(int), default=[1, 2, 4])
    p.add_argument("--apps", type=harness.csv(str), default=["hello", "sleep20"])
    p.add_argument("--conns", type=harness.csv(int), default=[32])
    p.add_argument("--shapes", type=harness.csv(str), default=["keepalive"],
                   help="keepalive (wrk default) and/or close (Connection: close)")
    p.add_argument("--contenders", type=harness.csv(str), default=DEFAULT_CONTENDERS,
                   help="names of bench/contenders.py, or nginx+NAME: " + contenders.names_help())
    p.add_argument("--nginx-workers", type=int, default=1, help="nginx worker_processes for nginx+NAME")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--reference-path", default=None, help="the checkout the prefork-...-ref contenders run")


def _inner(name):
    return name[len("nginx+"):] if name.startswith("nginx+") else name


def _start(name, n, app, nginx_workers):
    """(Running, the ports to load, what nginx is: a Proc or None)."""
    running = contenders.start_ready(_inner(name), n, app, behind_nginx=name.startswith("nginx+"))
    if not name.startswith("nginx+"):
        return running, running.ports, None
    try:
        front = contenders.front(running, nginx_workers)
    except BaseException:
        running.stop()
        raise
    return running, front.ports, front


def _connections(name, shape):
    if _inner(name) == "gunicorn-sync":
        return "close (server)"
    return "close (client)" if shape == "close" else "keep-alive"


def _one(args, app_name, n):
    app = contenders.APPS[app_name]
    running, results = {}, {}
    try:
        for name in args.contenders:
            why = contenders.missing(_inner(name), app)
            if why:
                args.notes.append(f"{name} ({app_name}, N={n}): skipped, {why}")
                continue
            running[name] = _start(name, n, app, args.nginx_workers)
        for rnd in range(args.rounds):
            for conns in args.conns:
                for shape in args.shapes:
                    for name in harness.rotated(running, rnd):
                        backend, ports, _ = running[name]
                        backend.check_alive()
                        r = harness.run_wrk(ports, conns, args.duration, close=(shape == "close"))
                        results.setdefault((conns, shape, name), []).append(r)
                        harness.progress(f"  {app_name} N={n} c={conns} {shape} {name:14s} round {rnd + 1}: "
                                         f"{r['rps']:8.0f} req/s p50 {r['p50_ms']:7.2f} ms "
                                         f"p99 {r['p99_ms']:7.2f} ms errors {r.failed}")
    finally:
        for backend, _, front in running.values():
            if front is not None:
                front.stop()
            backend.stop()
    rows = []
    title = f"app={app_name} N={n} (medians of {args.rounds} rounds x {args.duration} s, latency in ms)"
    for conns in args.conns:
        for shape in args.shapes:
            base = harness.median([r["rps"] for r in results.get((conns, shape, "gunicorn-sync"), [])])
            for name in running:
                rs = results[(conns, shape, name)]
                rps = harness.median([r["rps"] for r in rs])
                rows.append({"table": title, "c": conns, "shape": shape, "contender": name,
                             "ports": len(running[name][0].ports), "req/s": rps,
                             "p50": harness.median([r["p50_ms"] for r in rs]),
                             "p99": harness.median([r["p99_ms"] for r in rs]),
                             "errors": sum(r.failed for r in rs),
                             "vs gunicorn": f"{rps / base:.2f}x" if base else "-",
                             "connections": _connections(name, shape)})
    return rows


def run(args):
    contenders.REFERENCE["path"] = args.reference_path
    for name in args.contenders:
        if not contenders.known(_inner(name)):
            raise SystemExit(f"unknown contender {name!r}: {contenders.names_help()}")
    rows = []
    for app_name in args.apps:
        for n in args.workers:
            rows += _one(args, app_name, n)
    return rows
