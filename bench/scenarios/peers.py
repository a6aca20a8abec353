"""prefork_waitress next to the other WSGI servers (issue 14's table, issue 23's anchors).

Contenders (N = --workers processes each; one not installed is skipped with a note): see
bench/contenders.py. Apps: hello (14 bytes), flask and django (a JSON view, 329 bytes),
sleep20 (20 ms per request), body1m (1 MiB). Placements: ``direct`` (wrk on the contender's
port(s); for prefork one wrk over its N ports) and ``nginx`` (one nginx in front: keep-alive
HTTP upstream, uWSGI over uwsgi_pass). Shapes: keep-alive and ``Connection: close``. Each
round runs every contender once per (placement, shape, c), in an order rotated every round;
medians over the rounds. Besides req/s, p50 and p99: the servers' CPU time per request
(utime+stime of the contender's process tree, nginx excluded), steadier than req/s.
"""

from bench import contenders, harness

NAME = "peers"
HELP = "prefork vs gunicorn, uWSGI, granian, bjoern, nginx return 200: req/s, p50, p99, server CPU/request"
SMOKE = {"apps": ["hello"], "contenders": ["prefork", "gunicorn-sync", "uwsgi", "nginx-200"], "conns": [4],
         "shapes": ["keepalive"], "rounds": 1, "duration": 1}
DEFAULT_CONTENDERS = ["prefork", "gunicorn-sync", "gunicorn-gthread", "uwsgi", "granian", "bjoern", "nginx-200"]
OWN_BACKEND_BEHIND_NGINX = {"uwsgi"}  # started again with its native socket for nginx


def add_arguments(p):
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--apps", type=harness.csv(str), default=["hello", "flask", "django", "sleep20", "body1m"])
    p.add_argument("--contenders", type=harness.csv(str), default=DEFAULT_CONTENDERS,
                   help=contenders.names_help())
    p.add_argument("--placements", type=harness.csv(str), default=["direct", "nginx"])
    p.add_argument("--shapes", type=harness.csv(str), default=["keepalive", "close"])
    p.add_argument("--conns", type=harness.csv(int), default=[8, 64])
    p.add_argument("--nginx-workers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    p.add_argument("--reference-path", default=None, help="the checkout the prefork-...-ref contenders run")


def _start_all(args, app, notes):
    """{(contender, placement): (Running, the Proc to load)} for every contender that can run."""
    targets = {}
    for name in args.contenders:
        why = contenders.missing(name, app)
        if why:
            notes.append(f"{name} ({app}): skipped, {why}")
            continue
        direct = contenders.start_ready(name, args.workers, app)
        targets[(name, "direct")] = (direct, None)
        if "nginx" in args.placements and name != "nginx-200":
            backend = direct
            if name in OWN_BACKEND_BEHIND_NGINX:
                backend = contenders.start(name, args.workers, app, behind_nginx=True)
            targets[(name, "nginx")] = (backend, contenders.front(backend, args.nginx_workers))
    return targets


def _run_app(args, app_name):
    app = contenders.APPS[app_name]
    groups = [(p, shape, c) for p in args.placements for shape in args.shapes for c in args.conns]
    targets = {}
    results = {}
    try:
        targets = _start_all(args, app, args.notes)
        for rnd in range(args.rounds):
            for placement, shape, conns in groups:
                names = [n for n in args.contenders if (n, placement) in targets]
                for name in harness.rotated(names, rnd):
                    running, nginx = targets[(name, placement)]
                    running.check_alive()
                    before = running.cpu()
                    r = harness.run_wrk(nginx.ports if nginx else running.ports, conns, args.duration,
                                        close=(shape == "close"))
                    used = running.cpu() - before
                    r["cpu_us"] = used / r["requests"] * 1e6 if r["requests"] else None
                    results.setdefault((placement, shape, conns, name), []).append(r)
                    harness.progress(f"  {app_name} {placement} {shape} c={conns} {name:16s} round {rnd + 1}: "
                                     f"{r['rps']:8.0f} req/s p50 {r['p50_ms']:6.2f} p99 {r['p99_ms']:6.2f} ms "
                                     f"cpu {r['cpu_us'] or 0:6.1f} us/req errors {r.failed}")
    finally:
        for running, nginx in targets.values():
            for proc in [nginx] if nginx else []:
                proc.stop()
            running.stop()
    rows = []
    title = f"app={app_name} N={args.workers} (medians of {args.rounds} rounds x {args.duration} s; ms)"
    for placement, shape, conns in groups:
        base = harness.median([r["rps"] for r in results.get((placement, shape, conns, "prefork"), [])])
        for name in args.contenders:
            rs = results.get((placement, shape, conns, name))
            if not rs:
                continue
            rps = harness.median([r["rps"] for r in rs])
            rows.append({"table": title, "placement": placement, "shape": shape, "c": conns, "contender": name,
                         "req/s": rps, "prefork is": f"{base / rps:.2f}x" if base and rps else "-",
                         "p50": harness.median([r["p50_ms"] for r in rs]),
                         "p99": harness.median([r["p99_ms"] for r in rs]),
                         "server CPU us/req": harness.median([r["cpu_us"] for r in rs]),
                         "errors": sum(r.failed for r in rs)})
    return rows


def run(args):
    contenders.REFERENCE["path"] = args.reference_path
    for name in args.contenders:
        if not contenders.known(name):
            raise SystemExit(f"unknown contender {name!r}: {contenders.names_help()}")
    for a in args.apps:
        if a not in contenders.APPS:
            raise SystemExit(f"unknown app {a!r}; choose from {', '.join(contenders.APPS)}")
    rows = []
    for app_name in args.apps:
        rows += _run_app(args, app_name)
    return rows
