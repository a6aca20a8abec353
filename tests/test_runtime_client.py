"""The HAProxy Runtime API client on the real master loop: its connect completes when the socket is writable."""

import socket
import threading
import time

from prefork_waitress._core.loop import EventLoop
from prefork_waitress.integrations.haproxy_runtime import RuntimeClient


class LoopHandle:
    """The three loop calls the client needs, under the master's names, on a real EventLoop."""

    def __init__(self):
        self.loop = EventLoop()
        self.call_later = self.loop.call_later
        self.add_io_handler = self.loop.add_reader
        self.remove_io_handler = self.loop.remove_reader
        self.add_write_handler = self.loop.add_writer
        self.remove_write_handler = self.loop.remove_writer

    def run_until(self, done, timeout=10):
        deadline = time.monotonic() + timeout
        while not done and time.monotonic() < deadline:
            self.loop.run_once()
        assert done, f"no reply within {timeout} s"


def test_a_command_over_tcp_connects_sends_and_reads_the_reply():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = []

    def haproxy():
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(4096))
            conn.sendall(b"hello from haproxy\n")

    thread = threading.Thread(target=haproxy, daemon=True)
    thread.start()
    handle = LoopHandle()
    replies = []
    client = RuntimeClient(handle, "127.0.0.1:%d" % server.getsockname()[1], timeout=10)
    try:
        client.run("show info", lambda reply, error: replies.append((reply, error)))
        handle.run_until(replies)
        assert replies == [("hello from haproxy\n", None)]
        thread.join(5)
        assert received == [b"set severity-output number; show info\n"]
        assert handle.loop.writers() == [] and handle.loop.readers() == []  # all given back
    finally:
        client.close()
        server.close()


def test_a_refused_connect_is_reported_at_once_not_at_the_deadline():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))  # bound, never listening: refused
    handle = LoopHandle()
    replies = []
    client = RuntimeClient(handle, "127.0.0.1:%d" % probe.getsockname()[1], timeout=30)
    try:
        began = time.monotonic()
        client.run("show info", lambda reply, error: replies.append((reply, error)))
        handle.run_until(replies, timeout=10)  # well before the 30 s command deadline
        assert time.monotonic() - began < 10
        ((reply, error),) = replies
        assert reply is None and "cannot connect" in error and "ECONNREFUSED" in error
    finally:
        client.close()
        probe.close()
