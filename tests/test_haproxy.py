"""HAProxy as a live frontend through its Runtime API: a real HAProxy, real load, no failed request."""

import os
import shutil
import signal
import socket
import subprocess

import pytest
from conftest import Cluster, free_port, get, missing, stop_process_group, wait_until
from frontload import FrontendLoad

from prefork_waitress.integrations.haproxy import server_prefix
from prefork_waitress.integrations.haproxy_runtime import parse_address, reply_error, server_sessions, servers_state

HAPROXY = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)

CONFIG = """
global
    stats socket {sock} mode 600 level admin
    stats socket ipv4@127.0.0.1:{api_port} level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    balance roundrobin
"""

MASTER = """
RecordingMaster("apps:app", workers={workers}, host={host!r}, base_port=0, graceful_timeout=10,
                haproxy_socket={api!r}, haproxy_backend="app").start()
emit("exited")
"""


class HAProxy:
    """haproxy -db (foreground) with its own config and stats sockets under tmp_path."""

    def __init__(self, prefix):
        prefix.mkdir()
        self.sock, self.port, self.api_port = prefix / "admin.sock", free_port(), free_port()
        self.conf = prefix / "haproxy.cfg"
        self.conf.write_text(CONFIG.format(sock=self.sock, port=self.port, api_port=self.api_port))
        self.log = prefix / "haproxy.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [HAPROXY, "-f", str(self.conf), "-db"], stdout=log, stderr=log, start_new_session=True
            )
        wait_until(lambda: self._up(), message="haproxy's stats socket")

    def _up(self):
        assert self.proc.poll() is None, self.log.read_text()
        return self.sock.exists()

    def ask(self, command):
        """One Runtime API command, blocking (the test's own client)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    return b"".join(chunks).decode()
                chunks.append(data)

    def servers(self):
        """{name: (address, port, admin state, operational state)} of backend app."""
        rows = servers_state(self.ask("show servers state app"))
        return {
            name: (row["srv_addr"], int(row["srv_port"]), row["srv_admin_state"], row["srv_op_state"])
            for name, row in rows.items()
        }

    def live(self, prefix=""):
        """Ports of the servers that take new requests (ready and up)."""
        return sorted(
            p for n, (_, p, admin, op) in self.servers().items() if n.startswith(prefix) and admin + op == "02"
        )

    def backend_errors(self):
        """Connection errors, response errors, retries and redispatches HAProxy counted for the backend."""
        lines = self.ask("show stat app 2 -1").splitlines()
        header = lines[0][2:].split(",")
        row = dict(zip(header, lines[1].split(",")))
        return {key: row[key] for key in ("econ", "eresp", "wretr", "wredis", "hrsp_5xx")}

    def stop(self):
        stop_process_group(self.proc, signal.SIGTERM, grace=5)


@pytest.fixture
def haproxy(tmp_path):
    if HAPROXY is None:
        missing("no haproxy binary (CI installs Debian's haproxy)")
    server = HAProxy(tmp_path / "haproxy")
    yield server
    server.stop()


def _pids_through(port, count):
    pids = set()

    def enough():
        status, body, _ = get(port, timeout=5)
        assert status == 200, body
        pids.add(int(body.split()[0]))
        return len(pids) >= count

    wait_until(enough, message=f"{count} workers through haproxy")
    return pids


def test_scale_4_2_4_and_a_rolling_reload_through_haproxy_fail_no_request(cluster, haproxy):
    c = cluster(MASTER.format(workers=4, host="127.0.0.1", api=str(haproxy.sock)))
    ready = c.ready()
    ports = sorted(ready["ports"])
    wait_until(lambda: haproxy.live() == ports, message="four servers in haproxy")
    assert set(haproxy.servers()) == {f"pw-127.0.0.1-{port}" for port in ports}
    _pids_through(haproxy.port, 4)
    with FrontendLoad(haproxy.port, max_seconds=60) as load:
        load.wait_for_requests(100)
        c.order("scale", 2)
        retired = {w["pid"] for w in ready["workers"] if w["id"] >= 2}
        for _ in retired:
            c.wait_event("worker_exited", timeout=30, where=lambda e: e["info"]["pid"] in retired)
        assert haproxy.live() == sorted(ready["ports"][:2]) and len(haproxy.servers()) == 2  # deleted
        load.wait_for_requests(100)
        c.order("scale", 4)
        grown = c.wait_event("ports_changed", where=lambda e: len(e["ports"]) == 4)["ports"]
        wait_until(lambda: haproxy.live() == sorted(grown), message="four servers again")
        load.wait_for_requests(100)
        c.order("reload")
        assert c.wait_event("reloaded", timeout=30)["ok"]
        load.wait_for_requests(100)
    assert load.failures == [] and load.posts > 100
    assert haproxy.backend_errors() == {"econ": "0", "eresp": "0", "wretr": "0", "wredis": "0", "hrsp_5xx": "0"}


@pytest.fixture
def clusters(tmp_path):
    """Factory: clusters(name, body) starts a master in its own directory (its own log)."""
    started = []

    def start(name, body):
        (tmp_path / name).mkdir()
        started.append(Cluster(tmp_path / name, body))
        return started[-1]

    yield start
    for c in started:
        c.close()


def test_two_masters_share_one_backend_each_managing_its_own_servers(clusters, haproxy):
    api = f"127.0.0.1:{haproxy.api_port}"  # one through TCP, one through the UNIX socket
    first = clusters("first", MASTER.format(workers=2, host="127.0.0.2", api=api))
    second = clusters("second", MASTER.format(workers=3, host="127.0.0.3", api=str(haproxy.sock)))
    a, b = first.ready(), second.ready()
    wait_until(lambda: len(haproxy.live()) == 5, message="five servers from two masters")
    servers = haproxy.servers()
    assert {servers[f"pw-127.0.0.2-{p}"][0] for p in a["ports"]} == {"127.0.0.2"}
    assert {servers[f"pw-127.0.0.3-{p}"][0] for p in b["ports"]} == {"127.0.0.3"}
    every = {w["pid"] for w in a["workers"] + b["workers"]}
    assert _pids_through(haproxy.port, 5) == every
    with FrontendLoad(haproxy.port, max_seconds=60) as load:
        load.wait_for_requests(100)
        second.order("scale", 1)
        wait_until(lambda: haproxy.live("pw-127.0.0.3-") == b["ports"][:1], timeout=20, message="second master at 1")
        assert haproxy.live("pw-127.0.0.2-") == sorted(a["ports"])  # the first master's servers untouched
        load.wait_for_requests(100)
        first.signal(signal.SIGTERM)
        assert first.wait_exit() == 0
        # a graceful stop drains and deletes its servers before its workers stop
        assert [name for name in haproxy.servers() if name.startswith("pw-127.0.0.2-")] == []
        assert haproxy.live("pw-127.0.0.3-") == b["ports"][:1]
        load.wait_for_requests(100)
    assert load.failures == []
    assert haproxy.backend_errors() == {"econ": "0", "eresp": "0", "wretr": "0", "wredis": "0", "hrsp_5xx": "0"}


def test_runtime_replies_are_parsed_and_errors_found():
    assert parse_address("/run/haproxy.sock") == (socket.AF_UNIX, "/run/haproxy.sock")
    assert parse_address("127.0.0.1:9999") == (socket.AF_INET, ("127.0.0.1", 9999))
    assert parse_address("[::1]:9999") == (socket.AF_INET6, ("::1", 9999))
    assert reply_error("\n[3]: No such server.\n\n") == "No such server."
    assert reply_error("\n[6]: New server registered.\n\n") is None and reply_error("\n\n") is None
    assert server_prefix("0.0.0.0") == "pw-127.0.0.1-" and server_prefix("::") == "pw-..1-"
    stat = "# pxname,svname,qcur,qmax,scur\napp,BACKEND,0,0,3\napp,pw-a-1,1,0,2\napp,pw-a-2,0,0,0\n"
    assert server_sessions(stat) == {"pw-a-1": 3, "pw-a-2": 0}


def test_haproxy_options_are_checked_together(tmp_path):
    from prefork_waitress.options import make_settings

    with pytest.raises(ValueError, match="option haproxy_socket: needs haproxy_backend too"):
        make_settings(haproxy_socket="127.0.0.1:9999")
    with pytest.raises(ValueError, match="expected an HAProxy backend name"):
        make_settings(haproxy_socket="x.sock", haproxy_backend="my backend")
    assert make_settings(haproxy_socket="x.sock", haproxy_backend="app").haproxy_socket == os.path.abspath("x.sock")


def test_haproxy_down_at_start_is_one_warning_and_the_backend_fills_once_it_is_up(cluster, tmp_path):
    if HAPROXY is None:
        missing("no haproxy binary (CI installs Debian's haproxy)")
    prefix = tmp_path / "haproxy"
    c = cluster(MASTER.format(workers=2, host="127.0.0.1", api=str(prefix / "admin.sock")))
    ports = c.ready()["ports"]
    assert get(ports[0])[0] == 200  # serving directly meanwhile
    wait_until(lambda: "HAProxy: cannot read backend 'app'" in c.log(), message="the warning")
    late = HAProxy(prefix)
    try:
        wait_until(lambda: late.live() == sorted(ports), timeout=15, message="the servers once haproxy is up")
        wait_until(lambda: "in step again" in c.log(), message="the master saying so")
        assert c.log().count("HAProxy: cannot read backend") == 1
        assert len(_pids_through(late.port, 2)) == 2
    finally:
        late.stop()
