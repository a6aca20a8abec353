"""Throughput and latency: gunicorn sync vs waitress vs prefork_waitress.

Run from the repo root (or ``python -m bench.throughput``)::

    python bench/throughput.py                       # N=1,2,4, hello+sleep20, c=32
    python bench/throughput.py --workers 2 --apps hello --conns 8,32 --rounds 5
    python bench/throughput.py --prefork-path /path/to/checkout   # library elsewhere

Contenders for each worker count N:

  gunicorn-sync    ``gunicorn -k sync -w N --bind 127.0.0.1:P``; one port.
                   The sync worker does not do keep-alive: it answers with
                   ``Connection: close`` and closes, so wrk reconnects for
                   every request whatever the shape asked for.
  waitress-t1      one plain waitress process, threads=1, unpinned (one port;
                   the same for every N, repeated so that ratios come from the
                   same invocation)
  waitress-t4      one plain waitress process, threads=4, unpinned
  waitress-t1xN    N plain waitress threads=1 processes, one port each,
                   worker i pinned to CPU i mod ncpu: what prefork_waitress
                   should reach (no master, no command thread)
  prefork-N        prefork_waitress ``Master(app, workers=N, base_port=P)``
                   through bench/prefork_launcher.py; skipped with
                   "prefork_waitress: not available" if it cannot be imported.
                   Variants: ``prefork`` followed by any of these suffixes,
                   e.g. ``prefork-unpinned-nofix``:
                     -unpinned  cpu_affinity=False (default: True, pinned)
                     -rtS       request_timeout=S seconds (default: None)
                     -mrK       max_requests=K (default: 0)
                     -preload   preload=True
                     -ref       the library of --reference-path (an A/B of two
                                checkouts in one run: prefork,prefork-ref)
                     -metrics   metrics_port set (the master serves /metrics)
                     -accesslog access_log= a temporary file (removed at exit)
                     -nofix     a temporary copy of the library without the
                                DrainAwareChannel._flush_some/writable
                                overrides (the I/O-loop spin fix, A/B;
                                not used with -inline)
                     -inline    a copy with INLINE_TASKS = True: requests
                                run on the I/O thread (no task thread)
                     -nocoalesce  a copy with COALESCE_MAX = -1: header and
                                body in two sends (the old path)
  nginx+X          (opt-in with --contenders) nginx on one port in front of
                   the ports of X (waitress-t1xN, prefork, gunicorn-sync), upstream
                   keep-alive, ``worker_processes`` = --nginx-workers (1)

Multi-port contenders are loaded by ONE wrk whose threads are spread over
the ports (connections split evenly; see common.run_wrk).  Per round, the
contenders run one after the other in an order rotated every round; the
table shows medians over the rounds and the ratio to gunicorn-sync with the
same N.  Nginx in front of the ports is not measured yet.
"""

import argparse
import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    from bench import common
except ImportError:  # run as a script: python bench/throughput.py
    import common

CONTENDERS = ("gunicorn-sync", "waitress-t1", "waitress-t4", "waitress-t1xN", "prefork",
              "nginx+waitress-t1xN", "nginx+prefork", "nginx+gunicorn-sync")
PREFORK_SUFFIX = re.compile(r"^(unpinned|rt[0-9.]+|mr[0-9]+|preload|nofix|inline|nocoalesce|ref|metrics|accesslog)$")
REFERENCE_PATH = None  # --reference-path: the checkout a "-ref" contender runs
DEFAULT_CONTENDERS = ("gunicorn-sync", "waitress-t1", "waitress-t4", "waitress-t1xN", "prefork")


def csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def prefork_env(prefork_path):
    paths = ([prefork_path] if prefork_path else []) + [common.REPO_ROOT]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def is_prefork(contender):
    """True for prefork and its variants (prefork-unpinned-rt30, ...)."""
    name = contender[len("nginx+"):] if contender.startswith("nginx+") else contender
    if name == "prefork":
        return True
    if not name.startswith("prefork-"):
        return False
    return all(PREFORK_SUFFIX.match(t) for t in name.split("-")[1:])


def _cut_spin_fix(text):
    start = text.index("    def _flush_some(self")
    end = text.index("\nclass InlineChannel")
    return text[:start] + "    pass\n\n" + text[end:]


def _replace(old, new):
    def edit(text):
        if old not in text:
            raise RuntimeError(f"{old!r} not in _waitress.py")
        return text.replace(old, new)

    return edit


# variant suffix -> (edit of _waitress.py, a check run on the copy)
PATCHES = {
    "nofix": (_cut_spin_fix, "from prefork_waitress.{module} import DrainAwareChannel as C; "
                             "assert '_flush_some' not in C.__dict__ and 'writable' not in C.__dict__"),
    "inline": (_replace("INLINE_TASKS = False", "INLINE_TASKS = True"),
               "import prefork_waitress.{module} as w; assert w.INLINE_TASKS is True"),
    "nocoalesce": (_replace("COALESCE_MAX = 64 * 1024", "COALESCE_MAX = -1"),
                   "import prefork_waitress.{module} as w; assert w.COALESCE_MAX == -1"),
}
_COPIES = {}


