"""The master cannot be wedged: a frozen worker, one that never reads its commands, one stuck outside a request.

Issue 10, points 1, 2 and 10. Each test freezes a worker with SIGSTOP and
gives it back (SIGCONT) in a ``finally``, so teardown never waits for it.
"""

import os
import select
import signal
import socket
import threading
import time

from conftest import get, wait_until
from test_control import Conn

from prefork_waitress.control import request
from prefork_waitress.integrations.accept_queue import STUCK_AFTER, AcceptQueueWatch

MASTER = """
RecordingMaster("apps:app", workers=2, base_port=0, worker_class=apps.TestWorker, control_socket="ctl.sock",
                graceful_timeout=3{extra}).start()
emit("exited")
"""


def start(cluster, extra=""):
    c = cluster(MASTER.format(extra=extra))
    return c, c.ready()


def frozen(pid):
    """Context: the process is SIGSTOPped inside, SIGCONTed after (even on failure)."""

    class Frozen:
        def __enter__(self):
            os.kill(pid, signal.SIGSTOP)
            wait_until(lambda: _state(pid) in ("T", "t"), 5, message=f"process {pid} stopped")
            return pid

        def __exit__(self, *exc):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    return Frozen()


def _state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def respawned(c, ready, slot, timeout):
    """Kill slot's worker; its successor must report ready within ``timeout`` seconds."""
    old = ready["workers"][slot]["pid"]
    os.kill(old, signal.SIGKILL)
    return c.wait_event("worker_started", timeout, where=lambda e: e["info"]["id"] == slot and e["info"]["pid"] != old)[
        "info"
    ]


def test_a_waiting_command_holds_up_no_respawn_and_no_status(cluster, tmp_path):
    """Point 1: a 10 s command to a frozen worker; respawn and ctl status go on meanwhile."""
    c, ready = start(cluster)
    path = str(tmp_path / "ctl.sock")
    with frozen(ready["workers"][0]["pid"]):
        waiting = Conn(path)
        waiting.send({"action": "command", "name": "ping", "worker": 0, "timeout": 10})
        began = time.monotonic()
        assert request(path, {"action": "status"}, timeout=3)["ok"] is True
        info = respawned(c, ready, 1, timeout=3)
        assert info["generation"] == 2 and time.monotonic() - began < 6
        assert get(ready["ports"][1])[0] == 200
        waiting.close()


def test_a_worker_that_never_reads_its_commands_cannot_wedge_the_master(cluster, tmp_path):
    """Point 2: over the bound, a command fails at once saying the worker is not reading it."""
    c, ready = start(cluster)
    path = str(tmp_path / "ctl.sock")
    big = "x" * 60_000
    with frozen(ready["workers"][0]["pid"]):
        waiting = [Conn(path) for _ in range(12)]  # 12 commands pending at once, 720 KB for a frozen reader
        for conn in waiting:
            conn.send({"action": "command", "name": "greet", "args": [big], "worker": 0, "timeout": 3})
        answered = select.select([conn.sock for conn in waiting], [], [], 2.5)[0]  # before the 3 s timeout
        assert answered, "no command was refused at once"
        first = next(conn for conn in waiting if conn.sock is answered[0]).reply()["result"]["0"]
        assert first["type"] == "NotReading", first
        assert request(path, {"action": "status"}, timeout=3)["ok"] is True
        errors = [conn.reply()["result"]["0"]["error"] for conn in waiting if conn.sock is not answered[0]]
        for conn in waiting:
            conn.close()
        assert all("did not answer" in e or "not reading its commands" in e for e in errors), errors
        info = respawned(c, ready, 1, timeout=3)
        assert info["generation"] == 2
        c.signal(signal.SIGTERM)
        assert c.wait_exit(timeout=10) == 0


def test_a_worker_frozen_outside_a_request_is_replaced_after_heartbeat_timeout(cluster):
    """Point 10: SIGSTOP an idle worker; it misses its beats and is killed and replaced, the reason logged."""
    c, ready = start(cluster, extra=", heartbeat_timeout=1")
    with frozen(ready["workers"][0]["pid"]) as pid:
        exited = c.wait_event("worker_exited", 8, where=lambda e: e["info"]["pid"] == pid)
        assert exited["exitcode"] == -signal.SIGKILL
        c.wait_event("worker_started", 8, where=lambda e: e["info"]["id"] == 0 and e["info"]["pid"] != pid)
    assert get(ready["ports"][0])[0] == 200
    assert "heartbeat" in c.log()


def test_status_shows_each_slots_accept_queue_and_warns_when_it_is_stuck(cluster, tmp_path):
    """Point 10: connections waiting on a frozen worker's port are counted per slot, and a warning says so."""
    c, ready = start(cluster)
    path = str(tmp_path / "ctl.sock")
    port = ready["ports"][0]
    waiting = []
    with frozen(ready["workers"][0]["pid"]):
        try:
            for _ in range(3):
                waiting.append(socket.create_connection(("127.0.0.1", port), timeout=5))

            def queued():
                workers = request(path, {"action": "status"}, timeout=5)["result"]["workers"]
                return workers[0]["accept_queue"] == 3 and workers[1]["accept_queue"] == 0 and workers

            workers = wait_until(queued, 5, message="3 connections queued on slot 0")
            assert workers[0]["accept_queue_limit"] >= 3
            # the warning comes at most IDLE_EVERY (the first look at a filled queue) + STUCK_AFTER later
            deadline = AcceptQueueWatch.IDLE_EVERY + STUCK_AFTER + 3
            wait_until(
                lambda: "accept queue" in c.log() and "slot 0" in c.log(), deadline, message="a stuck-queue warning"
            )
        finally:
            for sock in waiting:
                sock.close()


def test_commands_keep_their_order_and_replies_while_another_client_waits(cluster, tmp_path):
    """Point 1: a long command from one client does not delay another client's quick command."""
    c, ready = start(cluster)
    path = str(tmp_path / "ctl.sock")
    slow = {}
    waiter = threading.Thread(
        target=lambda: slow.update(
            request(path, {"action": "command", "name": "sleep", "args": [3], "worker": 0, "timeout": 5}, timeout=10)
        ),
        daemon=True,
    )
    waiter.start()
    quick = request(path, {"action": "command", "name": "greet", "args": ["al"], "worker": 1}, timeout=5)
    assert quick["result"] == {"1": "noticed al; hello al from 1"}
    assert not slow  # answered while the 3 s command still runs
    waiter.join(10)
    assert slow["result"] == {"0": "slept"}
