"""Shared helpers for the benchmark scripts.

- ports: ``free_port()``, ``free_port_range(n)``
- server processes: ``Server`` (own process group, killed as a group on
  stop, on normal exit, on Ctrl-C and on SIGTERM), ``wait_http_200``
- load: ``run_wrk`` (one wrk process over one or more ports, exact merged
  latency percentiles through a small Lua script) and ``parse_wrk_text``
- output: ``print_table``, ``median``
"""

import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata

HOST = "127.0.0.1"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- ports


def children(pid):
    """The pids of ``pid``'s children (from every thread's /proc children list); empty if it is gone."""
    kids = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return kids


def free_port(host=HOST):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_is_free(port, host=HOST):
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port_range(n, host=HOST, start=20000, stop=60000):
    """First P such that P..P+n-1 are all free (for base_port + i layouts)."""
    base = start + (os.getpid() * 7) % 10000  # spread concurrent runs apart
    for p in range(base, stop - n, n):
        if all(_port_is_free(p + i, host) for i in range(n)):
            return p
    raise RuntimeError(f"no {n} consecutive free ports")


# ------------------------------------------------------------ processes

_LIVE = []  # every Server not yet stopped


class Server:
    """A server process in its own session/process group.

    ``stop()`` sends SIGTERM to the whole group, then SIGKILL after a
    deadline, so children (gunicorn workers, prefork workers) go too.
    """

    def __init__(self, name, argv, ports, env=None, cwd=REPO_ROOT):
        self.name = name
        self.argv = list(argv)
        self.ports = list(ports)
        self.cleanup_dirs = []
        self.log = tempfile.TemporaryFile(prefix="bench-server-")  # noqa: SIM115 (closed in stop)
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [REPO_ROOT] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _LIVE.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def output(self):
        """What the server printed so far (before stop())."""
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self, timeout=5.0):
        if self in _LIVE:
            _LIVE.remove(self)
        self._kill_group(timeout)
        self.log.close()
        for d in self.cleanup_dirs:
            shutil.rmtree(d, ignore_errors=True)

    def _kill_group(self, timeout):
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone; make sure no group member survives it
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break

    def wait_ready(self, timeout=15.0, path="/"):
        deadline = time.monotonic() + timeout
        try:
            for port in self.ports:
                wait_http_200(port, deadline=deadline, path=path, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{self.name}: {exc}\n--- output ---\n{self.output()}") from exc
        return self


def stop_all():
    while _LIVE:
        _LIVE[-1].stop(timeout=2.0)


def _on_signal(signum, frame):
    print(f"\ninterrupted by signal {signum}: stopping the servers", file=sys.stderr, flush=True)
    stop_all()
    # default action afterwards: exit with the conventional status
    raise SystemExit(128 + signum)


atexit.register(stop_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)  # Ctrl-C: also kill the groups
signal.signal(signal.SIGHUP, _on_signal)


def wait_http_200(port, deadline, path="/", host=HOST, proc=None):
    """Poll until GET path answers 200, or raise at the deadline.

    Polling with a short connect timeout and a growing pause, bounded by
    ``deadline`` (a time.monotonic() value); if ``proc`` dies, fail at once.
    """
    pause = 0.005
    last = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before port {port} answered")
        conn = http.client.HTTPConnection(host, port, timeout=1.0)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return
            last = f"HTTP {resp.status}"
        except OSError as exc:
            last = repr(exc)
        finally:
            conn.close()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"port {port} did not answer 200 in time ({last})")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def python_server(name, script_args, ports, env=None):
    """A fresh interpreter running ``python script_args...``."""
    return Server(name, [sys.executable] + list(script_args), ports, env=env)


_NGINX_MAIN = """\
worker_processes %(workers)d;
daemon off;
pid %(dir)s/nginx.pid;
error_log stderr warn;
%(user)s
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
%(http)s
}
"""

_NGINX_PROXY = """\
    upstream app {
%(servers)s
        keepalive 64;
    }
    server {
        listen %(host)s:%(port)d;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }"""


def nginx_conf(workers, conf_dir, http, user=""):
    """A whole nginx.conf for a bench nginx in ``conf_dir`` (its pid and temp files there): ``http`` is
    what goes inside the http {} block; ``user`` e.g. "user root;"."""
    return _NGINX_MAIN % {"workers": workers, "dir": conf_dir, "http": http, "user": user}


def nginx_path():
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def nginx_server(name, upstream_ports, workers=1, host=HOST):
    """nginx on a free port proxying (keep-alive upstream) to upstream_ports."""
    binary = nginx_path()
    if binary is None:
        raise RuntimeError("nginx not found: apt-get install -y nginx-light")
    port = free_port(host)
    conf_dir = tempfile.mkdtemp(prefix="bench-nginx-")
    os.chmod(conf_dir, 0o755)
    servers = "\n".join(f"        server {host}:{p};" for p in upstream_ports)
    conf = os.path.join(conf_dir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_conf(workers, conf_dir, _NGINX_PROXY % {"servers": servers, "host": host, "port": port}))
    srv = Server(name, [binary, "-p", conf_dir, "-c", conf], [port])
    srv.cleanup_dirs.append(conf_dir)
    return srv


