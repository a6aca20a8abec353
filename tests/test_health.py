"""The master's own HTTP server (idle clients cannot blind it), /healthz and /readyz, a stop that
drains its queues, and shutdown_delay: real masters, real sockets, real signals."""

import http.client
import json
import os
import signal
import socket
import threading
import time

import pytest
from conftest import InThread, free_port, get, wait_until

pytestmark = pytest.mark.timeout(90)

# A module written into the test's directory: it sleeps ``delay`` seconds at import (a slow boot)
# and fails to import while the file ``broken`` exists.
APP = """
import os, time
from urllib.parse import parse_qs

if os.path.exists("broken"):
    raise RuntimeError("this release is broken")
time.sleep(float(open("delay").read()) if os.path.exists("delay") else 0)


def app(environ, start_response):
    seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["0"])[0])
    time.sleep(seconds)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""

MASTER = """
RecordingMaster("bootapp:app", workers=2, base_port=0, metrics_port={port}, control_socket="ctl.sock",
                graceful_timeout=10{extra}).start()
emit("exited")
"""


def start(cluster, tmp_path, delay=0.0, **extra):
    (tmp_path / "bootapp.py").write_text(APP)
    (tmp_path / "delay").write_text(str(delay))
    port = free_port()
    options = "".join(f", {name}={value!r}" for name, value in extra.items())
    return cluster(MASTER.format(port=port, extra=options)), port


def probe(port, path="/readyz", timeout=2.0):
    """(status, JSON body) of GET path on the metrics port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def probe_or_none(port, path="/readyz"):
    try:
        return probe(port, path)
    except (ConnectionRefusedError, ConnectionResetError):
        return None


# -- the master's HTTP server and control socket under idle connections -----------------


def test_idle_connections_never_blind_the_metrics_port(cluster, tmp_path):
    c, port = start(cluster, tmp_path)
    ready = c.ready()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(20)]
    try:
        for _ in range(5):  # each new probe evicts the oldest idle connection
            status, body = probe(port, "/healthz")
            assert status == 200 and body["alive"] is True
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            assert response.status == 200 and b"prefork_waitress_up 1" in response.read()
            conn.close()
        started = time.monotonic()
        for sock in idle:  # the rest are closed by the head deadline (2 s), none lingers
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < 10
    finally:
        for sock in idle:
            sock.close()
    assert get(ready["ports"][0])[0] == 200


def test_idle_connections_never_block_the_control_socket(cluster, tmp_path):
    from prefork_waitress.control import request

    c, port = start(cluster, tmp_path)
    c.ready()
    path = str(tmp_path / "ctl.sock")
    idle = []
    try:
        for _ in range(20):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(20)
            sock.connect(path)
            idle.append(sock)
        idle[-1].send(b'{"action": "sta')  # half a line, then nothing
        for _ in range(5):
            assert request(path, {"action": "status"}, timeout=5)["result"]["master"]["state"] == "running"
        started = time.monotonic()
        for sock in idle:  # evicted, or closed after HEAD_TIMEOUT (5 s) with a line saying why
            data = sock.recv(4096)
            assert data == b"" or b'"ok": false' in data, data
        assert time.monotonic() - started < 15
    finally:
        for sock in idle:
            sock.close()


# -- readiness --------------------------------------------------------------------------


class Prober:
    """Probes /readyz every 20 ms in a thread, keeping every answer (a failed probe is kept too)."""

    def __init__(self, port):
        self.port = port
        self.answers = []
        self._stop = threading.Event()
        self._thread = InThread(self._run)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.answers.append(probe(self.port, timeout=1.0))
            except OSError as exc:
                self.answers.append((None, repr(exc)))
            time.sleep(0.02)
        return len(self.answers)

    def stop(self):
        self._stop.set()
        assert self._thread.result(10) > 0


def busy(ports, seconds):
    """One slow request on each port, in threads; returns them (their results are status codes)."""
    return [InThread(lambda p=p: get(p, f"/?s={seconds}", timeout=30)[0]) for p in ports]


