"""Worker CPU time per request: prefork variants vs plain pinned waitress.

Throughput on a shared 2-core box moves by ±15 % between runs; the CPU time the serving processes
spend per request moves much less. For each run (one wrk, c=32 by default, contenders alternated in
a rotated order) it reads utime+stime of the workers from /proc (prefork: every child of the master;
the master apart; plain waitress: the server processes) before and after, and divides by the
requests wrk completed. Medians over the rounds, in µs per request, and the ratio to waitress-t1xN.
"""

from bench import contenders, harness

NAME = "cpu_per_request"
HELP = "worker CPU µs per request (utime+stime from /proc) for prefork variants vs pinned plain waitress"
SMOKE = {"contenders": ["prefork", "prefork-rt30", "waitress-t1xN"], "shapes": ["keepalive"], "conns": 4,
         "rounds": 1, "duration": 1}


def add_arguments(p):
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=3)
    p.add_argument("--shapes", type=harness.csv(str), default=["keepalive", "close"])
    p.add_argument("--app", default="hello", help=", ".join(contenders.APPS))
    p.add_argument("--contenders", type=harness.csv(str),
                   default=["prefork", "prefork-rt30", "prefork-mr1000000", "waitress-t1xN"],
                   help=contenders.names_help())
    p.add_argument("--reference-path", default=None, help="the checkout the prefork-...-ref contenders run")


def _measure(running, n, conns, duration, close):
    pids = running.worker_pids()
    if len(pids) != n:
        raise RuntimeError(f"{running.name}: expected {n} workers, found {pids}")
    before = sum(harness.cpu_seconds(p, default=0.0) for p in pids)
    mbefore = harness.cpu_seconds(running.master, default=0.0) if running.master else 0.0
    r = harness.run_wrk(running.ports, conns, duration, close=close)
    used = sum(harness.cpu_seconds(p, default=0.0) for p in pids) - before
    mused = (harness.cpu_seconds(running.master, default=0.0) - mbefore) if running.master else 0.0
    if running.worker_pids() != pids:
        raise RuntimeError(f"{running.name}: a worker was replaced during the run")
    if not r["requests"]:
        raise RuntimeError(f"{running.name}: no request completed ({r.failed} failed)")
    return used / r["requests"] * 1e6, mused / r["requests"] * 1e6, r["rps"], r.failed


def run(args):
    contenders.REFERENCE["path"] = args.reference_path
    app = contenders.APPS.get(args.app, args.app)
    n = args.workers
    running, results = {}, {}
    try:
        for name in args.contenders:
            why = contenders.missing(name, app)
            if why:
                args.notes.append(f"{name}: skipped, {why}")
                continue
            running[name] = contenders.start_ready(name, n, app)
        for rnd in range(args.rounds):
            for shape in args.shapes:
                for name in harness.rotated(running, rnd):
                    x = _measure(running[name], n, args.conns, args.duration, shape == "close")
                    results.setdefault((shape, name), []).append(x)
                    harness.progress(f"  {shape} {name:20s} round {rnd + 1}: {x[0]:6.1f} us CPU/request, "
                                     f"master {x[1]:.1f} us/request, {x[2]:.0f} req/s, errors {x[3]}")
    finally:
        for r in running.values():
            r.stop()
    rows = []
    title = f"N={n}, c={args.conns}, app {args.app}: medians of {args.rounds} rounds x {args.duration} s"
    for shape in args.shapes:
        base = harness.median([x[0] for x in results.get((shape, "waitress-t1xN"), [])])
        for name in running:
            xs = results[(shape, name)]
            us = harness.median([x[0] for x in xs])
            rows.append({"table": title, "shape": shape, "contender": name, "worker CPU us/request": us,
                         "range": f"{min(x[0] for x in xs):.1f}-{max(x[0] for x in xs):.1f}",
                         "master us/request": harness.median([x[1] for x in xs]),
                         "req/s": harness.median([x[2] for x in xs]), "errors": sum(x[3] for x in xs),
                         "vs waitress": f"{us / base:.3f}x" if base else "-"})
    return rows
