"""A prefork master in a subprocess that reports its workers (``Cluster``), and counted client load (``Load``)."""

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .base import REPO_ROOT
from .processes import track, untrack
from .procfs import cpu_seconds, pid_alive

# A prefork master in a subprocess that reports its workers as JSON lines (``Cluster``) and bounded
# client load that counts what succeeded, failed or was refused (``Load``): the lifecycle scenarios'.

# What a master script for Cluster defines after importing Master: ``say()`` and the ``Reporting`` master
# whose hooks report each worker as a JSON line (Cluster reads them).
REPORTING = r"""
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
"""

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

""" + REPORTING + r"""
options = json.loads(sys.argv[2])
Reporting(options.pop("app", None) or app, **options).start()
"""



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
        track(self)  # stopped at exit (or by stop_all) if its scenario does not get to close it

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
        untrack(self)
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


def kill_and_wait(port: int, old: int, read_pid: Any, deadline_s: float = 30.0) -> Tuple[float, int, int]:
    """SIGKILL ``old``, then ask ``port`` (``read_pid(port)``: the answering worker's pid) until another pid
    answers; return (seconds since the kill, connections refused, other failures)."""
    refused = failed = 0
    os.kill(old, signal.SIGKILL)
    killed = time.perf_counter()
    while True:
        if time.perf_counter() - killed > deadline_s:
            raise TimeoutError(f"no replacement on port {port} after {deadline_s} s")
        try:
            if read_pid(port) != old:
                return time.perf_counter() - killed, refused, failed
        except ConnectionRefusedError:
            refused += 1
        except (OSError, http.client.HTTPException):
            failed += 1
