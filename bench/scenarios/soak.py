"""Soak: random SIGKILLs of workers under client load; nothing refused, nothing leaked or orphaned.

    python -m bench soak [--duration 60] [--workers 2] [--threads 4] [--kill-every 0.5]

Client threads on 127.0.0.1 (half keep-alive, half a fresh connection per
request) run against every port while a random serving worker is killed
with SIGKILL every ``--kill-every`` seconds on average. At the end the
master's fd count is compared with its count before the kills, then the
master itself is SIGKILLed and its workers must all be gone.

Only requests in flight on (or kept alive with) a killed worker may fail, so
failures stay below kills x threads; refused connections must be 0 (else exit 1).
"""

import argparse
import random
import time

from bench.harness import Cluster, Load, port_free

NAME = "soak"
HELP = "random SIGKILLs of workers under client load: nothing refused, no fd leaked, no orphan (exit 1 if not)"
SMOKE = {"duration": 3.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of kills under load (default 60)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--kill-every", type=float, default=0.5, help="mean seconds between kills")
    parser.add_argument("--seed", type=int, default=None)


def run(args: argparse.Namespace) -> list:
    rng = random.Random(args.seed)
    cluster = Cluster(workers=args.workers, base_port=0, graceful_timeout=10)
    try:
        cluster.wait_ready()
        result = {"fds_before": cluster.fds(), "kills": 0}
        load = Load(cluster.ports, threads=args.threads).start()
        started = time.monotonic()
        deadline = started + args.duration
        while time.monotonic() < deadline:
            time.sleep(min(rng.expovariate(1 / args.kill_every), max(0.0, deadline - time.monotonic())))
            if cluster.kill_worker(rng.randrange(args.workers)) is not None:
                result["kills"] += 1
        load.stop()
        result["elapsed"] = time.monotonic() - started
        cluster.wait(lambda: cluster.all_serving() and cluster.count("started") >= args.workers + result["kills"])
        result["fds_after"] = cluster.fds()
        result["respawns"] = cluster.count("started")
        result["gone_after"] = cluster.kill_master()
        result["orphans"] = cluster.orphans()
        result["ports_open"] = [p for p in cluster.ports if not port_free(p)]
    finally:
        cluster.close()
    args.notes.append(f"master log: {cluster.log_path}")
    bound = result["kills"] * args.threads
    checks = [
        (load.refused == 0, f"{load.refused} connections refused (must be 0)"),
        (not result["orphans"], f"orphans {result['orphans']}"),
        (not result["ports_open"], f"ports still open after the master's SIGKILL: {result['ports_open']}"),
        (result["fds_before"] == result["fds_after"], f"master fds {result['fds_before']} -> {result['fds_after']}"),
        (load.failed <= bound, f"{load.failed} requests failed, more than kills x threads = {bound}"),
    ]
    args.failures.extend(what for good, what in checks if not good)
    return [{"table": f"{args.workers} workers, {args.threads} client threads, a kill every ~{args.kill_every} s",
             "seconds": result["elapsed"], "requests ok": load.ok, "ok/s": load.ok / result["elapsed"],
             "failed": load.failed, "failures": str(load.failures or ""), "bound (kills x threads)": bound,
             "refused": load.refused, "kills": result["kills"], "respawns": result["respawns"] - args.workers,
             "master fds before": result["fds_before"], "after": result["fds_after"],
             "last worker gone after master SIGKILL s": result["gone_after"],
             "ports open": len(result["ports_open"]), "orphans": len(result["orphans"])}]
