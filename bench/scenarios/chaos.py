"""Chaos run: GET and POST load through nginx and HAProxy while a seeded random schedule of faults hits the
master and its workers; every failure that is not a killed worker's in-flight request is a defect.

    python -m bench chaos [--minutes 10 | --seconds 60] [--seed N] [--no-fd-dips] [--no-haproxy-reloads]

The frontends are built from examples/nginx.conf and examples/haproxy.cfg as README tells users
(nginx reloaded by ``on_ports_changed``, HAProxy driven through its Runtime API). Faults: SIGKILL and
SIGSTOP/SIGCONT of workers, HUP storms (some after a code change), TTOU/TTIN flapping, max_rss
recycling (``/bloat``), nginx and HAProxy reloads, fd-limit dips on the master (``prlimit``), a full
log filesystem (a small tmpfs holding the output and the access log; skipped if it cannot be mounted),
idle and garbage connections to the control socket and the metrics port. ``max_requests`` recycling
and ``refork_after`` rounds run all along. At the end the code changes once more, one reload runs, and
every slot must answer the new version. It prints the seed; the same seed replays the same schedule.
The report goes into the run's JSON (``details``); exit 1 on any defect (the JSON's ``failures``).
HAProxy's 503s "no server" in the RELOAD_GAP seconds after one of its reloads are counted apart
(``reload_gap_503``): HAProxy drops the servers added at run time when it reloads and the master puts
them back within the bound README states (``WATCH_INTERVAL``).
"""

import argparse
import random
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from bench import harness
from bench.chaos_faults import FAULTS, FD_SLACK, SLOW_FAULTS, STALL_LIMIT, WORKERS, Chaos, Sampler
from bench.chaos_verdict import classify, master_log_defects, reload_gaps, span, summarize
from bench.harness import Load

NAME = "chaos"
HELP = ("a seeded schedule of faults (kills, stops, HUP storms, flaps, max_rss, frontend reloads, fd dips, a full "
        "log, idle connections) under load through nginx and HAProxy; exit 1 on any defect")
SMOKE = {"seconds": 5.0, "seed": 2207, "faults": "kill,hup_storm,nginx_reload"}



