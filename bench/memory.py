"""Per-worker memory: prefork_waitress lazy/preload vs gunicorn sync with/without --preload.

Run from the repo root:  python bench/memory.py [--workers 4] [--requests 200]

App: bench/memapp.py (imports email, json, xml.dom.minidom, http.client,
decimal, asyncio, sqlite3 and builds a ~20 MB list of strings at import).
Every contender is started, each worker port (gunicorn: its one port) gets
``--requests`` requests per worker, then /proc/PID/smaps_rollup is read for
the master and each worker (children of the master):
private = Private_Clean + Private_Dirty, shared = Shared_Clean + Shared_Dirty,
Pss and Rss. Values in MiB; "total Pss" = master + all workers.
"""

import argparse
import http.client
import os
import sys
import time

try:
    from bench import common
except ImportError:  # python bench/memory.py
    import common

APP = "bench.memapp:app"


def rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024.0
    return {
        "rss": out.get("Rss", 0.0),
        "pss": out.get("Pss", 0.0),
        "shared": out.get("Shared_Clean", 0.0) + out.get("Shared_Dirty", 0.0),
        "private": out.get("Private_Clean", 0.0) + out.get("Private_Dirty", 0.0),
    }


def children(pid):
    kids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return sorted(set(kids))


def hit(port, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(n):
            conn.request("GET", "/", headers={"Connection": "close"})
            resp = conn.getresponse()
            resp.read()
            conn.close()
    finally:
        conn.close()


def start(kind, n):
    if kind.startswith("gunicorn"):
        port = common.free_port()
        argv = [sys.executable, "-m", "gunicorn", "-k", "sync", "-w", str(n), "--bind", f"127.0.0.1:{port}",
                "--log-level", "warning"] + (["--preload"] if kind.endswith("preload") else []) + [APP]
        return common.Server(kind, argv, [port]), [port]
    base = common.free_port_range(n)
    ports = list(range(base, base + n))
    argv = [sys.executable, "-m", "prefork_waitress", "--workers", str(n), "--base-port", str(base),
            "--log-level", "warning"] + (["--preload"] if kind.endswith("preload") else []) + [APP]
    return common.Server(kind, argv, ports), ports


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--requests", type=int, default=200, help="requests per worker before measuring")
    args = p.parse_args(argv)
    print(f"# machine: {common.machine_summary()}; N={args.workers}, app {APP}, MiB")
    headers = ["contender", "worker private", "worker shared", "worker Pss", "worker Rss",
               "master private", "master Pss", "total Pss"]
    rows = []
    for kind in ("prefork lazy", "prefork preload", "gunicorn", "gunicorn preload"):
        server, ports = start(kind.replace(" ", "-"), args.workers)
        try:
            server.wait_ready(timeout=60)
            for port in ports:
                hit(port, args.requests * (args.workers if len(ports) == 1 else 1))
            time.sleep(1.0)  # let the last responses' garbage go
            workers = children(server.pid)
            if len(workers) != args.workers:
                raise RuntimeError(f"{kind}: expected {args.workers} workers, found {workers}")
            ws = [rollup(w) for w in workers]
            m = rollup(server.pid)
        finally:
            server.stop()
        avg = {k: sum(w[k] for w in ws) / len(ws) for k in ws[0]}
        rows.append([kind, avg["private"], avg["shared"], avg["pss"], avg["rss"], m["private"], m["pss"],
                     m["pss"] + sum(w["pss"] for w in ws)])
        print(f"  {kind}: workers {[round(w['private'], 1) for w in ws]} private MiB", file=sys.stderr, flush=True)
    common.print_table(headers, rows)


if __name__ == "__main__":
    main()
