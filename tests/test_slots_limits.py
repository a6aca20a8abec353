"""Slots whatever their number: a worker's fds stay usable by waitress; a reload says when slots are empty."""

import os
import signal

import pytest
from conftest import get, wait_until


@pytest.mark.timeout(60)
def test_worker_serves_when_its_socket_was_inherited_above_fd_1024(cluster):
    """Many slots push the sockets' fds past select()'s 1024 limit; the worker moves its own down."""
    c = cluster("""
    import os
    master = RecordingMaster("apps:app", workers=1, base_port=0)
    for _ in range(550):  # the master's fds (never readable): every worker closes its copies
        for fd in os.pipe():
            master.add_io_handler(fd, lambda fd: None)
    master.start()
    """)
    ready = c.ready()
    worker = ready["workers"][0]
    for _ in range(3):
        status, body, _ = get(worker["port"])
        assert status == 200 and body == f"{worker['pid']} {worker['port']}"
    c.signal(signal.SIGTERM)
    assert c.wait_exit() == 0
    assert "respawning" not in c.log() and "out of range" not in c.log()


@pytest.mark.timeout(60)
def test_reload_with_a_crash_looping_slot_does_not_report_success(cluster, tmp_path):
    prefix = str(tmp_path / "broken-")
    c = cluster(
        """
        RecordingMaster("apps:app", workers=2, base_port=0, worker_class=apps.BreakableWorker).start()
        """,
        env={"PW_TEST_BROKEN_PREFIX": prefix},
    )
    ready = c.ready()
    open(prefix + "1", "w").close()
    os.kill(ready["workers"][1]["pid"], signal.SIGKILL)
    wait_until(lambda: "slot 1 is broken" in c.log(), message="slot 1 crash-looping")
    c.order("reload")
    reloaded = c.wait_event("reloaded", 30)
    assert reloaded["ok"] is False
    assert "slots [1] have no serving worker" in c.log()
    assert get(ready["ports"][0])[0] == 200  # slot 0 was reloaded and serves