def patched_copy(prefork_path, variants):
    """A temp copy of prefork_waitress with the PATCHES ``variants`` applied; the dir for PYTHONPATH."""
    key = (prefork_path, tuple(sorted(variants)))
    if key in _COPIES:
        return _COPIES[key]
    src_root = prefork_path or common.REPO_ROOT
    dest_root = tempfile.mkdtemp(prefix="bench-" + "-".join(key[1]) + "-")
    atexit.register(shutil.rmtree, dest_root, True)
    dest = os.path.join(dest_root, "prefork_waitress")
    shutil.copytree(os.path.join(src_root, "prefork_waitress"), dest,
                    ignore=shutil.ignore_patterns("__pycache__"))
    module = "_child._waitress" if os.path.isdir(os.path.join(dest, "_child")) else "_waitress"
    path = os.path.join(dest, *module.split(".")) + ".py"
    with open(path) as f:
        text = f.read()
    for v in key[1]:
        text = PATCHES[v][0](text)
    with open(path, "w") as f:
        f.write(text)
    checks = "; ".join(PATCHES[v][1].format(module=module) for v in key[1])
    check = subprocess.run(
        [sys.executable, "-c", checks + "; import prefork_waitress; print(prefork_waitress.__file__)"],
        env={**os.environ, "PYTHONPATH": dest_root}, cwd=dest_root, capture_output=True, text=True,
        check=False, timeout=60,
    )
    if check.returncode != 0 or not check.stdout.startswith(dest_root):
        raise RuntimeError(f"patched copy {key[1]} broken: {check.stdout}{check.stderr}")
    _COPIES[key] = dest_root
    return dest_root


def temporary_log():
    """A path for an access log in a directory removed at exit."""
    directory = tempfile.mkdtemp(prefix="bench-accesslog-")
    atexit.register(shutil.rmtree, directory, True)
    return os.path.join(directory, "access.log")


