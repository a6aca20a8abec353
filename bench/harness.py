"""The one harness of the benchmarks (and, for /proc and process groups, of the tests).

- /proc: ``stat_fields``, ``process_state``, ``cpu_seconds``, ``children``, ``tree_cpu``: the one parser
- processes: ``Proc`` (own process group, killed as a group on stop and at exit), ``stop_process_group``,
  ``wait_http_200``, ``free_port``, ``free_port_range``
- nginx: ``nginx_conf`` (the one config writer), ``nginx_front`` (proxy_pass or uwsgi_pass), ``nginx_200``
- load: ``run_wrk`` (one wrk over one or more ports, exact merged percentiles), ``parse_wrk_text``
- a master that reports: ``Cluster`` (a prefork master subprocess whose hooks report each worker as
  JSON lines: wait on its events, kill workers, count orphans), ``Load`` (Python client threads that
  count ok, failed and refused requests), ``pid_alive``, ``port_free``

Importing this module has no side effect: ``install_exit_handlers()`` (called by ``python -m bench``)
makes Ctrl-C, SIGTERM and SIGHUP stop every live ``Proc`` too.
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
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

HOST = "127.0.0.1"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")

# ------------------------------------------------------------------ /proc


def stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name: [0] state, [1] ppid, [11] utime, [12] stime.

    Raises OSError when the process is gone.
    """
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def process_state(pid):
    """The one-letter state ("R", "S", "Z", ...), or None when there is no such process."""
    try:
        return stat_fields(pid)[0]
    except OSError:
        return None


def cpu_seconds(pid, default=None):
    """User + system CPU time of a process; ``default`` (if given) when it is gone, else OSError."""
    try:
        fields = stat_fields(pid)
    except OSError:
        if default is None:
            raise
        return default
    return (int(fields[11]) + int(fields[12])) / TICK


def children_of(pid):
    """{child pid: state} of every process whose parent is ``pid`` (zombies included), by a /proc scan."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = stat_fields(entry)
            except OSError:
                continue
            if int(fields[1]) == pid:
                found[int(entry)] = fields[0]
    return found


def children(pid):
    """The pids of ``pid``'s children (every thread's /proc children list, cheap); empty if it is gone."""
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


def tree(pid):
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def tree_cpu(pid):
    """CPU seconds of ``pid`` and its live descendants."""
    return sum(cpu_seconds(p, default=0.0) for p in tree(pid))


# ----------------------------------------------------------------- ports


def free_port(host=HOST):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port, host=HOST):
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
        if all(port_is_free(p + i, host) for i in range(n)):
            return p
    raise RuntimeError(f"no {n} consecutive free ports")


# ------------------------------------------------------------- processes


def stop_process_group(proc, first_signal=signal.SIGTERM, grace=10.0):
    """Ask ``proc`` (a Popen started with start_new_session) to stop, then SIGKILL what is left of its group."""
    if proc.poll() is None:
        proc.send_signal(first_signal)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(5)


_LIVE = []  # every Proc not yet stopped


class Proc:
    """A server process in its own session/process group, output in a temporary file.

    ``stop()`` sends SIGTERM to the process, then SIGKILL to the whole group, so children
    (gunicorn workers, prefork workers) go too; every Proc still live at exit is stopped.
    """

    def __init__(self, name, argv, ports, env=None, cwd=REPO_ROOT):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.ports = list(ports)
        self.cleanup_dirs = []
        self.log = tempfile.TemporaryFile(prefix="bench-server-")  # noqa: SIM115 (closed in stop)
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [REPO_ROOT] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,
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
        stop_process_group(self.proc, grace=timeout)
        self.log.close()
        for d in self.cleanup_dirs:
            shutil.rmtree(d, ignore_errors=True)

    def wait_ready(self, timeout=30.0, path="/"):
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


atexit.register(stop_all)


def _on_signal(signum, frame):
    print(f"\ninterrupted by signal {signum}: stopping the servers", file=sys.stderr, flush=True)
    stop_all()
    raise SystemExit(128 + signum)


def install_exit_handlers():
    """Ctrl-C, SIGTERM and SIGHUP stop every live Proc (as exit does), then exit 128+signum."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)


def wait_http_200(port, deadline, path="/", host=HOST, proc=None):
    """Poll until GET path answers 200, or raise at ``deadline`` (time.monotonic()); fail at once if proc dies."""
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


def tool(name):
    """An executable next to this interpreter (a venv's console script) or on PATH; None if absent."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.access(path, os.X_OK) else shutil.which(name)


def tempdir(prefix):
    """A directory nginx's workers (maybe another user) can read; the caller removes it."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path