# ------------------------------------------------------------------ wrk

# One wrk process, thread i connected to ports[i % len(ports)].  wrk gives
# every thread connections/threads connections, so with threads a multiple
# of the port count the connections are split evenly over the ports, and the
# latency histogram (and thus p50/p99) is exact over all of them.
_LUA = r"""
local ports = {%(ports)s}
local counter = 0
function setup(thread)
   local port = ports[(counter %% #ports) + 1]
   counter = counter + 1
   thread.addr = wrk.lookup("%(host)s", tostring(port))[1]
end
function done(summary, latency, requests)
   io.write(string.format(
     'BENCHJSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, ' ..
     '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d, ' ..
     '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d, "mean_us": %%f}\n',
     summary.requests, summary.duration, summary.bytes,
     summary.errors.connect, summary.errors.read, summary.errors.write,
     summary.errors.status, summary.errors.timeout,
     latency:percentile(50), latency:percentile(90), latency:percentile(99),
     latency.max, latency.mean))
end
"""


def wrk_path():
    path = shutil.which("wrk")
    if not path:
        sys.exit("wrk not found: apt-get install -y wrk")
    return path


class WrkResult(dict):
    """Keys: rps, p50_ms, p99_ms, max_ms (from our Lua script), requests, errors (dict), non2xx, text."""

    @property
    def error_count(self):
        return sum(self["errors"].values())


def run_wrk(ports, connections, duration, threads=None, close=False, path="/", host=HOST, timeout_s=2):
    """Load ``ports`` for ``duration`` seconds with ``connections`` in total.

    ``threads`` defaults to the smallest multiple of len(ports) that is >= 2
    and <= connections (wrk needs connections >= threads).  ``close=True``
    sends ``Connection: close`` so every request is a new TCP connection.
    The wrk process is bounded by ``timeout`` (duration + 30 s).
    """
    ports = list(ports)
    if threads is None:
        threads = len(ports) * max(1, -(-2 // len(ports)))
        threads = max(1, min(threads, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_LUA % {"ports": ", ".join(str(p) for p in ports), "host": host})
        script = f.name
    argv = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={timeout_s}s",
        "--latency",
        "-s",
        script,
    ]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{host}:{ports[0]}{path}")
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=duration + 30)
    finally:
        os.unlink(script)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}")
    res = parse_wrk_text(proc.stdout)
    res["argv"] = argv
    res["threads"] = threads
    return res


def _to_ms(value):
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
    for suffix in ("us", "ms", "s", "m"):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * units[suffix]
    return float(value)


def parse_wrk_text(text):
    """Parse wrk's ``--latency`` output (and our BENCHJSON line, if any)."""
    res = WrkResult(
        rps=0.0, p50_ms=None, p99_ms=None, requests=0, non2xx=0,
        errors={"connect": 0, "read": 0, "write": 0, "timeout": 0}, text=text,
    )
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("BENCHJSON "):
            j = json.loads(s[len("BENCHJSON "):])
            res["requests"] = j["requests"]
            res["rps"] = j["requests"] / (j["duration_us"] / 1e6)
            res["p50_ms"] = j["p50_us"] / 1000.0
            res["p99_ms"] = j["p99_us"] / 1000.0
            res["max_ms"] = j["max_us"] / 1000.0
            res["non2xx"] = j["status"]
            for k in ("connect", "read", "write", "timeout"):
                res["errors"][k] = j[k]
            return res
        if s.startswith("Requests/sec:"):
            res["rps"] = float(s.split()[1])
        elif s.startswith("50%"):
            res["p50_ms"] = _to_ms(s.split()[1])
        elif s.startswith("99%"):
            res["p99_ms"] = _to_ms(s.split()[1])
        elif "requests in" in s:
            res["requests"] = int(s.split()[0])
        elif s.startswith("Socket errors:"):
            for part in s.split(":", 1)[1].split(","):
                kind, num = part.split()
                res["errors"][kind] = int(num)
        elif s.startswith("Non-2xx or 3xx responses:"):
            res["non2xx"] = int(s.split(":")[1])
    return res


# --------------------------------------------------------------- output


def median(values):
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def print_table(headers, rows, file=None):
    """Plain text table, right-aligned numbers; also valid Markdown."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = file or sys.stdout

    def line(r):
        return "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"

    print(line(cells[0]), file=out)
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|", file=out)
    for r in cells[1:]:
        print(line(r), file=out)
    out.flush()


def machine_summary():
    """One line: nproc, CPU model, kernel, python, waitress/gunicorn."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = []
    for mod in ("waitress", "gunicorn"):
        try:
            versions.append(f"{mod} {metadata.version(mod)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{mod} not installed")
    return (
        f"{os.cpu_count()} CPUs ({model}), kernel {os.uname().release}, "
        f"Python {sys.version.split()[0]}, " + ", ".join(versions)
    )
