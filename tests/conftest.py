"""Test clusters: a real master in a subprocess, real workers, real sockets."""

import http.client
import json
import os
import queue
import random
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from procfs import process_state  # puts the repo root on sys.path for bench.harness

from bench.harness import stop_process_group  # the tests' process-group stop is the benchmarks'

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def wait_until(condition, timeout=10.0, interval=0.01, message="condition"):
    """Poll ``condition`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def missing(what):
    """A program or package a test needs is absent: a skip on a developer's box, a failure under
    ``CI=true`` (CI must not pass by skipping what it was meant to test)."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{what}, and CI=true: a test CI must run cannot be skipped")
    pytest.skip(what, allow_module_level=True)


class InThread:
    """Run ``function()`` in a thread; :meth:`result` returns its value or raises its exception here."""

    def __init__(self, function):
        self._outcome = {}
        self.thread = threading.Thread(target=self._run, args=(function,), daemon=True)
        self.thread.start()

    def _run(self, function):
        try:
            self._outcome["value"] = function()
        except BaseException as exc:  # handed to the test by result()
            self._outcome["error"] = exc

    def result(self, timeout=10.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"still running after {timeout} s"
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["value"]


REQUEST_LOST = (OSError, http.client.HTTPException)  # what a client sees when its worker dies mid-request


def get(port, path="/", timeout=10.0, headers=None, conn=None):
    """One HTTP GET on 127.0.0.1:port; returns (status, body, response headers)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        if own:
            conn.close()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = process_state(pid)
    return state is not None and state != "Z"


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, ROOT]))
# The request path every master the tests start serves on (``pytest --inline-tasks``, or this variable
# set by hand): the command line reads it as it reads any option's, support.RecordingMaster passes it on.
INLINE_TASKS_VAR = "PREFORK_WAITRESS_INLINE_TASKS"


def pytest_addoption(parser):
    parser.addoption(
        "--inline-tasks",
        action="store_true",
        help="run the masters the tests start with inline_tasks on (requests on the workers' I/O thread)",
    )


def pytest_configure(config):
    if config.getoption("--inline-tasks"):
        ENV[INLINE_TASKS_VAR] = "1"  # the masters' environment only: in-process tests keep theirs


def suite_runs_inline():
    """The masters the tests start run inline tasks (unless a test says otherwise)."""
    return ENV.get(INLINE_TASKS_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def pytest_report_header(config):
    return f"request path: {'inline tasks (I/O thread)' if suite_runs_inline() else 'the task thread'}"


class MasterProcess:
    """A master in a subprocess, in its own session (killed with it at the end), stderr in a file.

    The one harness of the tests: :class:`Cluster` runs a master script that
    reports its hooks, :class:`Server` the real ``prefork-waitress`` command line.
    """

    def __init__(self, tmp_path, argv, stderr_name, env=None, stdin=subprocess.DEVNULL, stdout=None, pass_fds=()):
        self.tmp_path = tmp_path
        self.stderr_path = tmp_path / stderr_name
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [*map(str, argv)],
            cwd=str(tmp_path),
            env={name: value for name, value in dict(ENV, **(env or {})).items() if value is not None},  # None: unset
            stdin=stdin,
            stdout=self._stderr if stdout is None else stdout,
            stderr=self._stderr,
            start_new_session=True,
            pass_fds=pass_fds,
        )

    def signal(self, signum):
        os.kill(self.proc.pid, signum)

    def wait_exit(self, timeout=20.0):
        return self.proc.wait(timeout)

    def log(self, tail=None):
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:] if tail else text

    def close(self):
        """Stop the master, then kill anything of its session that is left."""
        stop_process_group(self.proc)
        self._stderr.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


class Cluster(MasterProcess):
    """A master started from a small script; its hook events arrive as JSON lines."""

    def __init__(self, tmp_path, body, env=None):
        script = tmp_path / "cluster_main.py"
        script.write_text(
            "import logging, sys\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stderr,\n"
            "    format='%(asctime)s %(process)d %(name)s %(message)s')\n"
            "from support import RecordingMaster, emit\n"
            "import apps\n" + textwrap.dedent(body)
        )
        super().__init__(tmp_path, [sys.executable, script], "master.stderr", env, subprocess.PIPE, subprocess.PIPE)
        self.events = []
        self._queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self._queue.put(json.loads(line))
            except ValueError:
                self._queue.put({"event": "noise", "line": line.decode(errors="replace")})
        self._queue.put({"event": "eof"})

    def wait_event(self, event, timeout=15.0, where=lambda e: True):
        """The next event named ``event`` (matching ``where``); earlier ones stay in ``events``."""
        for seen in self.events:
            if seen["event"] == event and where(seen) and not seen.get("_taken"):
                seen["_taken"] = True
                return seen
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} event within {timeout} s; got {self.events}\n{self.log()}")
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            self.events.append(item)
            if item["event"] == event and where(item):
                item["_taken"] = True
                return item
            if item["event"] == "eof" and event != "eof":
                raise AssertionError(f"master exited before {event!r}: {self.events}\n{self.log()}")

    def ready(self, timeout=20.0):
        return self.wait_event("ready", timeout)

    def order(self, call, *args, wait=20.0, **kwargs):
        """Ask the master loop to run ``call``; returns its result event."""
        tag = f"{call}-{time.monotonic_ns()}"
        line = json.dumps({"call": call, "args": list(args), "kwargs": kwargs, "tag": tag})
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.wait_event("result", wait, where=lambda e: e.get("tag") == tag)

    def log(self, tail=6000):
        return super().log(tail)


class Server(MasterProcess):
    """A ``prefork-waitress`` command line (or another ``program``) running as a master."""

    def __init__(self, tmp_path, args, env=None, program=(sys.executable, "-m", "prefork_waitress"), pass_fds=()):
        super().__init__(tmp_path, [*program, *args], "cli.stderr", env, pass_fds=pass_fds)

    def status(self, sock, timeout=10.0):
        """The master's status once it is running (every worker serving), over its control socket."""
        from prefork_waitress.control import ControlError, request

        def running():
            if self.proc.poll() is not None:
                raise AssertionError(f"the master exited with {self.proc.returncode}:\n{self.log()}")
            try:
                reply = request(str(sock), {"action": "status"}, timeout=2)
            except ControlError:
                return None
            return reply["result"] if reply["result"]["master"]["state"] == "running" else None

        return wait_until(running, timeout, message="the master running")

    def wait(self, timeout=15.0):
        return self.proc.wait(timeout)


def _factory(tmp_path, make):
    started = []

    def start(*args, **kwargs):
        started.append(make(tmp_path, *args, **kwargs))
        return started[-1]

    return start, started


@pytest.fixture
def cluster(tmp_path):
    """Factory: cluster(body) starts a master script; all are torn down after the test."""
    start, started = _factory(tmp_path, Cluster)
    yield start
    for c in started:
        c.close()


@pytest.fixture
def server(tmp_path):
    """Factory: server(*args) starts ``prefork-waitress ARGS``; every one is stopped after the test."""
    start, started = _factory(tmp_path, lambda tmp, *args, env=None, **kw: Server(tmp, args, env, **kw))
    yield start
    for s in started:
        s.close()


def free_port():
    """A port nothing uses, not even a connection in TIME_WAIT, picked below the ephemeral range as
    free_ports picks: a bind(0) hands out ports from that range, and a parallel test's master on port 0
    once took the port an nginx was about to listen on."""
    for _ in range(200):
        port = free_ports(1)
        if port_is_free(port):
            return port
    raise AssertionError("no free port found")


def free_ports(count):
    """The first of ``count`` consecutive ports a master could bind right now (for base_port tests)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for _ in range(200):  # below the ephemeral range: a busy box's client connections never sit there
        first = random.randint(max(1024, low - 12000), low - count - 1)
        if all(_bindable_like_a_master(first + i) for i in range(count)):
            return first
    raise AssertionError(f"no {count} consecutive free ports found")


def _bindable_like_a_master(port):
    """Bind as the master does (SO_REUSEADDR: connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
        return True


class KeepAliveConnection(http.client.HTTPConnection):
    """Drops a kept-alive connection the server has closed before reusing it, as urllib3 and nginx do.

    A draining worker closes keep-alive connections idle for IDLE_GRACE; a
    client that sends on one anyway fails (the usual keep-alive race), which
    a starved client thread on a loaded machine can hit.
    """

    def request(self, *args, **kwargs):
        if self.sock is not None and select.select([self.sock], [], [], 0)[0]:
            self.close()  # closed by the server while idle: send on a new connection
        super().request(*args, **kwargs)


class LoadLoop:
    """Bounded client load on 127.0.0.1: keep-alive and fresh connections, counting failures.

    ``max_seconds`` only keeps a broken test from loading for ever: load that ends
    there, before the ``with`` block stops it, fails the test (what followed ran
    without load), as does waiting for requests after it.
    """

    def __init__(self, ports, threads=4, max_seconds=30.0, path="/"):
        self.ports = list(ports)
        self.path = path
        self.ok = 0
        self.retried = 0  # GETs sent again after the keep-alive race (see _loop)
        self.failures = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._lock = threading.Lock()
        self._max_seconds = max_seconds
        self.ended_at_bound = False
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        if exc_type is None:
            self._check_bound()

    def _check_bound(self):
        if self.ended_at_bound:
            raise AssertionError(f"the load ended at its bound ({self._max_seconds} s) before the test stopped it")

    def _run(self, index):
        self._loop(index)
        if not self._stop.is_set():
            self.ended_at_bound = True

    def _loop(self, index):
        keep_alive = index % 2 == 0
        conns = {}
        n = index
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            port = self.ports[n % len(self.ports)]
            n += 1
            conn = conns.get(port) if keep_alive else None
            reused = conn is not None
            if conn is None:
                conn = KeepAliveConnection("127.0.0.1", port, timeout=10)
            try:
                try:
                    status, body, headers = get(port, self.path, conn=conn)
                except (ConnectionResetError, BrokenPipeError):
                    if not reused:
                        raise
                    # The keep-alive race: the server closed the idle connection as this request went out,
                    # before any byte of a response. A GET is retried once on a new connection, as urllib3
                    # and nginx do; a second failure counts.
                    conn.close()
                    conn = KeepAliveConnection("127.0.0.1", port, timeout=10)
                    with self._lock:
                        self.retried += 1
                    status, body, headers = get(port, self.path, conn=conn)
                if status != 200:
                    raise AssertionError(f"status {status}: {body}")
                with self._lock:
                    self.ok += 1
                if keep_alive and headers.get("Connection") != "close":
                    conns[port] = conn
                else:
                    conns.pop(port, None)
                    conn.close()
            except Exception as exc:
                conns.pop(port, None)
                conn.close()
                with self._lock:
                    self.failures.append(f"port {port}: {type(exc).__name__}: {exc}")

    def wait_for_requests(self, count, timeout=10.0):
        start = self.ok

        def done():
            self._check_bound()
            return self.ok >= start + count

        wait_until(done, timeout, message=f"{count} more requests")


def pytest_sessionfinish(session, exitstatus):
    """tox runs the suite in two passes split by ``-m`` (tox.ini): one whose selection (``tox -- tests/x.py``)
    holds none of its kind ran nothing by design, and ends in success rather than pytest's exit 5.

    (Under pytest-xdist the controller is not told what its workers deselected, so any ``-m`` counts.)
    """
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and session.config.option.markexpr:
        session.exitstatus = pytest.ExitCode.OK
