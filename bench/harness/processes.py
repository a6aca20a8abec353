"""Free ports, and server processes in their own process group, stopped as a group on stop() and at exit."""

import atexit
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .base import HOST, REPO_ROOT


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


_LIVE = []  # every Proc (or Cluster) not yet stopped


def track(thing):
    """``thing.stop(timeout=...)`` is called at exit (or by stop_all) unless untracked first."""
    _LIVE.append(thing)


def untrack(thing):
    if thing in _LIVE:
        _LIVE.remove(thing)


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


def http_get(port, path="/", timeout=10.0, host=HOST):
    """One GET on a new connection: (status, body bytes). Raises OSError or http.client.HTTPException."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_http_200(port, deadline, path="/", host=HOST, proc=None):
    """Poll until GET path answers 200, or raise at ``deadline`` (time.monotonic()); fail at once if proc dies."""
    pause = 0.005
    last = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before port {port} answered")
        try:
            status, _ = http_get(port, path, timeout=1.0, host=host)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = repr(exc)
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



def port_free(port):
    """Nothing listens on 127.0.0.1:port any more."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0
