"""systemd notifications, received on a real AF_UNIX datagram socket."""

import os
import signal
import socket
import time

from prefork_waitress.systemd import notify

MASTER = """
RecordingMaster("apps:app", workers=2, base_port=0).start()
emit("exited")
"""


class NotifySocket:
    """What systemd listens on: a datagram socket, bound to a path or an abstract name."""

    def __init__(self, address):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(10)

    def next(self):
        return dict(line.split("=", 1) for line in self.sock.recv(4096).decode().splitlines())

    def close(self):
        self.sock.close()


def test_notify_reaches_an_abstract_socket_and_ignores_a_missing_one():
    listener = NotifySocket(f"@prefork-waitress-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        assert notify("READY=1\nSTATUS=hi", listener.address)
        assert listener.next() == {"READY": "1", "STATUS": "hi"}
    finally:
        listener.close()
    assert notify("READY=1", "relative/path") is False


def test_ready_reloading_stopping_around_the_master_life(cluster, tmp_path):
    listener = NotifySocket(str(tmp_path / "notify"))
    try:
        c = cluster(MASTER, env={"NOTIFY_SOCKET": listener.address})
        c.ready()
        ready = listener.next()
        assert ready["READY"] == "1" and "2 workers" in ready["STATUS"]
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        c.order("reload")
        reloading = listener.next()
        assert reloading["RELOADING"] == "1"
        assert before <= int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert listener.next()["READY"] == "1"
        c.order("scale", 3)
        assert "3 workers" in listener.next()["STATUS"]
        c.signal(signal.SIGTERM)
        assert listener.next()["STOPPING"] == "1"
        assert c.wait_exit() == 0
    finally:
        listener.close()
