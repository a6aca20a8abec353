"""Pinned vs unpinned plain waitress (threads=1) processes, one port each.

Run from the repo root::

    python bench/affinity.py                      # full matrix, ~8 min
    python bench/affinity.py --workers 1 --conns 32 --modes none,auto,late,split,same

For every worker count N, one set of N waitress processes per mode is
started (fresh interpreters, ``bench/waitress_server.py``), all sets at
once on distinct ports (idle sets cost nothing).  Then, per round, per
(connections, connection shape), the modes are loaded one after the other,
in an order rotated every round, by ONE wrk process whose threads are
spread over the N ports (thread i -> port i mod N; connections split evenly;
latency percentiles exact over all ports).  Medians over the rounds are
printed with the ratio to the unpinned mode.

Modes (worker i, n = number of CPUs):
  none   no pinning
  auto   worker i on CPU i mod n, set before waitress starts its threads
  late   the same call made after the task thread started (main thread only)
  split  I/O thread on CPU i mod n, task thread on CPU (i+1) mod n
  same   every worker on CPU 0
Shapes: ``keepalive`` (wrk default, HTTP/1.1 persistent connections) and
``close`` (``-H "Connection: close"``: one TCP connection per request).
"""

import argparse
import os
import sys

try:
    from bench import common
except ImportError:  # run as a script: python bench/affinity.py
    import common

MODES = ("none", "auto", "late", "split", "same")


def server_args(mode, i, port, app, ncpu, switch_interval):
    args = ["bench/waitress_server.py", "--port", str(port), "--threads", "1", "--app", app]
    if switch_interval is not None:
        args += ["--switch-interval", str(switch_interval)]
    if mode == "auto":
        args += ["--pin", "early", "--cpus", str(i % ncpu)]
    elif mode == "late":
        args += ["--pin", "late", "--cpus", str(i % ncpu)]
    elif mode == "split":
        args += ["--pin", "split", "--cpus", f"{i % ncpu},{(i + 1) % ncpu}"]
    elif mode == "same":
        args += ["--pin", "early", "--cpus", "0"]
    return args


def csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def main(argv=None):
    p = argparse.ArgumentParser(description="pinned vs unpinned waitress threads=1 processes")
    p.add_argument("--workers", type=csv(int), default=[1, 2, 4])
    p.add_argument("--conns", type=csv(int), default=[2, 8, 32])
    p.add_argument("--modes", type=csv(str), default=["none", "auto"])
    p.add_argument("--shapes", type=csv(str), default=["keepalive", "close"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    p.add_argument("--app", default="bench.apps:hello")
    p.add_argument("--switch-interval", type=float, default=None)
    args = p.parse_args(argv)
    for m in args.modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if args.modes[0] != "none" and "none" in args.modes:
        args.modes.remove("none")
        args.modes.insert(0, "none")
    ncpu = len(os.sched_getaffinity(0))

    print(f"# machine: {common.machine_summary()}")
    print(f"# app {args.app}, {args.rounds} rounds x {args.duration}s, modes {args.modes}, "
          f"switch interval {args.switch_interval or 'default'}")
    for n in args.workers:
        sets = {}
        for mode in args.modes:
            ports = [common.free_port() for _ in range(n)]
            servers = [
                common.python_server(
                    f"{mode}-{i}",
                    server_args(mode, i, port, args.app, ncpu, args.switch_interval),
                    [port],
                )
                for i, port in enumerate(ports)
            ]
            for s in servers:
                s.wait_ready()
            sets[mode] = (ports, servers)

        results = {}  # (c, shape, mode) -> [WrkResult]
        for rnd in range(args.rounds):
            for c in args.conns:
                for shape in args.shapes:
                    k = rnd % len(args.modes)
                    order = args.modes[k:] + args.modes[:k]
                    for mode in order:
                        r = common.run_wrk(sets[mode][0], c, args.duration, close=(shape == "close"))
                        results.setdefault((c, shape, mode), []).append(r)
                        print(
                            f"  N={n} c={c} {shape:9s} {mode:5s} round {rnd + 1}: "
                            f"{r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                            f"p99 {r['p99_ms']:6.2f} ms  errors {r.error_count} non2xx {r['non2xx']}",
                            file=sys.stderr,
                            flush=True,
                        )
        for _ports, servers in sets.values():
            for s in servers:
                s.stop()

        headers = ["N", "c", "shape"]
        for mode in args.modes:
            headers += [f"{mode} req/s", f"{mode} p50", f"{mode} p99"]
        for mode in args.modes[1:]:
            headers.append(f"{mode}/none")
        headers.append("errors")
        rows = []
        for c in args.conns:
            for shape in args.shapes:
                row = [n, c, shape]
                med = {}
                errors = 0
                for mode in args.modes:
                    rs = results[(c, shape, mode)]
                    med[mode] = common.median([r["rps"] for r in rs])
                    row += [
                        med[mode],
                        common.median([r["p50_ms"] for r in rs]),
                        common.median([r["p99_ms"] for r in rs]),
                    ]
                    errors += sum(r.error_count + r["non2xx"] for r in rs)
                for mode in args.modes[1:]:
                    base = med.get("none") or med[args.modes[0]]
                    row.append(f"{med[mode] / base:.2f}x" if base else "-")
                row.append(errors)
                rows.append(row)
        print(f"\n## N={n} workers (req/s and latency in ms: medians of {args.rounds} rounds)")
        common.print_table(headers, rows)


if __name__ == "__main__":
    main()
