"""What a Prometheus scrape costs the master: CPU and latency of GET /metrics, by worker count.

    python -m bench metrics_scrape [--workers 2,16] [--scrapes 200]

For each N it starts ``python -m prefork_waitress --workers N --metrics-port P bench.apps:hello``,
sends some requests so the counters are
not empty, then scrapes /metrics ``--scrapes`` times one after the other and
reports the master's utime+stime per scrape (from /proc; 10 ms ticks, hence
many scrapes), the median and max wall time of one scrape, and the body size.
"""

import sys
import time

from bench import harness

NAME = "metrics_scrape"
HELP = "what a Prometheus scrape costs the master: CPU and latency of GET /metrics, by worker count"
SMOKE = {"workers": [2], "scrapes": 10}


def add_arguments(p):
    p.add_argument("--workers", type=harness.csv(int), default=[2, 16], help="worker counts (default 2,16)")
    p.add_argument("--scrapes", type=int, default=200, help="scrapes per N (default %(default)s)")


def cpu(pid):
    return harness.cpu_seconds(pid, default=0.0)


def scrape(port):
    status, body = harness.http_get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return body


def measure(n, scrapes):
    base = harness.free_port_range(n)
    metrics_port = harness.free_port()
    argv = [sys.executable, "-m", "prefork_waitress", "--workers", str(n), "--base-port", str(base),
            "--metrics-port", str(metrics_port), "bench.apps:hello"]
    server = harness.Proc(f"prefork-{n}", argv, list(range(base, base + n)))
    try:
        server.wait_ready()
        harness.run_wrk(server.ports, 8, 1)
        before = cpu(server.pid)
        times = []
        for _ in range(scrapes):
            started = time.perf_counter()
            body = scrape(metrics_port)
            times.append(time.perf_counter() - started)
        used = cpu(server.pid) - before
    finally:
        server.stop()
    return {"table": f"{scrapes} scrapes per N, one after the other", "N": n,
            "master CPU ms/scrape": used / scrapes * 1000, "median ms": harness.median(times) * 1000,
            "max ms": max(times) * 1000, "bytes": len(body)}


def run(args):
    return [measure(n, args.scrapes) for n in args.workers]
