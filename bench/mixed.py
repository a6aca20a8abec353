"""Mixed load: fast requests while slow ones keep some workers busy, behind the frontends we ship (issue 18).

Run from the repo root (or ``python -m bench.mixed``)::

    python bench/mixed.py                                   # ~8 min
    python bench/mixed.py --duration 2 --rounds 1 --fractions 0,50   # a smoke run

N = --workers (10) processes of ``bench.apps:mixed`` (``/slow?s=0.5`` sleeps,
``/`` answers at once). For each slow fraction F (0, 10, 50 % of the workers),
round(F x N) client threads each keep one slow request always in flight (a
new connection each time, so they spread over nginx's processes), and wrk
sends fast requests (c = --fast-conns, keep-alive) through the frontend for
--duration seconds. Contenders, all started at once and loaded one after the
other in an order rotated every round:

  nginx            prefork behind examples/nginx.conf as shipped (least_conn, zone),
                   the upstream file written by the master; worker_processes
                   = --nginx-workers (2, what Debian's "auto" gives on 2 cores)
  nginx-rr         the same without least_conn and zone: the config shipped before (round-robin)
  haproxy          prefork behind examples/haproxy.cfg as shipped (leastconn, timeout queue),
                   servers added by the master through the Runtime API (maxconn 1)
  haproxy-rr       the same with "balance roundrobin" and no maxconn (--haproxy-maxconn 0):
                   what was shipped before
  gunicorn-sync    gunicorn -k sync -w N, one shared socket, behind the same nginx (examples/nginx.conf)
  gunicorn-gthread gunicorn -k gthread -w N --threads 4, behind the same nginx

Printed per fraction: fast req/s (and its ratio to gunicorn-sync's), fast
p50 / p99 / max, slow requests completed per second, errors (wrk errors and
non-2xx, failed slow requests); medians over --rounds. The load averages
before and after are printed too: figures only count from a quiet box.
"""

import argparse
import http.client
import os
import re
import socket
import sys
import tempfile
import threading
import time

try:
    from bench import _harness, common
except ImportError:  # run as a script: python bench/mixed.py
    import _harness
    import common

APP = "bench.apps:mixed"
CONTENDERS = ("nginx", "nginx-rr", "haproxy", "haproxy-rr", "gunicorn-sync", "gunicorn-gthread")
EXAMPLES = os.path.join(common.REPO_ROOT, "examples")

