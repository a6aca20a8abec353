"""The one contender table: name -> how to start it for N workers and an app, and what it needs.

``start(name, workers, app)`` returns a :class:`Running` (its processes, the ports to load, the
protocol nginx speaks to it); ``missing(name, app)`` says why it cannot run here (a note, the
contender is skipped), or None. ``front(running)`` puts nginx in front of it.

prefork variants are options of the library: ``prefork`` plus ``-suffix`` for each option, e.g.
``prefork-inline-unpinned``; see SUFFIXES. Every suffix maps to a Master option, passed as its CLI
flag to ``python -m prefork_waitress``; a checkout whose options.py lacks the option is skipped
with "needs OPTION option".
"""

import importlib.util
import os
import re
import shutil
import sys
import tempfile

from bench import harness

APPS = {
    "hello": "bench.apps:hello",
    "flask": "bench.flask_app:app",
    "django": "bench.django_app:application",
    "sleep20": "bench.apps:sleep20",
    "body1m": "bench.apps:body1m",
    "mixed": "bench.apps:mixed",
}
APP_NEEDS = {"bench.flask_app:app": "flask", "bench.django_app:application": "django"}

# suffix -> (Master option, its value; a callable makes the value when the contender starts)
SUFFIXES = {
    "unpinned": ("cpu_affinity", "off"),
    "preload": ("preload", True),
    "inline": ("inline_tasks", True),
    "metrics": ("metrics_port", lambda: harness.free_port()),
    "accesslog": ("access_log", lambda: _temporary_log()),
}
PARAMETRIC = {  # suffix pattern -> option: -rt30 request_timeout=30, -mr1000 max_requests=1000
    re.compile(r"^rt([0-9.]+)$"): "request_timeout",
    re.compile(r"^mr([0-9]+)$"): "max_requests",
}
REFERENCE = {"path": None}  # -ref: the checkout of --reference-path (an A/B of two checkouts in one run)

# name -> one line of help; prefork's variants are not listed one by one
TABLE = {
    "prefork": "prefork_waitress, N workers on N ports (python -m prefork_waitress); -SUFFIX variants",
    "waitress-t1": "one plain waitress process, threads=1, unpinned (one port, the same for every N)",
    "waitress-t4": "one plain waitress process, threads=4, unpinned",
    "waitress-t1xN": "N plain waitress threads=1 processes, one port each, worker i pinned to CPU i mod ncpu",
    "gunicorn-sync": "gunicorn -k sync -w N (closes every connection itself)",
    "gunicorn-gthread": "gunicorn -k gthread -w N --threads 4",
    "uwsgi": "uwsgi --processes N --master: --http11-socket direct, --socket (uwsgi_pass) behind nginx",
    "uwsgi-http": "uwsgi --http11-socket behind nginx too (proxy_pass; the unfair anchor of issue 23)",
    "granian": "granian --interface wsgi --workers N (Rust HTTP)",
    "bjoern": "bjoern (C, libev), N processes forked after listen (bench/bjoern_server.py)",
    "nginx-200": "nginx `return 200` with the hello body: the ceiling (hello only, direct only)",
}


class Running:
    """A started contender: its processes, the ports to load, how nginx talks to it."""

    def __init__(self, name, servers, ports, protocol="http", master=None):
        self.name = name
        self.servers = list(servers)
        self.ports = list(ports)
        self.protocol = protocol
        self.master = master  # prefork: the master's pid (its children are the workers)

    def wait_ready(self, timeout=30.0):
        if self.protocol == "http":
            for s in self.servers:
                s.wait_ready(timeout=timeout)
        return self

    def check_alive(self):
        for s in self.servers:
            if not s.alive():
                raise RuntimeError(f"{s.name} died:\n{s.output()}")

    def cpu(self):
        """CPU seconds of every process of the contender (nginx in front not included)."""
        return sum(harness.tree_cpu(s.pid) for s in self.servers)

    def worker_pids(self):
        """The processes serving requests: prefork's workers (not the master), else the servers."""
        if self.master is not None:
            return sorted(harness.children(self.master))
        return [s.pid for s in self.servers]

    def stop(self):
        for s in self.servers:
            s.stop()


def is_prefork(name):
    return name == "prefork" or (name.startswith("prefork-") and all(_suffix(t) for t in name.split("-")[1:]))


def _suffix(token):
    """(option, value) for one prefork suffix, ("ref", None) for -ref, or None if unknown."""
    if token in SUFFIXES:
        return SUFFIXES[token]
    if token == "ref":
        return ("ref", None)
    for pattern, option in PARAMETRIC.items():
        match = pattern.match(token)
        if match:
            return (option, match.group(1))
    return None


def known(name):
    return name in TABLE or is_prefork(name)


def names_help():
    suffixes = ", ".join(f"-{s} ({o}={v if not callable(v) else '...'})" for s, (o, v) in SUFFIXES.items())
    return "; ".join(f"{k}: {v}" for k, v in TABLE.items()) + (
        f". prefork suffixes: {suffixes}, -rtS (request_timeout=S), -mrK (max_requests=K), "
        "-ref (the checkout of --reference-path)"
    )


def _temporary_log():
    directory = tempfile.mkdtemp(prefix="bench-accesslog-")
    import atexit

    atexit.register(shutil.rmtree, directory, True)
    return os.path.join(directory, "access.log")