# ----------------------------------------------------------------- nginx

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

# HTTP upstream: keep-alive connections (HTTP/1.1, Connection header cleared).
_PROXY_HTTP = """\
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

# uWSGI's native protocol. No `keepalive`: nginx reuses upstream connections only for HTTP/1.1 and,
# with fastcgi_keep_conn, FastCGI; the uwsgi protocol has no such flag, so uWSGI closes after each
# response (uwsgi_socket_keepalive is TCP SO_KEEPALIVE, not reuse).
_PROXY_UWSGI = """\
    upstream app {
%(servers)s
    }
    server {
        listen %(host)s:%(port)d;
        location / {
            uwsgi_pass app;
            uwsgi_param REQUEST_METHOD $request_method;
            uwsgi_param QUERY_STRING $query_string;
            uwsgi_param CONTENT_TYPE $content_type;
            uwsgi_param CONTENT_LENGTH $content_length;
            uwsgi_param REQUEST_URI $request_uri;
            uwsgi_param PATH_INFO $document_uri;
            uwsgi_param SERVER_PROTOCOL $server_protocol;
            uwsgi_param REMOTE_ADDR $remote_addr;
            uwsgi_param REMOTE_PORT $remote_port;
            uwsgi_param SERVER_ADDR $server_addr;
            uwsgi_param SERVER_PORT $server_port;
            uwsgi_param SERVER_NAME $server_name;
        }
    }"""

_RETURN_200 = """\
    server {
        listen %(host)s:%(port)d;
        location / { default_type text/plain; return 200 "Hello, world!\\n"; }
    }"""


def nginx_path():
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def nginx_conf(workers, conf_dir, http, user=""):
    """A whole nginx.conf for a bench nginx in ``conf_dir`` (its pid and temp files there): ``http`` is
    what goes inside the http {} block; ``user`` e.g. "user root;"."""
    return _NGINX_MAIN % {"workers": workers, "dir": conf_dir, "http": http, "user": user}


def nginx_with(name, http, port, workers=1, user=""):
    """nginx running ``http`` (the inside of http {}, listening on ``port``) from a temporary directory."""
    binary = nginx_path()
    if binary is None:
        raise RuntimeError("nginx not found: apt-get install -y nginx-light")
    conf_dir = tempdir("bench-nginx-")
    conf = os.path.join(conf_dir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_conf(workers, conf_dir, http, user=user))
    srv = Proc(name, [binary, "-p", conf_dir, "-c", conf], [port])
    srv.cleanup_dirs.append(conf_dir)
    return srv


def nginx_front(name, upstream_ports, workers=1, protocol="http", host=HOST):
    """nginx on a free port in front of ``upstream_ports``: ``http`` (keep-alive proxy_pass) or ``uwsgi``."""
    port = free_port(host)
    servers = "\n".join(f"        server {host}:{p};" for p in upstream_ports)
    template = {"http": _PROXY_HTTP, "uwsgi": _PROXY_UWSGI}[protocol]
    return nginx_with(name, template % {"servers": servers, "host": host, "port": port}, port, workers)


def nginx_200(name, workers=1, host=HOST):
    """nginx answering every request with the hello body itself: the ceiling."""
    port = free_port(host)
    return nginx_with(name, _RETURN_200 % {"host": host, "port": port}, port, workers)


# ------------------------------------------------------------------- wrk

# One wrk process, thread i connected to ports[i % len(ports)].  wrk gives every thread
# connections/threads connections, so with threads a multiple of the port count the connections
# are split evenly over the ports, and the latency histogram (p50/p99) is exact over all of them.
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
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    return path


class WrkResult(dict):
    """Keys: rps, p50_ms, p99_ms, max_ms, requests, errors (dict), non2xx, text."""

    @property
    def error_count(self):
        return sum(self["errors"].values())

    @property
    def failed(self):
        """wrk's socket errors plus non-2xx/3xx answers."""
        return self.error_count + self["non2xx"]


