"""prefork_waitress next to the other WSGI servers: one command for the issue 14 table.

Run from the repo root:
    python bench/peers.py                                   # everything (~25 min)
    python bench/peers.py --apps hello --workers 2 --conns 8 --rounds 2 --duration 3   # reduced

Contenders (N = --workers processes each; one that is not installed is
skipped with a note; the optional ones are the ``bench`` extra of setup.py,
``pip install uwsgi granian bjoern``, uWSGI and bjoern compile C: they need
``build-essential python3-dev libev-dev``):

  prefork           prefork_waitress, N workers on N ports (bench/prefork_launcher.py);
                    the variants of bench/throughput.py work too (prefork-threaded, ...)
  gunicorn-sync     gunicorn -k sync -w N (closes every connection itself)
  gunicorn-gthread  gunicorn -k gthread -w N --threads 4
  uwsgi             uwsgi --http11-socket (keep-alive) --processes N --master
  granian           granian --interface wsgi --workers N (Rust HTTP)
  bjoern            bjoern (C, libev), N processes forked after listen (bench/bjoern_server.py)
  nginx-200         nginx ``return 200`` with the hello body: the ceiling (hello only, direct only)

Apps: ``hello`` (14 bytes), ``flask`` (a Flask JSON endpoint, bench/flask_app.py;
skipped without Flask), ``sleep20`` (20 ms per request), ``body1m`` (1 MiB body).
Placements: ``direct`` (wrk on the contender's port(s); for prefork one wrk
over its N ports) and ``nginx`` (nginx, one worker, keep-alive upstream, HTTP
proxy for everyone, in front). Shapes: keep-alive and ``Connection: close``.
Each round runs every contender once per (placement, shape, c), in an order
rotated every round; medians over the rounds. Besides req/s, p50 and p99, the
table gives the servers' CPU time per request (utime+stime of the contender's
process tree, nginx excluded): steadier than req/s on a shared box. Ratios are
against prefork in the same row group.
"""

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile

try:
    from bench import common, cpu_per_request, throughput
except ImportError:  # python bench/peers.py
    import common
    import cpu_per_request
    import throughput

CONTENDERS = ("prefork", "gunicorn-sync", "gunicorn-gthread", "uwsgi", "granian", "bjoern", "nginx-200")
APPS = {
    "hello": "bench.apps:hello",
    "flask": "bench.flask_app:app",
    "sleep20": "bench.apps:sleep20",
    "body1m": "bench.apps:body1m",
}

_NGINX_200 = """\
    server {
        listen 127.0.0.1:%(port)d;
        location / { default_type text/plain; return 200 "Hello, world!\\n"; }
    }"""


def _tool(name):
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.access(path, os.X_OK) else shutil.which(name)


def missing(contender, app):
    """Why the contender cannot run (a note for the table), or None."""
    if app == "bench.flask_app:app" and importlib.util.find_spec("flask") is None:
        return "Flask not installed"
    if contender == "uwsgi" and not _tool("uwsgi"):
        return "uWSGI not installed (pip install uwsgi; needs build-essential python3-dev)"
    if contender == "granian" and not _tool("granian"):
        return "granian not installed (pip install granian)"
    if contender == "bjoern" and importlib.util.find_spec("bjoern") is None:
        return "bjoern not installed (pip install bjoern; needs libev-dev)"
    if throughput.is_prefork(contender) and not throughput.prefork_available(None):
        return "prefork_waitress not importable"
    if contender.startswith("gunicorn") and importlib.util.find_spec("gunicorn") is None:
        return "gunicorn not installed"
    if contender == "nginx-200" and common.nginx_path() is None:
        return "nginx not installed"
    return None


