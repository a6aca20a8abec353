"""Mixed load: fast requests while slow ones keep some workers busy, behind the frontends we ship (issue 18).

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


import http.client
import importlib.util
import os
import re
import socket
import sys
import threading
import time

from bench import harness

NAME = "mixed"
HELP = "fast requests while slow ones keep 0/10/50 % of the workers busy, behind the nginx/HAProxy configs we ship"
SMOKE = {"workers": 2, "fractions": [0, 50], "contenders": ["nginx", "haproxy", "gunicorn-sync"], "rounds": 1,
         "duration": 1, "slow_seconds": 0.2}

APP = "bench.apps:mixed"
CONTENDERS = ("nginx", "nginx-rr", "haproxy", "haproxy-rr", "gunicorn-sync", "gunicorn-gthread")
EXAMPLES = os.path.join(harness.REPO_ROOT, "examples")

def _example(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return f.read()


def _substitute(text, pattern, new):
    """``text`` with the one match of ``pattern`` replaced by ``new``: the example must still have it."""
    changed, count = re.subn(pattern, lambda _match: new, text)
    if count != 1:
        raise RuntimeError(f"examples changed: expected one {pattern!r}, found {count}")
    return changed


def nginx_front(name, upstream_file, workers, round_robin=False):
    """nginx running examples/nginx.conf (its upstream file ``upstream_file``) on a free port."""
    port = harness.free_port()
    site = _substitute(_example("nginx.conf"), r"listen 80;", f"listen {harness.HOST}:{port};")
    site = _substitute(site, r"include /etc/nginx/prefork-upstream.conf;", f"include {upstream_file};")
    if round_robin:  # the config shipped before issue 18
        site = _substitute(site, r"\n *least_conn;", "")
        site = _substitute(site, r"\n *zone prefork_app 64k;", "")
    return harness.nginx_with(name, site, port, workers, user="user root;" if os.geteuid() == 0 else "")


def haproxy_front(name, round_robin=False):
    """haproxy -db running examples/haproxy.cfg on a free port; (server, its admin socket path)."""
    binary = _haproxy_path()
    if binary is None:
        raise RuntimeError("haproxy not found: apt-get install -y haproxy")
    port = harness.free_port()
    conf_dir = harness.tempdir("bench-mixed-haproxy-")
    sock = os.path.join(conf_dir, "admin.sock")
    cfg = _substitute(_example("haproxy.cfg"), r"stats socket /run/haproxy/admin.sock mode 660",
                      f"stats socket {sock} mode 600")
    cfg = _substitute(cfg, r"bind :80\n", f"bind {harness.HOST}:{port}\n")
    if round_robin:
        cfg = _substitute(cfg, r"balance leastconn", "balance roundrobin")
    conf = os.path.join(conf_dir, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(cfg)
    srv = harness.Proc(name, [binary, "-f", conf, "-db"], [port])
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
            work = harness.tempdir("bench-mixed-upstream-")
            upstream = os.path.join(work, "upstream.conf")
            cluster = harness.Cluster(cwd=harness.REPO_ROOT, app=APP, workers=args.workers, base_port=0,
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
            cluster = harness.Cluster(cwd=harness.REPO_ROOT, app=APP, workers=args.workers, base_port=0,
                                       haproxy_socket=sock, haproxy_backend="app",
                                       haproxy_maxconn=0 if name == "haproxy-rr" else 1)
            c.clusters.append(cluster)
            cluster.wait_ready()
            _wait(lambda: _live_servers(sock) == args.workers, 15, "every worker in haproxy")
            front.wait_ready()
        else:
            port = harness.free_port()
            worker = "sync" if name == "gunicorn-sync" else "gthread"
            argv = [sys.executable, "-m", "gunicorn", "-k", worker, "-w", str(args.workers),
                    "--bind", f"{harness.HOST}:{port}", "--log-level", "warning", APP]
            if worker == "gthread":
                argv[5:5] = ["--threads", "4"]
            backend = harness.Proc(name, argv, [port])
            c.servers.append(backend)
            backend.wait_ready(timeout=30)
            work = harness.tempdir("bench-mixed-upstream-")
            upstream = os.path.join(work, "upstream.conf")
            with open(upstream, "w") as f:
                f.write(f"server {harness.HOST}:{port};\n")
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
            conn = http.client.HTTPConnection(harness.HOST, self.port, timeout=30)
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
        result = harness.run_wrk([contender.port], args.fast_conns, args.duration, timeout_s=10)
    result["slow_per_s"] = clients.done / clients.elapsed if slow else None
    result["slow_failed"] = clients.failed
    return result


def add_arguments(p):
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--fractions", type=harness.csv(int), default=[0, 10, 50], help="percent of the workers kept busy")
    p.add_argument("--contenders", type=harness.csv(str), default=list(CONTENDERS), help=", ".join(CONTENDERS))
    p.add_argument("--fast-conns", type=int, default=2, help="wrk connections sending fast requests")
    p.add_argument("--slow-seconds", type=float, default=0.5)
    p.add_argument("--nginx-workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8, help="seconds of fast load per run")


def run(args):
    for name in args.contenders:
        if name not in CONTENDERS:
            raise SystemExit(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")
    running, results = {}, {}
    try:
        for name in args.contenders:
            why = _missing(name)
            if why:
                args.notes.append(f"{name}: skipped, {why}")
                continue
            running[name] = start(name, args)
        for rnd in range(args.rounds):
            for fraction in args.fractions:
                slow = round(fraction * args.workers / 100)
                for name in harness.rotated(running, rnd):
                    r = one_run(running[name], slow, args)
                    results.setdefault((fraction, name), []).append(r)
                    harness.progress(f"  {fraction:3d}% slow ({slow}) {name:16s} round {rnd + 1}: {r['rps']:8.0f} "
                                     f"fast req/s p50 {r['p50_ms']:7.2f} p99 {r['p99_ms']:7.2f} "
                                     f"max {r['max_ms']:7.1f} ms errors {r.failed} slow failed {r['slow_failed']}")
    finally:
        for contender in running.values():
            contender.stop()
    rows = []
    for fraction in args.fractions:
        slow = round(fraction * args.workers / 100)
        base = harness.median([r["rps"] for r in results.get((fraction, "gunicorn-sync"), [])])
        title = (f"{fraction} % of the workers busy ({slow} of {args.workers} always on a {args.slow_seconds} s "
                 f"request); medians of {args.rounds} rounds x {args.duration} s, latency in ms")
        for name in running:
            rs = results.get((fraction, name), [])
            rps = harness.median([r["rps"] for r in rs])
            rows.append({"table": title, "contender": name, "fast req/s": rps,
                         "vs gunicorn-sync": f"{rps / base:.2f}x" if base else "-",
                         "fast p50": harness.median([r["p50_ms"] for r in rs]),
                         "fast p99": harness.median([r["p99_ms"] for r in rs]),
                         "fast max": harness.median([r["max_ms"] for r in rs]),
                         "slow done/s": harness.median([r["slow_per_s"] for r in rs]),
                         "errors": sum(r.failed + r["slow_failed"] for r in rs)})
    return rows


def _missing(name):
    """Why ``name`` cannot run here, or None."""
    if harness.nginx_path() is None and not name.startswith("haproxy"):
        return "nginx not installed"
    if name.startswith("haproxy") and _haproxy_path() is None:
        return "haproxy not installed"
    if name.startswith("gunicorn") and importlib.util.find_spec("gunicorn") is None:
        return "gunicorn not installed"
    return None


def _haproxy_path():
    return next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