def _library_options():
    """The option names of the prefork_waitress this process imports (None: not importable)."""
    try:
        from prefork_waitress.options import OPTION_BY_NAME
    except ImportError:
        return None
    return OPTION_BY_NAME


def missing(name, app):
    """Why ``name`` cannot serve ``app`` here (a note for the table), or None."""
    module = APP_NEEDS.get(app)
    if module and importlib.util.find_spec(module) is None:
        return f"{module} not installed"
    if is_prefork(name):
        options = _library_options()
        if options is None:
            return "prefork_waitress not importable"
        for token in name.split("-")[1:]:
            option = _suffix(token)[0]
            if option == "ref":
                if not REFERENCE["path"]:
                    return "-ref needs --reference-path"
            elif option not in options:
                return f"needs {option} option"
        return None
    if name.startswith("gunicorn") and importlib.util.find_spec("gunicorn") is None:
        return "gunicorn not installed"
    if name.startswith("uwsgi") and not harness.tool("uwsgi"):
        return "uWSGI not installed (pip install uwsgi; needs build-essential python3-dev)"
    if name == "granian" and not harness.tool("granian"):
        return "granian not installed (pip install granian)"
    if name == "bjoern" and importlib.util.find_spec("bjoern") is None:
        return "bjoern not installed (pip install bjoern; needs libev-dev)"
    if name == "nginx-200":
        if harness.nginx_path() is None:
            return "nginx not installed"
        if app != APPS["hello"]:
            return "serves the hello body only"
    if not known(name):
        return "unknown contender"
    return None


def _prefork(name, workers, app):
    options = _library_options()
    base = harness.free_port_range(workers)
    ports = list(range(base, base + workers))
    argv = [sys.executable, "-m", "prefork_waitress", "--workers", workers, "--base-port", base,
            "--log-level", "warning"]
    env = {}
    for token in name.split("-")[1:]:
        option, value = _suffix(token)
        if option == "ref":
            env["PYTHONPATH"] = os.pathsep.join([REFERENCE["path"], harness.REPO_ROOT])
            continue
        value = value() if callable(value) else value
        spec = options[option]
        if value is True and spec.is_flag:
            argv.append(spec.flag)
        else:
            argv += [spec.flag, value]
    argv.append(app)
    server = harness.Proc(name, argv, ports, env=env)
    return Running(name, [server], ports, master=server.pid)


def _waitress(name, workers, app):
    if name in ("waitress-t1", "waitress-t4"):
        port = harness.free_port()
        argv = [sys.executable, "bench/waitress_server.py", "--port", port, "--threads", name[-1], "--app", app]
        return Running(name, [harness.Proc(name, argv, [port])], [port])
    ncpu = len(os.sched_getaffinity(0))
    servers = []
    for i in range(workers):
        port = harness.free_port()
        argv = [sys.executable, "bench/waitress_server.py", "--port", port, "--threads", "1", "--app", app,
                "--pin", "early", "--cpus", i % ncpu]
        servers.append(harness.Proc(f"{name}-{i}", argv, [port]))
    return Running(name, servers, [p for s in servers for p in s.ports])


def start(name, workers, app, behind_nginx=False):
    """Start ``name`` with ``workers`` processes serving ``app``; ``behind_nginx``: the way nginx will reach it."""
    if is_prefork(name):
        return _prefork(name, workers, app)
    if name.startswith("waitress-"):
        return _waitress(name, workers, app)
    if name == "nginx-200":
        srv = harness.nginx_200(name, workers=workers)
        return Running(name, [srv], srv.ports)
    port = harness.free_port()
    protocol = "http"
    if name.startswith("gunicorn-"):
        kind = name.split("-", 1)[1]
        argv = [sys.executable, "-m", "gunicorn", "-k", kind, "-w", workers, "--bind", f"{harness.HOST}:{port}",
                "--log-level", "warning", app]
        if kind == "gthread":
            argv[5:5] = ["--threads", "4"]
    elif name.startswith("uwsgi"):
        native = behind_nginx and name == "uwsgi"
        protocol = "uwsgi" if native else "http"
        argv = [harness.tool("uwsgi"), "--socket" if native else "--http11-socket", f"{harness.HOST}:{port}",
                "--module", app, "--processes", workers, "--master", "--disable-logging", "--die-on-term",
                "--need-app", "--listen", "1024", "--pythonpath", harness.REPO_ROOT]
    elif name == "granian":
        argv = [harness.tool("granian"), "--interface", "wsgi", "--host", harness.HOST, "--port", port,
                "--workers", workers, "--no-access-log", "--log-level", "warning", "--backlog", "1024", app]
    elif name == "bjoern":
        argv = [sys.executable, "bench/bjoern_server.py", "--port", port, "--workers", workers, app]
    else:
        raise ValueError(f"unknown contender {name!r}")
    return Running(name, [harness.Proc(name, argv, [port])], [port], protocol=protocol)


def front(running, nginx_workers=1):
    """nginx (keep-alive upstream for HTTP, uwsgi_pass for uWSGI's socket) in front of ``running``; ready."""
    srv = harness.nginx_front(f"nginx-{running.name}", running.ports, workers=nginx_workers,
                              protocol=running.protocol)
    return srv.wait_ready(timeout=15)


def start_ready(name, workers, app, behind_nginx=False):
    """``start`` and wait until every port answers 200 (uWSGI's socket: once nginx in front does)."""
    running = start(name, workers, app, behind_nginx)
    try:
        return running.wait_ready()
    except BaseException:
        running.stop()
        raise