def start(contender, n, app):
    """Start one contender directly; return ([Server], ports)."""
    if throughput.is_prefork(contender) or contender == "gunicorn-sync":
        servers, ports, _ = throughput.start(contender, n, app, None)
        return servers, ports
    port = common.free_port()
    if contender == "gunicorn-gthread":
        argv = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "4", "-w", str(n),
                "--bind", f"127.0.0.1:{port}", "--log-level", "warning", app]
    elif contender == "uwsgi":
        argv = [_tool("uwsgi"), "--http11-socket", f"127.0.0.1:{port}", "--module", app, "--processes", str(n),
                "--master", "--disable-logging", "--die-on-term", "--need-app", "--listen", "1024",
                "--pythonpath", common.REPO_ROOT]
    elif contender == "granian":
        argv = [_tool("granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(n), "--no-access-log", "--log-level", "warning", "--backlog", "1024", app]
    elif contender == "bjoern":
        argv = [sys.executable, "bench/bjoern_server.py", "--port", str(port), "--workers", str(n), app]
    elif contender == "nginx-200":
        conf_dir = tempfile.mkdtemp(prefix="bench-nginx200-")
        os.chmod(conf_dir, 0o755)
        conf = os.path.join(conf_dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(common.nginx_conf(n, conf_dir, _NGINX_200 % {"port": port}))
        srv = common.Server("nginx-200", [common.nginx_path(), "-p", conf_dir, "-c", conf], [port])
        srv.cleanup_dirs.append(conf_dir)
        return [srv], [port]
    else:
        raise ValueError(contender)
    return [common.Server(contender, argv, [port])], [port]


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(common.children(p))
    return out


def tree_cpu(pid):
    return sum(cpu_per_request.cpu(p) for p in tree(pid))


def run_app(args, app_name):
    app = APPS[app_name]
    n = args.workers
    running, notes = {}, []
    for c in args.contenders:
        why = missing(c, app)
        if why is None and c == "nginx-200" and app_name != "hello":
            why = "serves the hello body only"
        if why:
            notes.append(f"{c}: skipped, {why}")
            continue
        servers, ports = start(c, n, app)
        for s in servers:
            s.wait_ready(timeout=30)
        front = None
        if "nginx" in args.placements and c != "nginx-200":
            front = common.nginx_server(f"nginx-{c}", ports, workers=args.nginx_workers)
            front.wait_ready(timeout=15)
        running[c] = (servers, ports, front)
    groups = [(p, shape, conns) for p in args.placements for shape in args.shapes for conns in args.conns]
    results = {}
    try:
        for rnd in range(args.rounds):
            for placement, shape, conns in groups:
                names = [c for c in running if placement == "direct" or running[c][2] is not None]
                k = rnd % max(1, len(names))
                for c in names[k:] + names[:k]:
                    servers, ports, front = running[c]
                    target = front.ports if placement == "nginx" else ports
                    before = sum(tree_cpu(s.pid) for s in servers)
                    r = common.run_wrk(target, conns, args.duration, close=(shape == "close"))
                    used = sum(tree_cpu(s.pid) for s in servers) - before
                    r["cpu_us"] = used / r["requests"] * 1e6 if r["requests"] else None
                    results.setdefault((placement, shape, conns, c), []).append(r)
                    print(f"  {app_name} {placement} {shape} c={conns} {c:16s} round {rnd + 1}: "
                          f"{r['rps']:8.0f} req/s p50 {r['p50_ms']:6.2f} p99 {r['p99_ms']:6.2f} ms "
                          f"cpu {r['cpu_us'] or 0:6.1f} us/req errors {r.error_count + r['non2xx']}",
                          file=sys.stderr, flush=True)
    finally:
        for servers, _, front in running.values():
            for s in servers + ([front] if front else []):
                s.stop()
    print(f"\n## app={app_name} N={n} (medians of {args.rounds} rounds x {args.duration} s; latency in ms; "
          f"uptime after: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    for note in notes:
        print(f"- {note}")
    rows = []
    for placement, shape, conns in groups:
        base = common.median([r["rps"] for r in results.get((placement, shape, conns, "prefork"), [])])
        for c in running:
            rs = results.get((placement, shape, conns, c))
            if not rs:
                continue
            rps = common.median([r["rps"] for r in rs])
            rows.append([placement, shape, conns, c, rps, f"{base / rps:.2f}x" if base else "-",
                         common.median([r["p50_ms"] for r in rs]), common.median([r["p99_ms"] for r in rs]),
                         common.median([r["cpu_us"] for r in rs]), sum(r.error_count + r["non2xx"] for r in rs)])
    common.print_table(["placement", "shape", "c", "contender", "req/s", "prefork is", "p50", "p99",
                        "server CPU us/req", "errors"], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--apps", type=throughput.csv(str), default=list(APPS))
    p.add_argument("--contenders", type=throughput.csv(str), default=list(CONTENDERS))
    p.add_argument("--placements", type=throughput.csv(str), default=["direct", "nginx"])
    p.add_argument("--shapes", type=throughput.csv(str), default=["keepalive", "close"])
    p.add_argument("--conns", type=throughput.csv(int), default=[8, 64])
    p.add_argument("--nginx-workers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    args = p.parse_args(argv)
    for c in args.contenders:
        if c not in CONTENDERS and not throughput.is_prefork(c):
            p.error(f"unknown contender {c!r}; choose from {', '.join(CONTENDERS)}")
    for a in args.apps:
        if a not in APPS:
            p.error(f"unknown app {a!r}; choose from {', '.join(APPS)}")
    print(f"# machine: {common.machine_summary()}; uptime before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# N={args.workers}, c={args.conns}, shapes {args.shapes}, placements {args.placements}, "
          f"nginx worker_processes {args.nginx_workers}")
    for app_name in args.apps:
        run_app(args, app_name)


if __name__ == "__main__":
    main()