def prefork_available(prefork_path):
    proc = subprocess.run(
        [sys.executable, "bench/prefork_launcher.py", "--check", "--workers", "1", "--base-port", "1"],
        cwd=common.REPO_ROOT,
        env={**os.environ, **prefork_env(prefork_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        print((proc.stdout + proc.stderr).strip().splitlines()[-1], flush=True)
        return False
    return True


def start(contender, n, app, prefork_path, nginx_workers=1):
    """Start one contender; return ([Server], ports to load, shape note)."""
    if contender.startswith("nginx+"):
        servers, ports, inner = start(contender[len("nginx+"):], n, app, prefork_path)
        for s in servers:
            s.wait_ready()
        front = common.nginx_server(f"nginx-{n}", ports, workers=nginx_workers)
        upstream = "upstream closes" if inner else "upstream keep-alive"
        return servers + [front], front.ports, f"to nginx as asked; {upstream}"
    ncpu = len(os.sched_getaffinity(0))
    if contender == "gunicorn-sync":
        port = common.free_port()
        argv = [
            sys.executable, "-m", "gunicorn", "-k", "sync", "-w", str(n),
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning", app,
        ]
        return [common.Server(f"gunicorn-w{n}", argv, [port])], [port], "close (server)"
    if contender in ("waitress-t1", "waitress-t4"):
        port = common.free_port()
        threads = contender[-1]
        args = ["bench/waitress_server.py", "--port", str(port), "--threads", threads, "--app", app]
        return [common.python_server(contender, args, [port])], [port], None
    if contender == "waitress-t1xN":
        ports = [common.free_port() for _ in range(n)]
        servers = [
            common.python_server(
                f"waitress-t1-{i}",
                ["bench/waitress_server.py", "--port", str(p), "--threads", "1", "--app", app,
                 "--pin", "early", "--cpus", str(i % ncpu)],
                [p],
            )
            for i, p in enumerate(ports)
        ]
        return servers, ports, None
    if is_prefork(contender):
        base = common.free_port_range(n)
        ports = list(range(base, base + n))
        argv = [sys.executable, "bench/prefork_launcher.py", "--workers", str(n),
                "--base-port", str(base)]
        patches = [t for t in contender.split("-")[1:] if t in PATCHES]
        path = patched_copy(prefork_path, patches) if patches else prefork_path
        for t in contender.split("-")[1:]:
            if t == "unpinned":
                argv += ["--cpu-affinity", "off"]
            elif t == "preload":
                argv.append("--preload")
            elif t == "metrics":
                argv += ["--metrics-port", str(common.free_port())]
            elif t == "accesslog":
                argv += ["--access-log", temporary_log()]
            elif t == "ref":
                if not REFERENCE_PATH:
                    raise ValueError(f"{contender}: needs --reference-path")
                path = REFERENCE_PATH
            elif t.startswith("rt"):
                argv += ["--request-timeout", t[2:]]
            elif t.startswith("mr"):
                argv += ["--max-requests", t[2:]]
        argv.append(app)
        return [common.Server(contender, argv, ports, env=prefork_env(path))], ports, None
    raise ValueError(contender)


def main(argv=None):
    p = argparse.ArgumentParser(description="gunicorn sync vs waitress vs prefork_waitress")
    p.add_argument("--workers", type=csv(int), default=[1, 2, 4])
    p.add_argument("--apps", type=csv(str), default=["hello", "sleep20"],
                   help="names in bench/apps.py")
    p.add_argument("--conns", type=csv(int), default=[32])
    p.add_argument("--shapes", type=csv(str), default=["keepalive"],
                   help="keepalive (wrk default) and/or close (Connection: close)")
    p.add_argument("--contenders", type=csv(str), default=list(DEFAULT_CONTENDERS),
                   help=f"from {', '.join(CONTENDERS)}")
    p.add_argument("--nginx-workers", type=int, default=1,
                   help="nginx worker_processes for the nginx+ contenders")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--prefork-path", default=None,
                   help="directory to put first on PYTHONPATH for prefork_waitress")
    p.add_argument("--reference-path", default=None,
                   help="another checkout, run by the prefork-...-ref contenders")
    args = p.parse_args(argv)
    global REFERENCE_PATH
    REFERENCE_PATH = args.reference_path
    for c in args.contenders:
        if c not in CONTENDERS and not is_prefork(c):
            p.error(f"unknown contender {c!r}; choose from {', '.join(CONTENDERS)}")
    contenders = list(args.contenders)
    if any(is_prefork(c) for c in contenders) and not prefork_available(args.prefork_path):
        contenders = [c for c in contenders if not is_prefork(c)]
    if not contenders:
        sys.exit("no contender left to run")

    print(f"# machine: {common.machine_summary()}")
    print(f"# {args.rounds} rounds x {args.duration}s per run, connections {args.conns}, "
          f"shapes {args.shapes}, contenders {contenders}")
    for app_name in args.apps:
        app = f"bench.apps:{app_name}"
        for n in args.workers:
            running = {}
            for c in contenders:
                servers, ports, note = start(c, n, app, args.prefork_path, args.nginx_workers)
                for s in servers:
                    s.wait_ready()
                running[c] = (servers, ports, note)
            results = {}
            for rnd in range(args.rounds):
                for conns in args.conns:
                    for shape in args.shapes:
                        k = rnd % len(contenders)
                        for c in contenders[k:] + contenders[:k]:
                            servers, ports, _ = running[c]
                            for s in servers:
                                if not s.alive():
                                    raise RuntimeError(f"{s.name} died:\n{s.output()}")
                            r = common.run_wrk(ports, conns, args.duration, close=(shape == "close"))
                            results.setdefault((conns, shape, c), []).append(r)
                            print(
                                f"  {app_name} N={n} c={conns} {shape} {c:14s} round {rnd + 1}: "
                                f"{r['rps']:8.0f} req/s p50 {r['p50_ms']:7.2f} ms "
                                f"p99 {r['p99_ms']:7.2f} ms errors {r.error_count} non2xx {r['non2xx']}",
                                file=sys.stderr, flush=True,
                            )
            for servers, _, _ in running.values():
                for s in servers:
                    s.stop()

            print(f"\n## app={app_name} N={n} (medians of {args.rounds} rounds, latency in ms)")
            headers = ["c", "shape", "contender", "ports", "req/s", "p50", "p99",
                       "errors", "vs gunicorn", "connections"]
            rows = []
            for conns in args.conns:
                for shape in args.shapes:
                    base = None
                    if "gunicorn-sync" in contenders:
                        base = common.median([r["rps"] for r in results[(conns, shape, "gunicorn-sync")]])
                    for c in contenders:
                        rs = results[(conns, shape, c)]
                        rps = common.median([r["rps"] for r in rs])
                        name = (c.replace("waitress-t1xN", f"waitress-t1x{n}-pinned")
                                .replace("prefork", f"prefork{n}")
                                .replace("gunicorn-sync", f"gunicorn-sync-w{n}"))
                        rows.append([
                            conns, shape, name, len(running[c][1]), rps,
                            common.median([r["p50_ms"] for r in rs]),
                            common.median([r["p99_ms"] for r in rs]),
                            sum(r.error_count + r["non2xx"] for r in rs),
                            f"{rps / base:.2f}x" if base else "-",
                            running[c][2] or ("close (client)" if shape == "close" else "keep-alive"),
                        ])
            common.print_table(headers, rows)


if __name__ == "__main__":
    main()
