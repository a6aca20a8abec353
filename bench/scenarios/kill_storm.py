"""Kill storm: throughput while 30 serving workers are SIGKILLed in 6 s, against no kills.

    python -m bench kill_storm [--kills 30] [--seconds 6] [--workers 2] [--threads 4] [--wrk]

The same client load runs for ``--seconds`` without kills, then for
``--seconds`` while a serving worker is killed every ``seconds / kills``. A
worker that was serving is replaced at once, so the ratio should stay well
above one half. The load is Python client threads on 127.0.0.1 (half
keep-alive; they count refused connections exactly), or with ``--wrk`` one
``wrk -c THREADS`` per port, which saturates the workers (wrk's "connect"
errors stand for refused connections). Exit 1 when the ratio is not above one half or a
connection was refused.
"""

import argparse
import math
import random
import subprocess
import time
from typing import Optional

from bench.harness import Cluster, Load, parse_wrk_text, wrk_path

NAME = "kill_storm"
HELP = "throughput while serving workers are SIGKILLed (30 in 6 s) against no kills; ratio must stay > 0.5"
# the smoke proves the scenario runs: on a loaded box (CI's parallel pass) its ratio means little
SMOKE = {"kills": 4, "seconds": 1.5, "min_ratio": 0.2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=6.0, help="per phase")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="client threads, or wrk connections per port")
    parser.add_argument("--wrk", action="store_true", help="load with wrk instead of Python threads")
    parser.add_argument("--min-ratio", type=float, default=0.5, help="the verdict: storm/no-kills above this")


def phase(cluster: Cluster, load: Optional[Load], seconds: float, kills: int, rng: random.Random) -> tuple:
    """Run ``seconds`` of load with ``kills`` evenly spaced SIGKILLs; (requests/s, kills done)."""
    ok_before, done = load.snapshot() if load else 0, 0
    started = time.monotonic()
    for i in range(1, kills + 1):
        time.sleep(max(0.0, started + i * seconds / (kills + 1) - time.monotonic()))
        if cluster.kill_worker(rng.choice(sorted(cluster.current) or [0])) is not None:
            done += 1
    time.sleep(max(0.0, started + seconds - time.monotonic()))
    return ((load.snapshot() if load else 0) - ok_before) / (time.monotonic() - started), done


def wrk_phase(cluster: Cluster, args: argparse.Namespace, kills: int, rng: random.Random) -> tuple:
    """One phase under wrk: (requests/s summed over ports, kills done, socket errors by kind)."""
    command = [wrk_path(), "-t1", f"-c{args.threads}", f"-d{math.ceil(args.seconds)}s"]  # wrk takes whole seconds
    clients = [
        subprocess.Popen(command + [f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
        for port in cluster.ports
    ]
    _, done = phase(cluster, None, args.seconds, kills, rng)
    rate, errors = 0.0, dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    for client in clients:
        out = client.communicate(timeout=args.seconds + 30)[0]
        if client.returncode != 0:
            raise RuntimeError(f"wrk failed ({client.returncode}): {out.strip()}")
        result = parse_wrk_text(out)
        rate += result["rps"]
        for kind, count in result["errors"].items():
            errors[kind] += count
    return rate, done, errors


def settle(cluster: Cluster, args: argparse.Namespace, kills: int) -> None:
    """Wait until every slot serves again and every kill was replaced."""
    cluster.wait(lambda: cluster.all_serving() and cluster.count("started") >= args.workers + kills)


def storm_ratio(args: argparse.Namespace, normal: float, storm: float) -> float:
    """Requests/s under the storm over requests/s without it; a failure at or under --min-ratio."""
    ratio = storm / normal
    if ratio <= args.min_ratio:
        args.failures.append(f"ratio {ratio:.2f} under the storm, must be > {args.min_ratio:g}")
    return ratio


def run(args: argparse.Namespace) -> list:
    if args.wrk:
        return run_wrk(args)
    rng = random.Random(1)
    cluster = Cluster(workers=args.workers, base_port=0, graceful_timeout=10)
    try:
        cluster.wait_ready()
        load = Load(cluster.ports, threads=args.threads).start()
        time.sleep(1.0)  # warm up
        normal, _ = phase(cluster, load, args.seconds, 0, rng)
        storm, kills = phase(cluster, load, args.seconds, args.kills, rng)
        load.stop()
        settle(cluster, args, kills)
    finally:
        cluster.close()
    ratio = storm_ratio(args, normal, storm)
    if load.refused:
        args.failures.append(f"{load.refused} connections refused (must be 0)")
    title = f"{args.workers} workers, {args.threads} client threads, {args.seconds:g} s per phase"
    return [{"table": title, "phase": "no kills", "requests/s": normal, "ratio": 1.0},
            {"table": title, "phase": f"{kills} SIGKILLs", "requests/s": storm, "ratio": ratio,
             "failed": load.failed, "failures": str(load.failures or ""), "refused": load.refused}]


def run_wrk(args: argparse.Namespace) -> list:
    rng = random.Random(1)
    cluster = Cluster(workers=args.workers, base_port=0, graceful_timeout=10)
    try:
        cluster.wait_ready()
        normal, _, quiet_errors = wrk_phase(cluster, args, 0, rng)
        storm, kills, errors = wrk_phase(cluster, args, args.kills, rng)
        settle(cluster, args, kills)
    finally:
        cluster.close()
    ratio = storm_ratio(args, normal, storm)
    if errors.get("connect"):
        args.failures.append(f"{errors['connect']} wrk connect errors (must be 0)")
    title = f"wrk: {args.workers} workers, wrk -c{args.threads} per port, {args.seconds:g} s per phase"
    return [{"table": title, "phase": "no kills", "requests/s": normal, "ratio": 1.0,
             "socket errors": str(quiet_errors)},
            {"table": title, "phase": f"{kills} SIGKILLs", "requests/s": storm, "ratio": ratio,
             "socket errors": str(errors)}]