def run_wrk(ports, connections, duration, threads=None, close=False, path="/", host=HOST, timeout_s=2):
    """Load ``ports`` for ``duration`` seconds with ``connections`` in total (bounded: duration + 30 s).

    ``threads`` defaults to the smallest multiple of len(ports) that is >= 2 and <= connections.
    ``close=True`` sends ``Connection: close``: every request a new TCP connection.
    """
    ports = list(ports)
    if threads is None:
        threads = len(ports) * max(1, -(-2 // len(ports)))
        threads = max(1, min(threads, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_LUA % {"ports": ", ".join(str(p) for p in ports), "host": host})
        script = f.name
    argv = [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout_s}s",
            "--latency", "-s", script]
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
    res = WrkResult(rps=0.0, p50_ms=None, p99_ms=None, max_ms=None, requests=0, non2xx=0,
                    errors={"connect": 0, "read": 0, "write": 0, "timeout": 0}, text=text)
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


# --------------------------------------------------- a master that reports
# A prefork master in a subprocess that reports its workers as JSON lines (``Cluster``) and bounded
# client load that counts what succeeded, failed or was refused (``Load``): the lifecycle scenarios'.

MASTER_SCRIPT = r"""
import json, logging, os, sys, time
sys.path.insert(0, sys.argv[1])
if os.environ.get("PREFORK_TRACEMALLOC"):
    from bench import tracemalloc_hook
    tracemalloc_hook.start(os.environ["PREFORK_TRACEMALLOC"])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
from prefork_waitress import Master

BODY = b"x" * 64

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]

def say(event, **fields):
    sys.stdout.write(json.dumps(dict(fields, event=event, t=time.monotonic())) + "\n")
    sys.stdout.flush()

class Reporting(Master):
    def when_ready(self):
        say("ready", ports=self.ports, workers=[w.__dict__ for w in self.workers])

    def worker_started(self, info):
        say("started", info=info.__dict__)

    def worker_exited(self, info, exitcode):
        say("exited", info=info.__dict__, exitcode=exitcode)

options = json.loads(sys.argv[2])
Reporting(options.pop("app", None) or app, **options).start()
"""


def pid_alive(pid: int) -> bool:
    """Running and not a zombie."""
    return process_state(pid) not in (None, "Z")


class Cluster:
    """A master subprocess; ``current`` maps slot id to the pid of its serving worker."""

    def __init__(self, cwd: Optional[str] = None, master_script: str = MASTER_SCRIPT,
                 checkout: str = REPO_ROOT, **options: Any) -> None:
        """``options`` go to the Master; ``master_script`` (argv: checkout, options as JSON) reports the
        same events as MASTER_SCRIPT; ``checkout`` is where prefork_waitress is imported from."""
        self._log = tempfile.NamedTemporaryFile(prefix="prefork-bench-", suffix=".log", delete=False)
        self.log_path = self._log.name
        env = None
        if checkout != REPO_ROOT:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", master_script, os.path.abspath(checkout), json.dumps(options)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=cwd or os.getcwd(),
            env=env,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.events: List[Dict[str, Any]] = []
        self.current: Dict[int, int] = {}
        self.seen_pids: set = set()
        self.killed: set = set()
        self.ports: List[int] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        _LIVE.append(self)  # stopped at exit (or by stop_all) if its scenario does not get to close it

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not the master's (e.g. an on_ports_changed command's output)
            with self._changed:
                self.events.append(event)
                if event["event"] == "ready":
                    self.ports = event["ports"]
                    for worker in event["workers"]:
                        self.current[worker["id"]] = worker["pid"]
                        self.seen_pids.add(worker["pid"])
                elif event["event"] == "started":
                    self.current[event["info"]["id"]] = event["info"]["pid"]
                    self.seen_pids.add(event["info"]["pid"])
                elif event["event"] == "exited" and self.current.get(event["info"]["id"]) == event["info"]["pid"]:
                    del self.current[event["info"]["id"]]
                self._changed.notify_all()

    def wait(self, condition: Any, timeout: float = 30.0) -> Any:
        """Wait (with a deadline) until ``condition()`` holds, re-checked on every event."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = condition()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s; log: {self.log_path}")
                self._changed.wait(remaining)

    def wait_ready(self) -> None:
        self.wait(lambda: self.ports)

    def count(self, name: str, since: int = 0) -> int:
        with self._changed:
            return sum(1 for e in self.events[since:] if e["event"] == name)

    def log_bytes(self) -> int:
        """How much the master has logged so far."""
        return os.path.getsize(self.log_path)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def kill_worker(self, slot: int) -> Optional[int]:
        """SIGKILL the serving worker of ``slot``; its pid, or None if the slot has none right now."""
        with self._changed:
            pid = self.current.get(slot)
        if pid is None or pid in self.killed:  # killed already; its exit is not reported yet
            return None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        self.killed.add(pid)
        return pid

    def all_serving(self) -> bool:
        return len(self.current) == len(self.ports)

    def kill_master(self) -> float:
        """SIGKILL the master; seconds until the last worker it ever had is gone (inf after 10 s)."""
        killed = time.monotonic()
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()
        while any(pid_alive(p) for p in self.seen_pids):
            if time.monotonic() - killed > 10:
                return float("inf")
            time.sleep(0.002)
        return time.monotonic() - killed

    def cpu_seconds(self) -> float:
        """User + system CPU time the master has used so far."""
        return float(cpu_seconds(self.pid))

    def orphans(self) -> List[int]:
        return [p for p in self.seen_pids if pid_alive(p)]

    def close(self, timeout: float = 30.0) -> None:
        """SIGTERM the master (SIGKILL after ``timeout``), then SIGKILL its group and any worker left."""
        if self in _LIVE:
            _LIVE.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self.orphans():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()

    def stop(self, timeout: float = 5.0) -> None:
        """As ``Proc.stop``: what ``stop_all`` calls."""
        self.close(timeout)


class Load:
    """Client threads on 127.0.0.1, half keep-alive, half a fresh connection per request.

    ``post_every``: every n-th request of a thread is a POST with a 512-byte body (0: GET only).
    ``retry_stale``: a request on a reused keep-alive connection that the server (a frontend being
    reloaded) closed meanwhile is sent once more on a new connection, as urllib3 and nginx do;
    those are counted in ``stale_retries``. Every failure is kept in ``failure_log`` as
    (start, end, "what") on the monotonic clock, so a caller can tell which ones overlapped a fault.
    """

    BODY = b"p" * 512

    def __init__(self, ports: List[int], threads: int = 4, post_every: int = 0, retry_stale: bool = False) -> None:
        self.ports = ports
        self.threads = threads
        self.post_every = post_every
        self.retry_stale = retry_stale
        self.ok = self.failed = self.refused = self.posts = self.stale_retries = 0
        self.failures: Dict[str, int] = {}
        self.failure_log: List[Tuple[float, float, str]] = []
        self.bodies: Dict[bytes, int] = {}  # first word of each 200 body (e.g. a code version) -> count
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def snapshot(self) -> int:
        with self._lock:
            return self.ok

    def _one(self, conn: http.client.HTTPConnection, post: bool) -> Tuple[bool, bytes]:
        if post:
            conn.request("POST", "/", body=self.BODY, headers={"Content-Type": "application/octet-stream"})
        else:
            conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{'POST' if post else 'GET'} status {response.status}: {body[:80]!r}")
        return response.will_close, body

    def _run(self, index: int) -> None:
        keep_alive = index % 2 == 0
        conns: Dict[int, http.client.HTTPConnection] = {}
        n = index
        while not self._stop.is_set():
            port = self.ports[n % len(self.ports)]
            n += 1
            post = bool(self.post_every) and n % self.post_every == 0
            reused = port in conns
            conn = conns.pop(port, None) or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            started = time.monotonic()
            try:
                try:
                    will_close, body = self._one(conn, post)
                except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                    if not (reused and self.retry_stale):
                        raise
                    conn.close()
                    with self._lock:
                        self.stale_retries += 1
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    will_close, body = self._one(conn, post)
                if keep_alive and not will_close:
                    conns[port] = conn
                else:
                    conn.close()
                self._count(None, started, post, body)
            except Exception as exc:
                conn.close()
                self._count(exc, started, post, b"")

    def _count(self, exc: Optional[BaseException], started: float, post: bool, body: bytes) -> None:
        with self._lock:
            if exc is None:
                self.ok += 1
                self.posts += post
                word = body.split(b" ", 1)[0]
                self.bodies[word] = self.bodies.get(word, 0) + 1
                return
            if isinstance(exc, ConnectionRefusedError):
                self.refused += 1
            else:
                self.failed += 1
                name = type(exc).__name__
                self.failures[name] = self.failures.get(name, 0) + 1
            self.failure_log.append((started, time.monotonic(), f"{type(exc).__name__}: {exc}"))


def port_free(port):
    """Nothing listens on 127.0.0.1:port any more."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# ------------------------------------------------------------------ misc


def median(values):
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def csv(kind):
    """An argparse type: "a,b,c" -> [kind(a), kind(b), kind(c)]."""
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def rotated(items, rnd):
    """``items`` rotated by ``rnd``: each round starts with another contender."""
    items = list(items)
    k = rnd % max(1, len(items))
    return items[k:] + items[:k]


def progress(line):
    """A per-run line, to stderr (the tables go to stdout)."""
    print(line, file=sys.stderr, flush=True)
