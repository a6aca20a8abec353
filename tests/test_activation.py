"""systemd socket activation: passed sockets are the slots, as sd_listen_fds defines them."""

import os
import signal
import socket
import subprocess
import sys

import pytest
from clitools import ENV
from conftest import HERE, LoadLoop, get, stop_process_group, wait_until

from prefork_waitress._activation import activated_sockets
from prefork_waitress.errors import StartError

ENVIRONMENT_APP = """
import os
from apps import hello

def app(environ, start_response):
    if environ["PATH_INFO"] == "/env":
        body = repr(sorted(k for k in os.environ if k.startswith("LISTEN_"))).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    return hello(environ, start_response)
"""


def listening_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class Activated:
    """``prefork-waitress`` started through sd_exec.py with the given sockets, like systemd starts it."""

    def __init__(self, tmp_path, socks, args, names=None):
        (tmp_path / "envapp.py").write_text(ENVIRONMENT_APP)
        fds = [str(s.fileno()) for s in socks]
        wrapper = [sys.executable, os.path.join(HERE, "sd_exec.py")] + (["--names", names] if names else [])
        self.log_path = tmp_path / f"activated-{len(os.listdir(tmp_path))}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*wrapper, *fds, "--", sys.executable, "-m", "prefork_waitress", *map(str, args)],
                cwd=str(tmp_path),
                env=ENV,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=[s.fileno() for s in socks],
                start_new_session=True,
            )

    def log(self):
        return self.log_path.read_text(errors="replace")

    def serving(self, port, count):
        """Wait until ``count`` distinct worker pids answer on ``port``; return them."""
        pids = set()

        def enough():
            assert self.proc.poll() is None, self.log()
            status, body, _ = get(port, timeout=5)
            pids.add(int(body.split()[0]))
            return len(pids) >= count

        wait_until(enough, 15, message=f"{count} workers behind port {port}")
        return pids

    def close(self):
        stop_process_group(self.proc)


@pytest.fixture
def activated(tmp_path):
    started = []

    def start(socks, *args, names=None):
        started.append(Activated(tmp_path, socks, args, names))
        return started[-1]

    yield start
    for server in started:
        server.close()


def _port(sock):
    return sock.getsockname()[1]


def test_passed_sockets_are_the_slots_in_name_order_and_workers_do_not_inherit_the_variables(activated):
    socks = [listening_socket(), listening_socket()]
    try:
        # Named b, a: slot 0 is the socket named "a", the second one passed.
        server = activated(socks, "--workers", 5, "envapp:app", names="web-b:web-a")
        for sock in socks:
            server.serving(_port(sock), 1)
        status, body, _ = get(_port(socks[0]), "/env")
        assert (status, body) == (200, "[]")
        assert f"socket activation: ports [{_port(socks[1])}, {_port(socks[0])}]" in server.log()
        assert "not workers=5" in server.log()
    finally:
        for sock in socks:
            sock.close()


def test_a_restart_on_the_passed_sockets_refuses_no_connection(activated):
    socks = [listening_socket(), listening_socket()]
    ports = [_port(s) for s in socks]
    try:
        first = activated(socks, "apps:app")
        old = set().union(*(first.serving(port, 1) for port in ports))
        with LoadLoop(ports, threads=4, max_seconds=30) as load:
            load.wait_for_requests(50)
            first.proc.send_signal(signal.SIGTERM)  # what systemctl restart does: stop, then start
            assert first.proc.wait(15) == 0
            second = activated(socks, "apps:app")
            new = set().union(*(second.serving(port, 1) for port in ports))
            load.wait_for_requests(50)
        assert load.failures == [] and not (old & new)
    finally:
        for sock in socks:
            sock.close()


def test_bad_activation_is_a_clear_start_error(activated, tmp_path):
    not_listening = socket.socket()
    try:
        server = activated([not_listening], "apps:app")
        assert server.proc.wait(15) != 0
        assert "fd 3 passed by socket activation is not listening (use ListenStream=" in server.log()
    finally:
        not_listening.close()


def test_variables_for_another_process_are_ignored_and_removed_and_bad_ones_say_what_is_wrong():
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "OTHER": "x"}
    assert activated_sockets(env, pid=4242) == [] and env == {"OTHER": "x"}
    assert activated_sockets({}, pid=4242) == []
    with pytest.raises(StartError, match=r"LISTEN_FDS='many': expected the number of sockets"):
        activated_sockets({"LISTEN_PID": "7", "LISTEN_FDS": "many"}, pid=7)
    with pytest.raises(StartError, match="LISTEN_FDNAMES has 1 names for LISTEN_FDS=2"):
        activated_sockets({"LISTEN_PID": "7", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"}, pid=7)
    with pytest.raises(StartError, match="LISTEN_PID='me' is not a process id"):
        activated_sockets({"LISTEN_PID": "me", "LISTEN_FDS": "1"}, pid=7)
