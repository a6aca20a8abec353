"""What a Prometheus scrape costs the master: CPU and latency of GET /metrics, by worker count.

Run from the repo root:
    python bench/metrics_scrape.py [--workers 2,16] [--scrapes 200]

For each N it starts ``Master(bench.apps:hello, workers=N, metrics_port=P)``
through bench/prefork_launcher.py, sends some requests so the counters are
not empty, then scrapes /metrics ``--scrapes`` times one after the other and
reports the master's utime+stime per scrape (from /proc; 10 ms ticks, hence
many scrapes), the median and max wall time of one scrape, and the body size.
"""

import argparse
import http.client
import sys
import time

try:
    from bench import common
    from bench.common import cpu
except ImportError:  # python bench/metrics_scrape.py
    import common
    from common import cpu


def scrape(port):
    conn = http.client.HTTPConnection(common.HOST, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
        return body
    finally:
        conn.close()


def measure(n, scrapes):
    base = common.free_port_range(n)
    metrics_port = common.free_port()
    argv = [sys.executable, "bench/prefork_launcher.py", "--workers", str(n), "--base-port", str(base),
            "--metrics-port", str(metrics_port), "bench.apps:hello"]
    server = common.Server(f"prefork-{n}", argv, list(range(base, base + n)), env={"PYTHONPATH": common.REPO_ROOT})
    try:
        server.wait_ready()
        common.run_wrk(server.ports, 8, 1)
        before = cpu(server.pid)
        times = []
        for _ in range(scrapes):
            started = time.perf_counter()
            body = scrape(metrics_port)
            times.append(time.perf_counter() - started)
        used = cpu(server.pid) - before
    finally:
        server.stop()
    return [n, used / scrapes * 1000, common.median(times) * 1000, max(times) * 1000, len(body)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="2,16")
    p.add_argument("--scrapes", type=int, default=200)
    args = p.parse_args(argv)
    print(f"# machine: {common.machine_summary()}; {args.scrapes} scrapes per N")
    rows = [measure(int(n), args.scrapes) for n in args.workers.split(",")]
    common.print_table(["N", "master CPU ms/scrape", "median ms", "max ms", "bytes"], rows)


if __name__ == "__main__":
    main()
