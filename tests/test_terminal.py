"""A master in a real terminal (a pty), and the default signals of a Python-API master."""

import os
import signal
import sys
import threading
import time

import pytest
from conftest import MasterProcess, get, pid_alive, wait_until

from prefork_waitress.control import ControlError, request

# The child becomes the session leader with the pty as its controlling
# terminal, then runs the CLI: the master and its workers are the terminal's
# foreground process group, as in a shell.
IN_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'prefork_waitress'] + sys.argv[1:])"
)


def _in_flight(sock):
    try:
        replies = request(str(sock), {"action": "command", "name": "stats"}, timeout=2)["result"]
    except ControlError:
        return False
    return any(isinstance(r, dict) and r.get("in_flight") == 1 for r in replies.values())


def _status(sock):
    try:
        status = request(str(sock), {"action": "status"}, timeout=2)["result"]
    except ControlError:
        return None
    return status if status["master"]["state"] == "running" else None


@pytest.mark.timeout(60)
def test_ctrl_c_in_a_terminal_finishes_the_request_and_exits_zero(tmp_path):
    primary, secondary = os.openpty()
    sock = tmp_path / "ctl.sock"
    args = ["--workers", "2", "--base-port", "0", "--control-socket", str(sock), "--graceful-timeout", "30", "apps:app"]
    master = MasterProcess(tmp_path, [sys.executable, "-c", IN_TERMINAL, *args], "master.log", stdin=secondary)
    os.close(secondary)
    proc = master.proc
    try:
        status = wait_until(lambda: proc.poll() is None and _status(sock), 20, message="the master running")
        assert os.tcgetpgrp(primary) == os.getpgid(proc.pid)  # the master's group is the foreground one
        assert all(os.getpgid(w["pid"]) == os.getpgid(proc.pid) for w in status["workers"])
        port = status["workers"][0]["port"]
        result = {}
        client = threading.Thread(target=lambda: result.update(reply=get(port, "/slow?s=1.5", timeout=20)))
        client.start()
        wait_until(lambda: _in_flight(sock), 10, message="the slow request in flight")
        interrupted = time.monotonic()
        os.write(primary, b"\x03")  # Ctrl-C: the tty sends SIGINT to the whole foreground group
        assert proc.wait(20) == 0
        took = time.monotonic() - interrupted
        client.join(20)
        assert result["reply"][0] == 200
        assert took < 15, f"the stop took {took:.1f} s (graceful_timeout is 30 s)"
        text = master.log()
        assert "respawning" not in text and "did not stop" not in text, text
        assert not any(pid_alive(w["pid"]) for w in status["workers"])
    finally:
        master.close()
        os.close(primary)


API_MASTER = """
import logging, sys
from prefork_waitress import Master
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
Master("apps:app", workers=2, base_port=0, pidfile=sys.argv[1], control_socket=sys.argv[2],
       graceful_timeout=10, output=sys.argv[3]).start()
print("exited", flush=True)
"""


class ApiMaster(MasterProcess):
    """``Master(...).start()`` in a plain script: no runner, only the master's own defaults."""

    def __init__(self, tmp_path):
        self.pidfile, self.sock, self.output = tmp_path / "m.pid", tmp_path / "ctl.sock", tmp_path / "out.log"
        script = tmp_path / "api_master.py"
        script.write_text(API_MASTER)
        super().__init__(tmp_path, [sys.executable, script, self.pidfile, self.sock, self.output], "api.log")

    def status(self, where=lambda status: True, message="the master running"):
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"the master exited with {self.proc.returncode}:\n{self.log()}")
            status = _status(self.sock)
            return status if status and where(status) else None

        return wait_until(check, 20, message=message)


@pytest.fixture
def api_master(tmp_path):
    started = []

    def start():
        master = ApiMaster(tmp_path)
        started.append(master)
        return master

    yield start
    for master in started:
        master.close()


@pytest.mark.timeout(90)
def test_api_master_handles_each_common_signal_and_cleans_up(api_master, tmp_path):
    m = api_master()
    first = m.status()
    pid = m.proc.pid
    assert m.pidfile.read_text().strip() == str(pid)
    os.kill(pid, signal.SIGHUP)
    m.status(lambda s: all(w["generation"] == 2 for w in s["workers"]), "every slot reloaded after HUP")
    os.kill(pid, signal.SIGTTIN)
    grown = m.status(lambda s: len(s["workers"]) == 3 and s["master"]["state"] == "running", "3 workers after TTIN")
    assert get(grown["workers"][2]["port"])[0] == 200
    os.kill(pid, signal.SIGTTOU)
    m.status(lambda s: len(s["workers"]) == 2, "2 workers after TTOU")
    os.rename(m.output, tmp_path / "out.log.1")
    os.kill(pid, signal.SIGUSR1)
    port = m.status()["workers"][0]["port"]
    wait_until(
        lambda: get(port, "/print") and m.output.exists() and "printed by" in m.output.read_text(),
        message="the worker writing to the reopened output",
    )
    assert request(str(m.sock), {"action": "tracebacks"})["result"] == {"workers": 2}  # USR2 upgrades now
    wait_until(lambda: "Thread" in m.output.read_text(), message="a worker's traceback dump in the output")
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().split(") ")[1].split()[0] != "T"  # TTIN/TTOU did not suspend it
    os.kill(pid, signal.SIGTERM)
    assert m.proc.wait(20) == 0
    assert "exited" in m.log()
    assert not m.pidfile.exists() and not m.sock.exists()
    assert not any(pid_alive(w["pid"]) for w in first["workers"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT])
def test_api_master_stops_on_int_and_quit_and_cleans_up(api_master, signum):
    m = api_master()
    workers = m.status()["workers"]
    os.kill(m.proc.pid, signum)
    assert m.proc.wait(20) == 0
    assert not m.pidfile.exists() and not m.sock.exists()
    assert not any(pid_alive(w["pid"]) for w in workers)


@pytest.mark.timeout(60)
def test_a_second_sigint_while_stopping_stops_at_once(api_master):
    m = api_master()
    port = m.status()["workers"][0]["port"]
    result = {}
    client = threading.Thread(target=lambda: result.update(reply=_try_get(port, "/slow?s=30")))
    client.start()
    wait_until(lambda: _in_flight(m.sock), 10, message="the slow request in flight")
    os.kill(m.proc.pid, signal.SIGINT)
    wait_until(lambda: "stopping gracefully" in m.log(), 10, message="the graceful stop")
    started = time.monotonic()
    os.kill(m.proc.pid, signal.SIGINT)
    assert m.proc.wait(20) == 0
    assert time.monotonic() - started < 8  # graceful_timeout is 10 s, the request 30 s
    client.join(20)
    assert "interrupted again: stopping at once" in m.log()
    assert not m.pidfile.exists() and not m.sock.exists()


def _try_get(port, path):
    try:
        return get(port, path, timeout=40)
    except OSError as exc:
        return exc
