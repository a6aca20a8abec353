"""Pinned vs unpinned plain waitress (threads=1) processes, one port each (bench/AFFINITY.md).

For every worker count N, one set of N waitress processes per mode (``bench/waitress_server.py``),
all sets at once on distinct ports; per round, per (connections, shape), the modes are loaded one
after the other in a rotated order by one wrk over the N ports. Medians, and the ratio to ``none``.

Modes (worker i, n CPUs): ``none`` no pinning; ``auto`` CPU i mod n before waitress starts its
threads; ``late`` the same call after the task thread started (main thread only); ``split`` I/O
thread on CPU i mod n, task thread on (i+1) mod n; ``same`` every worker on CPU 0.
"""

import os
import sys

from bench import harness

NAME = "affinity"
HELP = "pinned vs unpinned plain waitress threads=1 processes: req/s, p50, p99 per pinning mode"
SMOKE = {"workers": [1], "conns": [4], "shapes": ["keepalive"], "rounds": 1, "duration": 1}
MODES = ("none", "auto", "late", "split", "same")


def add_arguments(p):
    p.add_argument("--workers", type=harness.csv(int), default=[1, 2, 4])
    p.add_argument("--conns", type=harness.csv(int), default=[2, 8, 32])
    p.add_argument("--modes", type=harness.csv(str), default=["none", "auto"], help=", ".join(MODES))
    p.add_argument("--shapes", type=harness.csv(str), default=["keepalive", "close"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    p.add_argument("--app", default="bench.apps:hello")
    p.add_argument("--switch-interval", type=float, default=None)


def server_argv(mode, i, port, app, ncpu, switch_interval):
    argv = [sys.executable, "bench/waitress_server.py", "--port", port, "--threads", "1", "--app", app]
    if switch_interval is not None:
        argv += ["--switch-interval", switch_interval]
    pins = {"auto": ("early", i % ncpu), "late": ("late", i % ncpu),
            "split": ("split", f"{i % ncpu},{(i + 1) % ncpu}"), "same": ("early", 0)}
    if mode in pins:
        argv += ["--pin", pins[mode][0], "--cpus", pins[mode][1]]
    return argv


def _one(args, n, ncpu):
    sets, results = {}, {}
    try:
        for mode in args.modes:
            ports = [harness.free_port() for _ in range(n)]
            sets[mode] = [harness.Proc(f"{mode}-{i}", server_argv(mode, i, port, args.app, ncpu,
                                                                  args.switch_interval), [port])
                          for i, port in enumerate(ports)]
            for s in sets[mode]:
                s.wait_ready()
        for rnd in range(args.rounds):
            for c in args.conns:
                for shape in args.shapes:
                    for mode in harness.rotated(args.modes, rnd):
                        r = harness.run_wrk([s.ports[0] for s in sets[mode]], c, args.duration,
                                            close=(shape == "close"))
                        results.setdefault((c, shape, mode), []).append(r)
                        harness.progress(f"  N={n} c={c} {shape:9s} {mode:5s} round {rnd + 1}: {r['rps']:8.0f} req/s "
                                         f"p50 {r['p50_ms']:6.2f} ms p99 {r['p99_ms']:6.2f} ms errors {r.failed}")
    finally:
        for servers in sets.values():
            for s in servers:
                s.stop()
    rows = []
    title = f"N={n} workers (req/s and latency in ms: medians of {args.rounds} rounds)"
    for c in args.conns:
        for shape in args.shapes:
            row = {"table": title, "N": n, "c": c, "shape": shape}
            med, errors = {}, 0
            for mode in args.modes:
                rs = results[(c, shape, mode)]
                med[mode] = harness.median([r["rps"] for r in rs])
                row[f"{mode} req/s"] = med[mode]
                row[f"{mode} p50"] = harness.median([r["p50_ms"] for r in rs])
                row[f"{mode} p99"] = harness.median([r["p99_ms"] for r in rs])
                errors += sum(r.failed for r in rs)
            for mode in args.modes[1:]:
                base = med[args.modes[0]]
                row[f"{mode}/{args.modes[0]}"] = f"{med[mode] / base:.2f}x" if base else "-"
            row["errors"] = errors
            rows.append(row)
    return rows


def run(args):
    for m in args.modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if "none" in args.modes:  # the reference first
        args.modes.remove("none")
        args.modes.insert(0, "none")
    ncpu = len(os.sched_getaffinity(0))
    rows = []
    for n in args.workers:
        rows += _one(args, n, ncpu)
    return rows
