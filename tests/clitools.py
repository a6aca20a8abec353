"""Running the real command line in a subprocess: prefork-waitress and its ctl."""

import os
import subprocess
import sys

import pytest
from conftest import HERE, ROOT, stop_process_group, wait_until

from prefork_waitress.control import ControlError, request

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, ROOT]))


def run_cli(*args, cwd=None, timeout=20, env=None):
    """Run ``python -m prefork_waitress ARGS`` to completion; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "prefork_waitress", *map(str, args)],
        cwd=cwd,
        env=dict(ENV, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ctl(sock, *args, timeout=20):
    return run_cli("ctl", "--socket", sock, *args, timeout=timeout)


class Server:
    """A ``prefork-waitress`` master running in its own session, killed with it at the end."""

    def __init__(self, tmp_path, args, env=None, program=(sys.executable, "-m", "prefork_waitress")):
        self.stderr_path = tmp_path / "cli.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [*program, *map(str, args)],
            cwd=str(tmp_path),
            env=dict(ENV, **(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            start_new_session=True,
        )

    def status(self, sock, timeout=10.0):
        """The master's status once it is running (every worker serving)."""

        def running():
            if self.proc.poll() is not None:
                raise AssertionError(f"the master exited with {self.proc.returncode}:\n{self.log()}")
            try:
                reply = request(str(sock), {"action": "status"}, timeout=2)
            except ControlError:
                return None
            return reply["result"] if reply["result"]["master"]["state"] == "running" else None

        return wait_until(running, timeout, message="the master running")

    def signal(self, signum):
        os.kill(self.proc.pid, signum)

    def wait(self, timeout=15.0):
        return self.proc.wait(timeout)

    def log(self):
        return self.stderr_path.read_text(errors="replace")

    def close(self):
        stop_process_group(self.proc)
        self._stderr.close()


@pytest.fixture(name="server")
def server_fixture(tmp_path):
    """Factory: server(*args) starts ``prefork-waitress ARGS``; every one is stopped after the test."""
    started = []

    def start(*args, env=None, **kwargs):
        s = Server(tmp_path, args, env, **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()