def schedule(seed: int, seconds: float, kinds: List[str]) -> List[Tuple[float, str, Dict[str, Any]]]:
    """The faults of a run, (offset in seconds, kind, parameters): a pure function of the seed."""
    rng = random.Random(seed)
    weights = [1 if kind in SLOW_FAULTS else 2 for kind in kinds]
    plan, at = [], rng.uniform(1.0, 2.0)
    while at < seconds:
        kind = rng.choices(kinds, weights)[0]
        params = {
            "slot": rng.randrange(WORKERS),
            "hold": round(rng.uniform(0.3, 2.0), 2),
            "count": rng.randint(3, 12),
            "gap": round(rng.uniform(0.03, 0.15), 3),
            "bump": rng.random() < 0.5,
            "conns": rng.randint(4, 24),
        }
        plan.append((round(at, 2), kind, params))
        at += rng.uniform(0.8, 3.0)
    return plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="instead of --minutes")
    parser.add_argument("--seed", type=int, default=None, help="replays a schedule (default: a random seed)")
    parser.add_argument("--threads", type=int, default=2, help="client threads per frontend")
    parser.add_argument("--no-fd-dips", dest="fd_dips", action="store_false", help="leave the master's fd limit alone")
    parser.add_argument("--no-haproxy-reloads", dest="haproxy_reloads", action="store_false")
    parser.add_argument("--no-full-log", dest="full_log", action="store_false", help="no tmpfs for the logs")
    parser.add_argument(
        "--strict-probes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a metrics scrape or control request refused while idle connections are open is a defect",
    )
    parser.add_argument("--faults", help="only these kinds, comma-separated: which drives a trend")


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The run's report goes to ``args.details``, its defects to ``args.failures``; rows: per frontend, faults."""
    seconds = args.seconds if args.seconds is not None else 60.0 * (args.minutes if args.minutes is not None else 10.0)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    kinds = [k for k in FAULTS if (k != "fd_dip" or args.fd_dips) and (k != "haproxy_reload" or args.haproxy_reloads)]
    if not args.full_log:
        kinds.remove("full_log")
    if args.faults:
        wanted = args.faults.split(",")
        unknown = sorted(set(wanted) - set(FAULTS))
        if unknown:
            raise SystemExit(f"--faults: unknown kinds {unknown}; known: {', '.join(FAULTS)}")
        kinds = [k for k in kinds if k in wanted]
    plan = schedule(seed, seconds, kinds)
    harness.progress(f"chaos: seed {seed}, {seconds:g} s, {len(plan)} faults of {', '.join(kinds)}")
    workdir = tempfile.mkdtemp(prefix="prefork-chaos-")
    chaos = Chaos(args, workdir)
    report: Dict[str, Any] = {"seed": seed, "seconds": seconds}
    loads: List[Load] = []
    sampler: Optional[Sampler] = None
    try:
        chaos.start()
        assert chaos.cluster is not None
        front = chaos.frontends
        sampler = Sampler(chaos.cluster, lambda: sum(load.snapshot() for load in loads))
        first = chaos.settled(sampler)
        for port in (front.nginx_port, front.haproxy_port):
            loads.append(Load([port], threads=args.threads, post_every=2, retry_stale=True).start())
        sampler.start()
        began = report["_began"] = time.monotonic()
        for at, kind, params in plan:
            time.sleep(max(0.0, began + at - time.monotonic()))  # the schedule's clock
            if chaos.cluster.proc.poll() is not None:
                break
            target = chaos.cluster.current.get(params["slot"])
            harness.progress(f"  {time.monotonic() - began:6.1f} s  {kind} (slot {params['slot']}, pid {target})")
            chaos.run_fault(kind, params)
        time.sleep(max(0.0, began + seconds - time.monotonic()))
        report["longest_stall_s"] = stall = sampler.longest_stall()
        if stall > STALL_LIMIT:
            chaos.defects.append(f"no request was answered for {stall:.0f} s (more than {STALL_LIMIT:g} s)")
        if chaos.cluster.proc.poll() is None:
            chaos.final_check()
        for load in loads:
            load.stop()
        sampler.stop()
        last = chaos.settled(sampler)
        if first and last:
            report["master_fds"] = [first[1], last[1]]
            report["master_rss_mib"] = [round(first[2] / 1024, 1), round(last[2] / 1024, 1)]
            report["master_cpu_s"] = round(last[3] - first[3], 2)
            if last[1] > first[1] + FD_SLACK:
                chaos.defects.append(f"the master's fds grew from {first[1]} to {last[1]}")
    except Exception as exc:  # the run itself broke: a defect, with its seed
        chaos.defects.append(f"the run failed: {type(exc).__name__}: {exc}")
    finally:
        for load in loads:
            load.stop()
        if sampler is not None:
            sampler.stop()
        chaos.stop(report)
    in_flight = 0
    for name, load in zip(("nginx", "haproxy"), loads):
        gaps, load = reload_gaps(load, chaos.haproxy_reloads if name == "haproxy" else [])
        began = report.get("_began", 0.0)
        kept: List[Tuple[float, float]] = []
        killed, other = classify(load, chaos.kills, kept)
        in_flight += killed
        report[name] = {
            "ok": load.ok,
            "posts": load.posts,
            "killed_in_flight": killed,
            "reload_gap_503": gaps,
            "other_failures": len(other),
            # when they happened, seconds after the schedule began (first start, last end): find the fault
            "other_failures_between_s": span(kept, began),
            "refused": load.refused,
            "stale_keepalive_retries": load.stale_retries,
        }
        if other:
            chaos.defects.append(f"{len(other)} failed requests through {name} not explained by a kill: {other[:5]}")
    report.pop("_began", None)
    report["faults"] = chaos.done
    report["skipped"] = chaos.skipped
    report["probe_failures"] = chaos.probe_failures
    if chaos.probe_failures and args.strict_probes:
        chaos.defects.append(
            f"{len(chaos.probe_failures)} probes failed while idle connections were open: {chaos.probe_failures[:3]}"
        )
    if chaos.cluster is not None:
        chaos.defects += [f"master log: {d}" for d in master_log_defects(chaos.cluster.log_path)]
        report["master_log"] = chaos.cluster.log_path
    report["defects"] = chaos.defects
    over_time = summarize(sampler.samples if sampler else [])
    for line in over_time:
        harness.progress(line)
    shutil.rmtree(workdir, ignore_errors=True)
    args.details.update(report)
    args.details["master_over_time"] = over_time[1:]
    if chaos.defects:
        args.failures += chaos.defects + [f"{len(chaos.defects)} defects; replay with --seed {seed}"]
    else:
        args.notes.append(f"no defect (seed {seed}; {in_flight} requests failed in flight on killed workers)")
    title = f"seed {seed}, {seconds:g} s: requests per frontend"
    rows: List[Dict[str, Any]] = [
        {"table": title, "frontend": name,
         **{k: v for k, v in report[name].items() if k != "other_failures_between_s"}}
        for name in ("nginx", "haproxy") if name in report
    ]
    rows += [{"table": "faults run", "fault": kind, "times": count} for kind, count in chaos.done.items()]
    rows += [{"table": "faults skipped", "fault": kind, "why": why} for kind, why in chaos.skipped.items()]
    master = {k: report[k] for k in ("longest_stall_s", "master_fds", "master_rss_mib", "master_cpu_s") if k in report}
    if master:
        rows.append({"table": "the master (first and last settled moment)",
                     **{k: (str(v) if isinstance(v, list) else v) for k, v in master.items()},
                     "defects": len(chaos.defects)})
    return rows