def in_flight(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    line = [x for x in text.splitlines() if x.startswith("prefork_waitress_cluster_requests_in_flight ")]
    return float(line[0].split()[1])


def test_readyz_through_boot_busy_workers_a_gap_a_reload_a_failed_reload_and_a_stop(cluster, tmp_path):
    c, port = start(cluster, tmp_path, delay=1.0)
    first = wait_until(lambda: probe_or_none(port), timeout=20, message="the metrics port to answer")
    assert first == (503, {"ready": False, "state": "booting", "reason": "the master is booting",
                           "pid": c.proc.pid, "unserved_slots": [0, 1]})  # fmt: skip
    ready = c.ready()
    ports = ready["ports"]
    assert probe(port) == (200, {"ready": True, "state": "running", "pid": c.proc.pid})

    # Every worker busy on a slow request: the master answers the probes itself.
    slow = busy(ports, 3)
    wait_until(lambda: in_flight(port) == 2, message="both workers busy")
    for path in ("/readyz", "/healthz"):
        assert probe(port, path, timeout=1.0)[0] == 200

    # A rolling reload (successors take 1 s to import) keeps every slot served: ready throughout.
    prober = Prober(port)
    c.order("reload")
    assert c.wait_event("reloaded", timeout=30)["ok"] is True
    prober.stop()
    assert [a for a in prober.answers if a[0] != 200] == []
    assert [t.result(30) for t in slow] == [200, 200]

    # A slot without a serving worker (killed; its successor takes 1 s): not ready until it serves.
    pid = c.order("status")["result"]["workers"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    gap = wait_until(lambda: (lambda a: a if a[0] == 503 else None)(probe(port)), message="503 for the gap")
    assert gap[1]["unserved_slots"] == [0] and "slots [0] have no serving worker" in gap[1]["reason"]
    wait_until(lambda: probe(port)[0] == 200, message="ready again once slot 0 serves")

    # A failed reload: the old workers serve, but the master says it is not ready until a reload succeeds.
    (tmp_path / "broken").write_text("")
    c.order("reload")
    assert c.wait_event("reloaded", timeout=30)["ok"] is False
    status, body = probe(port)
    assert status == 503 and body["reason"] == "the last reload failed; the old workers keep serving"
    assert all(get(p)[0] == 200 for p in ports)
    (tmp_path / "broken").unlink()
    c.order("reload")
    assert c.wait_event("reloaded", timeout=30)["ok"] is True
    assert probe(port)[0] == 200

    # A stop with every worker busy: not ready while they drain, alive until the loop ends.
    slow = busy(ports, 2)
    wait_until(lambda: in_flight(port) == 2, message="both workers busy")
    c.signal(signal.SIGTERM)
    status, body = wait_until(lambda: (lambda a: a if a[0] == 503 else None)(probe(port)), message="503 stopping")
    assert body["state"] == "stopping" and body["reason"] == "the master is stopping"
    assert probe(port, "/healthz")[0] == 200
    assert [t.result(30) for t in slow] == [200, 200]
    c.wait_event("exited", timeout=30)
    assert c.wait_exit(10) == 0


# -- a stop that drains, and shutdown_delay ----------------------------------------------


def connect_and_send(ports, count, path):
    """``count`` connections, spread over ``ports``, each with one GET sent; returns the sockets."""
    socks = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", ports[i % len(ports)]), timeout=30)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        socks.append(sock)
    return socks


def read_reply(sock):
    """The status line of the reply on ``sock`` (b"" if closed without one); raises on a reset."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data.split(b"\r\n", 1)[0]
        data += chunk


def test_a_graceful_stop_serves_every_queued_connection(server, tmp_path):
    (tmp_path / "bootapp.py").write_text(APP)
    s = server("--workers", "2", "--base-port", "0", "--connection-limit", "4", "--graceful-timeout", "10",
               "--control-socket", "ctl.sock", "bootapp:app")  # fmt: skip
    ports = s.status(tmp_path / "ctl.sock")["master"]["ports"]
    socks = connect_and_send(ports, 40, "/?s=0.05")  # all connected: queued in the kernel or accepted
    try:
        s.signal(signal.SIGTERM)
        replies = [read_reply(sock) for sock in socks]  # a reset raises ConnectionResetError here
    finally:
        for sock in socks:
            sock.close()
    assert replies == [b"HTTP/1.1 200 OK"] * 40
    assert s.wait(30) == 0


def test_shutdown_delay_keeps_serving_while_readyz_says_stopping(server, tmp_path):
    (tmp_path / "bootapp.py").write_text(APP)
    metrics = free_port()
    s = server("--workers", "2", "--base-port", "0", "--shutdown-delay", "8", "--metrics-port", metrics,
               "--control-socket", "ctl.sock", "bootapp:app")  # fmt: skip
    ports = s.status(tmp_path / "ctl.sock")["master"]["ports"]
    assert probe(metrics)[0] == 200
    s.signal(signal.SIGTERM)
    signalled = time.monotonic()
    status, body = wait_until(lambda: (lambda a: a if a[0] == 503 else None)(probe(metrics)), message="503")
    assert body["state"] == "stopping"
    served = 0
    while time.monotonic() - signalled < 3.0:  # 5 s inside the delay: new connections on every port are served
        for port in ports:
            assert get(port, timeout=5)[0] == 200
            served += 1
        assert probe(metrics)[0] == 503
    assert served >= 4
    assert s.wait(30) == 0
    assert time.monotonic() - signalled >= 8.0
    assert "stopping in 8 s (shutdown_delay)" in s.log()


def test_a_second_sigterm_during_shutdown_delay_drains_at_once(server, tmp_path):
    (tmp_path / "bootapp.py").write_text(APP)
    metrics = free_port()
    s = server("--workers", "1", "--base-port", "0", "--shutdown-delay", "60", "--metrics-port", metrics,
               "--control-socket", "ctl.sock", "bootapp:app")  # fmt: skip
    s.status(tmp_path / "ctl.sock")
    s.signal(signal.SIGTERM)
    wait_until(lambda: probe(metrics)[0] == 503, message="503 during the delay")
    s.signal(signal.SIGTERM)
    assert s.wait(20) == 0  # well before the 60 s delay
    assert "stop asked again during shutdown_delay; draining now" in s.log()