def _example(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return f.read()


def _substitute(text, pattern, new):
    """``text`` with the one match of ``pattern`` replaced by ``new``: the example must still have it."""
    changed, count = re.subn(pattern, lambda _match: new, text)
    if count != 1:
        raise RuntimeError(f"examples changed: expected one {pattern!r}, found {count}")
    return changed


def _tempdir(prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path


def nginx_front(name, upstream_file, workers, round_robin=False):
    """nginx running examples/nginx.conf (its upstream file ``upstream_file``) on a free port."""
    binary = common.nginx_path()
    if binary is None:
        raise RuntimeError("nginx not found: apt-get install -y nginx-light")
    port = common.free_port()
    conf_dir = _tempdir("bench-mixed-nginx-")
    site = _substitute(_example("nginx.conf"), r"listen 80;", f"listen {common.HOST}:{port};")
    site = _substitute(site, r"include /etc/nginx/prefork-upstream.conf;", f"include {upstream_file};")
    if round_robin:  # the config shipped before issue 18
        site = _substitute(site, r"\n *least_conn;", "")
        site = _substitute(site, r"\n *zone prefork_app 64k;", "")
    conf = os.path.join(conf_dir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(common.nginx_conf(workers, conf_dir, site, user="user root;" if os.geteuid() == 0 else ""))
    srv = common.Server(name, [binary, "-p", conf_dir, "-c", conf], [port])
    srv.cleanup_dirs.append(conf_dir)
    return srv


def haproxy_front(name, round_robin=False):
    """haproxy -db running examples/haproxy.cfg on a free port; (server, its admin socket path)."""
    binary = next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
    if binary is None:
        raise RuntimeError("haproxy not found: apt-get install -y haproxy")
    port = common.free_port()
    conf_dir = _tempdir("bench-mixed-haproxy-")
    sock = os.path.join(conf_dir, "admin.sock")
    cfg = _substitute(_example("haproxy.cfg"), r"stats socket /run/haproxy/admin.sock mode 660",
                      f"stats socket {sock} mode 600")
    cfg = _substitute(cfg, r"bind :80\n", f"bind {common.HOST}:{port}\n")
    if round_robin:
        cfg = _substitute(cfg, r"balance leastconn", "balance roundrobin")
    conf = os.path.join(conf_dir, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(cfg)
    srv = common.Server(name, [binary, "-f", conf, "-db"], [port])
    srv.cleanup_dirs.append(conf_dir)
    return srv, sock


def _live_servers(sock):
    """How many servers of backend ``app`` are ready and up."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(sock)
        s.sendall(b"show servers state app\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = [line.split() for line in data.decode().splitlines() if line and not line.startswith("#")]
    # be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...: up (2) and ready (0)
    return sum(1 for fields in lines if len(fields) > 6 and fields[5] == "2" and fields[6] == "0")


def _wait(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {seconds} s")
        time.sleep(0.05)


class Contender:
    """One frontend + backend pair; ``port`` is where the load goes."""

    def __init__(self, name):
        self.name = name
        self.servers = []
        self.clusters = []
        self.port = None

    def stop(self):
        for cluster in self.clusters:
            cluster.close()
        for server in self.servers:
            server.stop()


def start(name, args):
    c = Contender(name)
    try:
        if name in ("nginx", "nginx-rr"):
            work = _tempdir("bench-mixed-upstream-")
            upstream = os.path.join(work, "upstream.conf")
            cluster = _harness.Cluster(cwd=common.REPO_ROOT, app=APP, workers=args.workers, base_port=0,
                                       upstream_file=upstream)
            c.clusters.append(cluster)
            cluster.wait_ready()
            _wait(lambda: os.path.exists(upstream), 10, "the upstream file")
            front = nginx_front(name, upstream, args.nginx_workers, round_robin=name == "nginx-rr")
            front.cleanup_dirs.append(work)
            c.servers.append(front)
            front.wait_ready()
        elif name in ("haproxy", "haproxy-rr"):
            front, sock = haproxy_front(name, round_robin=name == "haproxy-rr")
            c.servers.append(front)
            _wait(lambda: os.path.exists(sock), 10, "haproxy's stats socket")
            cluster = _harness.Cluster(cwd=common.REPO_ROOT, app=APP, workers=args.workers, base_port=0,
                                       haproxy_socket=sock, haproxy_backend="app",
                                       haproxy_maxconn=0 if name == "haproxy-rr" else 1)
            c.clusters.append(cluster)
            cluster.wait_ready()
            _wait(lambda: _live_servers(sock) == args.workers, 15, "every worker in haproxy")
            front.wait_ready()
        else:
            port = common.free_port()
            worker = "sync" if name == "gunicorn-sync" else "gthread"
            argv = [sys.executable, "-m", "gunicorn", "-k", worker, "-w", str(args.workers),
                    "--bind", f"{common.HOST}:{port}", "--log-level", "warning", APP]
            if worker == "gthread":
                argv[5:5] = ["--threads", "4"]
            backend = common.Server(name, argv, [port])
            c.servers.append(backend)
            backend.wait_ready(timeout=30)
            work = _tempdir("bench-mixed-upstream-")
            upstream = os.path.join(work, "upstream.conf")
            with open(upstream, "w") as f:
                f.write(f"server {common.HOST}:{port};\n")
            front = nginx_front(f"nginx-{name}", upstream, args.nginx_workers)
            front.cleanup_dirs.append(work)
            c.servers.append(front)
            front.wait_ready()
        c.port = front.ports[0]
    except BaseException:
        c.stop()
        raise
    return c


class SlowClients:
    """``count`` threads, each keeping one slow request in flight (a new connection each) until stopped."""

    def __init__(self, port, count, path):
        self.port, self.path = port, path
        self.done = self.failed = 0
        self.sent = [threading.Event() for _ in range(count)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 10
        for event in self.sent:
            if not event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("a slow client could not send its first request")
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.started
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, index):
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(common.HOST, self.port, timeout=30)
            try:
                conn.request("GET", self.path)
                self.sent[index].set()
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
            finally:
                conn.close()
            with self._lock:
                if ok:
                    self.done += 1
                else:
                    self.failed += 1


def one_run(contender, slow, args):
    with SlowClients(contender.port, slow, f"/slow?s={args.slow_seconds}") as clients:
        result = common.run_wrk([contender.port], args.fast_conns, args.duration, timeout_s=10)
    result["slow_per_s"] = clients.done / clients.elapsed if slow else None
    result["slow_failed"] = clients.failed
    return result


def _loadavg():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--fractions", type=_csv(int), default=[0, 10, 50], help="percent of the workers kept busy")
    p.add_argument("--contenders", type=_csv(str), default=list(CONTENDERS))
    p.add_argument("--fast-conns", type=int, default=2, help="wrk connections sending fast requests")
    p.add_argument("--slow-seconds", type=float, default=0.5)
    p.add_argument("--nginx-workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8, help="seconds of fast load per run")
    args = p.parse_args(argv)
    for name in args.contenders:
        if name not in CONTENDERS:
            p.error(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")
    print(f"# machine: {common.machine_summary()}")
    print(f"# load average before: {_loadavg()}")
    print(f"# N={args.workers} workers, fast c={args.fast_conns} (keep-alive), slow {args.slow_seconds} s, "
          f"{args.rounds} rounds x {args.duration} s, nginx worker_processes {args.nginx_workers}")
    running = {}
    results = {}
    try:
        for name in args.contenders:
            running[name] = start(name, args)
        for rnd in range(args.rounds):
            for fraction in args.fractions:
                slow = round(fraction * args.workers / 100)
                names = list(running)
                k = rnd % len(names)
                for name in names[k:] + names[:k]:
                    r = one_run(running[name], slow, args)
                    results.setdefault((fraction, name), []).append(r)
                    print(f"  {fraction:3d}% slow ({slow}) {name:16s} round {rnd + 1}: {r['rps']:8.0f} fast req/s "
                          f"p50 {r['p50_ms']:7.2f} p99 {r['p99_ms']:7.2f} max {r['max_ms']:7.1f} ms "
                          f"errors {r.error_count + r['non2xx']} slow failed {r['slow_failed']}",
                          file=sys.stderr, flush=True)
    finally:
        for contender in running.values():
            contender.stop()
    for fraction in args.fractions:
        slow = round(fraction * args.workers / 100)
        base = common.median([r["rps"] for r in results.get((fraction, "gunicorn-sync"), [])])
        print(f"\n## {fraction} % of the workers busy ({slow} of {args.workers} always on a "
              f"{args.slow_seconds} s request); medians of {args.rounds} rounds, latency in ms")
        rows = []
        for name in running:
            rs = results.get((fraction, name), [])
            if not rs:
                continue
            rps = common.median([r["rps"] for r in rs])
            rows.append([name, rps, f"{rps / base:.2f}x" if base else "-",
                         common.median([r["p50_ms"] for r in rs]), common.median([r["p99_ms"] for r in rs]),
                         common.median([r["max_ms"] for r in rs]), common.median([r["slow_per_s"] for r in rs]),
                         sum(r.error_count + r["non2xx"] + r["slow_failed"] for r in rs)])
        common.print_table(["contender", "fast req/s", "vs gunicorn-sync", "fast p50", "fast p99", "fast max",
                            "slow done/s", "errors"], rows)
    print(f"\n# load average after: {_loadavg()}")


def _csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


if __name__ == "__main__":
    main()
