"""systemd socket activation: passed sockets are the slots, as sd_listen_fds defines them."""

import os
import signal
import socket
import sys

import pytest
from conftest import HERE, LoadLoop, get, wait_until

from prefork_waitress._os.activation import activated_sockets
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


def activated(server, tmp_path, socks, *args, names=None):
    """``prefork-waitress ARGS`` started through sd_exec.py with ``socks``, as systemd starts a service."""
    (tmp_path / "envapp.py").write_text(ENVIRONMENT_APP)
    wrapper = [sys.executable, os.path.join(HERE, "sd_exec.py")] + (["--names", names] if names else [])
    wrapper += [str(s.fileno()) for s in socks] + ["--", sys.executable, "-m", "prefork_waitress"]
    return server(*args, program=wrapper, pass_fds=[s.fileno() for s in socks])


def serving(master, port, count=1):
    """Wait until ``count`` distinct worker pids answer on ``port``; return them."""
    pids = set()

    def enough():
        assert master.proc.poll() is None, master.log()
        status, body, _ = get(port, timeout=5)
        pids.add(int(body.split()[0]))
        return len(pids) >= count

    wait_until(enough, 15, message=f"{count} workers behind port {port}")
    return pids


def _port(sock):
    return sock.getsockname()[1]


def test_passed_sockets_are_the_slots_in_name_order_and_workers_do_not_inherit_the_variables(server, tmp_path):
    socks = [listening_socket(), listening_socket()]
    try:
        # Named b, a: slot 0 is the socket named "a", the second one passed.
        master = activated(server, tmp_path, socks, "--workers", 5, "envapp:app", names="web-b:web-a")
        for sock in socks:
            serving(master, _port(sock))
        status, body, _ = get(_port(socks[0]), "/env")
        assert (status, body) == (200, "[]")
        assert f"serving the 2 sockets passed, ports [{_port(socks[1])}, {_port(socks[0])}]" in master.log()
    finally:
        for sock in socks:
            sock.close()


def test_a_restart_on_the_passed_sockets_refuses_no_connection(server, tmp_path):
    socks = [listening_socket(), listening_socket()]
    ports = [_port(s) for s in socks]
    try:
        first = activated(server, tmp_path, socks, "apps:app")
        old = set().union(*(serving(first, port) for port in ports))
        with LoadLoop(ports, threads=4, max_seconds=30) as load:
            load.wait_for_requests(50)
            first.proc.send_signal(signal.SIGTERM)  # what systemctl restart does: stop, then start
            assert first.proc.wait(15) == 0
            second = activated(server, tmp_path, socks, "apps:app")
            new = set().union(*(serving(second, port) for port in ports))
            load.wait_for_requests(50)
        assert load.failures == [] and not (old & new)
    finally:
        for sock in socks:
            sock.close()


def test_bad_activation_is_a_clear_start_error(server, tmp_path):
    not_listening = socket.socket()
    try:
        master = activated(server, tmp_path, [not_listening], "apps:app")
        assert master.wait(15) != 0
        assert "fd 3 passed by socket activation is not listening (use ListenStream=" in master.log()
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
