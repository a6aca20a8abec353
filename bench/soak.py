"""Soak: random SIGKILLs of workers under client load; nothing refused, nothing leaked or orphaned.

    python bench/soak.py [--duration 60] [--workers 2] [--threads 4] [--kill-every 0.5]

Client threads on 127.0.0.1 (half keep-alive, half a fresh connection per
request) run against every port while a random serving worker is killed
with SIGKILL every ``--kill-every`` seconds on average. At the end the
master's fd count is compared with its count before the kills, then the
master itself is SIGKILLed and its workers must all be gone.

Only requests in flight on (or kept alive with) a killed worker may fail, so
failures stay below kills x threads; refused connections must be 0.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

from bench._harness import Cluster, Load, port_free  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of kills under load (default 60)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--kill-every", type=float, default=0.5, help="mean seconds between kills")
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
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
    report(args, load, result)
    print(f"master log: {cluster.log_path}")
    good = load.refused == 0 and not result["orphans"] and not result["ports_open"]
    good = good and result["fds_before"] == result["fds_after"] and load.failed <= result["kills"] * args.threads
    return 0 if good else 1


def report(args: argparse.Namespace, load: Load, r: dict) -> None:
    bound = r["kills"] * args.threads
    print(f"soak: {args.workers} workers, {args.threads} client threads, {r['elapsed']:.1f} s, ", end="")
    print(f"a kill every ~{args.kill_every} s")
    print(f"  requests ok          {load.ok}  ({load.ok / r['elapsed']:.0f}/s)")
    print(f"  requests failed      {load.failed}  {load.failures or ''} (bound: kills x threads = {bound})")
    print(f"  connections refused  {load.refused}  (must be 0)")
    print(f"  workers killed       {r['kills']}")
    print(f"  respawns             {r['respawns'] - args.workers}")
    print(f"  master fds           before {r['fds_before']}, after {r['fds_after']}")
    print(f"  master SIGKILL       last worker gone after {r['gone_after']:.3f} s; ports still open: {r['ports_open']}")
    print(f"  orphans              {len(r['orphans'])}  (must be 0)")


if __name__ == "__main__":
    sys.exit(main())
