"""Control socket hardening (issue 10, point 9): malformed input, one greedy client, the ctl client."""

import json
import threading
import time

from clitools import ctl
from test_control import Conn, start

from prefork_waitress.control import request

DEEP = b"[" * 30_000 + b"]" * 30_000  # within one 64 KiB request line


def test_every_malformed_input_gets_an_error_reply_and_a_close(cluster, tmp_path):
    c, ready = start(cluster)
    path = tmp_path / "ctl.sock"
    huge = b"1" + b"0" * 5000
    for bad in (
        DEEP + b"\n",
        b'{"action": "command", "name": "greet", "args": ' + DEEP + b"}\n",
        b'{"action": "st\xff\xfeatus"}\n',
        b"\xc3\x28\n",
        b'{"action": "scale", "workers": ' + huge + b"}\n",
    ):
        conn = Conn(path)
        conn.send(bad)
        reply = conn.reply()
        assert reply is not None and reply["ok"] is False and "malformed" in reply["error"], (bad[:40], reply)
        assert conn.reply() is None  # closed
        conn.close()
    for message in (
        {"action": "scale", "workers": 1e300},
        {"action": "command", "name": "ping", "timeout": 1e300},
        {"action": "command", "name": "ping", "worker": 10**300},
    ):
        reply = request(str(path), message, timeout=5)
        assert reply["ok"] is False and len(reply["error"]) < 300, reply
    assert request(str(path), {"action": "status"}, timeout=5)["ok"] is True


def test_one_client_pipelining_many_lines_does_not_hold_up_another(cluster, tmp_path):
    c, ready = start(cluster)
    path = str(tmp_path / "ctl.sock")
    greedy = Conn(path)
    lines = 400
    last = {}

    def read_all():
        for _ in range(lines):
            assert greedy.reply()["ok"] is True
        last["t"] = time.monotonic()

    reader = threading.Thread(target=read_all, daemon=True)
    greedy.send(b'{"action": "status"}\n' * lines)
    reader.start()
    request(path, {"action": "status"}, timeout=10)
    answered = time.monotonic()
    reader.join(30)
    assert last and answered < last["t"], "the second client waited for all of the first one's lines"
    greedy.close()


def test_ctl_prints_each_workers_error_and_never_a_traceback(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    s = server(
        "--workers", "2", "--base-port", "0", "--control-socket", sock, "--worker-class", "apps:TestWorker", "apps:app"
    )
    s.status(sock)
    late = ctl(sock, "command", "sleep", "3", "--worker", "0", "--command-timeout", "1")
    assert late.returncode == 1
    assert "worker 0" in late.stderr and "did not answer 'sleep' within 1 s" in late.stderr, late.stderr
    deep = ctl(sock, "command", "greet", DEEP.decode())
    assert deep.returncode in (1, 2) and "Traceback" not in deep.stderr and deep.stderr.strip(), deep.stderr
    assert len(deep.stderr.strip().splitlines()) == 1, deep.stderr
    assert json.loads(ctl(sock, "status", "--json").stdout)["master"]["workers"] == 2
