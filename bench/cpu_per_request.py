"""Worker CPU time per request: prefork_waitress variants vs plain pinned waitress.

Run from the repo root:
    python bench/cpu_per_request.py [--workers 1] [--rounds 5] [--duration 3] [--shapes keepalive,close]
        [--contenders prefork,prefork-rt30,prefork-mr1000000,prefork-nofix,waitress-t1xN]
        [--reference-path /work/main --contenders prefork,prefork-ref,prefork-metrics,prefork-accesslog]

Throughput on a shared, noisy 2-core box moves by ±15 % between runs; the
CPU time the server processes spend per request served moves much less, so
this is the measure for "our per-request work costs <= 3 %". For each run
(one wrk, c=32 by default, alternating contenders, rotated order) it reads
utime+stime of the worker processes from /proc (prefork: every child of the
master, i.e. the workers with their waitress task and command threads; the
master is reported apart; plain waitress: the server processes) before and
after, and divides by the requests wrk completed. Medians over the rounds,
in microseconds per request, and the ratio to waitress-t1xN.
"""

import argparse
import os
import sys

try:
    from bench import common, throughput
except ImportError:  # python bench/cpu_per_request.py
    import common
    import throughput

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK




def worker_pids(contender, servers):
    if throughput.is_prefork(contender):
        return sorted(common.children(servers[0].pid))
    return [s.pid for s in servers]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=3)
    p.add_argument("--shapes", default="keepalive,close")
    p.add_argument("--app", default="bench.apps:hello")
    p.add_argument("--contenders", default="prefork,prefork-rt30,prefork-mr1000000,prefork-nofix,waitress-t1xN")
    p.add_argument("--reference-path", default=None, help="another checkout, run by the prefork-...-ref contenders")
    args = p.parse_args(argv)
    throughput.REFERENCE_PATH = args.reference_path
    contenders = args.contenders.split(",")
    shapes = args.shapes.split(",")
    n = args.workers
    print(f"# machine: {common.machine_summary()}; shared and noisy")
    print(f"# N={n}, c={args.conns}, {args.rounds} rounds x {args.duration} s, app {args.app}")
    running = {}
    for c in contenders:
        servers, ports, _ = throughput.start(c, n, args.app, None)
        for s in servers:
            s.wait_ready()
        running[c] = (servers, ports)
    results = {}
    try:
        for rnd in range(args.rounds):
            for shape in shapes:
                k = rnd % len(contenders)
                for c in contenders[k:] + contenders[:k]:
                    servers, ports = running[c]
                    pids = worker_pids(c, servers)
                    if len(pids) != n:
                        raise RuntimeError(f"{c}: expected {n} workers, found {pids}")
                    master = servers[0].pid if throughput.is_prefork(c) else None
                    before = sum(cpu(q) for q in pids)
                    mbefore = cpu(master) if master else 0.0
                    r = common.run_wrk(ports, args.conns, args.duration, close=(shape == "close"))
                    used = sum(cpu(q) for q in pids) - before
                    mused = (cpu(master) - mbefore) if master else 0.0
                    if worker_pids(c, servers) != pids:
                        raise RuntimeError(f"{c}: a worker was replaced during the run")
                    us = used / r["requests"] * 1e6
                    results.setdefault((shape, c), []).append((us, mused / r["requests"] * 1e6, r["rps"]))
                    print(f"  {shape} {c:20s} round {rnd + 1}: {us:6.1f} us CPU/request, "
                          f"master {mused * 1000:.0f} ms, {r['rps']:.0f} req/s, "
                          f"errors {r.error_count + r['non2xx']}", file=sys.stderr, flush=True)
    finally:
        for servers, _ in running.values():
            for s in servers:
                s.stop()
    rows = []
    for shape in shapes:
        base = common.median([x[0] for x in results.get((shape, "waitress-t1xN"), [])])
        for c in contenders:
            xs = results[(shape, c)]
            us = common.median([x[0] for x in xs])
            rows.append([shape, c.replace("waitress-t1xN", f"waitress-t1x{n}-pinned"), us,
                         f"{min(x[0] for x in xs):.1f}-{max(x[0] for x in xs):.1f}",
                         common.median([x[1] for x in xs]), common.median([x[2] for x in xs]),
                         f"{us / base:.3f}x" if base else "-"])
    common.print_table(["shape", "contender", "worker CPU us/request", "range", "master us/request",
                        "req/s", "vs waitress"], rows)


if __name__ == "__main__":
    main()
