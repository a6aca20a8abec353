"""The control socket (JSON lines over a 0600 UNIX socket) and ``prefork-waitress ctl``."""

import json
import os
import signal
import socket

from clitools import ctl
from conftest import Cluster, get

from prefork_waitress.control import ControlError, request

MASTER = """
RecordingMaster({app!r}, workers=2, base_port=0, worker_class=apps.TestWorker, control_socket="ctl.sock",
                preload={preload}).start()
emit("exited")
"""


def start(cluster, app="apps:app", preload=False):
    c = cluster(MASTER.format(app=app, preload=preload))
    return c, c.ready()


class Conn:
    """A raw control connection: send bytes or objects, read reply lines."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.lines = self.sock.makefile("rb")

    def send(self, message):
        self.sock.sendall(message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n")

    def reply(self):
        line = self.lines.readline()
        return json.loads(line) if line else None

    def ask(self, message):
        self.send(message)
        return self.reply()

    def close(self):
        self.lines.close()
        self.sock.close()


def test_socket_is_private_and_status_lists_the_workers(cluster, tmp_path):
    c, ready = start(cluster)
    path = tmp_path / "ctl.sock"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    reply = request(str(path), {"action": "status"})
    assert reply["ok"] is True
    status = reply["result"]
    assert status["master"]["pid"] == c.proc.pid and status["master"]["state"] == "running"
    assert status["master"]["workers"] == 2 and status["master"]["ports"] == ready["ports"]
    get(ready["ports"][0])
    workers = {w["id"]: w for w in status["workers"]}
    assert [workers[i]["port"] for i in (0, 1)] == ready["ports"]
    assert all(w["generation"] == 1 and w["restarts"] == 0 and w["started_at"] for w in workers.values())
    again = request(str(path), {"action": "status"})["result"]["workers"]
    assert again[0]["requests_served"] == 1 and again[1]["requests_served"] == 0


def test_malformed_input_gets_an_error_and_the_connection_closed(cluster, tmp_path):
    c, ready = start(cluster)
    path = tmp_path / "ctl.sock"
    for bad in (b"not json\n", b"[1, 2]\n", b'{"action": 3}\n', b"x" * (70 * 1024)):
        conn = Conn(path)
        conn.send(bad)
        reply = conn.reply()
        assert reply["ok"] is False and ("malformed" in reply["error"] or "longer" in reply["error"]), reply
        assert conn.reply() is None  # closed
        conn.close()
    conn = Conn(path)
    assert "unknown action" in conn.ask({"action": "explode"})["error"]
    assert conn.ask({"action": "scale", "workers": "many"})["ok"] is False
    assert conn.ask({"action": "command", "name": "greet", "args": "bob"})["ok"] is False
    assert conn.ask({"action": "status"})["ok"] is True  # still open after well-formed errors
    conn.send(b'{"action": "status"}\n{"action": "command", "name": "greet", "args": ["al"], "worker": 1}\n')
    assert conn.reply()["ok"] and conn.reply()["result"] == {"1": "noticed al; hello al from 1"}
    conn.close()
    assert get(ready["ports"][1])[0] == 200


def test_silent_clients_never_block_and_connections_are_bounded(cluster, tmp_path):
    c, ready = start(cluster)
    path = tmp_path / "ctl.sock"
    silent = [Conn(path) for _ in range(16)]
    silent[0].send(b'{"action": "sta')  # half a line, then nothing
    assert silent[1].ask({"action": "status"})["ok"] is True  # the others wait for nobody
    newcomer = Conn(path)  # the 17th evicts the oldest idle one that never sent a request
    assert newcomer.ask({"action": "status"})["ok"] is True
    assert "16 control connections are open" in silent[0].reply()["error"]
    newcomer.close()
    assert silent[1].ask({"action": "status"})["ok"] is True  # it sent a request: kept
    assert get(ready["ports"][0])[0] == 200
    for conn in silent:
        conn.close()


def _status_ok(path):
    try:
        return request(str(path), {"action": "status"}, timeout=5)["ok"]
    except ControlError:
        return False


def test_command_replies_and_errors_by_worker(cluster, tmp_path):
    c, ready = start(cluster)
    path = str(tmp_path / "ctl.sock")
    reply = request(path, {"action": "command", "name": "greet", "args": ["bo"]})
    assert reply == {"ok": True, "result": {"0": "noticed bo; hello bo from 0", "1": "noticed bo; hello bo from 1"}}
    boom = request(path, {"action": "command", "name": "boom", "worker": 0})["result"]["0"]
    assert boom == {"error": "KeyError: 'boom'", "type": "KeyError"}
    late = request(path, {"action": "command", "name": "sleep", "args": [2], "worker": 1, "timeout": 0.2})
    assert late["result"]["1"]["type"] == "Timeout"
    assert "no worker slot 7" in request(path, {"action": "command", "name": "ping", "worker": 7})["error"]


def test_reload_replies_when_the_reload_has_finished(cluster, tmp_path):
    c, ready = start(cluster)
    path = tmp_path / "ctl.sock"
    first, second = Conn(path), Conn(path)
    first.send({"action": "reload"})
    second.send({"action": "reload"})  # asked during the first: answered after a second reload
    assert first.reply()["ok"] is True
    assert all(w["generation"] >= 2 for w in request(str(path), {"action": "status"})["result"]["workers"])
    assert second.reply()["ok"] is True
    assert [w["generation"] for w in request(str(path), {"action": "status"})["result"]["workers"]] == [3, 3]
    assert c.wait_event("reloaded")["ok"] and c.wait_event("reloaded")["ok"]
    first.close()
    second.close()


def test_pipelined_requests_wait_for_the_pending_reload(cluster, tmp_path):
    c, ready = start(cluster)
    conn = Conn(tmp_path / "ctl.sock")
    conn.send(b'{"action": "reload"}\n{"action": "status"}\n{"action": "reload"}\n{"action": "status"}\n')
    assert conn.reply()["ok"]
    assert [w["generation"] for w in conn.reply()["result"]["workers"]] == [2, 2]
    assert conn.reply()["ok"]
    assert [w["generation"] for w in conn.reply()["result"]["workers"]] == [3, 3]
    assert [c.wait_event("reloaded")["ok"] for _ in range(2)] == [True, True]
    conn.close()


def test_failed_reload_replies_false_and_old_workers_keep_serving(cluster, tmp_path):
    (tmp_path / "changing.py").write_text("from apps import app\n")
    c, ready = start(cluster, app="changing:app", preload=True)
    (tmp_path / "changing.py").write_text("this is not python\n")
    reply = request(str(tmp_path / "ctl.sock"), {"action": "reload"})
    assert reply["ok"] is False and "old workers keep serving" in reply["error"]
    assert get(ready["ports"][0])[0] == 200


def test_scale_and_stop(cluster, tmp_path):
    c, ready = start(cluster)
    path = str(tmp_path / "ctl.sock")
    assert request(path, {"action": "scale", "workers": 3})["result"]["workers"] == 3
    c.wait_event("ports_changed")
    assert ">= 1" in request(path, {"action": "scale", "workers": 0})["error"]
    reply = request(path, {"action": "stop", "wait": True})
    assert reply == {"ok": True, "result": {"stopping": True, "graceful": True}}
    assert c.wait_exit() == 0 and not os.path.exists(path)


def test_stale_socket_replaced_live_or_foreign_path_refused(cluster, tmp_path):
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    c, ready = start(cluster)
    assert request(str(path), {"action": "status"})["ok"]
    body = MASTER.replace('"ctl.sock"', repr(str(path))).format(app="apps:app", preload=False)
    (tmp_path / "second").mkdir()
    second = Cluster(tmp_path / "second", body)
    try:
        assert second.wait_exit() != 0 and "in use by a running master" in second.log()
    finally:
        second.close()
    c.close()
    path.write_text("precious")
    (tmp_path / "third").mkdir()
    third = Cluster(tmp_path / "third", body)
    try:
        assert third.wait_exit() != 0 and "is not a socket" in third.log()
    finally:
        third.close()
    assert path.read_text() == "precious"


def test_ctl_command_line(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    s = server(
        "--workers", 2, "--base-port", 0, "--control-socket", sock, "--worker-class", "apps:TestWorker", "apps:app"
    )
    s.status(sock)
    table = ctl(sock, "status")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"master pid {s.proc.pid}, running, 2 workers")
    assert lines[1].split() == [
        "slot", "port", "state", "pid", "process", "gen", "uptime", "requests", "restarts", "queued"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[2:]] == ["0", "1"]
    assert [line.split()[2] + " " + line.split()[4] for line in lines[2:]] == ["serving ready"] * 2
    assert all(line.split()[-1].startswith("0/") for line in lines[2:])  # nothing waits in the accept queues
    raw = json.loads(ctl(sock, "status", "--json").stdout)
    assert raw["master"]["workers"] == 2 and {"requests_served", "restarts"} <= set(raw["workers"][0])
    greet = ctl(sock, "command", "greet", "bo", "--worker", "1")
    assert greet.returncode == 0 and json.loads(greet.stdout) == {"1": "noticed bo; hello bo from 1"}
    assert json.loads(ctl(sock, "command", "sleep", "0.01").stdout) == {"0": "slept", "1": "slept"}
    boom = ctl(sock, "command", "boom")
    assert boom.returncode == 1 and json.loads(boom.stdout)["0"]["type"] == "KeyError"
    assert ctl(sock, "scale", "3").returncode == 0
    assert ctl(sock, "scale", "0").returncode == 1
    assert ctl(sock, "scale", "x").returncode == 2
    reload = ctl(sock, "reload")
    assert reload.returncode == 0 and reload.stdout.startswith("reloaded: 3 workers")
    stop = ctl(sock, "stop")
    assert stop.returncode == 0 and stop.stdout.strip() == "stopped"
    assert not sock.exists()  # ctl stop returned once the master had cleaned up
    assert s.wait(5) == 0
    missing = ctl(sock, "status")
    assert missing.returncode == 1 and "no master is listening" in missing.stderr


def _unix_inodes(path):
    """Inodes of the UNIX sockets bound to ``path`` (the listener and its accepted connections)."""
    with open("/proc/net/unix") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return {row[6] for row in rows if len(row) > 7 and row[7] == str(path)}


def test_workers_do_not_hold_the_control_sockets(cluster, tmp_path):
    c, ready = start(cluster)
    path = tmp_path / "ctl.sock"
    client = Conn(path)
    assert client.ask({"action": "status"})["ok"]
    c.order("scale", 3)  # a worker forked while a client is connected
    new = c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 2)["info"]["pid"]
    ours = _unix_inodes(path)
    assert len(ours) >= 2
    for pid in [w["pid"] for w in ready["workers"]] + [new]:
        held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert not {f"socket:[{inode}]" for inode in ours} & held
    client.close()


def test_socket_removed_on_stop(cluster, tmp_path):
    c, ready = start(cluster)
    c.signal(signal.SIGTERM)
    assert c.wait_exit() == 0
    assert not (tmp_path / "ctl.sock").exists()
